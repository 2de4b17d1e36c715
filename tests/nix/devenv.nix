# Evaluates the devenv module inside devenv's real module set
# (src/modules/top-level.nix, which imports every language, service,
# integration and process manager) with a stub pkgs.
{
  nixpkgsLib,
  devenv, # path: a devenv source tree
  system ? "x86_64-linux",
  root ? "/home/alice/project",
  cliVersion ? "2.0.5", # null: flakes integration
  userModule ? { },
  fetchResults ? { },
  realStorePaths ? false,
  hostCoreutils ? false,
}:

let
  lib = import nixpkgsLib;
  pkgs = import ./stubs/pkgs.nix {
    inherit
      lib
      system
      fetchResults
      realStorePaths
      hostCoreutils
      ;
  };

  eval = lib.evalModules {
    class = "devenv";
    specialArgs = {
      inputs = { };
    };
    modules = [
      (devenv + "/src/modules/top-level.nix")
      {
        _module.args.pkgs = pkgs;
        devenv.root = root;
        devenv.cli.version = cliVersion;
        devenv.flakesIntegration = cliVersion == null;
        devenv.warnOnNewVersion = false;
        devenv.tmpdir = "/tmp";
      }
      ../../modules/devenv
      userModule
    ];
  };
  cfg = eval.config;
  task = cfg.tasks."model-repo:link" or null;
in
{
  task =
    if task == null then
      null
    else
      {
        inherit (task)
          exec
          status
          before
          after
          ;
      };
  taskNames = builtins.attrNames cfg.tasks;
  env = lib.filterAttrs (
    n: _: lib.hasPrefix "MODEL_REPO_" n || lib.hasPrefix "HF_" n || n == "TRANSFORMERS_OFFLINE"
  ) cfg.env;
  devenvState = cfg.devenv.state;
  hubDir = cfg.services.model-repo.hubDir;
  # The merged enterShell needs a real nixpkgs (devenv's own parts build a
  # profile), so report how linking runs and what the module would add.
  linkVia = cfg.services.model-repo.linkVia;
  enterShellFallback = cfg.services.model-repo.enterShellFallback;
  linkExec = cfg.services.model-repo.linkExec;
  linkStatus = cfg.services.model-repo.linkStatus;
  # What our module adds to `packages` (devenv's own entries need a real nixpkgs:
  # read only the definitions our module file made).
  packages = map toString (
    lib.concatMap (d: d.value) (
      builtins.filter (d: lib.hasInfix "/modules/devenv" (toString d.file)) eval.options.packages.definitionsWithLocations
    )
  );
  # What a test's module puts in its own option `probe` (null: none).
  probe = cfg.probe or null;
  failedAssertions = map (a: a.message) (
    builtins.filter (a: !a.assertion && lib.hasInfix "model-repo" a.message) cfg.assertions
  );
  warnings = builtins.filter (w: lib.hasInfix "model-repo" w) cfg.warnings;
  manifest = cfg.services.model-repo.manifest;
  manifestFile = "${cfg.services.model-repo.manifestFile}";
  modelPaths = lib.mapAttrs (_: p: "${p}") cfg.services.model-repo.modelPaths;
}
