"""The rule for a repo file path: a file's path from the repo root, as the Hub lists it,
as a lock file keys it and as Nix fetches and links it.

Standard library only (the activator and ``activate.hub`` both import it). The Nix side
(``lib/repopath.nix``) is the same rule with the same messages, checked in the same
order; ``tests/test_repopath.py`` holds the two equal on a table of cases.

A repo file path is "/"-separated segments, each:

- not empty (no leading or trailing "/", no "//"), not "." or "..";
- at most 255 bytes in UTF-8 (``NAME_MAX`` of Linux and darwin file systems);
- valid UTF-8 (the Hub's names are Unicode; Nix strings are bytes);
- free of control characters: C0 (U+0000-U+001F, NUL included), DEL (U+007F) and C1
  (U+0080-U+009F): nothing a terminal or a Nix string would take for something else;

and the last segment (the file's name) does not end in ``.drv``: Nix refuses a
derivation name ending in ``.drv`` (``derivation names are not allowed to end in
'.drv'``), and a per-file fetch is named after the file.

A leading "-" is allowed (``--help``, ``-n.json``): every shell command the project
builds passes ``--`` before such names, as nixpkgs' ``linkFarm`` does.
"""

from __future__ import annotations

import json

#: The longest segment, in bytes of UTF-8 (NAME_MAX).
MAX_SEGMENT_BYTES = 255


def _control(ch: str) -> bool:
    o = ord(ch)
    return o < 0x20 or 0x7F <= o <= 0x9F


def repo_path_error(path: object) -> str | None:
    """Why ``path`` (``str``, or ``bytes`` as read from a file system) is not a repo file
    path, or None when it is one (module docstring). The reason is a phrase to follow the
    path, e.g. ``has a ".." segment``; the first broken rule wins, in the order
    ``lib/repopath.nix`` checks them: empty, leading "/", trailing "/", then per segment
    (empty, ".", "..", longer than 255 bytes, not UTF-8, a control character), then a
    name ending in ".drv"."""
    if isinstance(path, bytes):
        raw = path
    elif isinstance(path, str):
        # A lone surrogate (Python's stand-in for an undecodable byte, or a JSON
        # "\\udc80") becomes bytes that are not UTF-8, caught per segment below.
        raw = path.encode("utf-8", "surrogatepass")
    else:
        return "is not a string"
    if raw == b"":
        return "is empty"
    if raw.startswith(b"/"):
        return 'starts with "/" (a path from the repo root has none)'
    if raw.endswith(b"/"):
        return 'ends with "/"'
    segments = raw.split(b"/")
    for seg in segments:
        if seg == b"":
            return 'has an empty segment ("//")'
        if seg == b".":
            return 'has a "." segment'
        if seg == b"..":
            return 'has a ".." segment'
        if len(seg) > MAX_SEGMENT_BYTES:
            return f"has a segment longer than {MAX_SEGMENT_BYTES} bytes"
        try:
            text = seg.decode("utf-8")
        except UnicodeDecodeError:
            return "is not UTF-8"
        if any(_control(ch) for ch in text):
            return "holds a control character"
    if segments[-1].endswith(b".drv"):
        return 'ends in ".drv", a name Nix refuses for a fetched file'
    return None


def shown(path: object) -> str:
    """``path`` quoted for a message: JSON with every non-ASCII and control character
    escaped, so that a hostile name prints as one plain line."""
    if isinstance(path, bytes):
        path = path.decode("utf-8", "backslashreplace")
    return json.dumps(path if isinstance(path, str) else repr(path), ensure_ascii=True)
