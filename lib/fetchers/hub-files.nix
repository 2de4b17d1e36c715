# source.huggingface pinned per file (source.huggingface.fileHashes): one
# fixed-output fetchurl per file from the Hub's download URL
#   <endpoint>/[datasets/]<repo>/resolve/<commit>/<path, percent-encoded>
# (what huggingface_hub's hf_hub_url builds), each checked against its flat
# sha256 (the SRI hash `model-repo prefetch --per-file` / `model-repo lock`
# print: the Hub's own LFS sha256 for LFS files), and a flat snapshot
# directory of links to them (a linkFarm). No git and no git-lfs.
#
# Why links and not copies: a copy stores every byte twice (the per-file path
# and the snapshot) and its build reads and writes the whole model again; the
# links cost a few hundred bytes whatever the model's size (bench/hub_pin.py
# and tests/test_hub_build.py measure both). huggingface_hub, transformers and
# safetensors' mmap follow them (tested).
#
# Consequences (tested in tests/test_hub_build.py with a real nix-build):
# - a file's store path depends only on its name and hash, so a revision bump
#   that changes one file downloads one file, and two models sharing a file
#   (same name and bytes) share its store path;
# - an interrupted build keeps the files already fetched (each is its own
#   store path): the next build fetches only the others;
# - the builder's disk holds each file once (no .git/lfs beside a checkout).
{ lib }:

let
  common = import ./common.nix { inherit lib; };
  inherit (common)
    fail
    storeSafe
    networkCurlOpts
    bearerAuth
    ;
  naming = import ../naming.nix { inherit lib; };
  huggingface = import ./huggingface.nix { inherit lib; };

  # The download URL of `path` in the repo at the commit, byte for byte what
  # huggingface_hub's hf_hub_url gives: each segment's UTF-8 bytes
  # percent-encoded as urllib's quote does (lib/repopath.nix escapePath; every
  # nixpkgs lib version, non-ASCII names included).
  # (`fileUrl hf` computes the part before the path once.)
  fileUrl =
    hf:
    let
      prefix =
        lib.removeSuffix "/" hf.endpoint
        + (if hf.repoType == "dataset" then "/datasets/" else "/")
        + hf.repo
        + "/resolve/"
        + hf.revision
        + "/";
    in
    path: prefix + repopath.escapePath path;

  repopath = import ../repopath.nix { inherit lib; };

  # The checked list of { path; hash; } of a model pinned per file: exactly
  # the files of fileHashes (files/include/exclude, when given, record the
  # selection they were pinned with; the activator reads them as "partial").
  pinnedFiles =
    cfg:
    let
      hf = cfg.source.huggingface;
      entries = lib.mapAttrsToList (path: hash: { inherit path hash; }) hf.fileHashes;
      badPath = builtins.filter (e: !(repopath.isRepoPath e.path)) entries;
      badHash = builtins.filter (e: !(naming.isSriHash e.hash)) entries;
      missing = builtins.filter (r: !(hf.fileHashes ? ${r})) cfg.validation.requiredFiles;
    in
    if badPath != [ ] then
      let
        p = (builtins.head badPath).path;
      in
      fail cfg "source.huggingface.fileHashes: the file path ${repopath.shown p} ${repopath.repoPathError p}: not a repo file path (\"/\"-separated segments from the repo root, none empty, \".\" or \"..\", at most 255 bytes, UTF-8 without control characters, the name not ending in \".drv\")."
    else if badHash != [ ] then
      let
        e = builtins.head badHash;
      in
      fail cfg "source.huggingface.fileHashes.${repopath.shown e.path}: the hash ${builtins.toJSON e.hash} ${naming.sriHashError e.hash}: it must be an SRI hash such as \"sha256-<base64>\"; `model-repo prefetch --per-file ${hf.repo}` (or `model-repo lock`) prints them."
    else if cfg.hash != null then
      fail cfg "set either hash (the NAR hash of the whole snapshot, fetched with git and LFS) or source.huggingface.fileHashes (one hash per file, fetched per file), not both."
    else if missing != [ ] then
      fail cfg "validation.requiredFiles: ${lib.concatStringsSep ", " missing} ${
        if builtins.length missing == 1 then "is" else "are"
      } not among source.huggingface.fileHashes."
    else
      entries;

  # One file: a fixed-output fetchurl named after the file's base name, so
  # that its store path follows only the name and the bytes.
  #   common: the arguments every file of the model shares (fetchArgs).
  #   urlOf: fileUrl of the model's source.huggingface.
  fetchHubFile =
    pkgs: common: urlOf: e:
    pkgs.fetchurl (
      common
      // {
        name = storeSafe (builtins.baseNameOf e.path);
        url = urlOf e.path;
        inherit (e) hash;
      }
    );

  # Curl options and the bearer header, the same for every file of a model:
  # computed (and the token's transport checked) once.
  fetchArgs =
    cfg:
    networkCurlOpts cfg
    // bearerAuth cfg "source.huggingface.endpoint" [ cfg.source.huggingface.endpoint ];

  # A model's options -> { drv (the snapshot directory); extra (passthru) }.
  fetchHubFiles =
    pkgs: cfg:
    let
      hf = cfg.source.huggingface;
      # path -> its fetchurl, one attribute set (linear). nixpkgs' linkFarm takes
      # it as it is; given a list it folds the entries with `//`, a copy of the
      # set per file: quadratic (bench/nix_eval.py).
      common = fetchArgs cfg;
      urlOf = fileUrl hf;
      files = lib.listToAttrs (
        map (e: {
          name = e.path;
          value = fetchHubFile pkgs common urlOf e;
        }) (pinnedFiles cfg)
      );
    in
    {
      drv = pkgs.linkFarm (huggingface.hfStoreName hf) files;
      extra = {
        inherit files;
      };
    };
in
{
  inherit
    fileUrl
    pinnedFiles
    fetchHubFiles
    ;
}
