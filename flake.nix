{
  description = "model-repo: declarative Hugging Face models for Nix (Home Manager, nix-darwin, devenv, NixOS)";

  inputs = {
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";
    # Used only by `checks`: the tests evaluate our modules inside these
    # module sets. Plain source trees, pinned by commit.
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
      self,
      nixpkgs,
      home-manager,
      devenv,
      ...
    }:
    let
      inherit (nixpkgs) lib;
      systems = [
        "x86_64-linux"
        "aarch64-linux"
        "x86_64-darwin"
        "aarch64-darwin"
      ];
      forAllSystems = f: lib.genAttrs systems (system: f system nixpkgs.legacyPackages.${system});
    in
    {
      lib = import ./lib { inherit lib; };

      overlays.default = final: _prev: {
        model-repo = final.callPackage ./lib/package.nix { };
      };

      # Each module's `package` defaults to pkgs.model-repo when the overlay is
      # applied, else to a build of ./lib/package.nix with the user's pkgs.
      homeManagerModules.default = ./modules/home-manager;
      devenvModules.default = ./modules/devenv;
      nixosModules.default = ./modules/nixos;

      packages = forAllSystems (
        system: pkgs: rec {
          model-repo = pkgs.callPackage ./lib/package.nix { };
          # With huggingface_hub, for `model-repo prefetch` and `model-repo ls`.
          model-repo-full = pkgs.callPackage ./lib/package.nix { withHub = true; };
          default = model-repo;
        }
      );

      # The evaluation tests of tests/nix, run against the pinned inputs.
      checks = forAllSystems (
        system: pkgs:
        import ./tests/nix/checks.nix {
          inherit pkgs system;
          nixpkgsLib = nixpkgs + "/lib";
          pkgsPath = nixpkgs.outPath;
          homeManager = home-manager.outPath;
          devenv = devenv.outPath;
          activator = self.packages.${system}.default;
        }
      );

      formatter = forAllSystems (_: pkgs: pkgs.nixfmt-tree or pkgs.nixfmt-rfc-style);
    };
}
