# NixOS module: services.model-repo. A oneshot unit links the models into a
# shared, group-readable hub cache that other services point HF_HUB_CACHE at.
{
  config,
  lib,
  pkgs,
  ...
}:

let
  common = import ../common.nix { inherit lib; };
  inherit (lib)
    mkEnableOption
    mkOption
    mkIf
    mkMerge
    types
    literalExpression
    escapeShellArg
    ;

  opt = "services.model-repo";
  cfg = config.services.model-repo;
  hf = cfg.integration.huggingface;
  hubDir = "${hf.cacheDir}/hub";
  stateDir = "/var/lib/model-repo";

  r = common.resolve {
    inherit pkgs cfg opt;
    linkEnabled = hf.enable;
    profile = "nixos";
    cacheDir = hubDir;
    offline = hf.enable && hf.offlineMode;
  };

  serviceEnvironment =
    r.envVars
    // lib.optionalAttrs hf.enable { HF_HUB_CACHE = hubDir; }
    // lib.optionalAttrs (hf.enable && hf.offlineMode) common.offlineVars
    // lib.optionalAttrs (cfg.auth.tokenFile != null) { HF_TOKEN_PATH = cfg.auth.tokenFile; };
in
{
  meta.maintainers = [ ];

  options.services.model-repo =
    {
      enable = mkEnableOption "declarative Hugging Face models in the Nix store, linked into a shared hub cache";

      package = common.packageOption pkgs;

      integration.huggingface = {
        enable = mkOption {
          type = types.bool;
          default = true;
          description = ''
            Whether to link the models into the hub cache
            `''${cacheDir}/hub` with the `model-repo` service. When false, only
            the `MODEL_REPO_<NAME>` entries of {option}`services.model-repo.environment`
            point at the models.
          '';
        };
        cacheDir = mkOption {
          type = types.strMatching "/.*[^/]";
          default = "/var/cache/huggingface";
          example = "/data/models";
          description = ''
            Like `HF_HOME`: the hub cache is the `hub` directory inside it
            (`/var/cache/huggingface/hub` by default), and that is what
            {option}`services.model-repo.environment` sets `HF_HUB_CACHE` to.
            Setting `HF_HOME` to this directory works too, but
            `HF_HUB_CACHE` leaves the rest of a service's Hugging Face state
            (token, xet cache) where it was.
          '';
        };
        offlineMode = mkOption {
          type = types.bool;
          default = true;
          description = ''
            Whether {option}`services.model-repo.environment` contains
            `HF_HUB_OFFLINE=1` and `TRANSFORMERS_OFFLINE=1`.
          '';
        };
      };

      user = mkOption {
        type = types.str;
        default = "root";
        description = "User that runs the `model-repo` service and owns the hub cache directories.";
      };

      group = mkOption {
        type = types.str;
        default = "model-repo";
        description = ''
          Group that owns the hub cache directories (setgid, mode 2775); add the
          users of services that load models to it.
        '';
      };

      createGroup = mkOption {
        type = types.bool;
        default = true;
        description = "Whether to create {option}`services.model-repo.group`.";
      };

      auth.tokenFile = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "/run/secrets/hf-token";
        description = ''
          File with a Hub token. The models themselves are fetched at build
          time (see each model's `auth`); this path is exported as
          `HF_TOKEN_PATH` in {option}`services.model-repo.environment`, for
          services that talk to the Hub at run time.
        '';
      };

      environment = mkOption {
        type = types.attrsOf types.str;
        readOnly = true;
        example = literalExpression "{ systemd.services.vllm.environment = config.services.model-repo.environment; }";
        description = ''
          Environment for services that load the models: `HF_HUB_CACHE`,
          `HF_HUB_OFFLINE`, `TRANSFORMERS_OFFLINE` and one `MODEL_REPO_<NAME>`
          (store path) per model. Merge it into a unit's `environment`.
        '';
      };
    }
    // common.sharedOptions cfg
    // common.readOnlyOptions opt;

  config = mkMerge [
    {
      services.model-repo = {
        modelPaths = r.drvs;
        inherit (r) manifest manifestFile;
        environment = serviceEnvironment;
      };
    }
    (mkIf cfg.enable {
      assertions = r.assertions ++ [
        {
          assertion = !lib.hasPrefix "${builtins.storeDir}/" hf.cacheDir;
          message = "${opt}.integration.huggingface.cacheDir must be a writable directory outside the Nix store (got ${hf.cacheDir}).";
        }
      ];
      warnings = r.warnings;

      users.groups = mkIf cfg.createGroup { ${cfg.group} = { }; };

      systemd.tmpfiles.rules = mkIf hf.enable [
        "d ${hf.cacheDir} 2775 ${cfg.user} ${cfg.group} - -"
        "d ${hubDir} 2775 ${cfg.user} ${cfg.group} - -"
      ];

      systemd.services.model-repo = mkIf (hf.enable && r.anyLinked) {
        description = "Link declared Hugging Face models into ${hubDir}";
        wantedBy = [ "multi-user.target" ];
        after = [
          "local-fs.target"
          "systemd-tmpfiles-setup.service"
        ];
        environment.MODEL_REPO_STATE_DIR = stateDir;
        serviceConfig = {
          Type = "oneshot";
          RemainAfterExit = true;
          User = cfg.user;
          Group = cfg.group;
          UMask = "0002";
          StateDirectory = "model-repo";
          ExecStart = "${lib.getExe cfg.package} activate --manifest ${escapeShellArg "${r.manifestFile}"} --log-format json";
        };
      };
    })
  ];
}
