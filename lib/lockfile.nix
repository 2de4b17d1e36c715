# model-repo.lock.json (version 1; schemas/lockfile.schema.json, written by
# `model-repo lock` / `model-repo update`, activate/hub/lockfile.py): a Hub
# model's entry, by model name, checked against what the model declares.
{ lib }:

let
  repopath = import ./repopath.nix { inherit lib; };
  srihash = import ./srihash.nix { inherit lib; };
  gguf = import ./gguf.nix { inherit lib; };
  fail = model: msg: throw "model-repo: model \"${model}\": ${msg}";

  # The parsed lock file; its version checked.
  readLock =
    model: lockFile:
    let
      text = builtins.readFile lockFile;
      data = builtins.fromJSON text;
    in
    # A Nix string ends at a NUL: fromJSON would read the key "a\u0000/../x" as
    # "a". Refused on the text (replaceStrings: linear, no regular expression).
    if builtins.replaceStrings [ "\\u0000" ] [ "" ] text != text then
      fail model "lockFile ${toString lockFile} holds a \"\\u0000\" (NUL) in a string: no repo file path, ref or name has one; remove that entry and run `model-repo lock` again."
    else if !(builtins.isAttrs data) || (data.version or null) != 1 then
      fail model "lockFile ${toString lockFile} is not a model-repo lock file of version 1 (\"version\": 1); write it with `model-repo lock`."
    else
      data;

  # The entry of `model` in `lockFile` as written ({ } when there is none).
  rawEntry = model: lockFile: (readLock model lockFile).models.${model} or { };

  # An entry's mmproj choice as the mmproj option takes it: absent -> "auto"
  # (the tag's own), "none" -> null, else the path (activate/hub/update.py).
  entryMmproj =
    entry:
    let
      m = entry.mmproj or null;
    in
    if m == null then "auto" else if m == "none" then null else m;

  # The entry of `model` in `lockFile`, checked against the model's declared
  # source (repo, repoType, ref, files/include/exclude): a lock entry of
  # another repo or selection is stale and an error, not silently used.
  #   src: { repo; repoType; ref; files; include; exclude; quant ? null; mmproj ? "auto"; }
  # A model with a quantization tag and no files of its own expects the entry's
  # exactFiles to be what the tag selects among the entry's files (lib/gguf.nix;
  # `model-repo lock NAME ORG/NAME:QUANT` writes them so).
  lockedEntry =
    { model, lockFile, src }:
    let
      lock = readLock model lockFile;
      entry =
        lock.models.${model} or (fail model "lockFile ${toString lockFile} has no entry \"${model}\": run `model-repo lock ${model} ${
          if src.repoType == "dataset" then "datasets/" else ""
        }${ref'} --ref ${src.ref}` (or set source.huggingface.revision and a hash).");
      same = a: b: a == b;
      badPaths = builtins.filter (p: !(repopath.isRepoPath p)) (builtins.attrNames (entry.files or { }));
      badHashes = lib.filterAttrs (_: f: !(srihash.isSriHash (f.hash or null))) (entry.files or { });
      quant = src.quant or null;
      ref' = src.repo + lib.optionalString (quant != null) ":${quant}";
      rerun = "run `model-repo lock ${model} ${ref'}` with the same --ref/--file/--include/--exclude as the model, or `model-repo update ${model}`.";
      sel = e: {
        files = e.exactFiles or [ ];
        include = e.include or [ ];
        exclude = e.exclude or [ ];
      };
      lockedQuant = entry.quant or null;
      picked = gguf.selectOrThrow model {
        paths = builtins.attrNames (entry.files or { });
        inherit quant;
        mmproj = src.mmproj or "auto";
      };
      want = {
        files = if quant != null && src.files == [ ] then picked.files else src.files;
        inherit (src) include exclude;
      };
    in
    if !(same entry.repo src.repo) then
      fail model "lockFile's entry \"${model}\" pins ${entry.repo}, the model says source.huggingface.repo = \"${src.repo}\": ${rerun}"
    else if !(same (entry.repoType or "model") src.repoType) then
      fail model "lockFile's entry \"${model}\" is a ${entry.repoType or "model"} repo, the model says repoType = \"${src.repoType}\": ${rerun}"
    else if !(same entry.ref src.ref) then
      fail model "lockFile's entry \"${model}\" follows ref \"${entry.ref}\", the model says ref = \"${src.ref}\": ${rerun}"
    else if lockedQuant != null && lockedQuant != quant then
      fail model "lockFile's entry \"${model}\" was locked with the quantization tag \"${lockedQuant}\", the model says ${
        if quant == null then "none" else "\"${quant}\""
      }: ${rerun}"
    else if lockedQuant != null && entryMmproj entry != (src.mmproj or "auto") then
      fail model "lockFile's entry \"${model}\" was locked with mmproj ${builtins.toJSON (entryMmproj entry)}, the model says ${
        builtins.toJSON (src.mmproj or "auto")
      }: ${rerun}"
    else if badPaths != [ ] then
      let
        p = builtins.head badPaths;
      in
      fail model "lockFile's entry \"${model}\" has the file path ${repopath.shown p}, which ${repopath.repoPathError p} (not a repo file path); remove the entry and run `model-repo lock` again."
    else if badHashes != { } then
      let
        p = builtins.head (builtins.attrNames badHashes);
        h = badHashes.${p}.hash or null;
      in
      fail model "lockFile's entry \"${model}\" has for ${repopath.shown p} the hash ${srihash.shown h}, which ${srihash.sriHashError h} (not an SRI hash model-repo accepts, activate/srihash.py); remove the entry and run `model-repo lock` again."
    else if !(same (sel entry) want) then
      fail model "lockFile's entry \"${model}\" was pinned with files/include/exclude ${builtins.toJSON (sel entry)}, the model says ${
        builtins.toJSON want
      }: ${rerun}"
    else
      entry;
in
{
  inherit readLock rawEntry entryMmproj lockedEntry;
}
