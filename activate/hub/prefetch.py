"""``model-repo prefetch`` and ``model-repo ls``: pin a Hub repo for Nix.

``prefetch REPO`` resolves a ref (default ``main``) to a commit through the Hub API,
downloads the repo's files at that commit with huggingface_hub's ``snapshot_download``
into a temporary flat directory (no ``.git``, no ``.cache``), verifies every file
against the Hub's checksums (git blob sha1, LFS sha256), computes the NAR hash of the
tree (:mod:`activate.nar`) and prints a ready-to-paste Nix attribute set (or JSON).
That tree is what the Nix fetcher (``lib/fetch.nix``: ``fetchgit`` with LFS at the
commit, ``.git`` removed) produces, so the printed hash is its fixed-output hash.
``--add-to-store`` registers the tree as that fixed-output path.

``ls REPO`` lists the files and sizes at a commit without downloading them.

huggingface_hub is an optional dependency (``pip install model-repo[hub]``), imported
only by :func:`run`; :func:`add_parsers` imports nothing but argparse, because the
activator's no-op path builds the whole parser.

File selection (``--include``/``--exclude``) follows git's sparse-checkout rules in
non-cone mode, the rules the Nix fetcher applies to the same options (``sparsePatterns``
in ``lib/fetch.nix``, passed to ``git sparse-checkout set --stdin --no-cone`` by nixpkgs'
``nix-prefetch-git``); see :func:`sparse_select`. They differ from huggingface_hub's
``allow_patterns`` (fnmatch on the whole path): ``config.json`` selects every
``config.json`` at any depth, ``onnx/`` every folder named ``onnx``, ``/config.json``
only the top-level one.

Exit codes: 0 ok; 2 bad input (invalid repo id, unknown repo or revision, gated repo
without access, patterns that select nothing); 3 environment (huggingface_hub or Nix
missing, network or Hub failure, not enough disk space, download that does not match
the Hub's checksums); 70 internal error.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

EXIT_OK = 0
EXIT_BAD_INPUT = 2
EXIT_ENVIRONMENT = 3
EXIT_INTERNAL = 70

DEFAULT_REF = "main"
HUB_MISSING = "install model-repo[hub] (huggingface_hub) for prefetch and ls"
GATED_NO_TOKEN = "this repo is gated: set HF_TOKEN (or run `hf auth login`)"


# --------------------------------------------------------------------------- parser


def add_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register the ``prefetch`` and ``ls`` subcommands on ``sub`` (argparse only)."""

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("repo", metavar="REPO", help="repo id on the Hub, ORG/NAME")
        p.add_argument("-r", "--revision", metavar="REF", default=DEFAULT_REF,
                       help="branch, tag or commit to resolve (default: main)")
        p.add_argument("--include", action="append", default=[], metavar="PATTERN",
                       help="only files matching this git sparse-checkout pattern "
                       "(repeatable; same meaning as the Nix option include)")
        p.add_argument("--exclude", action="append", default=[], metavar="PATTERN",
                       help="leave out files matching this pattern (repeatable; the Nix "
                       "option exclude)")
        p.add_argument("--dataset", action="store_true", help="the repo is a dataset")
        p.add_argument("--json", action="store_true", help="machine-readable output")
        level = p.add_mutually_exclusive_group()
        level.add_argument("-v", "--verbose", action="store_true", help="log more (stderr)")
        level.add_argument("-q", "--quiet", action="store_true",
                           help="log errors only; no progress bars")
        p.add_argument("--log-format", choices=("console", "json"), default="console",
                       help="stderr log format (default: console)")

    epilog = ("Exit codes: 0 ok, 2 bad input (invalid repo id, unknown repo or revision, "
              "gated repo without access), 3 environment (huggingface_hub or Nix missing, "
              "network or Hub failure, disk space), 70 internal error. HF_ENDPOINT and "
              "HF_TOKEN are honoured.")
    pre = sub.add_parser(
        "prefetch",
        help="resolve a ref to a commit, download the files and print the Nix pin (revision + hash)",
        description="Resolve REF to a commit, download the repo's files at that commit, "
        "verify them against the Hub's checksums and print the attribute set to paste into "
        "a model definition: source.huggingface.{repo,revision} and the SRI hash the Nix "
        "fetcher will produce.",
        epilog=epilog,
    )
    common(pre)
    pre.add_argument("--add-to-store", action="store_true",
                     help="register the files as the fetcher's fixed-output store path "
                     "(nix-store --add-fixed), so the next build does not download them again")

    ls = sub.add_parser("ls", help="list a repo's files and sizes at a ref, without downloading",
                        description="List the files of REPO at REF with their sizes and a "
                        "total, without downloading them. --include/--exclude show what "
                        "prefetch (and the Nix fetcher) would select.",
                        epilog=epilog)
    common(ls)


# ---------------------------------------------------------------- file selection
#
# git's sparse-checkout in non-cone mode (git dir.c: parse_path_pattern,
# match_basename, match_pathname, last_matching_pattern_from_list; unpack-trees.c:
# clear_ce_flags_1/clear_ce_flags_dir; wildmatch.c), reimplemented on bytes.


def sparse_patterns(include: Sequence[str], exclude: Sequence[str],
                    files: Sequence[str] = ()) -> list[str]:
    """The sparse-checkout pattern list the Nix fetcher uses for these options, in order.

    Same as ``sparsePatterns`` in ``lib/fetch.nix``: ``files`` anchored with a leading
    ``/``, then ``include``; ``["/*"]`` (everything) when both are empty; then each
    ``exclude`` negated with ``!``. Empty when nothing is given (no sparse checkout).
    """
    wanted = ["/" + (f[1:] if f.startswith("/") else f) for f in files] + list(include)
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


def _parse_pattern(text: str) -> _Pattern | None:
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
                    None if rx is None else re.compile(rx, re.DOTALL))


def _last_match(patterns: Sequence[_Pattern], path: bytes, is_dir: bool) -> bool | None:
    base = path.rsplit(b"/", 1)[-1]
    for pat in reversed(patterns):
        if pat.must_be_dir and not is_dir:
            continue
        if pat.regex is not None and pat.regex.fullmatch(base if pat.basename_only else path):
            return not pat.negative
    return None


def sparse_select(paths: Iterable[str], patterns: Sequence[str]) -> list[str]:
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
    """
    items = list(paths)
    if not patterns:
        return items
    pats = [p for p in (_parse_pattern(t) for t in patterns) if p is not None]
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


def _fnmatch_escape(path: str) -> str:
    """``path`` as an fnmatch pattern matching exactly itself."""
    return re.sub(r"([*?\[])", r"[\1]", path)


# ------------------------------------------------------------------ hub access


class Failure(Exception):
    """Ends the command with ``code`` after logging ``message``."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class RemoteFile:
    """One file of the Hub's listing at a commit: ``size`` in bytes, ``blob_id`` the git
    blob sha1 (of the LFS pointer for LFS files), ``lfs_sha256`` the contents' sha256
    for LFS files (None otherwise)."""

    path: str
    size: int
    blob_id: str | None  # git blob sha1
    lfs_sha256: str | None


@dataclass
class Resolved:
    """A repo at a commit: ``ref`` is the branch or tag that was resolved (None when a
    commit was given), ``gated`` the Hub's ``gated`` field (False, "auto", "manual"),
    ``files`` sorted by path bytes."""

    repo_id: str
    repo_type: str
    ref: str | None  # None when a commit was given
    commit: str
    gated: Any
    files: list[RemoteFile]


def _truthy(value: str | None) -> bool:
    return (value or "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def _import_hub(environ: Mapping[str, str], log: Any) -> Any:
    """Import huggingface_hub (online even when HF_HUB_OFFLINE is set: these commands
    exist to talk to the Hub, and model-repo's own environment sets it)."""
    offline = _truthy(environ.get("HF_HUB_OFFLINE") or environ.get("TRANSFORMERS_OFFLINE"))
    if offline:
        log.info("ignoring HF_HUB_OFFLINE for this command: it needs the Hub")
        if "huggingface_hub" not in sys.modules:
            os.environ["HF_HUB_OFFLINE"] = "0"
    try:
        import huggingface_hub
        from huggingface_hub import constants
    except ImportError as exc:
        raise Failure(EXIT_ENVIRONMENT, f"{HUB_MISSING} ({exc})") from None
    if offline and getattr(constants, "HF_HUB_OFFLINE", False):
        constants.HF_HUB_OFFLINE = False
    return huggingface_hub


def _hub_failure(exc: BaseException, *, repo_id: str, repo_type: str,
                 ref: str, endpoint: str, has_token: bool, what: str) -> Failure | None:
    """Map a huggingface_hub/HTTP error to a :class:`Failure`, or None if unknown."""
    from huggingface_hub import errors as E  # noqa: N812

    kind = "dataset" if repo_type == "dataset" else "model"
    page = f"{endpoint}/{'datasets/' if repo_type == 'dataset' else ''}{repo_id}"
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, E.GatedRepoError):
            if not has_token:
                return Failure(EXIT_BAD_INPUT, f"{GATED_NO_TOKEN}; then accept its "
                               f"conditions on {page} ({repo_id})")
            return Failure(EXIT_BAD_INPUT, f"this repo is gated and the token (HF_TOKEN or "
                           f"`hf auth login`) has no access to {repo_id}: accept its "
                           f"conditions on {page} with that account, or use another token")
        if isinstance(cause, E.RevisionNotFoundError):
            return Failure(EXIT_BAD_INPUT, f"revision {ref!r} not found in {kind} repo "
                           f"{repo_id}: give a branch, tag or full commit that exists "
                           f"(`model-repo ls {repo_id}` resolves main)")
        if isinstance(cause, E.RepositoryNotFoundError):
            hint = ("" if has_token else "; if it is private, set HF_TOKEN (or run "
                    "`hf auth login`)")
            flag = "" if repo_type == "dataset" else "; for a dataset add --dataset"
            return Failure(EXIT_BAD_INPUT, f"{kind} repo {repo_id} not found on "
                           f"{endpoint}{hint}{flag}")
        if isinstance(cause, E.HfHubHTTPError):
            resp = getattr(cause, "response", None)
            status = getattr(resp, "status_code", None)
            if status == 401:
                return Failure(EXIT_BAD_INPUT, f"the Hub refused the token (401) while "
                               f"{what}: check HF_TOKEN (or run `hf auth login`)")
            url = getattr(getattr(resp, "request", None), "url", None) or endpoint
            return Failure(EXIT_ENVIRONMENT, f"{what} failed: the Hub answered HTTP "
                           f"{status} for {url}; retry later, or check HF_ENDPOINT")
        if isinstance(cause, E.OfflineModeIsEnabled):
            return Failure(EXIT_ENVIRONMENT, f"{what} failed: huggingface_hub is in "
                           "offline mode; unset HF_HUB_OFFLINE")
        mod = type(cause).__module__.split(".")[0]
        if mod in {"httpx", "httpx2", "requests", "urllib3", "httpcore", "ssl"} or \
                isinstance(cause, (ConnectionError, TimeoutError)):
            return Failure(EXIT_ENVIRONMENT, f"{what} failed: cannot reach the Hub at "
                           f"{endpoint} ({type(cause).__name__}: {cause}); check the "
                           "network, a proxy or HF_ENDPOINT")
        cause = cause.__cause__ or cause.__context__
    if isinstance(exc, E.LocalEntryNotFoundError):
        return Failure(EXIT_ENVIRONMENT, f"{what} failed: {exc}")
    return None


def _resolve(api: Any, repo_id: str, repo_type: str, revision: str,
             call: Callable[[str, Callable[[], Any]], Any]) -> Resolved:
    """Resolve ``revision`` to a commit (``repo_info(revision=…).sha``) and list the
    files at that commit (``list_repo_tree(recursive=True)``, following pagination).
    ``call`` wraps each Hub call to map its errors. Raises :class:`Failure`."""
    info = call("resolving the revision",
                lambda: api.repo_info(repo_id, repo_type=repo_type, revision=revision))
    commit = getattr(info, "sha", None)
    if not commit or not re.fullmatch(r"[0-9a-f]{40}", commit):
        raise Failure(EXIT_ENVIRONMENT, f"the Hub did not return a commit for {repo_id} "
                      f"at {revision!r} (got {commit!r}); check HF_ENDPOINT")
    given_commit = bool(re.fullmatch(r"[0-9a-f]{7,40}", revision)) and commit.startswith(revision)
    entries = call("listing the files", lambda: list(api.list_repo_tree(
        repo_id, recursive=True, revision=commit, repo_type=repo_type)))
    files = []
    for e in entries:
        if not hasattr(e, "blob_id") or getattr(e, "size", None) is None:
            continue  # a folder
        lfs = getattr(e, "lfs", None)
        sha = getattr(lfs, "sha256", None) if lfs is not None else None
        if sha is None and isinstance(lfs, dict):
            sha = lfs.get("sha256") or lfs.get("oid")
        files.append(RemoteFile(e.path, int(e.size), e.blob_id, sha))
    files.sort(key=lambda f: f.path.encode("utf-8"))
    return Resolved(repo_id, repo_type, None if given_commit else revision, commit,
                    getattr(info, "gated", None), files)


# --------------------------------------------------------------------- helpers


def store_name(repo_id: str, commit: str) -> str:
    """The store path name the Nix fetcher gives a Hub repo: ``hfStoreName`` in
    ``lib/fetch.nix``, ``"hf-" + repo with "/" -> "--" + "-" + first 12 hex of the
    commit`` (``hf-sentence-transformers--all-MiniLM-L6-v2-c9745ed1d9f2``)."""
    return "hf-" + repo_id.replace("/", "--") + "-" + commit[:12]


def nix_string(s: str) -> str:
    """A Nix double-quoted string literal for ``s`` (escapes ``\\``, ``"``, ``${``,
    newlines, tabs, carriage returns)."""
    out = s.replace("\\", "\\\\").replace('"', '\\"').replace("${", "\\${")
    out = out.replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
    return f'"{out}"'


def human_size(n: int) -> str:
    """``n`` bytes with a binary unit, one decimal: ``87.7 MiB``."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{n} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError  # pragma: no cover


def render_nix(*, repo_id: str, repo_type: str, commit: str, ref: str | None, date: str,
               include: Sequence[str], exclude: Sequence[str], sri_hash: str) -> str:
    """The attribute set for a model definition (``models.<name> = …`` in the modules,
    or the argument of ``lib.fetchModel``), ending with a newline.

    ``ref`` None (a commit was given) prints no comment; a ref other than ``main`` that
    the activator accepts (:func:`activate.naming.ref_error`) is printed as ``ref``.
    """
    from ..naming import ref_error

    lines = ["{", "  source.huggingface = {", f"    repo = {nix_string(repo_id)};"]
    rev = f"    revision = {nix_string(commit)};"
    if ref is not None:
        rev += f"  # {ref} on {date}"
    lines.append(rev)
    if ref is not None and ref != DEFAULT_REF and ref_error(ref) is None:
        lines.append(f"    ref = {nix_string(ref)};")
    if repo_type != "model":
        lines.append(f"    repoType = {nix_string(repo_type)};")
    for key, values in (("include", include), ("exclude", exclude)):
        if values:
            lines.append(f"    {key} = [ " + " ".join(nix_string(v) for v in values) + " ];")
    lines += ["  };", f"  hash = {nix_string(sri_hash)};", "}"]
    return "\n".join(lines) + "\n"


def _checker(expected: dict[str, RemoteFile], seen: dict[str, int],
             bad: list[str]) -> Callable[[str, int], Callable[[bytes], object] | None]:
    """An :data:`activate.nar.Observer` that checks each file against the Hub's
    checksum: LFS files by sha256, the others by git blob sha1 (``blob <size>\\0``
    + contents). Records sizes in ``seen`` and mismatches in ``bad``."""

    def observe(rel: str, size: int) -> Callable[[bytes], object] | None:
        seen[rel] = size
        want = expected.get(rel)
        if want is None:
            return None
        if want.lfs_sha256:
            h, target = hashlib.sha256(), want.lfs_sha256
        elif want.blob_id:
            h, target = hashlib.sha1(f"blob {size}\0".encode()), want.blob_id
        else:
            return None
        left = [size]

        def update(chunk: bytes) -> None:
            h.update(chunk)
            left[0] -= len(chunk)
            if left[0] == 0 and h.hexdigest() != target:
                kind = "sha256" if want.lfs_sha256 else "git blob id"
                bad.append(f"{rel}: {kind} {h.hexdigest()}, the Hub says {target}")

        if size == 0:
            update(b"")
        return update

    return observe


# ------------------------------------------------------------------------ run


def run(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    """Run ``prefetch`` or ``ls`` (``args.command``); returns the exit status.

    ``environ`` supplies ``HF_ENDPOINT``, ``HF_TOKEN`` (else huggingface_hub's stored
    token), ``HF_HUB_OFFLINE`` (ignored, with a note), ``TMPDIR`` and ``PATH`` (for
    ``nix-store``). Output goes to stdout, logs to stderr.
    """
    from ..log import Log

    default = "info" if args.command == "prefetch" else "warning"
    level = "debug" if args.verbose else "error" if args.quiet else default
    log = Log(level, args.log_format)
    try:
        return _run(args, environ, log)
    except Failure as f:
        log.error(f.message)
        return f.code
    except KeyboardInterrupt:
        log.error("interrupted")
        return EXIT_ENVIRONMENT
    except Exception as exc:  # noqa: BLE001 - a bug; report it and exit distinctly
        import traceback

        log.error("internal error", error=repr(exc), traceback=traceback.format_exc())
        return EXIT_INTERNAL


def _run(args: argparse.Namespace, environ: Mapping[str, str], log: Any) -> int:
    """Validate the input, check for nix-store when needed (before any network), resolve
    and list, then print the listing (``ls``) or prefetch. Raises :class:`Failure`."""
    from ..naming import repo_id_error

    repo_id: str = args.repo
    err = repo_id_error(repo_id)
    if err is not None:
        raise Failure(EXIT_BAD_INPUT, f"invalid repo id {repo_id!r}: {err}")
    if args.command == "prefetch" and "/" not in repo_id:
        raise Failure(EXIT_BAD_INPUT, f"invalid repo id {repo_id!r}: the Nix options take "
                      "a full repo id ORG/NAME (e.g. openai-community/gpt2 for gpt2)")
    if not args.revision:
        raise Failure(EXIT_BAD_INPUT, "--revision must not be empty (e.g. main)")
    nix_store = None
    if getattr(args, "add_to_store", False):
        nix_store = shutil.which("nix-store", path=environ.get("PATH", os.defpath))
        if nix_store is None:
            raise Failure(EXIT_ENVIRONMENT, "--add-to-store needs nix-store, which is not "
                          "on PATH: install Nix (https://nixos.org/download; on Debian "
                          "`apt-get install nix-bin`), or leave out --add-to-store")

    hub = _import_hub(environ, log)
    from huggingface_hub import HfApi

    endpoint = (environ.get("HF_ENDPOINT") or "").rstrip("/") or None
    token = environ.get("HF_TOKEN") or environ.get("HUGGING_FACE_HUB_TOKEN") or None
    api = HfApi(endpoint=endpoint, token=token)
    endpoint = api.endpoint.rstrip("/")
    try:
        has_token = bool(token or hub.get_token())
    except Exception:  # noqa: BLE001 - e.g. a failing OIDC exchange: no usable token
        has_token = False
    repo_type = "dataset" if args.dataset else "model"

    def call(what: str, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except Failure:
            raise
        except Exception as exc:  # noqa: BLE001 - mapped below or re-raised
            failure = _hub_failure(exc, repo_id=repo_id, repo_type=repo_type,
                                   ref=args.revision, endpoint=endpoint,
                                   has_token=has_token, what=what)
            if failure is None:
                raise
            raise failure from exc

    res = _resolve(api, repo_id, repo_type, args.revision, call)
    log.info("resolved", repo=repo_id, revision=args.revision, commit=res.commit)
    patterns = sparse_patterns(args.include, args.exclude)
    selected = set(sparse_select([f.path for f in res.files], patterns))
    chosen = [f for f in res.files if f.path in selected]
    if args.command == "ls":
        _print_ls(args, res, chosen, endpoint)
        return EXIT_OK
    if not chosen:
        raise Failure(EXIT_BAD_INPUT, f"no file of {repo_id} at {res.commit} matches "
                      f"--include {args.include} --exclude {args.exclude} "
                      f"(`model-repo ls {repo_id}` lists them)")
    if any(f.path == ".cache/huggingface" or f.path.startswith(".cache/huggingface/")
           for f in chosen):
        raise Failure(EXIT_BAD_INPUT, f"{repo_id} has files under .cache/huggingface/, "
                      "the folder huggingface_hub keeps its download state in: leave them "
                      "out with --exclude /.cache/huggingface/")
    if res.gated and not has_token:
        raise Failure(EXIT_BAD_INPUT, f"{GATED_NO_TOKEN}; then accept its conditions on "
                      f"{endpoint}/{'datasets/' if repo_type == 'dataset' else ''}{repo_id}")
    return _prefetch(args, environ, log, hub, res, chosen, patterns, endpoint, token,
                     nix_store, call)


def _print_ls(args: argparse.Namespace, res: Resolved, chosen: list[RemoteFile],
              endpoint: str) -> None:
    """Print the selected files with their sizes (bytes) and a total, or JSON."""
    total = sum(f.size for f in chosen)
    if args.json:
        import json

        doc = {
            "repo": res.repo_id, "repoType": res.repo_type, "revision": res.commit,
            "ref": res.ref, "gated": bool(res.gated),
            "include": list(args.include), "exclude": list(args.exclude),
            "files": [{"path": f.path, "size": f.size, "lfs": f.lfs_sha256 is not None}
                      for f in chosen],
            "totalSize": total,
        }
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
        return
    at = f"{res.ref} = {res.commit}" if res.ref else res.commit
    lines = [f"# {res.repo_id} ({res.repo_type}) at {at}"]
    if res.gated:
        lines.append("# gated: downloading needs HF_TOKEN (or `hf auth login`) with access")
    width = max([len(str(f.size)) for f in chosen] + [4])
    for f in chosen:
        lines.append(f"{f.size:>{width}}  {f.path}" + ("  (lfs)" if f.lfs_sha256 else ""))
    summary = f"{len(chosen)} files, {total} bytes ({human_size(total)})"
    if len(chosen) != len(res.files):
        all_total = sum(f.size for f in res.files)
        summary += f" selected of {len(res.files)} files, {all_total} bytes"
    lines.append(summary)
    sys.stdout.write("\n".join(lines) + "\n")


def _prefetch(args: argparse.Namespace, environ: Mapping[str, str], log: Any, hub: Any,
              res: Resolved, chosen: list[RemoteFile], patterns: list[str],
              endpoint: str, token: str | None, nix_store: str | None,
              call: Callable[[str, Callable[[], Any]], Any]) -> int:
    """Download ``chosen`` at the commit into ``$TMPDIR/model-repo-prefetch-*/<store
    name>``, verify and NAR-hash it, optionally ``nix-store --add-fixed`` it, print the
    pin; the temporary folder is always removed. Raises :class:`Failure`."""
    import datetime
    import tempfile

    from huggingface_hub import snapshot_download
    from huggingface_hub.utils import disable_progress_bars, filter_repo_objects

    from .nar import NarError, nar_hash, sri

    total = sum(f.size for f in chosen)
    workdir = tempfile.mkdtemp(prefix="model-repo-prefetch-", dir=environ.get("TMPDIR") or None)
    try:
        free = shutil.disk_usage(workdir).free
        if free < total + (64 << 20):
            raise Failure(EXIT_ENVIRONMENT, f"not enough space in {workdir}: the files need "
                          f"{human_size(total)}, {human_size(free)} is free; set TMPDIR to a "
                          "folder on a larger disk")
        name = store_name(res.repo_id, res.commit)
        tree = os.path.join(workdir, name)
        os.mkdir(tree)
        if args.quiet or not sys.stderr.isatty():
            disable_progress_bars()
        # Same files as git's sparse checkout: pass the user's patterns when
        # huggingface_hub's glob rules select the same set, else the exact paths.
        allow: list[str] | None = None
        ignore: list[str] | None = None
        if patterns:
            allow, ignore = list(args.include) or None, list(args.exclude) or None
            wanted = {f.path for f in chosen}
            if set(filter_repo_objects([f.path for f in res.files], allow_patterns=allow,
                                       ignore_patterns=ignore)) != wanted:
                allow, ignore = [_fnmatch_escape(p) for p in sorted(wanted)], None
        log.info("downloading", files=len(chosen), size=human_size(total), into=tree)
        call("downloading the files", lambda: snapshot_download(
            res.repo_id, repo_type=res.repo_type, revision=res.commit, local_dir=tree,
            cache_dir=os.path.join(workdir, "hub-cache"), allow_patterns=allow,
            ignore_patterns=ignore, endpoint=endpoint, token=token))
        meta = os.path.join(tree, ".cache", "huggingface")
        if os.path.isdir(meta):
            shutil.rmtree(meta)
            try:
                os.rmdir(os.path.join(tree, ".cache"))
            except OSError:
                pass  # the repo has files of its own there
        expected = {f.path: f for f in chosen}
        seen: dict[str, int] = {}
        bad: list[str] = []
        log.info("hashing", path=tree)
        try:
            digest = nar_hash(tree, observe=_checker(expected, seen, bad))
        except NarError as exc:
            raise Failure(EXIT_ENVIRONMENT, f"cannot hash the download: {exc}") from exc
        missing = sorted(set(expected) - set(seen))
        extra = sorted(set(seen) - set(expected))
        sizes = [f"{p}: {seen[p]} bytes, the Hub says {expected[p].size}"
                 for p in expected if p in seen and seen[p] != expected[p].size]
        problems = ([f"missing {p}" for p in missing] + [f"unexpected {p}" for p in extra]
                    + sizes + bad)
        if problems:
            raise Failure(EXIT_ENVIRONMENT, "the download does not match the Hub's listing "
                          f"of {res.repo_id} at {res.commit}: " + "; ".join(problems[:10])
                          + ("; …" if len(problems) > 10 else "") + "; retry")
        sri_hash = sri(digest)
        store_path = None
        if nix_store is not None:
            proc = subprocess.run([nix_store, "--add-fixed", "--recursive", "sha256", tree],
                                  capture_output=True, text=True)
            if proc.returncode != 0:
                raise Failure(EXIT_ENVIRONMENT, "nix-store --add-fixed failed "
                              f"(exit {proc.returncode}): {proc.stderr.strip()}")
            store_path = proc.stdout.strip().splitlines()[-1]
            log.info("added to the store", path=store_path)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    date = datetime.datetime.now(datetime.timezone.utc).date().isoformat()
    if args.json:
        import json

        doc = {
            "repo": res.repo_id, "repoType": res.repo_type, "revision": res.commit,
            "ref": res.ref, "date": date, "hash": sri_hash,
            "include": list(args.include), "exclude": list(args.exclude),
            "files": [{"path": f.path, "size": f.size} for f in chosen],
            "name": name, "storePath": store_path,
        }
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
    else:
        sys.stdout.write(render_nix(repo_id=res.repo_id, repo_type=res.repo_type,
                                    commit=res.commit, ref=res.ref, date=date,
                                    include=args.include, exclude=args.exclude,
                                    sri_hash=sri_hash))
        if store_path is not None:
            sys.stdout.write(f"# store path: {store_path}\n")
    return EXIT_OK
