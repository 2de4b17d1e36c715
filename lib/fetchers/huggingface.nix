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

  # Use nixpkgs' own fetchFromHuggingFace when it exists with the signature of
  # nixpkgs' pkgs/build-support/fetchhuggingface/default.nix:
  #   { repoId, rev ? null, tag ? null, name ? …, domain ? "huggingface.co",
  #     repoType ? "model", backend ? "xet", sparseCheckout ? null, … }
  # It is fetchgit with fetchLFS = true on https://huggingface.co/[datasets/]<repoId>.git;
  # `hash` (and any other fetchgit argument) goes through its `...`. Its default
  # backend "xet" throws ("not implemented yet"), so backend = "lfs" is passed when
  # it takes a backend. With our `name`, the output is the same fixed-output path as
  # our fetchgit call (so `model-repo prefetch --add-to-store` gives that path). A
  # fetcher of that name with another signature (e.g. owner/repo) is not used.
  # Sparse patterns, tokens and requiredFiles always go through our fetchgit call:
  # they need nonConeMode, netrcPhase and postFetch, which it would only forward.
  canUseHfFetcher =
    pkgs: cfg:
    let
      f = pkgs.fetchFromHuggingFace or null;
      args = if f == null then { } else lib.functionArgs f;
      has = n: args ? ${n};
    in
    f != null
    && has "repoId"
    && has "rev"
    && has "name"
    && (cfg.source.huggingface.repoType == "model" || has "repoType")
    && sparsePatterns cfg.source.huggingface == [ ]
    && !(hasToken cfg)
    && cfg.validation.requiredFiles == [ ];

  fetchHuggingface =
    pkgs: cfg:
    let
      hf = cfg.source.huggingface;
    in
    if canUseHfFetcher pkgs cfg then
      pkgs.fetchFromHuggingFace (
        {
          repoId = hf.repo;
          rev = hf.revision;
          name = hfStoreName hf;
          inherit (cfg) hash;
        }
        // lib.optionalAttrs (lib.functionArgs pkgs.fetchFromHuggingFace ? backend) { backend = "lfs"; }
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
        // gitNetrc cfg "huggingface.co" "source.huggingface.repo" (naming.hubGitUrl {
          repoId = hf.repo;
          inherit (hf) repoType;
        })
      );

in
{
  inherit
    hfStoreName
    canUseHfFetcher
    fetchHuggingface
    ;
}
