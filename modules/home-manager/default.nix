# Home Manager module: programs.model-repo.
# Also usable from nix-darwin through home-manager.sharedModules (no systemd.*).
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

  opt = "programs.model-repo";
  cfg = config.programs.model-repo;
  hf = cfg.integration.huggingface;

  r = common.resolve {
    inherit pkgs cfg opt;
    linkEnabled = hf.enable;
    profile = "home-manager";
    cacheDir = hf.cacheDir;
    offline = hf.enable && hf.offlineMode;
  };

  exe = lib.getExe cfg.package;

  sessionVars =
    r.envVars
    // lib.optionalAttrs (hf.enable && hf.offlineMode) common.offlineVars
    // lib.optionalAttrs (hf.enable && hf.cacheDir != null) { HF_HUB_CACHE = hf.cacheDir; };
in
{
  meta.maintainers = [ ];

  options.programs.model-repo =
    {
      enable = mkEnableOption "declarative Hugging Face models in the Nix store, linked into the hub cache";

      package = common.packageOption pkgs;

      integration.huggingface = {
        enable = mkOption {
          type = types.bool;
          default = true;
          description = ''
            Whether to link the models into the hub cache, so that
            `from_pretrained("ORG/NAME")` and `hf_hub_download` find them
            without network. When false, only `MODEL_REPO_<NAME>` is set.
          '';
        };
        cacheDir = mkOption {
          type = types.nullOr types.str;
          default = null;
          example = literalExpression ''"''${config.xdg.cacheHome}/huggingface/hub"'';
          description = ''
            The hub cache directory itself (what `HF_HUB_CACHE` names, not
            `HF_HOME`). When null, the activator uses the directory
            huggingface_hub would use (`HF_HUB_CACHE`, `HF_HOME/hub`,
            `XDG_CACHE_HOME/huggingface/hub`, else `~/.cache/huggingface/hub`,
            on macOS too) and no variable is exported. When set, it must be an
            absolute path and `HF_HUB_CACHE` is exported with it.
          '';
        };
        offlineMode = mkOption {
          type = types.bool;
          default = true;
          description = ''
            Whether to export `HF_HUB_OFFLINE=1` and `TRANSFORMERS_OFFLINE=1`,
            so that libraries load the linked snapshots without asking the Hub.
            Set to false to download other models as usual.
          '';
        };
        setupOnActivation = mkOption {
          type = types.bool;
          default = true;
          description = ''
            Whether to link the models during Home Manager activation. When
            false, run `model-repo activate --manifest <manifest>` yourself.
          '';
        };
      };
    }
    // common.sharedOptions cfg
    // common.readOnlyOptions opt;

  config = mkMerge [
    {
      programs.model-repo = {
        modelPaths = r.drvs;
        inherit (r) manifest manifestFile;
      };
    }
    (mkIf cfg.enable {
      assertions = r.assertions ++ [
        {
          assertion = hf.cacheDir == null || lib.hasPrefix "/" hf.cacheDir;
          message = ''
            ${opt}.integration.huggingface.cacheDir must be an absolute path (got "${toString hf.cacheDir}"); e.g. "''${config.xdg.cacheHome}/huggingface/hub".'';
        }
      ];
      warnings = r.warnings;

      home.sessionVariables = sessionVars;
      # systemd user services (an inference server run as a user unit) do not read
      # hm-session-vars.sh; on Linux they get the same variables. Not on darwin.
      systemd.user.sessionVariables = mkIf pkgs.stdenv.hostPlatform.isLinux sessionVars;

      # Runs after linkGeneration; the manifest's store path in this script keeps
      # every model alive for as long as the generation exists.
      home.activation.model-repo = mkIf (hf.enable && hf.setupOnActivation && r.anyLinked) (
        lib.hm.dag.entryAfter [ "linkGeneration" ] ''
          modelRepoStatus=0
          # stdout is the environment, already in home.sessionVariables; logs stay on stderr.
          ${exe} activate --manifest ${escapeShellArg "${r.manifestFile}"} --state-dir ${escapeShellArg "${config.xdg.stateHome}/model-repo"} ''${DRY_RUN:+--dry-run} $VERBOSE_ARG >/dev/null || modelRepoStatus=$?
          case "$modelRepoStatus" in
            0) ;;
            1) warnEcho "model-repo: some models were not linked into the hub cache (see above); activation continues." ;;
            3) errorEcho "model-repo: the hub cache could not be updated (lock timeout or unwritable directory, see above); activation continues, models are not linked." ;;
            *)
              errorEcho "model-repo: the activator rejected its manifest (exit $modelRepoStatus); stopping activation."
              exit "$modelRepoStatus"
              ;;
          esac
          unset modelRepoStatus
        ''
      );
    })
  ];
}
