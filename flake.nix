{
  description = "model-repo: declarative Hugging Face models for Nix (Home Manager, nix-darwin, devenv, NixOS)";

  # The only input a user's lock file gets. The checks, with their pinned Home
  # Manager and devenv inputs, live in ./dev (a flake of their own).
  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs =
    { self, nixpkgs, ... }:
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
      # `homeModules` is the output name Home Manager's flake and its users read now;
      # `homeManagerModules` stays as an alias for configurations written before.
      homeModules.default = ./modules/home-manager;
      homeManagerModules = self.homeModules;
      devenvModules.default = ./modules/devenv;
      nixosModules.default = ./modules/nixos;

      packages = forAllSystems (
        system: pkgs: rec {
          # Every subcommand (prefetch and ls included) and the shell completions.
          model-repo = pkgs.callPackage ./lib/package.nix { };
          # The name of the package with huggingface_hub before it was the only one.
          model-repo-full = model-repo;
          default = model-repo;
        }
      );

      # `nix run github:OWNER/model-repo -- prefetch ORG/NAME`
      apps = forAllSystems (
        system: _pkgs: {
          default = {
            type = "app";
            program = lib.getExe self.packages.${system}.default;
            meta.description = "model-repo: prefetch, ls, activate, status, deactivate, …";
          };
        }
      );

      # `nix develop`: what the test suite needs (Nix, the shells the output
      # formats are tested with, Python with the runtime and test dependencies).
      devShells = forAllSystems (
        system: pkgs: {
          default = pkgs.mkShell {
            packages = [
              (pkgs.python3.withPackages (
                ps: with ps; [
                  pydantic
                  platformdirs
                  filelock
                  structlog
                  huggingface-hub
                  pytest
                  hypothesis
                  jsonschema
                  python-dotenv
                  transformers
                ]
              ))
              pkgs.nix
              pkgs.git
              pkgs.zsh
              pkgs.fish
              pkgs.dash
            ];
          };
        }
      );

      # nixfmt-tree (`nix fmt` formats the whole tree with nixfmt), in every nixpkgs since
      # 25.05; nixfmt-rfc-style is a deprecated alias of nixfmt from 25.11 (a warning on
      # every evaluation that touches it), and a bare nixfmt needs paths to be given.
      formatter = forAllSystems (_: pkgs: pkgs.nixfmt-tree);
    };
}
