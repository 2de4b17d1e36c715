# The manifest: the contract between the modules and the activator.
# Schema version 1; the activator rejects unknown fields.
{ lib }:

let
  naming = import ./naming.nix { inherit lib; };
  fetch = import ./fetch.nix { inherit lib; };

  # One model -> its manifest entry.
  #   cfg: evaluated model options, drv: what fetchModelConfig returned,
  #   linkEnabled: the module-wide switch (integration enabled / linkToHuggingFace).
  #   prepared: the dataset prepared for the `datasets` library (lib/datasets.nix), or null.
  mkEntry =
    {
      cfg,
      drv,
      linkEnabled,
      prepared ? null,
    }:
    let
      s = fetch.sourceType cfg;
      hfInt = cfg.integration.huggingface;
      path = "${drv}";
      hfEntry =
        let
          hf = cfg.source.huggingface;
          parts = lib.splitString "/" hf.repo;
          org = if hfInt.org != null then hfInt.org else builtins.elemAt parts 0;
          model = if hfInt.model != null then hfInt.model else builtins.elemAt parts 1;
        in
        {
          repoId = "${org}/${model}";
          inherit (hf) repoType revision;
          refs = [ hf.ref ];
          link = linkEnabled && hfInt.enable;
        };
      otherEntry =
        let
          named = hfInt.enable && hfInt.org != null && hfInt.model != null;
        in
        {
          repoId = if named then "${hfInt.org}/${hfInt.model}" else "model-repo-local/${cfg.name}";
          repoType = "model";
          # The source's commit (git-lfs), else derived from its content pins
          # (lib/fetch.nix derivedRevision).
          inherit (drv) revision;
          refs = [ "main" ];
          link = linkEnabled && named;
        };
    in
    (if s == "huggingface" then hfEntry else otherEntry)
    // {
      inherit path;
      # The store path holds only some of the repo's files (sparse patterns or exact
      # files given): the activator then links a real snapshot folder of per-file
      # links, so huggingface_hub never writes a missing file into the store.
      partial = s != "url" && isPartial cfg.source.${s};
    }
    // lib.optionalAttrs (prepared != null) { prepared = "${prepared}"; }
    # MODEL_REPO_<NAME>_FILE's file, as a path inside `path` (the activator prints
    # <path>/<file>, as the modules' environment does: modules/common.nix).
    // lib.optionalAttrs (fileOf path drv != null) { file = fileOf path drv; };

  # drv.file (an absolute path under the store path, lib/fetch.nix) as a path
  # inside `path`; null when the model has none.
  fileOf =
    path: drv:
    let
      f = drv.file or null;
    in
    if f == null then
      null
    else if lib.hasPrefix "${path}/" f then
      lib.removePrefix "${path}/" f
    else
      throw "model-repo: the file ${f} is not inside the model's store path ${path}";

  # files / include / exclude on source.huggingface, source.git-lfs; include /
  # exclude on source.s3. source.url lists exactly the model's files: never partial.
  isPartial = src: (src.files or [ ]) != [ ] || (src.include or [ ]) != [ ] || (src.exclude or [ ]) != [ ];

  mkManifest =
    {
      profile,
      cacheDir,
      offline,
      models,
      datasetsCacheDir ? null,
    }:
    lib.optionalAttrs (datasetsCacheDir != null) { inherit datasetsCacheDir; }
    // {
      version = 1;
      inherit
        profile
        cacheDir
        offline
        models
        ;
      storeDir = builtins.storeDir;
    };
in
{
  inherit mkEntry mkManifest;
}
