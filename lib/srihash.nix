# The rule for an SRI hash model-repo accepts (a lock file's hash, a model's
# hash, source.huggingface.fileHashes values, source.url files' hash): the same
# rule, with the same messages in the same order, as activate/srihash.py
# (tests/test_srihash.py holds the two equal on a table of cases).
#
# "<algorithm>-<base64>": sha256 (43 base64 characters and "=") or sha512 (86
# and "=="), canonical (the bits after the digest are zero), nothing around it,
# no whitespace. sha1 and md5 (which Nix takes) are refused: known collisions.
# Nix's "sha256:<digest>" form and bare digests are refused with the command
# converting them to SRI.
{ lib }:

let
  algorithms = {
    sha256 = {
      chars = 43;
      pads = 1;
      last = "AEIMQUYcgkosw048";
    };
    sha512 = {
      chars = 86;
      pads = 2;
      last = "AQgw";
    };
  };

  maxLength = 95;

  validRegex = "sha256-[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=|sha512-[A-Za-z0-9+/]{85}[AQgw]==";

  convert = "convert it with `nix hash convert --hash-algo sha256 --to sri <digest>`";

  # Why `h` is not an SRI hash model-repo accepts (a phrase to follow the
  # value), or null.
  sriHashError =
    h:
    if !(builtins.isString h) then
      "is not a string"
    # The common case in one regular expression: exactly the hashes accepted
    # (activate/srihash.py's SRI_PATTERN).
    else if builtins.match validRegex h != null then
      null
    else if h == "" then
      "is empty"
    # Before the regular expressions, which recurse per character.
    else if builtins.stringLength h > maxLength then
      "is longer than any SRI hash (at most ${toString maxLength} characters, a sha512 one)"
    else if builtins.match "[^[:space:]]*" h == null then
      "holds whitespace (copy the hash alone, without spaces or newlines)"
    else
      let
        colon = builtins.match "(md5|sha1|sha256|sha512):(.*)" h;
        dash = builtins.match "([^-]*)-(.*)" h;
        algo = if dash == null then null else builtins.elemAt dash 0;
        body = builtins.elemAt dash 1;
        a = algorithms.${algo};
        parts = builtins.match "([A-Za-z0-9+/]*)(=*)" body;
        data = builtins.elemAt parts 0;
        pad = builtins.stringLength (builtins.elemAt parts 1);
        lastChar = builtins.substring (builtins.stringLength data - 1) 1 data;
      in
      if colon != null then
        let
          x = builtins.head colon;
        in
        "is in Nix's \"${x}:<digest>\" form, not SRI; convert it with `nix hash convert --to sri ${x}:<digest>`"
      else if builtins.match "[0-9a-fA-F]{64}|[0-9a-df-np-sv-z]{52}" h != null then
        "is a bare sha256 digest, not SRI; ${convert}"
      else if dash != null && (algo == "md5" || algo == "sha1") then
        "uses ${algo}, which has known collisions; use a \"sha256-\" hash"
      else if dash == null || !(algorithms ? ${algo}) then
        "does not start with \"sha256-\" or \"sha512-\""
      else if parts == null then
        "holds a character that is not base64 (A-Z a-z 0-9 + /, and \"=\" only at the end)"
      else if pad != a.pads then
        "ends in ${toString pad} \"=\", a ${algo} digest in base64 ends in ${
          if a.pads == 1 then "one \"=\"" else "two \"=\" (\"==\")"
        }"
      else if builtins.stringLength data != a.chars then
        "has ${toString (builtins.stringLength data)} base64 characters before the padding, a ${algo} digest has ${toString a.chars}"
      else if !(lib.hasInfix lastChar a.last) then
        "is not the canonical base64 of a ${algo} digest (the last character before the padding must be one of ${a.last})"
      else
        null;

  isSriHash = h: sriHashError h == null;

  # `h` quoted for a message (JSON: control characters escaped).
  shown = h: builtins.toJSON h;
in
{
  inherit sriHashError isSriHash shown maxLength validRegex;
}
