# Test stub of nixpkgs' nixos/modules/misc/meta.nix: accepts any meta.* and
# never forces it.
{ lib, ... }:
{
  options.meta = lib.mkOption {
    type = lib.types.lazyAttrsOf lib.types.raw;
    default = { };
  };
}
