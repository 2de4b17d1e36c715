"""File selection with git's sparse-checkout rules (non-cone mode), as the Nix fetcher applies
the options ``files``/``include``/``exclude`` (``sparsePatterns`` in ``lib/fetchers/common.nix``,
passed to ``git sparse-checkout set --stdin --no-cone`` by nixpkgs' ``nix-prefetch-git``).

They differ from huggingface_hub's ``allow_patterns`` (fnmatch on the whole path):
``config.json`` selects every ``config.json`` at any depth, ``onnx/`` every folder named
``onnx``, ``/config.json`` only the top-level one.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

# ---------------------------------------------------------------- file selection
#
# git's sparse-checkout in non-cone mode (git dir.c: parse_path_pattern,
# match_basename, match_pathname, last_matching_pattern_from_list; unpack-trees.c:
# clear_ce_flags_1/clear_ce_flags_dir; wildmatch.c), reimplemented on bytes.


def exact_pattern(path: str) -> str:
    """The sparse-checkout pattern selecting exactly the file ``path`` (relative to the
    repo root): anchored with ``/``, with git's glob characters ``\\ * ? [`` escaped by
    a backslash, and a trailing space escaped (gitignore(5) "PATTERN FORMAT").
    Same as ``exactPattern`` in ``lib/fetchers/common.nix``."""
    rel = path[1:] if path.startswith("/") else path
    if rel.endswith(" "):  # git drops trailing spaces unless the last one is escaped
        rel = rel[:-1] + "\x00"
    return "/" + re.sub(r"([\\*?\[])", r"\\\1", rel).replace("\x00", "\\ ")


def sparse_patterns(include: Sequence[str], exclude: Sequence[str],
                    files: Sequence[str] = ()) -> list[str]:
    """The sparse-checkout pattern list the Nix fetcher uses for these options, in order.

    Same as ``sparsePatterns`` in ``lib/fetchers/common.nix``: ``files`` as exact
    patterns (:func:`exact_pattern`), then ``include``; ``["/*"]`` (everything) when
    both are empty; then each ``exclude`` negated with ``!``. Empty when nothing is
    given (no sparse checkout).
    """
    wanted = [exact_pattern(f) for f in files] + list(include)
    if not wanted and not exclude:
        return []
    return (wanted or ["/*"]) + ["!" + p for p in exclude]


@dataclass(frozen=True)
class _Pattern:
    negative: bool
    must_be_dir: bool
    basename_only: bool  # no "/" in the pattern: matched against the last component
    regex: re.Pattern[bytes] | None  # None: never matches (malformed pattern)


_CLASSES: dict[bytes, bytes] = {
    b"alnum": bytes(range(48, 58)) + bytes(range(65, 91)) + bytes(range(97, 123)),
    b"alpha": bytes(range(65, 91)) + bytes(range(97, 123)),
    b"blank": b" \t",
    b"cntrl": bytes(range(0, 32)) + b"\x7f",
    b"digit": bytes(range(48, 58)),
    b"graph": bytes(range(33, 127)),
    b"lower": bytes(range(97, 123)),
    b"print": bytes(range(32, 127)),
    b"punct": bytes(c for c in range(33, 127) if not chr(c).isalnum()),
    b"space": b" \t\n\v\f\r",
    b"upper": bytes(range(65, 91)),
    b"xdigit": b"0123456789abcdefABCDEF",
}


def _bracket(p: bytes, i: int) -> tuple[bytes | None, int]:
    """Translate the bracket expression starting after ``[`` at ``p[i]``; returns the
    regex (None: malformed, the whole pattern never matches) and the index after ``]``."""
    n = len(p)
    if i >= n:
        return None, i
    negated = p[i] in b"!^"
    if negated:
        i += 1
    allowed: set[int] = set()
    prev: int | None = None
    first = True
    while True:
        if i >= n:
            return None, i
        c = p[i]
        if c == 0x5D and not first:  # "]"
            i += 1
            break
        first = False
        if c == 0x5C:  # "\"
            i += 1
            if i >= n:
                return None, i
            allowed.add(p[i])
            prev = p[i]
            i += 1
        elif c == 0x2D and prev is not None and i + 1 < n and p[i + 1] != 0x5D:  # "-"
            i += 1
            hi = p[i]
            if hi == 0x5C:
                i += 1
                if i >= n:
                    return None, i
                hi = p[i]
            allowed.update(range(prev, hi + 1))
            prev = None
            i += 1
        elif c == 0x5B and i + 1 < n and p[i + 1] == 0x3A:  # "[:"
            j = p.find(b"]", i + 2)
            if j < 0:
                return None, i
            if j - 1 < i + 2 or p[j - 1] != 0x3A:  # no ":]": a plain "["
                allowed.add(c)
                prev = c
                i += 1
                continue
            name = p[i + 2 : j - 1]
            if name not in _CLASSES:
                return None, i
            allowed.update(_CLASSES[name])
            prev = None
            i = j + 1
        else:
            allowed.add(c)
            prev = c
            i += 1
    chars = set(range(256)) - allowed if negated else allowed
    chars.discard(0x2F)  # never "/" (WM_PATHNAME; basenames hold none)
    if not chars:
        return b"(?!)", i
    return b"[" + b"".join(b"\\x%02x" % c for c in sorted(chars)) + b"]", i


def _wildmatch_regex(p: bytes) -> bytes | None:
    """git wildmatch with WM_PATHNAME as a regex (for ``fullmatch``), or None when the
    pattern is malformed and matches nothing."""
    out: list[bytes] = []
    i, n = 0, len(p)
    while i < n:
        c = p[i]
        if c == 0x5C:  # "\": the next byte literally
            if i + 1 >= n:
                return None
            out.append(re.escape(p[i + 1 : i + 2]))
            i += 2
        elif c == 0x3F:  # "?"
            out.append(b"[^/]")
            i += 1
        elif c == 0x2A:  # "*"
            j = i
            while j < n and p[j] == 0x2A:
                j += 1
            if j - i >= 2 and (i == 0 or p[i - 1] == 0x2F):
                rest = p[j:]
                if not rest:
                    out.append(b".*")
                    i = j
                    continue
                if rest[:1] == b"/" or rest[:2] == b"\\/":
                    out.append(b"(?:.*/)?")
                    i = j + (1 if rest[:1] == b"/" else 2)
                    continue
            out.append(b"[^/]*")
            i = j
        elif c == 0x5B:  # "["
            rx, i = _bracket(p, i + 1)
            if rx is None:
                return None
            out.append(rx)
        else:
            out.append(re.escape(p[i : i + 1]))
            i += 1
    return b"".join(out)


def _trim_trailing_spaces(line: bytes) -> bytes:
    last_space = None
    i = 0
    while i < len(line):
        c = line[i]
        if c == 0x20:
            if last_space is None:
                last_space = i
        elif c == 0x5C:
            i += 1
            if i >= len(line):
                return line
            last_space = None
        else:
            last_space = None
        i += 1
    return line if last_space is None else line[:last_space]


def _parse_pattern(text: str, ignore_case: bool = False) -> _Pattern | None:
    """One line of a sparse-checkout file -> a pattern, or None for blank/comment lines."""
    line = _trim_trailing_spaces(text.encode("utf-8"))
    if not line or line.startswith(b"#"):
        return None
    negative = line.startswith(b"!")
    if negative:
        line = line[1:]
    must_be_dir = line.endswith(b"/")
    if must_be_dir:
        line = line[:-1]
    basename_only = b"/" not in line
    if basename_only:
        rx = _wildmatch_regex(line)
    else:
        if line.startswith(b"/"):
            line = line[1:]
        # A literal prefix, then wildmatch on the rest (match_pathname): "**" right
        # after the prefix counts as the start of a pattern, as in git.
        m = re.search(rb"[*?\[\\]", line)
        cut = m.start() if m else len(line)
        rest = _wildmatch_regex(line[cut:])
        rx = None if rest is None else re.escape(line[:cut]) + rest
    return _Pattern(negative, must_be_dir, basename_only,
                    None if rx is None else re.compile(
                        rx, re.DOTALL | (re.IGNORECASE if ignore_case else 0)))


def _last_match(patterns: Sequence[_Pattern], path: bytes, is_dir: bool) -> bool | None:
    base = path.rsplit(b"/", 1)[-1]
    for pat in reversed(patterns):
        if pat.must_be_dir and not is_dir:
            continue
        if pat.regex is not None and pat.regex.fullmatch(base if pat.basename_only else path):
            return not pat.negative
    return None


def sparse_select(paths: Iterable[str], patterns: Sequence[str], *,
                  ignore_case: bool = False) -> list[str]:
    """The files of ``paths`` (``/``-separated, relative to the repo root) that a git
    checkout with these non-cone sparse-checkout ``patterns`` contains, in input order.

    Rules (gitignore(5) "PATTERN FORMAT"; git's ``dir.c`` and ``unpack-trees.c``
    ``clear_ce_flags_dir`` for the folder inheritance; checked against real git by
    ``tests/test_prefetch.py``): a file is in when the last pattern matching it is positive; when
    none matches it, it inherits the decision of its nearest folder that a pattern
    matched (folders decide the same way), and is out when none did. Patterns without
    ``/`` match a name at any depth, patterns with one are anchored at the root, a
    trailing ``/`` matches folders only, ``*``/``?``/``[...]`` never match ``/``, ``**``
    matches across folders, ``!`` negates, ``\\`` escapes, ``#`` starts a comment.
    An empty pattern list selects everything (no sparse checkout).

    ``ignore_case``: match ASCII letters without case, as git does with
    ``core.ignorecase=true`` (set by ``git init`` on darwin's case-insensitive file
    systems; dir.c's ``fnmatch_icase``/``WM_CASEFOLD``).
    """
    items = list(paths)
    if not patterns:
        return items
    pats = [p for p in (_parse_pattern(t, ignore_case) for t in patterns) if p is not None]
    dir_cache: dict[bytes, bool] = {b"": False}

    def dir_state(d: bytes) -> bool:
        if d not in dir_cache:
            parent = d.rsplit(b"/", 1)[0] if b"/" in d else b""
            own = _last_match(pats, d, True)
            dir_cache[d] = dir_state(parent) if own is None else own
        return dir_cache[d]

    out = []
    for path in items:
        b = path.encode("utf-8")
        own = _last_match(pats, b, False)
        if own is None:
            own = dir_state(b.rsplit(b"/", 1)[0] if b"/" in b else b"")
        if own:
            out.append(path)
    return out


def fnmatch_escape(path: str) -> str:
    """``path`` as an fnmatch pattern matching exactly itself."""
    return re.sub(r"([*?\[])", r"[\1]", path)




def case_differences(paths: Iterable[str], patterns: Sequence[str]) -> tuple[list[str], list[str]]:
    """What a case-insensitive checkout (darwin: ``core.ignorecase=true``) would select
    differently from a case-sensitive one with the same ``patterns``: (files it would
    add, files it would leave out), in input order. Both empty: the patterns select the
    same files on every builder, so a hash prefetched here reproduces there."""
    items = list(paths)
    exact = set(sparse_select(items, patterns))
    folded = set(sparse_select(items, patterns, ignore_case=True))
    return ([p for p in items if p in folded and p not in exact],
            [p for p in items if p in exact and p not in folded])
