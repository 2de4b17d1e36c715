# nixpkgs' nixos/modules/services/misc/llama-cpp.nix, only what model-repo's
# wiring depends on: the options model, mmproj, alias, extraFlags, host, port,
# package, and how ExecStart's arguments follow from them (modelPath / mmprojPath /
# modelRef of a fetchFromHuggingFaceGGUF-like model, the flags that switch them off).
# Same expressions as the real module (read there); the hardening settings and the
# modelsDir/modelsPreset options are left out.
{
  config,
  lib,
  pkgs,
  utils,
  ...
}:

let
  cfg = config.services.llama-cpp;

  hasExtraFlag =
    flags:
    builtins.any (
      extraFlag: builtins.any (flag: extraFlag == flag || lib.hasPrefix "${flag}=" extraFlag) flags
    ) cfg.extraFlags;

  modelPath = cfg.model.modelPath or cfg.model;

  alias =
    if cfg.alias != null then
      cfg.alias
    else if
      hasExtraFlag [
        "-a"
        "--alias"
      ]
    then
      null
    else
      cfg.model.modelRef or null;

  mmproj =
    if cfg.mmproj != null then
      cfg.mmproj
    else if
      hasExtraFlag [
        "-mm"
        "-mmu"
        "--mmproj"
        "--mmproj-auto"
        "--mmproj-url"
        "--no-mmproj"
        "--no-mmproj-auto"
      ]
    then
      null
    else
      cfg.model.mmprojPath or null;
in
{
  options.services.llama-cpp = {
    enable = lib.mkEnableOption "LLaMA C++ server";
    package = lib.mkPackageOption pkgs "llama-cpp" { };
    model = lib.mkOption {
      type = lib.types.nullOr lib.types.path;
      default = null;
    };
    mmproj = lib.mkOption {
      type = lib.types.nullOr lib.types.path;
      default = null;
    };
    alias = lib.mkOption {
      type = lib.types.nullOr lib.types.str;
      default = null;
    };
    extraFlags = lib.mkOption {
      type = lib.types.listOf lib.types.str;
      default = [ ];
    };
    host = lib.mkOption {
      type = lib.types.str;
      default = "127.0.0.1";
    };
    port = lib.mkOption {
      type = lib.types.port;
      default = 8080;
    };
  };

  config = lib.mkIf cfg.enable {
    systemd.services.llama-cpp = {
      description = "LLaMA C++ server";
      after = [ "network.target" ];
      wantedBy = [ "multi-user.target" ];
      serviceConfig = {
        Type = "idle";
        DynamicUser = true;
        ExecStart =
          let
            args = [
              "--host"
              cfg.host
              "--port"
              (toString cfg.port)
            ]
            ++ lib.optionals (cfg.model != null) [
              "-m"
              modelPath
            ]
            ++ lib.optionals (mmproj != null) [
              "--mmproj"
              mmproj
            ]
            ++ lib.optionals (alias != null) [
              "--alias"
              alias
            ]
            ++ cfg.extraFlags;
          in
          "${cfg.package}/bin/llama-server ${utils.escapeSystemdExecArgs args}";
      };
    };
  };
}
