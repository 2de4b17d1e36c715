"""Hub access through huggingface_hub: importing it, mapping its errors to exit codes and
messages, resolving a revision to a commit and listing the files there.

huggingface_hub is imported only inside these functions (never at module import), so
the argument parsers stay cheap.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..repopath import shown

# The exit codes, Failure and Deadline live in .failure (transport needs them too, and
# api imports transport): re-exported here, where the other modules import them from.
from .failure import (EXIT_BAD_INPUT, EXIT_ENVIRONMENT, EXIT_INTERNAL, EXIT_OK,  # noqa: F401
                      Deadline, Failure)

DEFAULT_REF = "main"
HUB_MISSING = ("the Hub commands need huggingface_hub: use the Nix package (it has it), "
               "or run `pip install huggingface_hub` (from a checkout: `pip install "
               "'.[hub]'`)")
GATED_NO_TOKEN = "this repo is gated: set HF_TOKEN (or run `hf auth login`)"


def make_folder(path: str, what: str, fix: str) -> None:
    """Create folder ``path`` (and its parents) if missing; raises :class:`Failure` (exit 3)
    naming ``what`` it is for and the ``fix``."""
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise Failure(EXIT_ENVIRONMENT, f"cannot create the {what} {path}: "
                      f"{exc.strerror or exc}; {fix}") from None


#: The exit status when stdout is closed early (``model-repo ls … | head``): what a shell
#: reports for a process that SIGPIPE ended (128 + 13), as ``cat``/``ls`` end there.
EXIT_BROKEN_PIPE = 141


def stdout_closed() -> int:
    """Stdout's reader went away (``| head``): point stdout at /dev/null, so the
    interpreter's final flush does not fail again, and return :data:`EXIT_BROKEN_PIPE`
    without a message, as command-line tools do (Python's documentation, "Note on
    SIGPIPE")."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # stdout is not a file descriptor (e.g. captured)
        pass
    return EXIT_BROKEN_PIPE


def printable(text: str) -> str:
    """``text`` safe to print on a terminal: every control character (Unicode categories
    Cc and Cf, and the line/paragraph separators: ANSI escapes, newlines, carriage
    returns, bidirectional overrides) written as a Python escape (``\\x1b``,
    ``\\n``, ``\\u202e``), so a Hub file name cannot move the cursor, recolour the
    terminal or print a line of its own. Used for every human-readable line that
    carries a name from the Hub or a lock file; JSON output escapes by itself."""
    import unicodedata

    if text.isprintable() and text.isascii():
        return text
    out = []
    for ch in text:
        if ch in " " or unicodedata.category(ch) not in ("Cc", "Cf", "Cs", "Co", "Cn",
                                                          "Zl", "Zp"):
            out.append(ch)
        else:
            out.append(repr(ch)[1:-1] if ord(ch) < 0x10000 or ch.isprintable()
                       else f"\\U{ord(ch):08x}")
    return "".join(out)


def exit_status(run: Callable[[], int], log: Any,
                bad_input: tuple[type[BaseException], ...] = ()) -> int:
    """Run a command's body and give its exit status: a :class:`Failure` is logged and
    ends with its code, ``bad_input`` exceptions with 2, Ctrl-C with 3, anything else
    (a bug) with 70 and the traceback in the log: never a bare traceback."""
    try:
        code = run()
        sys.stdout.flush()  # a closed pipe shows here, not at the interpreter's exit
        return code
    except BrokenPipeError:
        return stdout_closed()
    except Failure as f:
        log.error(printable(f.message))
        return f.code
    except bad_input as exc:
        log.error(printable(str(exc)))
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        log.error("interrupted")
        return EXIT_ENVIRONMENT
    except Exception as exc:  # noqa: BLE001 - a bug; report it and exit distinctly
        import traceback

        log.error("internal error", error=repr(exc), traceback=traceback.format_exc())
        return EXIT_INTERNAL


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


#: Environment variables bounding a command's time against a Hub that never finishes
#: (an endless listing, a body trickling a byte at a time): seconds, > 0.
TIMEOUT_ENV = "MODEL_REPO_HUB_TIMEOUT"
FILE_TIMEOUT_ENV = "MODEL_REPO_FILE_TIMEOUT"
#: Defaults: a whole ``ls``/``lock``/``update``/``prefetch --per-file`` (no large download),
#: a snapshot ``prefetch`` (downloads the model), one file ``lock`` downloads to hash it
#: (a non-LFS file: under 10 MiB on the Hub).
DEFAULT_TIMEOUT = 3600.0
DEFAULT_PREFETCH_TIMEOUT = 24 * 3600.0
DEFAULT_FILE_TIMEOUT = 600.0
#: Bounds on a tree listing: the Hub gives 1,000 entries a page (huggingface_hub's
#: ``_iter_repo_tree_pages``), so these allow a million files.
MAX_LIST_ENTRIES = 1_000_000
MAX_LIST_PAGES = 2_000


def timeout_setting(environ: Mapping[str, str], name: str, default: float) -> float:
    """Seconds from environment variable ``name`` (``default`` when unset or empty);
    raises :class:`Failure` (exit 2) naming it when it is not a number > 0."""
    raw = (environ.get(name) or "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0 or value != value or value == float("inf"):
        raise Failure(EXIT_BAD_INPUT, f"{name}={raw!r}: give a number of seconds > 0 "
                      f"(default {default:g})")
    return value


class Watchdog:
    """Ends the process when a command runs past its deadline, wherever it is blocked
    (a library's retry sleeping on a huge ``Retry-After``, a download in a worker
    thread): one line on stderr, the temporary folders registered with
    :data:`activate.hub.signals.on_interrupt` removed, exit 3 (``os._exit``, the way the
    signal handler ends). Use as a context manager; the command's own checks
    (:class:`Deadline`) usually end it sooner with a normal error."""

    def __init__(self, seconds: float, what: str):
        import threading

        self.seconds = seconds
        self.what = what
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="model-repo-deadline",
                                        daemon=True)

    def __enter__(self) -> Watchdog:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()

    def _watch(self) -> None:
        import shutil

        if self._done.wait(self.seconds + 5):  # the cooperative checks go first
            return
        from .signals import on_interrupt

        for path in list(getattr(on_interrupt, "paths", [])):
            shutil.rmtree(path, ignore_errors=True)
        line = (f"model-repo: the command did not finish within {self.seconds:g} s: the Hub "
                f"is too slow or never ends an answer; retry later, check HF_ENDPOINT, or "
                f"allow more time with {self.what}\n")
        try:
            os.write(2, line.encode())
        finally:
            os._exit(EXIT_ENVIRONMENT)


def truthy(value: str | None) -> bool:
    return (value or "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def import_hub(environ: Mapping[str, str], log: Any) -> Any:
    """Import huggingface_hub (online even when HF_HUB_OFFLINE is set: these commands
    exist to talk to the Hub, and model-repo's own environment sets it)."""
    offline = truthy(environ.get("HF_HUB_OFFLINE") or environ.get("TRANSFORMERS_OFFLINE"))
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


def hub_failure(exc: BaseException, *, repo_id: str, repo_type: str,
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


class HubSession:
    """One command's way to the Hub: the endpoint and token taken from ``environ``
    (``HF_ENDPOINT``; ``HF_TOKEN``/``HUGGING_FACE_HUB_TOKEN`` with surrounding whitespace
    and line breaks removed, as huggingface_hub's ``_clean_token`` does, else the stored
    token), the command's :class:`Deadline` (``timeout`` seconds, from
    :data:`TIMEOUT_ENV`) and the per-file one (:data:`FILE_TIMEOUT_ENV`), and every
    call's errors mapped to a :class:`Failure`.

    ``requests`` counts the API calls made through :meth:`call` (tests compare it with
    the mock Hub's own count). Raises :class:`Failure` when huggingface_hub is missing
    or a timeout setting is not a number.
    """

    def __init__(self, environ: Mapping[str, str], log: Any,
                 timeout: float = DEFAULT_TIMEOUT):
        self.hub = import_hub(environ, log)
        from huggingface_hub import constants

        endpoint = (environ.get("HF_ENDPOINT") or "").strip().rstrip("/")
        self.endpoint: str = endpoint or constants.ENDPOINT.rstrip("/")
        raw = environ.get("HF_TOKEN") or environ.get("HUGGING_FACE_HUB_TOKEN") or ""
        self.token: str | None = raw.replace("\r", "").replace("\n", "").strip() or None
        try:
            self.has_token = bool(self.token or self.hub.get_token())
        except Exception:  # noqa: BLE001 - e.g. a failing OIDC exchange: no usable token
            self.has_token = False
        self.deadline = Deadline(timeout, f"{TIMEOUT_ENV}=SECONDS (now {timeout:g})")
        self.file_timeout = timeout_setting(environ, FILE_TIMEOUT_ENV, DEFAULT_FILE_TIMEOUT)
        self.log = log
        self.requests = 0

    def headers(self) -> dict[str, str]:
        """huggingface_hub's headers for a Hub request (user agent; ``Authorization:
        Bearer`` with this session's token, else the stored one)."""
        from huggingface_hub.utils import build_hf_headers

        return build_hf_headers(token=self.token)

    def call(self, what: str, fn: Callable[[], Any], *, repo_id: str, repo_type: str,
             ref: str) -> Any:
        """``fn()``, with huggingface_hub's errors turned into a :class:`Failure` saying
        ``what`` failed (:func:`hub_failure`); unknown errors propagate."""
        self.requests += 1
        self.log.debug(what, repo=repo_id, repoType=repo_type, revision=ref,
                       endpoint=self.endpoint)
        try:
            return fn()
        except Failure:
            raise
        except Exception as exc:  # noqa: BLE001 - mapped below or re-raised
            failure = hub_failure(exc, repo_id=repo_id, repo_type=repo_type, ref=ref,
                                  endpoint=self.endpoint, has_token=self.has_token,
                                  what=what)
            if failure is None:
                raise
            raise failure from exc

    def page(self, repo_id: str, repo_type: str) -> str:
        """The repo's web page on this endpoint."""
        return f"{self.endpoint}/{'datasets/' if repo_type == 'dataset' else ''}{repo_id}"

    def _api(self, repo_id: str, repo_type: str) -> str:
        return f"{self.endpoint}/api/{repo_type}s/{repo_id}"

    def _info(self, repo_id: str, repo_type: str, revision: str) -> dict[str, Any]:
        """The repo's info at ``revision`` (``GET /api/{type}s/{id}/revision/{rev}``,
        huggingface_hub's ``repo_info``): a JSON object. Raises :class:`Failure`."""
        from urllib.parse import quote

        from .transport import get_json

        url = f"{self._api(repo_id, repo_type)}/revision/{quote(revision, safe='')}"
        doc, _ = self.call("resolving the revision", lambda: get_json(
            url, headers=self.headers(), deadline=self.deadline,
            doing="resolving the revision"),
            repo_id=repo_id, repo_type=repo_type, ref=revision)
        if not isinstance(doc, dict):
            raise Failure(EXIT_ENVIRONMENT, f"the Hub's info for {repo_id} is not a JSON "
                          "object; check HF_ENDPOINT")
        return doc

    def detect(self, repo_id: str, revision: str) -> tuple[str, dict[str, Any]]:
        """The repo type of a bare id and its info at ``revision``.

        Asks for the model first (the request that resolves the revision anyway); only
        when the Hub has no model of that id, asks for the dataset: one extra request,
        for datasets only (nix-hug's auto-detection, seed 003 "URL Formats"). A model
        and a dataset with the same id: the model (write ``datasets/ORG/NAME`` for the
        dataset). Raises :class:`Failure` when neither exists (exit 2).
        """
        from huggingface_hub import errors as E  # noqa: N812

        try:
            return "model", self._info(repo_id, "model", revision)
        except Failure as f:
            cause = f.__cause__
            if not isinstance(cause, E.RepositoryNotFoundError) or \
                    isinstance(cause, E.GatedRepoError):
                raise
        self.log.debug("no model of that id: trying the dataset", repo=repo_id)
        try:
            return "dataset", self._info(repo_id, "dataset", revision)
        except Failure as f:
            cause = f.__cause__
            if not isinstance(cause, E.RepositoryNotFoundError) or \
                    isinstance(cause, E.GatedRepoError):
                raise
        hint = ("" if self.has_token else "; if it is private, set HF_TOKEN (or run "
                "`hf auth login`)")
        raise Failure(EXIT_BAD_INPUT, f"no model or dataset repo {repo_id} on "
                      f"{self.endpoint}{hint}")

    def resolve(self, repo_id: str, repo_type: str | None, revision: str,
                paths: Sequence[str] = ()) -> Resolved:
        """Resolve ``revision`` to a commit (the info's ``sha``; a ``repo_type`` of None
        is detected first, :meth:`detect`) and list the files at that commit: the whole
        tree (``GET …/tree/<commit>?recursive=true``, following its pages,
        :meth:`list_tree`), or with ``paths`` only those (``POST …/paths-info/<commit>``,
        one request; a path the Hub does not know is left out, as the Hub does).

        A full 40-hex ``revision`` must come back as that same commit (exit 3
        otherwise: a Hub answering another commit is not pinned). The result's
        ``repo_id`` is the Hub's canonical id (the info's ``id``: ``gpt2`` is
        ``openai-community/gpt2``) when it is a valid ``ORG/NAME``. Raises
        :class:`Failure`.
        """
        from ..naming import repo_id_error

        if repo_type is None:
            repo_type, info = self.detect(repo_id, revision)
        else:
            info = self._info(repo_id, repo_type, revision)
        canonical = info.get("id")
        if isinstance(canonical, str) and canonical != repo_id and "/" in canonical \
                and repo_id_error(canonical) is None:
            self.log.info("the Hub names this repo differently", given=repo_id,
                          repo=canonical)
            repo_id = canonical
        commit = info.get("sha")
        if not isinstance(commit, str) or not re.fullmatch(r"[0-9a-f]{40}", commit):
            raise Failure(EXIT_ENVIRONMENT, f"the Hub did not return a commit for {repo_id} "
                          f"at {revision!r} (got {commit!r}); check HF_ENDPOINT")
        if re.fullmatch(r"[0-9a-f]{40}", revision) and commit != revision:
            raise Failure(EXIT_ENVIRONMENT, f"asked for commit {revision} of {repo_id}, the "
                          f"Hub answered commit {commit}: nothing is pinned; check "
                          "HF_ENDPOINT (a full commit always resolves to itself)")
        given_commit = (bool(re.fullmatch(r"[0-9a-f]{7,40}", revision))
                        and commit.startswith(revision))
        if paths:
            entries = self.paths_info(repo_id, repo_type, commit, paths)
        else:
            entries = self.list_tree(repo_id, repo_type, commit)
        files = remote_files(entries, repo_id)
        gated = info.get("gated")
        return Resolved(repo_id, repo_type, None if given_commit else revision, commit,
                        gated if isinstance(gated, (bool, str)) else bool(gated), files)

    def list_tree(self, repo_id: str, repo_type: str, commit: str) -> list[Any]:
        """Every entry of the repo's tree at ``commit`` (JSON objects as the Hub gives
        them), following the ``Link: rel="next"`` pages (huggingface_hub's
        ``list_repo_tree``) within bounds: a next page on another host (it would get
        the token), a page seen before, an empty page that names a next one, more than
        :data:`MAX_LIST_PAGES` pages or :data:`MAX_LIST_ENTRIES` entries, or the
        deadline: :class:`Failure` (exit 3)."""
        from urllib.parse import quote

        from .transport import get_json, same_origin

        url: str | None = (f"{self._api(repo_id, repo_type)}/tree/{quote(commit, safe='')}"
                           "?recursive=true&expand=false")
        doing = f"listing the files of {repo_id}"
        seen: set[str] = set()
        names: set[str] = set()
        entries: list[Any] = []
        pages = 0
        while url is not None:
            if not same_origin(url, self.endpoint):
                raise Failure(EXIT_ENVIRONMENT, f"{doing}: the Hub's next page is on "
                              f"another host ({printable(url[:200])}), which would get the "
                              "token; check HF_ENDPOINT")
            if url in seen:
                raise Failure(EXIT_ENVIRONMENT, f"{doing}: the Hub's pages loop (a next "
                              "page seen before); check HF_ENDPOINT")
            seen.add(url)
            pages += 1
            if pages > MAX_LIST_PAGES:
                raise Failure(EXIT_ENVIRONMENT, f"{doing}: more than {MAX_LIST_PAGES} "
                              "pages; check HF_ENDPOINT")
            here = url
            page, url = self.call(doing, lambda: get_json(
                here, headers=self.headers(), deadline=self.deadline, doing=doing),
                repo_id=repo_id, repo_type=repo_type, ref=commit)
            if not isinstance(page, list):
                raise Failure(EXIT_ENVIRONMENT, f"{doing}: a page of the listing is not a "
                              "JSON list; check HF_ENDPOINT")
            if not page and url is not None:
                raise Failure(EXIT_ENVIRONMENT, f"{doing}: an empty page that names a next "
                              "one; check HF_ENDPOINT")
            for e in page:  # a path twice: the pages repeat themselves; stop now
                path = e.get("path") if isinstance(e, dict) else None
                if isinstance(path, str):
                    if path in names:
                        raise Failure(EXIT_ENVIRONMENT, f"the Hub's listing of {repo_id} "
                                      f"names {printable(path)} twice; check HF_ENDPOINT")
                    names.add(path)
            entries += page
            if len(entries) > MAX_LIST_ENTRIES:
                raise Failure(EXIT_ENVIRONMENT, f"{doing}: more than {MAX_LIST_ENTRIES} "
                              "entries; check HF_ENDPOINT")
        return entries

    def paths_info(self, repo_id: str, repo_type: str, commit: str,
                   paths: Sequence[str]) -> list[Any]:
        """The entries of ``paths`` at ``commit``, in one request (``POST
        …/paths-info/<commit>`` with form fields ``paths`` and ``expand=false``,
        huggingface_hub's ``get_paths_info``). Raises :class:`Failure`."""
        from urllib.parse import quote

        from .transport import get_json

        url = f"{self._api(repo_id, repo_type)}/paths-info/{quote(commit, safe='')}"
        doing = f"listing the files of {repo_id}"
        data = {"paths": list(paths), "expand": "false"}
        doc, _ = self.call(doing, lambda: get_json(
            url, method="POST", headers=self.headers(), deadline=self.deadline,
            doing=doing, data=data), repo_id=repo_id, repo_type=repo_type, ref=commit)
        if not isinstance(doc, list) or len(doc) > MAX_LIST_ENTRIES:
            raise Failure(EXIT_ENVIRONMENT, f"{doing}: the Hub's paths-info answer is not a "
                          "JSON list; check HF_ENDPOINT")
        return doc


_HEX40 = re.compile(r"[0-9a-f]{40}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
#: The largest file size taken from a listing (2^53 bytes: 8 PiB, JSON's exact integers).
MAX_FILE_SIZE = 1 << 53


def remote_files(entries: Sequence[Any], repo_id: str) -> list[RemoteFile]:
    """The files of a listing (tree or paths-info entries: ``{"type": "file", "path",
    "size", "oid", "lfs": {"oid", "size"}}``; folders skipped), sorted by path bytes.

    Every field is checked, since a lock file and a Nix build take them as they are:
    ``path`` a non-empty string (the repo file path rule is checked on the files a
    command selects, :func:`activate.hub.selection.check_repo_paths`, so ``--exclude``
    leaves a bad one out), no path twice, no file inside a file,
    ``size`` an integer 0 … 2^53, ``oid`` a git blob sha1 (40 lowercase hex), ``lfs.oid``
    a sha256 (64 lowercase hex) with ``lfs.size`` equal to ``size``. Raises
    :class:`Failure` (exit 3) naming the file and the field."""
    files: list[RemoteFile] = []
    names: set[str] = set()
    for e in entries:
        if not isinstance(e, dict) or e.get("type") not in ("file", "directory"):
            raise Failure(EXIT_ENVIRONMENT, f"the Hub's listing of {repo_id} has an entry "
                          f"that is not a file or a folder ({printable(repr(e)[:80])}); "
                          "check HF_ENDPOINT")
        if e["type"] == "directory":
            continue  # not used: the paths of its files are checked
        path = e.get("path")
        if not isinstance(path, str) or not path:
            raise Failure(EXIT_ENVIRONMENT, f"the Hub lists a file of {repo_id} whose path "
                          f"{shown(path)[:400]} is not a non-empty string; check HF_ENDPOINT")

        def bad(field: str, value: object, want: str) -> Failure:
            return Failure(EXIT_ENVIRONMENT, f"the Hub's listing of {repo_id} gives "
                           f"{printable(str(path))} a {field} {printable(repr(value)[:80])}, "
                           f"not {want}; check HF_ENDPOINT")

        size = e.get("size")
        if type(size) is not int or not 0 <= size <= MAX_FILE_SIZE:
            raise bad("size", size, "a number of bytes (0 or more)")
        oid = e.get("oid")
        if not isinstance(oid, str) or not _HEX40.fullmatch(oid):
            raise bad("git blob id (oid)", oid, "40 lowercase hex characters")
        lfs = e.get("lfs")
        sha: str | None = None
        if lfs is not None:
            if not isinstance(lfs, dict):
                raise bad("LFS field", lfs, "an object {oid, size}")
            sha = lfs.get("oid") or lfs.get("sha256")
            if not isinstance(sha, str) or not _HEX64.fullmatch(sha):
                raise bad("LFS sha256", sha, "64 lowercase hex characters")
            lsize = lfs.get("size", size)
            if lsize != size:
                raise bad("LFS size", lsize, f"its size {size}")
        if path in names:
            raise Failure(EXIT_ENVIRONMENT, f"the Hub's listing of {repo_id} names "
                          f"{printable(str(path))} twice; check HF_ENDPOINT")
        names.add(str(path))
        files.append(RemoteFile(str(path), size, oid, sha))
    for f in files:
        parts = f.path.split("/")
        for i in range(1, len(parts)):
            if "/".join(parts[:i]) in names:
                raise Failure(EXIT_ENVIRONMENT, f"the Hub's listing of {repo_id} has "
                              f"{printable(f.path)} inside the file "
                              f"{printable('/'.join(parts[:i]))}; check HF_ENDPOINT")
    files.sort(key=lambda f: f.path.encode("utf-8"))
    return files
