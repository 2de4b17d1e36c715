# source.huggingface: a Hub repo at a pinned commit, one fixed-output git
# checkout with LFS (nixpkgs' fetchFromHuggingFace when usable, else fetchgit).
{ lib }:

let
  common = import ./common.nix { inherit lib; };
  inherit (common)
    hasToken
    sparseArgs
    sparsePatterns
    gitNetrc
    requiredFilesCheck
    ;
  naming = import ../naming.nix { inherit lib; };

  hfStoreName =
    hf: "hf-" + builtins.replaceStrings [ "/" ] [ "--" ] hf.repo + "-" + builtins.substring 0 12 hf.revision;

  # Use nixpkgs' own fetchFromHuggingFace when it exists and takes the
  # arguments we need (a `name`, so `model-repo prefetch --add-to-store` gives the
  # same store path); otherwise fetchgit with LFS. Sparse patterns always go through
  # fetchgit: our include/exclude are non-cone patterns ("!x" excludes), which
  # fetchFromHuggingFace's checkout mode may read differently.
  canUseHfFetcher =
    pkgs: cfg:
    let
      f = pkgs.fetchFromHuggingFace or null;
      args = if f == null then { } else lib.functionArgs f;
      has = n: args ? ${n};
    in
    f != null
    && has "owner"
    && has "repo"
    && has "rev"
    && has "hash"
    && (cfg.source.huggingface.repoType == "model" || has "repoType")
    && has "name"
    && sparsePatterns cfg.source.huggingface == [ ]
    && !(hasToken cfg)
    && cfg.validation.requiredFiles == [ ];

  fetchHuggingface =
    pkgs: cfg:
    let
      hf = cfg.source.huggingface;
      parts = lib.splitString "/" hf.repo;
      sparse = sparsePatterns hf;
    in
    if canUseHfFetcher pkgs cfg then
      pkgs.fetchFromHuggingFace (
        {
          owner = builtins.elemAt parts 0;
          repo = builtins.elemAt parts 1;
          rev = hf.revision;
          name = hfStoreName hf;
          inherit (cfg) hash;
        }
        // lib.optionalAttrs (hf.repoType != "model") { inherit (hf) repoType; }
      )
    else
      pkgs.fetchgit (
        {
          name = hfStoreName hf;
          url = naming.hubGitUrl {
            repoId = hf.repo;
            inherit (hf) repoType;
          };
          rev = hf.revision;
          inherit (cfg) hash;
          fetchLFS = true;
        }
        // sparseArgs hf
        // lib.optionalAttrs (cfg.validation.requiredFiles != [ ]) { postFetch = requiredFilesCheck cfg; }
        // gitNetrc cfg "huggingface.co"
      );

in
{
  inherit
    hfStoreName
    canUseHfFetcher
    fetchHuggingface
    ;
}
