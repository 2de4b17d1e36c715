# The rule for a repo file path (a file's path from the repo root, as the Hub
# lists it, a lock file keys it and a per-file fetch links it): the same rule,
# with the same messages in the same order, as activate/repopath.py
# (tests/test_repopath.py holds the two equal on a table of cases).
#
# "/"-separated segments, each not empty, not "." or "..", at most 255 bytes,
# valid UTF-8, without control characters (C0, DEL, C1); the last one does not
# end in ".drv" (Nix refuses derivation names ending in ".drv", and a per-file
# fetch is named after the file). A leading "-" is allowed.
#
# Nix strings cannot hold NUL (a "\u0000" in JSON ends the string there), so
# a NUL is caught on the lock file's text (lib/lockfile.nix).
{ lib }:

let
  # One character from a JSON escape, e.g. u "00e9" -> "é" (its UTF-8 bytes).
  u = hex: builtins.fromJSON "\"\\u${hex}\"";
  # The i-th byte of a string (Nix strings are bytes).
  byte = i: s: builtins.substring i 1 s;

  # Bytes >= 0x80 cannot be written in a Nix string literal; they are taken
  # from the UTF-8 encodings of characters.
  x01 = u "0001";
  x7f = u "007f";
  x80 = byte 1 (u "0080");
  x8f = byte 1 (u "008f");
  x90 = byte 1 (u "0090");
  x9f = byte 1 (u "009f");
  xa0 = byte 1 (u "00a0");
  xbf = byte 1 (u "00bf");
  xc2 = byte 0 (u "0080");
  xdf = byte 0 (u "07ff");
  xe0 = byte 0 (u "0800");
  xe1 = byte 0 (u "1000");
  xec = byte 0 (u "c000");
  xed = byte 0 (u "d000");
  xee = byte 0 (u "e000");
  xef = byte 0 (u "ffff");
  xf0 = byte 0 (u "d800\\udc00");
  xf1 = byte 0 (u "d8c0\\udc00");
  xf3 = byte 0 (u "dbc0\\udc00");
  xf4 = byte 0 (u "dbff\\udfff");

  cont = "[${x80}-${xbf}]";
  # Well-formed UTF-8 (RFC 3629, section 4), without NUL.
  utf8 = lib.concatStringsSep "|" [
    "[${x01}-${x7f}]"
    "[${xc2}-${xdf}]${cont}"
    "${xe0}[${xa0}-${xbf}]${cont}"
    "[${xe1}-${xec}${xee}${xef}]${cont}${cont}"
    "${xed}[${x80}-${x9f}]${cont}"
    "${xf0}[${x90}-${xbf}]${cont}${cont}"
    "[${xf1}-${xf3}]${cont}${cont}${cont}"
    "${xf4}[${x80}-${x8f}]${cont}${cont}"
  ];
  isUtf8 = s: builtins.match "(${utf8})*" s != null;
  # C0 and DEL ([[:cntrl:]] in the C locale), C1 (U+0080-U+009F: 0xC2 0x80-0x9F).
  hasControl = s: builtins.match ".*([[:cntrl:]]|${xc2}[${x80}-${x9f}]).*" s != null;

  maxSegmentBytes = 255;

  segmentError =
    seg:
    if seg == "" then
      "has an empty segment (\"//\")"
    else if seg == "." then
      "has a \".\" segment"
    else if seg == ".." then
      "has a \"..\" segment"
    # Before the regular expressions, which recurse per character.
    else if builtins.stringLength seg > maxSegmentBytes then
      "has a segment longer than ${toString maxSegmentBytes} bytes"
    # Printable ASCII (most names): valid UTF-8 without control characters.
    else if builtins.match "[ -~]*" seg != null then
      null
    else if !(isUtf8 seg) then
      "is not UTF-8"
    else if hasControl seg then
      "holds a control character"
    else
      null;

  # The common case in one regular expression, without splitting: at most 255
  # bytes (so every segment is), segments of printable ASCII, none empty, "."
  # or "..", the name not ending in ".drv". (Only short strings: the matcher
  # recurses per character.)
  plainPath =
    p:
    builtins.stringLength p <= maxSegmentBytes
    && builtins.match "([ -.0-~]+/)*[ -.0-~]+" p != null
    && builtins.match "(.*/)?[.][.]?(/.*)?" p == null
    && !(lib.hasSuffix ".drv" p);

  # Why `p` is not a repo file path (a phrase to follow the path), or null.
  repoPathError =
    p:
    if !(builtins.isString p) then
      "is not a string"
    else if plainPath p then
      null
    else if !(builtins.isString p) then
      "is not a string"
    else if p == "" then
      "is empty"
    else if lib.hasPrefix "/" p then
      "starts with \"/\" (a path from the repo root has none)"
    else if lib.hasSuffix "/" p then
      "ends with \"/\""
    else
      let
        segments = lib.splitString "/" p;
        errors = builtins.filter (e: e != null) (map segmentError segments);
      in
      if errors != [ ] then
        builtins.head errors
      else if lib.hasSuffix ".drv" (lib.last segments) then
        "ends in \".drv\", a name Nix refuses for a fetched file"
      else
        null;

  isRepoPath = p: repoPathError p == null;

  # `p` quoted for a message (JSON: control characters escaped).
  shown = p: builtins.toJSON p;

  ## Percent-encoding ##########################################################

  hexDigit = i: builtins.substring i 1 "0123456789ABCDEF";
  hex2 = i: hexDigit (i / 16) + hexDigit (lib.mod i 16);
  hex4 = i: hex2 (i / 256) + hex2 (lib.mod i 256);

  # Byte b (1-255) as a one-byte string, or null for the bytes no UTF-8 text
  # holds (0xC0, 0xC1, 0xF5-0xFF): ASCII from "\u00XX"; a continuation byte
  # (0x80-0xBF) is the second byte of U+0080-U+00BF; a lead byte the first byte
  # of a character it starts.
  byteChar =
    b:
    if b < 128 then
      u (hex4 b)
    else if b < 192 then
      byte 1 (u (hex4 b))
    else if b < 194 then
      null
    else if b < 224 then
      byte 0 (u (hex4 ((b - 192) * 64)))
    else if b < 240 then
      byte 0 (u (hex4 ((b - 224) * 4096 + (if b == 224 then 2048 else 0))))
    else if b < 245 then
      let
        # U+10000, U+40000, U+80000, U+C0000, U+100000, as a surrogate pair.
        c = (if b == 240 then 65536 else (b - 240) * 262144) - 65536;
      in
      byte 0 (u "${hex4 (55296 + c / 1024)}\\u${hex4 (56320 + lib.mod c 1024)}")
    else
      null;

  # Every byte but the unreserved ones (A-Z a-z 0-9 - _ . ~) -> "%XX".
  escaped = builtins.filter (e: e.c != null && builtins.match "[A-Za-z0-9_.~-]" e.c == null) (
    builtins.genList (i: {
      c = byteChar (i + 1);
      x = "%" + hex2 (i + 1);
    }) 255
  );
  escapedFrom = map (e: e.c) escaped;
  escapedTo = map (e: e.x) escaped;

  # One path segment percent-encoded byte by byte, as Python's urllib.parse.quote
  # (which huggingface_hub's hf_hub_url uses) does on the segment's UTF-8 bytes:
  # "é" -> "%C3%A9", " " -> "%20". (nixpkgs' lib.strings.escapeURL, since 23.11,
  # leaves bytes >= 0x80 as they are.)
  escapeSegment =
    seg:
    # Unreserved characters only (most names): nothing to encode.
    if builtins.match "[A-Za-z0-9_.~-]*" seg != null then
      seg
    else
      builtins.replaceStrings escapedFrom escapedTo seg;

  # A repo file path for a URL: its segments percent-encoded, "/" kept (quote's
  # safe="/").
  escapePath =
    p:
    # Unreserved characters and "/" only (most paths; a short string, see
    # plainPath): nothing to encode, nothing to split.
    if builtins.stringLength p <= 1024 && builtins.match "[A-Za-z0-9_.~/-]*" p != null then
      p
    else
      lib.concatMapStringsSep "/" escapeSegment (lib.splitString "/" p);
in
{
  inherit
    repoPathError
    isRepoPath
    shown
    maxSegmentBytes
    escapeSegment
    escapePath
    ;
}
