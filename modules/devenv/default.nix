# devenv module: services.model-repo. Links the models into a per-project hub
# cache (under .devenv/state by default) with a task that runs before the shell
# starts, and skips Python entirely when every link is already in place.
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
  naming = common.mr.naming;

  opt = "services.model-repo";
  cfg = config.services.model-repo;
  root = config.devenv.root;
  profile = "devenv:${root}";

  # HF_HOME-like, as in the Home Manager and NixOS modules: the hub cache is
  # <cacheDir>/hub. Relative values are taken relative to the project root.
  absolute = p: if lib.hasPrefix "/" p then p else "${root}/${lib.removePrefix "./" p}";
  cacheDir = common.stripTrailingSlashes (absolute cfg.cacheDir);
  hubDir = common.hubOf cacheDir;
  stateDir = "${config.devenv.state}/model-repo";
  # The manifest of the last complete run of the task (written by the task, read
  # by its status): a changed model set, an emptied one included, reruns the task.
  stamp = "${stateDir}/devenv-task-manifest";

  r = common.resolve {
    inherit pkgs cfg opt profile;
    linkEnabled = cfg.linkToHuggingFace;
    cacheDir = hubDir;
    offline = cfg.linkToHuggingFace && cfg.offlineMode;
    datasetsCacheDir = "${cacheDir}/datasets";
  };

  cli = config.devenv.cli.version or null;
  useTask = cli != null && lib.versionAtLeast cli "2.0";

  readlink = "${pkgs.coreutils}/bin/readlink";
  cat = "${pkgs.coreutils}/bin/cat";
  exe = lib.getExe cfg.package;
  q = escapeShellArg;

  # Exit 0 only when the last complete run had this very manifest, every snapshot
  # link points at its store path (and that path exists) or every file of it is
  # reached through the snapshot directory, and every ref file holds
  # exactly its commit. Pure shell, generated here, so a repeat shell entry starts
  # no Python.
  linkChecks =
    [ ''[ "$(${cat} ${q stamp} 2>/dev/null)" = ${q "${r.manifestFile}"} ]'' ]
    ++ lib.concatLists (
      lib.mapAttrsToList (
        _: e:
        let
          repoDir = "${hubDir}/${naming.hubFolderName { inherit (e) repoId repoType; }}";
          snap = q "${repoDir}/snapshots/${e.revision}";
        in
        lib.optionals e.link (
          [
            # A whole link, or (the activator's layout rule: a store not mounted
            # read-only, or a partial model) a real directory through which every file
            # of the store path is a regular file (bash's globstar: no find).
            (
              ''[ -d ${snap} ] && { [ "$(${readlink} ${snap})" = ${q e.path} ] || { [ ! -L ${snap} ] && ''
              + ''(shopt -s globstar dotglob nullglob; cd ${q e.path} || exit 1; for f in **; do ''
              + ''[ -d "$f" ] || [ -f ${snap}/"$f" ] || exit 1; done); }; }''
            )
          ]
          ++ map (
            ref:
            ''[ "$(${cat} ${q "${repoDir}/refs/${ref}"} 2>/dev/null; printf x)" = ${q "${e.revision}x"} ]''
          ) e.refs
        )
      ) r.entries
    );
  statusScript = lib.concatStringsSep " &&\n" linkChecks + "\n";

  # Link, prune what the profile no longer lists, then record the manifest. The
  # state dir is the project's own (given explicitly, the no-op path skips
  # platformdirs). Exit 1 (partial: some model blocked, the others linked) is a
  # warning and success, so the shell and tasks after this one go on; the stamp is
  # not written, so the next shell entry tries again. 2, 3, 70 fail the task.
  taskExec = ''
    modelRepoStatus=0
    ${exe} activate --manifest ${q "${r.manifestFile}"} --state-dir ${q stateDir} --quiet || modelRepoStatus=$?
    case "$modelRepoStatus" in
      0) printf '%s' ${q "${r.manifestFile}"} > ${q "${stamp}.tmp"} && mv -f ${q "${stamp}.tmp"} ${q stamp} ;;
      1) echo "model-repo: some models could not be linked into ${hubDir} (see above); the others are linked, the shell opens" >&2 ;;
      *)
        echo "model-repo: linking models into ${hubDir} failed (exit $modelRepoStatus); loading by repo id may not find them" >&2
        exit "$modelRepoStatus"
        ;;
    esac
  '';

  # Disabled module: remove the profile's links and restore refs, once. Runs only
  # while the stamp or a state file exists (a file test and a glob in a subshell,
  # so the caller's positional parameters are untouched; no program started).
  disabledStatus = ''! ( [ -e ${q stamp} ] || { set -- ${q stateDir}/*.json; [ -e "$1" ]; } )'' + "\n";
  disabledExec = ''
    modelRepoStatus=0
    ${exe} deactivate --profile ${q profile} --state-dir ${q stateDir} --quiet || modelRepoStatus=$?
    case "$modelRepoStatus" in
      0) rm -f ${q stamp} ;;
      *) echo "model-repo: removing the links of the disabled module from ${hubDir} failed (exit $modelRepoStatus, see above)" >&2; exit "$modelRepoStatus" ;;
    esac
  '';

  # Older CLIs and the flakes integration: the same in enterShell, in a subshell so
  # that nothing it does can end the user's shell.
  fallback = status: exec: ''
    if ! { ${status} }; then
      ( ${exec} ) || true
    fi
  '';
  fallbackShell = fallback statusScript taskExec;
  disabledFallbackShell = fallback disabledStatus disabledExec;

  # The Home Manager / NixOS spelling, so a block copied from one module works here.
  alias = from: to: lib.mkAliasOptionModule [ "services" "model-repo" "integration" "huggingface" from ] [ "services" "model-repo" to ];
in
{
  imports = [
    (alias "enable" "linkToHuggingFace")
    (alias "cacheDir" "cacheDir")
    (alias "offlineMode" "offlineMode")
  ];

  options.services.model-repo =
    {
      enable = mkEnableOption "declarative Hugging Face models in the Nix store, linked into a project hub cache";

      package = common.packageOption pkgs;

      cacheDir = mkOption {
        type = types.str;
        default = "${config.devenv.state}/model-repo";
        defaultText = literalExpression ''"''${config.devenv.state}/model-repo"'';
        example = ".cache/huggingface";
        description = ''
          Like `HF_HOME` (the same meaning as in the Home Manager and NixOS
          modules, seed 001): the hub cache is its `hub` subfolder
          (`.devenv/state/model-repo/hub` by default), exported as
          `HF_HUB_CACHE`, never `HF_HOME`. A relative value is taken relative
          to the project root ({option}`devenv.root`); a trailing slash is
          accepted; a last component `hub` gets a warning (models would go to
          `…/hub/hub`). Also settable as
          `services.model-repo.integration.huggingface.cacheDir`.
        '';
      };

      linkToHuggingFace = mkOption {
        type = types.bool;
        default = true;
        description = ''
          Whether to link the models into {option}`services.model-repo.cacheDir`
          and export `HF_HUB_CACHE`, so that loading by repo id works. When
          false, only `MODEL_REPO_<NAME>` is set (and what the project had
          linked is removed on the next shell entry). Also settable as
          `services.model-repo.integration.huggingface.enable`.
        '';
      };

      offlineMode = mkOption {
        type = types.bool;
        default = true;
        description = ''
          Whether to export `HF_HUB_OFFLINE=1` and `TRANSFORMERS_OFFLINE=1` in the
          shell. Also settable as `services.model-repo.integration.huggingface.offlineMode`.
        '';
      };

      installCommand = common.installCommandOption "the shell's `packages`";
    }
    // common.sharedOptions cfg
    // common.readOnlyOptions opt
    // {
      hubDir = mkOption {
        type = types.str;
        readOnly = true;
        internal = true;
        description = "The absolute hub cache directory.";
      };
      linkStatus = mkOption {
        type = types.str;
        readOnly = true;
        internal = true;
        description = "The shell that decides whether the task can be skipped (exit 0: skip).";
      };
      linkExec = mkOption {
        type = types.str;
        readOnly = true;
        internal = true;
        description = "The task's command: link and prune (enabled) or deactivate (disabled).";
      };
      linkVia = mkOption {
        type = types.enum [
          "task"
          "enterShell"
        ];
        readOnly = true;
        internal = true;
        description = "How the task runs: a devenv task (CLI >= 2.0) or enterShell (older CLIs, flakes).";
      };
      enterShellFallback = mkOption {
        type = types.str;
        readOnly = true;
        internal = true;
        description = "What this module adds to enterShell when tasks cannot be used.";
      };
    };

  config = mkMerge [
    {
      services.model-repo = {
        modelPaths = r.drvs;
        inherit (r) manifest manifestFile;
        inherit hubDir;
        linkStatus = if cfg.enable then statusScript else disabledStatus;
        linkExec = if cfg.enable then taskExec else disabledExec;
        linkVia = if useTask then "task" else "enterShell";
        enterShellFallback = if cfg.enable then fallbackShell else disabledFallbackShell;
      };
    }
    (mkIf cfg.enable {
      assertions = r.assertions;
      warnings = r.warnings ++ common.hubSuffixWarning "${opt}.cacheDir" cacheDir;

      packages = mkIf cfg.installCommand [ cfg.package ];

      env = lib.mapAttrs (_: lib.mkDefault) (
        r.envVars
        // lib.optionalAttrs cfg.linkToHuggingFace { HF_HUB_CACHE = hubDir; }
        // lib.optionalAttrs r.anyPrepared { HF_DATASETS_CACHE = "${cacheDir}/datasets"; }
        // lib.optionalAttrs (cfg.linkToHuggingFace && cfg.offlineMode) common.offlineVars
      );
    })
    # Enabled: the task runs on every shell entry unless its status says the last
    # complete run had this manifest and every link is in place; with no model
    # left it prunes. Disabled: the same task name removes the project's links
    # once, then its status (a file test) skips it.
    (mkIf useTask {
      tasks."model-repo:link" = {
        description =
          if cfg.enable then "Link declared models into ${hubDir}" else "Remove the links of the disabled model-repo module from ${hubDir}";
        exec = config.services.model-repo.linkExec;
        status = config.services.model-repo.linkStatus;
        before = [ "devenv:enterShell" ];
      };
    })
    # devenv < 2.0 and the flakes integration (no CLI version): enterShell.
    (mkIf (!useTask) { enterShell = config.services.model-repo.enterShellFallback; })
  ];
}
