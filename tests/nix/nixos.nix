# Evaluates the NixOS module with nixpkgs' lib.evalModules and stub
# declarations of the NixOS options it sets (systemd, users, assertions).
{
  nixpkgsLib,
  system ? "x86_64-linux",
  userModule ? { },
  fetchResults ? { },
  realStorePaths ? false,
}:

let
  lib = import nixpkgsLib;
  pkgs = import ./stubs/pkgs.nix {
    inherit
      lib
      system
      fetchResults
      realStorePaths
      ;
  };
  inherit (lib) mkOption types;
  freeform = types.submodule { freeformType = types.attrsOf types.anything; };

  # Declarations with the same names and shapes as NixOS's.
  nixosStubs = {
    options = {
      assertions = mkOption {
        type = types.listOf types.unspecified;
        default = [ ];
      };
      warnings = mkOption {
        type = types.listOf types.str;
        default = [ ];
      };
      meta = mkOption {
        type = types.lazyAttrsOf types.raw;
        default = { };
      };
      users.users = mkOption {
        type = types.attrsOf freeform;
        default = { };
      };
      users.groups = mkOption {
        type = types.attrsOf freeform;
        default = { };
      };
      environment.systemPackages = mkOption {
        type = types.listOf types.package;
        default = [ ];
      };
      environment.sessionVariables = mkOption {
        type = types.attrsOf types.str;
        default = { };
      };
      systemd.tmpfiles.rules = mkOption {
        type = types.listOf types.str;
        default = [ ];
      };
      systemd.services = mkOption {
        type = types.attrsOf (
          types.submodule {
            freeformType = types.attrsOf types.anything;
            options = {
              environment = mkOption {
                type = types.attrsOf types.str;
                default = { };
              };
              serviceConfig = mkOption {
                type = types.attrsOf types.anything;
                default = { };
              };
              after = mkOption {
                type = types.listOf types.str;
                default = [ ];
              };
              requires = mkOption {
                type = types.listOf types.str;
                default = [ ];
              };
              wantedBy = mkOption {
                type = types.listOf types.str;
                default = [ ];
              };
            };
          }
        );
        default = { };
      };
    };
  };

  eval = lib.evalModules {
    class = "nixos";
    specialArgs.modulesPath = "/nixos-modules";
    modules = [
      nixosStubs
      { _module.args.pkgs = pkgs; }
      ../../modules/nixos
      userModule
    ];
  };
  cfg = eval.config;
in
{
  services = lib.mapAttrs (_: s: {
    inherit (s)
      environment
      serviceConfig
      after
      requires
      wantedBy
      ;
    description = s.description or null;
    unitConfig = s.unitConfig or { };
  }) cfg.systemd.services;
  systemPackages = map toString cfg.environment.systemPackages;
  sessionVariables = cfg.environment.sessionVariables;
  groups = builtins.attrNames cfg.users.groups;
  users = lib.mapAttrs (_: u: { extraGroups = u.extraGroups or [ ]; group = u.group or null; }) cfg.users.users;
  tmpfiles = cfg.systemd.tmpfiles.rules;
  # What a test's module puts in its own option `probe` (null: none).
  probe = cfg.probe or null;
  failedAssertions = map (a: a.message) (builtins.filter (a: !a.assertion) cfg.assertions);
  warnings = cfg.warnings;
  environment = cfg.services.model-repo.environment;
  manifest = cfg.services.model-repo.manifest;
  manifestFile = "${cfg.services.model-repo.manifestFile}";
  modelPaths = lib.mapAttrs (_: p: "${p}") cfg.services.model-repo.modelPaths;
  # The auth.tokenFile each model ends up with (the module-wide default or its own).
  tokenFiles = lib.mapAttrs (_: m: m.auth.tokenFile) cfg.services.model-repo.models;
  fetchArgs = lib.mapAttrs (
    _: p: builtins.removeAttrs (p.fetchArgs or { }) [ "passthru" ]
  ) cfg.services.model-repo.modelPaths;
  # Per-file models: each file's fetchurl netrcPhase (null: no token sent).
  fileNetrc = lib.mapAttrs (
    _: p: lib.mapAttrs (_: f: f.fetchArgs.netrcPhase or null) (p.files or { })
  ) cfg.services.model-repo.modelPaths;
}
