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

  # Relative cache directories are taken relative to the project root.
  absolute = p: if lib.hasPrefix "/" p then p else "${root}/${lib.removePrefix "./" p}";
  hubDir = absolute cfg.cacheDir;

  r = common.resolve {
    inherit pkgs cfg opt;
    linkEnabled = cfg.linkToHuggingFace;
    profile = "devenv:${root}";
    cacheDir = hubDir;
    offline = cfg.linkToHuggingFace && cfg.offlineMode;
  };

  cli = config.devenv.cli.version or null;
  useTask = cli != null && lib.versionAtLeast cli "2.0";

  readlink = "${pkgs.coreutils}/bin/readlink";
  cat = "${pkgs.coreutils}/bin/cat";

  # Exit 0 only when every snapshot link points at its store path (and that
  # path exists) and every ref file holds exactly its commit. Pure shell,
  # generated here, so a repeat shell entry starts no Python.
  linkChecks = lib.concatLists (
    lib.mapAttrsToList (
      _: e:
      let
        repoDir = "${hubDir}/${naming.hubFolderName { inherit (e) repoId repoType; }}";
        snap = escapeShellArg "${repoDir}/snapshots/${e.revision}";
      in
      lib.optionals e.link (
        [
          ''[ -d ${snap} ] && [ "$(${readlink} ${snap})" = ${escapeShellArg e.path} ]''
        ]
        ++ map (
          ref:
          ''[ "$(${cat} ${escapeShellArg "${repoDir}/refs/${ref}"} 2>/dev/null; printf x)" = ${escapeShellArg "${e.revision}x"} ]''
        ) e.refs
      )
    ) r.entries
  );
  statusScript = lib.concatStringsSep " &&\n" linkChecks + "\n";

  # The state dir is the project's own (and given explicitly, the no-op path skips
  # platformdirs).
  activateCmd = "${lib.getExe cfg.package} activate --manifest ${escapeShellArg "${r.manifestFile}"} --state-dir ${escapeShellArg "${config.devenv.state}/model-repo"} --quiet";

  fallbackShell = ''
    if ! { ${statusScript} }; then
      ${activateCmd} || echo "model-repo: linking models into ${hubDir} failed (exit $?); loading by repo id may not find them" >&2
    fi
  '';
  linking = cfg.linkToHuggingFace && r.anyLinked;
in
{
  options.services.model-repo =
    {
      enable = mkEnableOption "declarative Hugging Face models in the Nix store, linked into a project hub cache";

      package = common.packageOption pkgs;

      cacheDir = mkOption {
        type = types.str;
        default = "${config.devenv.state}/model-repo/hub";
        defaultText = literalExpression ''"''${config.devenv.state}/model-repo/hub"'';
        example = ".cache/huggingface/hub";
        description = ''
          The hub cache directory itself (exported as `HF_HUB_CACHE`, not
          `HF_HOME`). A relative value is taken relative to the project root
          ({option}`devenv.root`).
        '';
      };

      linkToHuggingFace = mkOption {
        type = types.bool;
        default = true;
        description = ''
          Whether to link the models into {option}`services.model-repo.cacheDir`
          and export `HF_HUB_CACHE`, so that loading by repo id works. When
          false, only `MODEL_REPO_<NAME>` is set.
        '';
      };

      offlineMode = mkOption {
        type = types.bool;
        default = true;
        description = "Whether to export `HF_HUB_OFFLINE=1` and `TRANSFORMERS_OFFLINE=1` in the shell.";
      };
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
        description = "The shell that decides whether linking can be skipped.";
      };
      linkVia = mkOption {
        type = types.enum [
          "task"
          "enterShell"
          "none"
        ];
        readOnly = true;
        internal = true;
        description = "How linking runs: a task (CLI >= 2.0), enterShell (older CLIs, flakes) or not at all.";
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
        linkStatus = statusScript;
        linkVia =
          if !(cfg.enable && linking) then
            "none"
          else if useTask then
            "task"
          else
            "enterShell";
        enterShellFallback = fallbackShell;
      };
    }
    (mkIf cfg.enable (mkMerge [
      {
        assertions = r.assertions;
        warnings = r.warnings;

        env =
          lib.mapAttrs (_: lib.mkDefault) (
            r.envVars
            // lib.optionalAttrs cfg.linkToHuggingFace { HF_HUB_CACHE = hubDir; }
            // lib.optionalAttrs (cfg.linkToHuggingFace && cfg.offlineMode) common.offlineVars
          );
      }
      (mkIf (linking && useTask) {
        tasks."model-repo:link" = {
          description = "Link declared models into ${hubDir}";
          exec = activateCmd;
          status = statusScript;
          before = [ "devenv:enterShell" ];
        };
      })
      # devenv < 2.0 and the flakes integration (no CLI version): enterShell.
      (mkIf (linking && !useTask) { enterShell = fallbackShell; })
    ]))
  ];
}
