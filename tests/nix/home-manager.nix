# Evaluates the Home Manager module inside Home Manager's real, full module set
# with a stub pkgs. Returns plain data for the tests (JSON-able).
{
  nixpkgsLib, # path: nixpkgs' lib/ directory
  homeManager, # path: a Home Manager source tree
  system ? "x86_64-linux",
  userModule ? { },
  fetchResults ? { },
  realStorePaths ? false,
  # Evaluate as nix-darwin does with home-manager.sharedModules (a list of
  # modules imported into every user's Home Manager configuration).
  viaSharedModules ? false,
  pkgsPath ? ./stubs/nixpkgs-path,
}:

let
  baseLib = import nixpkgsLib;
  lib = import (homeManager + "/modules/lib/stdlib-extended.nix") baseLib;
  pkgs = import ./stubs/pkgs.nix {
    inherit
      lib
      system
      fetchResults
      realStorePaths
      pkgsPath
      ;
  };
  hmModule = import ../../modules/home-manager;
  isDarwin = pkgs.stdenv.hostPlatform.isDarwin;
  home = if isDarwin then "/Users/alice" else "/home/alice";

  base = {
    home.username = "alice";
    home.homeDirectory = home;
    home.stateVersion = "25.05";
  };

  # nix-darwin's home-manager module turns sharedModules into imports of each
  # user's submodule; do the same.
  sharedModulesShim =
    { lib, ... }:
    {
      options.home-manager.sharedModules = lib.mkOption {
        type = lib.types.listOf lib.types.raw;
        default = [ ];
      };
    };

  modules =
    import (homeManager + "/modules/modules.nix") {
      inherit lib pkgs;
      check = true;
      useNixpkgsModule = false;
    }
    ++ (
      if viaSharedModules then
        [ { imports = [ hmModule ]; } ]
      else
        [ hmModule ]
    )
    ++ [
      base
      userModule
    ];

  eval = lib.evalModules {
    class = "homeManager";
    specialArgs.modulesPath = homeManager + "/modules";
    inherit modules;
  };
  cfg = eval.config;
  act = cfg.home.activation.model-repo or null;
in
{
  activation =
    if act == null then
      null
    else
      {
        inherit (act) data after before;
      };
  # Names of every activation entry that runs after linkGeneration (the DAG
  # sorted by Home Manager's own lib).
  activationOrder =
    let
      sorted = lib.hm.dag.topoSort cfg.home.activation;
    in
    if sorted ? result then map (e: e.name) sorted.result else null;
  sessionVariables = lib.filterAttrs (
    n: _: lib.hasPrefix "MODEL_REPO_" n || lib.hasPrefix "HF_" n || n == "TRANSFORMERS_OFFLINE"
  ) cfg.home.sessionVariables;
  # What a test's module puts in its own option `probe` (null: none).
  probe = cfg.probe or null;
  failedAssertions = map (a: a.message) (builtins.filter (a: !a.assertion) cfg.assertions);
  warnings = builtins.filter (w: lib.hasInfix "model-repo" w) cfg.warnings;
  manifest = cfg.programs.model-repo.manifest;
  manifestFile = "${cfg.programs.model-repo.manifestFile}";
  modelPaths = lib.mapAttrs (_: p: "${p}") cfg.programs.model-repo.modelPaths;
  fetchArgs = lib.mapAttrs (
    _: p: builtins.removeAttrs (p.fetchArgs or { }) [ "passthru" ]
  ) cfg.programs.model-repo.modelPaths;
  systemdUserUnits = builtins.attrNames (cfg.systemd.user.services or { });
  systemdSessionVariables = lib.filterAttrs (
    n: _: lib.hasPrefix "MODEL_REPO_" n || lib.hasPrefix "HF_" n || n == "TRANSFORMERS_OFFLINE"
  ) (cfg.systemd.user.sessionVariables or { });
  hostPlatform = pkgs.stdenv.hostPlatform.system;
  # What the module puts into home.packages (store paths of model-repo packages).
  # What our module defines for home.packages, read from the module's own
  # mkMerge/mkIf definitions (Home Manager's own entries need a real nixpkgs).
  packages =
    let
      unwrap =
        v:
        if v._type or "" == "merge" then
          lib.concatMap unwrap v.contents
        else if v._type or "" == "if" then
          (if v.condition then unwrap v.content else [ ])
        else
          [ v ];
      ours = (import ../../modules/home-manager { inherit (eval) config; inherit lib pkgs; }).config;
      defs = lib.concatMap (v: unwrap (v.home.packages or [ ])) (unwrap ours);
    in
    map toString (lib.concatLists defs);
  stateHome = cfg.xdg.stateHome;
}
