# Fetchers: a model's options -> a store path holding its files as a flat
# directory (no blobs/, no snapshots/), with passthru attributes describing it.
# One file per source under lib/fetchers/ (shared helpers: common.nix); this
# file picks the source and adds the passthru attributes.
#
#   huggingface  fetchgit + LFS (nixpkgs' fetchFromHuggingFace   one FOD, NAR hash
#                when it takes repoId and backend = "lfs")
#   huggingface  with fileHashes: one fetchurl per file from     + linkFarm directory
#                resolve/<commit>/<path> (hub-files.nix)
#   git-lfs      fetchgit + LFS at a commit                      one FOD, NAR hash
#   url          one fetchurl per file (its own flat hash)       + linkFarm directory
#   s3           aws s3 cp --recursive                           one FOD, NAR hash
{ lib }:

let
  naming = import ./naming.nix { inherit lib; };
  options = import ./options.nix { inherit lib; };
  common = import ./fetchers/common.nix { inherit lib; };
  huggingface = import ./fetchers/huggingface.nix { inherit lib; };
  hubFiles = import ./fetchers/hub-files.nix { inherit lib; };
  gitLfs = import ./fetchers/git-lfs.nix { inherit lib; };
  url = import ./fetchers/url.nix { inherit lib; };
  s3 = import ./fetchers/s3.nix { inherit lib; };
  gguf = import ./gguf.nix { inherit lib; };
  inherit (common) sparsePatterns checkAuth;
  inherit (s3) awsImpureEnvVars;
  urlFiles = url.urlFiles;

  sourceNames = [
    "huggingface"
    "url"
    "git-lfs"
    "s3"
  ];

  # Which source a model uses; exactly one must be set.
  sourceType =
    cfg:
    let
      set = builtins.filter (s: cfg.source.${s} != null) sourceNames;
    in
    if builtins.length set == 1 then
      builtins.head set
    else
      throw ''
        model-repo: model "${cfg.name}": set exactly one of source.huggingface, source.url, source.git-lfs, source.s3 (${
          if set == [ ] then "none is set" else "set: " + lib.concatMapStringsSep ", " (s: "source.${s}") set
        }).'';

  # The revision a model without a commit of its own (url, s3) is linked under:
  # sha1 of what pins its content, the model's SRI hash or, for url sources, each
  # file's name and hash. It changes when the content does, never with nixpkgs
  # (a url model's directory is a linkFarm whose store path follows stdenv).
  derivedRevision =
    cfg:
    builtins.hashString "sha1" (
      if cfg.source.url != null then
        lib.concatMapStringsSep "\n" (f: "${f.name} ${builtins.toJSON f.hashArgs}") (urlFiles cfg).files
      else
        toString cfg.hash
    );

  ## Passthru ################################################################

  # A Hub model with a quantization tag (source.huggingface.quant): the words of
  # nixpkgs' fetchFromHuggingFaceGGUF that services.llama-cpp reads (modelRef,
  # modelPath, mmprojPath), `file` (MODEL_REPO_<NAME>_FILE) and `gguf`, chosen by
  # lib/gguf.nix among the pinned files. The attribute names do not depend on
  # the selection, so listing them never forces it.
  ggufAttrs =
    cfg: s: drv:
    let
      hf = cfg.source.huggingface;
      paths = if hf.fileHashes != { } then builtins.attrNames hf.fileHashes else hf.files;
      sel =
        if paths == [ ] then
          throw "model-repo: model \"${cfg.name}\": source.huggingface.quant = \"${hf.quant}\" picks among the pinned files, but none are listed: run `model-repo prefetch ${hf.repo}:${hf.quant}` (it prints files = [ … ] and the hash), or `model-repo lock ${cfg.name} ${hf.repo}:${hf.quant}` with lockFile."
        else
          gguf.selectOrThrow cfg.name {
            inherit paths;
            inherit (hf) quant mmproj;
          };
    in
    lib.optionalAttrs (s == "huggingface" && hf.quant != null) {
      modelRef = "${hf.repo}:${hf.quant}";
      modelPath = "${drv}/${sel.main}";
      mmprojPath = if sel.mmproj == null then null else "${drv}/${sel.mmproj}";
      file = "${drv}/${sel.main}";
      gguf = {
        inherit (sel) quant main parts mmproj;
      };
    };

  # The repo id a model is linked under in a hub cache; the same rules as
  # lib/manifest.nix's mkEntry. null: not linkable (a non-Hub source without
  # integration.huggingface.{org,model}).
  linkRepo =
    cfg: s:
    let
      hfInt = cfg.integration.huggingface;
    in
    if s == "huggingface" then
      let
        parts = lib.splitString "/" cfg.source.huggingface.repo;
      in
      {
        org = if hfInt.org != null then hfInt.org else builtins.elemAt parts 0;
        model = if hfInt.model != null then hfInt.model else builtins.elemAt parts 1;
        repoType = cfg.source.huggingface.repoType;
      }
    else if hfInt.enable && hfInt.org != null && hfInt.model != null then
      {
        inherit (hfInt) org model;
        repoType = "model";
      }
    else
      null;

  # drv // passthru attributes (also as drv.passthru), for every source type.
  withPassthru =
    cfg: s: drv: extra:
    let
      link = linkRepo cfg s;
      repoId = if link == null then null else "${link.org}/${link.model}";
      attrs = {
        inherit repoId;
        org = link.org or null;
        model = link.model or null;
        repoType = link.repoType or "model";
        revision =
          if s == "huggingface" then
            cfg.source.huggingface.revision
          else if s == "git-lfs" then
            cfg.source.git-lfs.rev
          else
            derivedRevision cfg;
        ref = if s == "huggingface" then cfg.source.huggingface.ref else "main";
        sourceType = s;
        hfCachePath =
          if link == null then
            null
          else
            naming.hubFolderName {
              inherit repoId;
              inherit (link) repoType;
            };
        modelName = cfg.name;
        modelMeta = cfg.meta;
      }
      // ggufAttrs cfg s drv
      // extra;
    in
    drv // attrs // { passthru = (drv.passthru or { }) // attrs; };

  ## Entry points ############################################################

  # A model's evaluated options -> its store path (a derivation).
  fetchModelConfig =
    pkgs: cfg:
    let
      s = sourceType cfg;
      authOk = checkAuth cfg s;
    in
    assert authOk;
    if s == "huggingface" && cfg.source.huggingface.fileHashes != { } then
      let
        r = hubFiles.fetchHubFiles pkgs cfg;
      in
      withPassthru cfg s r.drv r.extra
    else if s == "huggingface" then
      withPassthru cfg s (huggingface.fetchHuggingface pkgs cfg) { }
    else if s == "git-lfs" then
      withPassthru cfg s (gitLfs.fetchGitLfs pkgs cfg) { }
    else if s == "s3" then
      withPassthru cfg s (s3.fetchS3 pkgs cfg) { }
    else
      let
        r = url.fetchUrl pkgs cfg;
      in
      withPassthru cfg s r.drv r.extra;

  fetchModel = pkgs: args: fetchModelConfig pkgs (options.evalModel args);

  # Same as fetchModel, with the repo type forced to "dataset".
  fetchDataset =
    pkgs: args:
    if args ? source.huggingface then
      fetchModel pkgs (lib.recursiveUpdate args { source.huggingface.repoType = "dataset"; })
    else
      throw "model-repo: fetchDataset ${
        args.name or ""
      }: only source.huggingface has a repo type; models from source.url, source.git-lfs and source.s3 are linked as models (use fetchModel).";
in
{
  inherit
    sourceType
    sparsePatterns
    derivedRevision
    awsImpureEnvVars
    fetchModelConfig
    fetchModel
    fetchDataset
    ;
}
