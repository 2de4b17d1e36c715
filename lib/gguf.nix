# GGUF quantization tags: "ORG/NAME:QUANT" picks a repo's .gguf file(s) and its
# mmproj file (nixpkgs' fetchFromHuggingFaceGGUF `modelRef`, llama-server -hf).
#
# The same rule as activate/gguf.py (its docstring states it; tests/test_gguf.py
# holds the two equal on a table of real llama.cpp file names): .gguf files, mmproj*
# apart; ASCII case ignored; split files <stem>-0000K-of-0000N.gguf grouped by
# (folder, stem, N), every part required; a group matches when its stem is the tag
# or ends in -TAG, .TAG or _TAG; exactly one group; the mmproj by tag, F16, BF16, F32.
{ lib }:

let
  inherit (builtins) match length head filter sort;
  inherit (lib) toLower hasSuffix hasPrefix splitString concatStringsSep;

  quantRegex = "[A-Za-z0-9._+-]+";
  isQuant = q: builtins.isString q && match quantRegex q != null;

  basename = p: lib.last (splitString "/" p);
  dirname = p: concatStringsSep "/" (lib.init (splitString "/" p));
  isGguf = p: hasSuffix ".gguf" (toLower (basename p));
  isMmproj = p: isGguf p && hasPrefix "mmproj" (toLower (basename p));
  stemOf = p: lib.removeSuffix ".gguf" (toLower (basename p));

  # Rule 4 on lower-cased stem and tag.
  endsWithTag = stem: tag: stem == tag || builtins.any (sep: hasSuffix (sep + tag) stem) [ "-" "." "_" ];

  # "00003" -> 3 (fromJSON refuses leading zeros).
  toNum = s: builtins.fromJSON (head (match "0*([0-9]+)" s));

  # One candidate: { path; dir; stem (as written); total (0: not split); part; }
  candidate =
    p:
    let
      name = basename p;
      m = match "(.*)-([0-9]{5})-of-([0-9]{5})\\.gguf" (toLower name);
      part = if m == null then 0 else toNum (builtins.elemAt m 1);
      total = if m == null then 0 else toNum (builtins.elemAt m 2);
      split = m != null && 1 <= part && part <= total;
    in
    {
      path = p;
      dir = dirname p;
      stem =
        if split then
          builtins.substring 0 (builtins.stringLength (head m)) name
        else
          builtins.substring 0 (builtins.stringLength name - 5) name;
      total = if split then total else 0;
      part = if split then part else 0;
    };

  # At most `limit` items, then how many there are (activate/gguf.py _shown).
  shownMax =
    limit: xs:
    concatStringsSep ", " (lib.take limit xs)
    + lib.optionalString (length xs > limit) ", … (${toString (length xs)} in all)";
  shown = shownMax 20;

  fail = kind: message: {
    ok = false;
    inherit kind message;
  };

  # Rule 6. choice: "auto", null or a repo file path.
  pickMmproj =
    { paths, quant, folder, choice }:
    let
      found = sort (a: b: a < b) (filter isMmproj paths);
      here = filter (p: dirname p == folder) found;
      pool = if here != [ ] then here else found;
      keys = [ (toLower quant) "f16" "bf16" "f32" ];
      hitsOf = key: filter (p: endsWithTag (stemOf p) key) pool;
      decided = lib.findFirst (h: h != [ ]) null (map hitsOf keys);
      ambiguous = ps: fail "mmproj-ambiguous" "several mmproj files could go with \"${quant}\": ${shown ps}; choose one (--mmproj PATH; source.huggingface.mmproj = \"PATH\"), or none (--mmproj none; mmproj = null)";
    in
    if choice == null then
      { ok = true; mmproj = null; }
    else if choice != "auto" then
      if builtins.elem choice paths && isGguf choice then
        { ok = true; mmproj = choice; }
      else
        fail "mmproj-missing" "mmproj \"${choice}\" is not a .gguf file of the repo (give a listed path, \"auto\", or none: --mmproj none; mmproj = null)"
    else if decided != null then
      if length decided == 1 then { ok = true; mmproj = head decided; } else ambiguous decided
    else if length pool <= 1 then
      {
        ok = true;
        mmproj = if pool == [ ] then null else head pool;
      }
    else
      ambiguous pool;

  # { paths; quant; mmproj ? "auto"; } ->
  #   { ok = true; quant; parts; main; mmproj; files; }
  #   or { ok = false; kind; message; } (kinds as activate/gguf.py's GgufError)
  select =
    { paths, quant, mmproj ? "auto" }:
    let
      tag = toLower quant;
      cands = map candidate (filter (p: isGguf p && !(isMmproj p)) paths);
      groups = builtins.groupBy (c: builtins.toJSON [ c.dir c.stem c.total ]) cands;
      matched = lib.filterAttrs (_: cs: endsWithTag (toLower (head cs).stem) tag) groups;
      firstPath = cs: head (sort (a: b: a < b) (map (c: c.path) cs));
      matchedList = sort (a: b: firstPath a < firstPath b) (builtins.attrValues matched);
      models = sort (a: b: a < b) (map (c: c.path) cands);
      group = head matchedList;
      total = (head group).total;
      byPart = builtins.listToAttrs (map (c: { name = toString c.part; value = c.path; }) group);
      # Parts are numbered 1..N with N < 100000 (5 digits): the range stays bounded.
      missing = filter (n: !(byPart ? ${toString n})) (lib.range 1 total);
      pad = n: lib.fixedWidthString 5 "0" (toString n);
      parts = if total == 0 then [ (head group).path ] else map (n: byPart.${toString n}) (lib.range 1 total);
      mm = pickMmproj {
        inherit paths quant;
        folder = dirname (head parts);
        choice = mmproj;
      };
    in
    if !(isQuant quant) then
      fail "bad-quant" "quantization tag \"${toString quant}\" must be letters, digits, '.', '_', '+' and '-' (a llama.cpp quantization such as Q4_K_M, IQ4_XS, Q8_0, F16, or an uploader's tag such as UD-Q4_K_XL)"
    else if matchedList == [ ] then
      fail "no-match" "no .gguf file matches the quantization tag \"${quant}\" (its name must end in -${quant}, .${quant} or _${quant}, any case, before .gguf or a -0000K-of-0000N split suffix); the .gguf files are: ${
        if models == [ ] then "none" else shown models
      }"
    else if length matchedList > 1 then
      fail "ambiguous" "the quantization tag \"${quant}\" matches several .gguf files: ${
        shown (map (g: firstPath g + lib.optionalString ((head g).total > 0) " (${toString (head g).total} parts)") matchedList)
      }; give a longer tag that ends only one of them (or list the files: --file, source.huggingface.files)"
    else if missing != [ ] then
      fail "missing-part" "the split model ${firstPath group} has ${toString total} parts but part(s) ${
        shownMax 10 (map pad missing)
      } are not in the repo: all parts are needed (a partly uploaded model? pin another commit)"
    else if !mm.ok then
      mm
    else
      {
        ok = true;
        inherit quant parts;
        main = head parts;
        inherit (mm) mmproj;
        files = parts ++ lib.optional (mm.mmproj != null) mm.mmproj;
      };

  # "ORG/NAME:QUANT" -> { repo = "ORG/NAME"; quant = "QUANT"; }; no tag -> quant = null.
  # Same split as activate/gguf.py split_model_ref.
  splitModelRef =
    ref:
    let
      parts = splitString ":" ref;
      tail = lib.last parts;
      headStr = concatStringsSep ":" (lib.init parts);
      headLast = lib.last (splitString ":" headStr);
    in
    if length parts < 2 || !(isQuant tail) || !(lib.hasInfix "/" headLast) then
      {
        repo = ref;
        quant = null;
      }
    else
      {
        repo = headStr;
        quant = tail;
      };

  # select, or an evaluation error naming the model.
  selectOrThrow =
    model: args:
    let
      r = select args;
    in
    if r.ok then r else throw "model-repo: model \"${model}\": ${r.message}.";
in
{
  inherit
    quantRegex
    isQuant
    select
    selectOrThrow
    splitModelRef
    ;
}
