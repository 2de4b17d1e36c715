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
  # HF_HOME-like (seed 000), as in the Home Manager and devenv modules.
  cacheDir = common.stripTrailingSlashes hf.cacheDir;
  hubDir = common.hubOf cacheDir;
  stateDir = "/var/lib/model-repo";
  exe = lib.getExe cfg.package;

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
          type = types.strMatching "/.*";
          default = "/var/cache/huggingface";
          example = "/data/models";
          description = ''
            Like `HF_HOME` (the same meaning in the Home Manager and devenv
            modules, seed 000): the hub cache is the `hub` directory inside it
            (`/var/cache/huggingface/hub` by default), and that is what
            {option}`services.model-repo.environment` sets `HF_HUB_CACHE` to.
            An absolute path; a trailing slash is accepted; a last component
            `hub` gets a warning (models would go to `…/hub/hub`). Setting
            `HF_HOME` to this directory works too, but `HF_HUB_CACHE` leaves the
            rest of a service's Hugging Face state (token, xet cache) where it was.
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
        type = types.nullOr (types.strMatching "/.*");
        default = null;
        example = "/run/secrets/hf-token";
        description = ''
          File with a Hub token (seed 000). It is the default
          `auth.tokenFile` of every model with a `source.huggingface` that sets
          neither `auth.tokenFile` nor `auth.tokenEnvVar` and fetches from the
          Hub (`source.huggingface.endpoint` = `https://huggingface.co`; another
          endpoint only with the model's `auth.moduleTokenForEndpoint = true`),
          so gated and private
          repos fetch at build time (the build users must be able to read it,
          and with the sandbox on it must be in `nix.settings.extra-sandbox-paths`).
          It is also exported as `HF_TOKEN_PATH` in
          {option}`services.model-repo.environment`, for services that talk to
          the Hub at run time.
        '';
      };

      installCommand = common.installCommandOption "`environment.systemPackages`";

      setSessionVariables = mkOption {
        type = types.bool;
        default = false;
        description = ''
          Whether to export {option}`services.model-repo.environment`
          (`HF_HUB_CACHE`, the offline pair, `MODEL_REPO_<NAME>`, `HF_TOKEN_PATH`)
          to interactive users' sessions through `environment.sessionVariables`,
          as the services that merge it into their `environment` get it.
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
          assertion = !lib.hasPrefix "${builtins.storeDir}/" cacheDir;
          message = "${opt}.integration.huggingface.cacheDir must be a writable directory outside the Nix store (got ${hf.cacheDir}).";
        }
      ];
      warnings = r.warnings ++ common.hubSuffixWarning "${opt}.integration.huggingface.cacheDir" cacheDir;

      users.groups = mkIf cfg.createGroup { ${cfg.group} = { }; };

      environment.systemPackages = mkIf cfg.installCommand [ cfg.package ];
      environment.sessionVariables = mkIf cfg.setSessionVariables serviceEnvironment;

      systemd.tmpfiles.rules = mkIf hf.enable [
        "d ${cacheDir} 2775 ${cfg.user} ${cfg.group} - -"
        "d ${hubDir} 2775 ${cfg.user} ${cfg.group} - -"
      ];

      # Whenever the module is enabled, even with no model left to link: a new
      # manifest changes the unit, so `nixos-rebuild switch` reruns it and it
      # prunes what the profile no longer lists.
      systemd.services.model-repo = {
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
          ExecStart = "${exe} activate --manifest ${escapeShellArg "${r.manifestFile}"} --log-format json";
          # Exit 1 (partial: a model blocked by something in its place, reported
          # in the journal; the others linked) counts as success, so services
          # that require this unit but not the blocked model still start.
          SuccessExitStatus = "1";
        };
      };
    })
    # The module disabled after having been enabled: the next switch starts this
    # unit (the same name, changed), which removes the profile's links and
    # restores the refs it had taken over. systemd tests for a state file first:
    # without one nothing is started.
    (mkIf (!cfg.enable) {
      systemd.services.model-repo = {
        description = "Remove the links of the disabled model-repo module";
        wantedBy = [ "multi-user.target" ];
        after = [ "local-fs.target" ];
        unitConfig.ConditionPathExistsGlob = "${stateDir}/*.json";
        environment.MODEL_REPO_STATE_DIR = stateDir;
        serviceConfig = {
          Type = "oneshot";
          RemainAfterExit = true;
          User = cfg.user;
          StateDirectory = "model-repo";
          ExecStart = "${exe} deactivate --profile nixos --log-format json";
          SuccessExitStatus = "1";
        };
      };
    })
  ];
}
