# source.git-lfs: any git repository with LFS files at a pinned commit (fetchgit).
{ lib }:

let
  common = import ./common.nix { inherit lib; };
  inherit (common)
    fail
    storeSafe
    hasToken
    urlHost
    sparseArgs
    gitNetrc
    requiredFilesCheck
    ;

  fetchGitLfs =
    pkgs: cfg:
    let
      g = cfg.source.git-lfs;
      host = urlHost g.url;
      base = lib.removeSuffix ".git" (builtins.baseNameOf (lib.removeSuffix "/" g.url));
    in
    if hasToken cfg && host == null then
      fail cfg "auth with source.git-lfs needs an http(s) URL (the token is sent as git basic auth through a netrc); got \"${g.url}\"."
    else
      lib.warnIf (cfg.network.timeout != null || cfg.network.retries != null)
        "model-repo: model \"${cfg.name}\": network.timeout / network.retries are not used by the git fetcher of source.git-lfs."
      pkgs.fetchgit (
        {
          name = storeSafe "git-${base}-${builtins.substring 0 12 g.rev}";
          inherit (g) url rev;
          inherit (cfg) hash;
          fetchLFS = true;
        }
        // sparseArgs g
        // lib.optionalAttrs (cfg.validation.requiredFiles != [ ]) { postFetch = requiredFilesCheck cfg; }
        // gitNetrc cfg host "source.git-lfs.url" g.url
      );

in
{
  inherit
    fetchGitLfs
    ;
}
