# nixpkgs' escapeSystemdExecArg(s) (lib/systemd's functions, also NixOS `utils`):
# each argument JSON-quoted, then % and $ escaped for systemd.
{ lib }:

let
  escapeSystemdExecArg =
    arg:
    let
      s =
        if lib.isPath arg then
          "${arg}"
        else if lib.isString arg then
          arg
        else if lib.isInt arg || lib.isFloat arg || lib.isDerivation arg then
          toString arg
        else
          throw "escapeSystemdExecArg only allows strings, paths, numbers and derivations";
    in
    lib.replaceStrings [ "%" "$" ] [ "%%" "$$" ] (builtins.toJSON s);
in
{
  inherit escapeSystemdExecArg;
  escapeSystemdExecArgs = lib.concatMapStringsSep " " escapeSystemdExecArg;
}
