# The contributors' flake: the checks of tests/nix against pinned Home Manager,
# devenv and nixpkgs. Users never fetch these inputs: the main flake has only
# nixpkgs. Run from the repository root:
#
#   nix flake check ./dev
#   nix develop ./dev        # the same shell as the main flake's devShells.default
#
# `path:..` is resolved relative to this folder by Nix >= 2.26 (relative path
# inputs); with an older Nix add `--override-input model-repo path:$PWD`.
{
  description = "model-repo checks (Home Manager, devenv and NixOS module evaluations, buildCache, the package)";

  inputs = {
    # The main flake, by path: the checks test this checkout.
    model-repo.url = "path:..";
    nixpkgs.follows = "model-repo/nixpkgs";
    # Plain source trees, pinned by commit (the revisions of tests' archives).
    home-manager = {
      url = "github:nix-community/home-manager/ec1a8fdf74ed3f276148ee106299a2ba0e65d51f";
      flake = false;
    };
    devenv = {
      url = "github:cachix/devenv/5844e78c960ab73bb92e131bc2902b39b9ee52dd";
      flake = false;
    };
  };

  outputs =
    {
      model-repo,
      nixpkgs,
      home-manager,
      devenv,
      ...
    }:
    let
      inherit (nixpkgs) lib;
      systems = builtins.attrNames model-repo.packages;
      forAllSystems = f: lib.genAttrs systems (system: f system nixpkgs.legacyPackages.${system});
    in
    {
      checks = forAllSystems (
        system: pkgs:
        import (model-repo + "/tests/nix/checks.nix") {
          inherit pkgs system;
          nixpkgsLib = nixpkgs + "/lib";
          pkgsPath = nixpkgs.outPath;
          homeManager = home-manager.outPath;
          devenv = devenv.outPath;
          activator = model-repo.packages.${system}.default;
        }
      );

      devShells = lib.mapAttrs (_: shells: { inherit (shells) default; }) model-repo.devShells;
    };
}
