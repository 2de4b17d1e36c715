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

  # HF_HOME-like, as in the NixOS and devenv modules: the hub cache is <cacheDir>/hub.
  cacheDir = if hf.cacheDir == null then null else common.stripTrailingSlashes hf.cacheDir;
  hubDir = if cacheDir == null then null else common.hubOf cacheDir;
  stateDir = "${config.xdg.stateHome}/model-repo";
  profile = "home-manager";

  r = common.resolve {
    inherit pkgs cfg opt profile;
    linkEnabled = hf.enable;
    cacheDir = hubDir;
    offline = hf.enable && hf.offlineMode;
    datasetsCacheDir = if cacheDir == null then null else "${cacheDir}/datasets";
  };

  exe = lib.getExe cfg.package;

  sessionVars =
    r.envVars
    // lib.optionalAttrs (hf.enable && hf.offlineMode) common.offlineVars
    // lib.optionalAttrs (hf.enable && hubDir != null) { HF_HUB_CACHE = hubDir; }
    // lib.optionalAttrs (r.anyPrepared && cacheDir != null) {
      HF_DATASETS_CACHE = "${cacheDir}/datasets";
    };

  # Home Manager's own test (modules/lib-bash/activation-init.sh: `[[ -v DRY_RUN ]]`):
  # DRY_RUN set, even to the empty string, means a dry run.
  dryRunArg = "\${DRY_RUN+--dry-run}";

  # Enabled: link what the manifest lists and prune what this profile linked before
  # and no longer lists (an empty model set prunes everything), on every switch.
  activateEntry = ''
    modelRepoStatus=0
    # stdout is the environment, already in home.sessionVariables; logs stay on stderr.
    ${exe} activate --manifest ${escapeShellArg "${r.manifestFile}"} --state-dir ${escapeShellArg stateDir} ${dryRunArg} $VERBOSE_ARG >/dev/null || modelRepoStatus=$?
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
  '';

  # Disabled (or never enabled): remove the links and restore the refs of the
  # profile when a state file exists in its state dir. Without one this costs one
  # glob and starts nothing. Any state file in the dir counts (the cheap test);
  # `deactivate` then acts only on this profile's own state.
  deactivateEntry = ''
    for modelRepoState in ${escapeShellArg stateDir}/*.json; do
      if [ -e "$modelRepoState" ]; then
        modelRepoStatus=0
        if [ -n "$VERBOSE_ARG" ] || [ -n "''${DRY_RUN+x}" ]; then modelRepoLevel=$VERBOSE_ARG; else modelRepoLevel=--quiet; fi
        ${exe} deactivate --profile ${profile} --state-dir ${escapeShellArg stateDir} ${dryRunArg} $modelRepoLevel || modelRepoStatus=$?
        case "$modelRepoStatus" in
          0) ;;
          1) warnEcho "model-repo: some links of the disabled module could not be removed (see above); activation continues." ;;
          *) errorEcho "model-repo: removing the links of the disabled module failed (exit $modelRepoStatus, see above); activation continues." ;;
        esac
        unset modelRepoStatus modelRepoLevel
      fi
      break
    done
    unset modelRepoState
  '';
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
          example = literalExpression ''"''${config.xdg.cacheHome}/huggingface"'';
          description = ''
            Like `HF_HOME` (the same meaning as in the NixOS and devenv modules,
            seed 000): the hub cache is its `hub` subfolder, exported as
            `HF_HUB_CACHE` (never `HF_HOME`, so the token and the rest of
            huggingface_hub's state stay where they are). An absolute path; a
            trailing slash is accepted. A value whose last component is `hub`
            gets a warning, since models would go to `…/hub/hub`.

            When null, the activator uses the hub cache huggingface_hub would
            use (`HF_HUB_CACHE`, `HF_HOME/hub`, `XDG_CACHE_HOME/huggingface/hub`,
            else `~/.cache/huggingface/hub`, on macOS too) and nothing is exported.
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
            Whether to link the models during Home Manager activation (and
            prune what the profile no longer lists). When false, run
            `model-repo activate --manifest <manifest>` yourself.
          '';
        };
      };

      installCommand = common.installCommandOption "`home.packages`";
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
            ${opt}.integration.huggingface.cacheDir must be an absolute path (got "${toString hf.cacheDir}"); e.g. "''${config.xdg.cacheHome}/huggingface" (HF_HOME-like: the hub cache is its hub subfolder).'';
        }
      ];
      warnings = r.warnings ++ lib.optionals (cacheDir != null) (common.hubSuffixWarning "${opt}.integration.huggingface.cacheDir" cacheDir);

      home.packages = mkIf cfg.installCommand [ cfg.package ];

      home.sessionVariables = sessionVars;
      # systemd user services (an inference server run as a user unit) do not read
      # hm-session-vars.sh; on Linux they get the same variables. Not on darwin.
      systemd.user.sessionVariables = mkIf pkgs.stdenv.hostPlatform.isLinux sessionVars;

      # Runs after linkGeneration, whenever the module is enabled, even with no
      # model to link: dropping the last model or switching integration off
      # prunes. The manifest's store path in this script keeps every model alive
      # for as long as the generation exists.
      home.activation.model-repo = mkIf hf.setupOnActivation (
        lib.hm.dag.entryAfter [ "linkGeneration" ] activateEntry
      );
    })
    # The module disabled after having been enabled: the next switch removes the
    # profile's links and gives back the refs it had taken over.
    (mkIf (!cfg.enable) {
      home.activation.model-repo = lib.hm.dag.entryAfter [ "linkGeneration" ] deactivateEntry;
    })
  ];
}
