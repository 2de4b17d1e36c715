"""Hub access through huggingface_hub: importing it, mapping its errors to exit codes and
messages, resolving a revision to a commit and listing the files there.

huggingface_hub is imported only inside these functions (never at module import), so
the argument parsers stay cheap.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

EXIT_OK = 0
EXIT_BAD_INPUT = 2
EXIT_ENVIRONMENT = 3
EXIT_INTERNAL = 70

DEFAULT_REF = "main"
HUB_MISSING = ("the Hub commands need huggingface_hub: use the Nix package (it has it), "
               "or run `pip install huggingface_hub` (from a checkout: `pip install "
               "'.[hub]'`)")
GATED_NO_TOKEN = "this repo is gated: set HF_TOKEN (or run `hf auth login`)"


class Failure(Exception):
    """Ends the command with ``code`` after logging ``message``."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def make_folder(path: str, what: str, fix: str) -> None:
    """Create folder ``path`` (and its parents) if missing; raises :class:`Failure` (exit 3)
    naming ``what`` it is for and the ``fix``."""
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise Failure(EXIT_ENVIRONMENT, f"cannot create the {what} {path}: "
                      f"{exc.strerror or exc}; {fix}") from None


def exit_status(run: Callable[[], int], log: Any,
                bad_input: tuple[type[BaseException], ...] = ()) -> int:
    """Run a command's body and give its exit status: a :class:`Failure` is logged and
    ends with its code, ``bad_input`` exceptions with 2, Ctrl-C with 3, anything else
    (a bug) with 70 and the traceback in the log: never a bare traceback."""
    try:
        return run()
    except Failure as f:
        log.error(f.message)
        return f.code
    except bad_input as exc:
        log.error(str(exc))
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
    """huggingface_hub's ``HfApi`` for one command, with the endpoint and token taken from
    ``environ`` (``HF_ENDPOINT``; ``HF_TOKEN``/``HUGGING_FACE_HUB_TOKEN``, else the stored
    token) and every call's errors mapped to a :class:`Failure`.

    ``requests`` counts the API calls made through :meth:`call` (tests compare it with
    the mock Hub's own count). Raises :class:`Failure` when huggingface_hub is missing.
    """

    def __init__(self, environ: Mapping[str, str], log: Any):
        self.hub = import_hub(environ, log)
        from huggingface_hub import HfApi

        endpoint = (environ.get("HF_ENDPOINT") or "").rstrip("/") or None
        self.token: str | None = (environ.get("HF_TOKEN")
                                  or environ.get("HUGGING_FACE_HUB_TOKEN") or None)
        self.api = HfApi(endpoint=endpoint, token=self.token)
        self.endpoint: str = self.api.endpoint.rstrip("/")
        try:
            self.has_token = bool(self.token or self.hub.get_token())
        except Exception:  # noqa: BLE001 - e.g. a failing OIDC exchange: no usable token
            self.has_token = False
        self.log = log
        self.requests = 0

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

    def _info(self, repo_id: str, repo_type: str, revision: str) -> Any:
        return self.call("resolving the revision", lambda: self.api.repo_info(
            repo_id, repo_type=repo_type, revision=revision),
            repo_id=repo_id, repo_type=repo_type, ref=revision)

    def detect(self, repo_id: str, revision: str) -> tuple[str, Any]:
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

    def resolve(self, repo_id: str, repo_type: str | None, revision: str) -> Resolved:
        """Resolve ``revision`` to a commit (``repo_info(revision=…).sha``; a ``repo_type``
        of None is detected first, :meth:`detect`) and list the files at that commit
        (``list_repo_tree(recursive=True)``, following pagination).

        The result's ``repo_id`` is the Hub's canonical id (``info.id``: ``gpt2`` is
        ``openai-community/gpt2``) when it is a valid ``ORG/NAME``. Raises
        :class:`Failure`.
        """
        from ..naming import repo_id_error

        if repo_type is None:
            repo_type, info = self.detect(repo_id, revision)
        else:
            info = self._info(repo_id, repo_type, revision)
        canonical = getattr(info, "id", None)
        if isinstance(canonical, str) and canonical != repo_id and "/" in canonical \
                and repo_id_error(canonical) is None:
            self.log.info("the Hub names this repo differently", given=repo_id,
                          repo=canonical)
            repo_id = canonical
        commit = getattr(info, "sha", None)
        if not commit or not re.fullmatch(r"[0-9a-f]{40}", commit):
            raise Failure(EXIT_ENVIRONMENT, f"the Hub did not return a commit for {repo_id} "
                          f"at {revision!r} (got {commit!r}); check HF_ENDPOINT")
        given_commit = (bool(re.fullmatch(r"[0-9a-f]{7,40}", revision))
                        and commit.startswith(revision))
        rid, rtype = repo_id, repo_type
        entries = self.call("listing the files", lambda: list(self.api.list_repo_tree(
            rid, recursive=True, revision=commit, repo_type=rtype)),
            repo_id=rid, repo_type=rtype, ref=revision)
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
