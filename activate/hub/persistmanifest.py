"""The persist folder's manifests: model-repo's :data:`MANIFEST` (read and written) and
nix-hug's :data:`NIX_HUG_MANIFEST` (read only). Beside the binary cache they record what
each store path is::

    {"version": 1, "entries": [{"repoId": "org/name", "repoType": "model",
      "revision": "<commit: 40 hex, or its first 12 when only the store name tells it>",
      "ref": "main" | null, "storePath": "/nix/store/…-hf-org--name-<12 hex>",
      "narHash": "sha256-…", "narSize": <bytes>, "exportedAt": "<ISO 8601 UTC>",
      "files": [...], "include": [...], "exclude": [...], "names": [...]}]}

(``files``/``include``/``exclude``: the selection the path was fetched with, the Nix
options of the same names; auto-persist matches a prefetch on them. ``names``: the
model names, ``models.<name>``, that activated manifests give the path, so ``import
NAME`` works after the activation that knew them is gone.)
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from .api import EXIT_BAD_INPUT, EXIT_ENVIRONMENT, Failure
from .binarycache import check_cached, narinfo_hash, open_nofollow
from ..srihash import shown, sri_hash_error
from .nixstore import check_store_path

MANIFEST = "model-repo-persist.json"
LOCK = ".model-repo-persist.lock"
MANIFEST_VERSION = 1
NIX_HUG_MANIFEST = "nix-hug-manifest.json"
HEX = re.compile(r"[0-9a-f]{7,40}")


@dataclass
class Entry:
    """One persisted store path (a manifest entry; field meanings in the module
    docstring). ``problem``: why the entry as written cannot be used (a broken entry:
    listed as such by ``store ls``, skipped by ``import --all``, kept as it was,
    ``raw``, when the manifest is rewritten), else ``""``."""

    repo_id: str
    repo_type: str
    revision: str
    store_path: str
    nar_hash: str
    nar_size: int
    exported_at: str
    ref: str | None = None
    include: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    problem: str = ""
    raw: Any = None

    def to_json(self) -> dict[str, Any]:
        return {"repoId": self.repo_id, "repoType": self.repo_type,
                "revision": self.revision, "ref": self.ref, "storePath": self.store_path,
                "narHash": self.nar_hash, "narSize": self.nar_size,
                "exportedAt": self.exported_at, "files": list(self.files),
                "include": list(self.include), "exclude": list(self.exclude),
                "names": list(self.names)}

    @classmethod
    def from_json(cls, obj: Any, where: str) -> Entry:
        """Parse one entry of model-repo's manifest; raises :class:`Failure` (exit 3)
        naming ``where`` and the field (:func:`read_manifest` turns it into a broken
        entry)."""
        if not isinstance(obj, dict):
            raise Failure(EXIT_ENVIRONMENT, f"{where}: expected an object, got {obj!r:.60}")
        try:
            size = obj["narSize"]
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise ValueError(f"narSize: {size!r:.40} is not a size in bytes")
            ref = obj.get("ref")
            if ref is not None and not isinstance(ref, str):
                raise ValueError(f"ref: {ref!r:.40} is not a string")
            why = sri_hash_error(obj.get("narHash", ""))
            if why is not None and "narHash" in obj:  # the one SRI hash rule
                raise ValueError(f"narHash: {shown(obj['narHash'])[:80]} {why}")
            entry = cls(_str(obj, "repoId"), _str(obj, "repoType", "model"),
                        _str(obj, "revision"), _store_path(obj), _str(obj, "narHash"),
                        size, _str(obj, "exportedAt", ""), ref, _strs(obj, "include"),
                        _strs(obj, "exclude"), _strs(obj, "files"), _strs(obj, "names"))
        except (KeyError, TypeError, ValueError) as exc:
            raise Failure(EXIT_ENVIRONMENT, f"{where}: missing or malformed field {exc}; "
                          "export the model again to rewrite it") from exc
        return entry

    @classmethod
    def broken(cls, obj: Any, problem: str) -> Entry:
        """A broken entry for ``obj`` (what of it can be shown, and ``problem``)."""
        get = obj.get if isinstance(obj, dict) else (lambda key: None)

        def text(*keys: str) -> str:
            for key in keys:
                value = get(key)
                if isinstance(value, str):
                    return value
            return "?"

        return cls(text("repoId"), text("repoType", "type"), text("revision", "rev"),
                   text("storePath"), "", 0, text("exportedAt"), problem=problem, raw=obj)

    def label(self) -> str:
        return f"{self.repo_id}@{self.revision[:12]}"


def _str(obj: dict[str, Any], key: str, default: str | None = None) -> str:
    value = obj.get(key, default)
    if value is None:
        raise KeyError(key)
    if not isinstance(value, str):
        raise ValueError(f"{key}: {value!r:.40} is not a string")
    return value


def _strs(obj: dict[str, Any], key: str) -> list[str]:
    value = obj.get(key) or []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{key}: {value!r:.40} is not a list of strings")
    return list(value)


def _store_path(obj: dict[str, Any]) -> str:
    """``storePath`` of ``obj``: a canonical store path, else ValueError."""
    value = _str(obj, "storePath")
    try:
        if check_store_path(value, "storePath") == value:
            return value
    except Failure as f:
        raise ValueError(f.message) from None
    raise ValueError(f"storePath: {value!r:.80} is not in canonical form")


def manifest_path(directory: str) -> str:
    """``<directory>/model-repo-persist.json``."""
    return os.path.join(directory, MANIFEST)


def _read_nofollow(path: str) -> bytes | None:
    """The bytes of the file at ``path``, opened without following a symlink planted
    there (:func:`open_nofollow`); None when it does not exist. Raises :class:`Failure`
    (exit 3) when it cannot be read."""
    try:
        with open_nofollow(path) as fh:
            return fh.read()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise Failure(EXIT_ENVIRONMENT, f"cannot read {path}: {exc.strerror}") from exc


def read_manifest(directory: str) -> list[Entry]:
    """The entries of ``directory``'s manifest (``[]`` when there is none); an entry
    that cannot be used is a broken one (:meth:`Entry.broken`), the others are not
    affected. Raises :class:`Failure` (exit 3) when the file is unreadable, not JSON, or
    of another version."""
    path = manifest_path(directory)
    data = _read_nofollow(path)
    if data is None:
        return []
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise Failure(EXIT_ENVIRONMENT, f"{path} is not valid JSON ({exc}): the persist "
                      "folder's manifest is corrupt; restore it from a backup, or remove "
                      "it and export the models again") from exc
    if not isinstance(doc, dict) or doc.get("version") != MANIFEST_VERSION or not isinstance(
            doc.get("entries"), list):
        raise Failure(EXIT_ENVIRONMENT, f"{path}: expected {{\"version\": 1, \"entries\": "
                      "[...]}; written by another model-repo version? update model-repo")
    out = []
    for i, obj in enumerate(doc["entries"]):
        try:
            out.append(Entry.from_json(obj, f"{path}: entries[{i}]"))
        except Failure as f:
            out.append(Entry.broken(obj, f.message))
    return out


def read_nix_hug_manifest(directory: str) -> list[Entry]:
    """The entries nix-hug's ``export`` recorded in the same kind of folder
    (``nix-hug-manifest.json``: a list of ``{repoId, type, rev, filters, storePath,
    exportedAt}``, nix-hug's ``cli/lib/persist.sh``), so ``import`` and ``store ls`` work
    on a nix-hug user's folder; NAR hash and size come from each path's narinfo. Read
    only: model-repo never writes that file. An entry without a repo id or a canonical
    store path is a broken one. Raises :class:`Failure` (exit 3) when the file is not a
    JSON list."""
    path = os.path.join(directory, NIX_HUG_MANIFEST)
    data = _read_nofollow(path)
    if data is None:
        return []
    try:
        doc = json.loads(data or b"[]")
    except (ValueError, RecursionError) as exc:
        raise Failure(EXIT_ENVIRONMENT, f"{path} is not valid JSON ({exc})") from exc
    if not isinstance(doc, list):
        raise Failure(EXIT_ENVIRONMENT, f"{path}: expected a list of entries (nix-hug's format)")
    out = []
    for i, obj in enumerate(doc):
        if not isinstance(obj, dict) or not isinstance(obj.get("storePath"), str) or \
                not isinstance(obj.get("repoId"), str):
            out.append(Entry.broken(obj, f"{path}: entry {i} lacks repoId or storePath"))
            continue
        try:
            _store_path(obj)
        except ValueError as exc:
            out.append(Entry.broken(obj, f"{path}: entry {i}: {exc}"))
            continue
        info, _ = check_cached(directory, obj["storePath"])
        try:
            nar_hash, nar_size = narinfo_hash(info or {})
        except Failure:
            nar_hash, nar_size = "", 0
        out.append(Entry(obj["repoId"], str(obj.get("type") or "model"), str(obj.get("rev") or ""),
                         obj["storePath"], nar_hash, nar_size, str(obj.get("exportedAt") or "")))
    return out


def read_all(directory: str) -> list[Entry]:
    """model-repo's entries, then nix-hug's for store paths model-repo does not record."""
    ours = read_manifest(directory)
    known = {e.store_path for e in ours if not e.problem}
    return ours + [e for e in read_nix_hug_manifest(directory) if e.store_path not in known]


def write_manifest(directory: str, entries: Sequence[Entry]) -> None:
    """Replace ``directory``'s manifest with ``entries``, atomically and durably, never
    through a symlink (:func:`activate.statefile.write_if_changed`). Raises OSError."""
    from ..statefile import write_if_changed

    doc = {"version": MANIFEST_VERSION,
           "entries": [e.raw if e.problem else e.to_json() for e in entries]}
    write_if_changed(manifest_path(directory), [(json.dumps(doc, indent=2) + "\n").encode()],
                     durable=True, mode=0o644)


@contextlib.contextmanager
def locked(directory: str) -> Iterator[None]:
    """Hold the persist folder's lock (``flock`` on :data:`LOCK`): one export at a time.
    The lock file is never opened through a symlink. Raises :class:`Failure` (exit 3)
    when it cannot be opened."""
    import fcntl

    path = os.path.join(directory, LOCK)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise Failure(EXIT_ENVIRONMENT, f"cannot open the lock file {path}: {exc.strerror}"
                      + ("; it is a symbolic link, which model-repo never follows: remove it"
                         if os.path.islink(path) else "")) from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def names_repo(asked: str, repo_id: str) -> bool:
    """Whether the REPO argument ``asked`` names ``repo_id``: the same id, or ``asked``
    is a bare NAME and ``repo_id`` is ``ORG/NAME``. The Hub answers a bare name with the
    repo's full id (``gpt2`` is ``openai-community/gpt2``), which is what ``prefetch``
    pins and names the store path after; offline, a bare name is matched to the full
    ids found (several: the caller lists them)."""
    return repo_id == asked or ("/" not in asked and repo_id.endswith("/" + asked))


def select_entries(entries: Sequence[Entry], *, repo_id: str | None, repo_type: str | None,
                   revision: str | None, store_path: str | None) -> list[Entry]:
    """The entries an ``import`` argument names: by store path, or by repo id (and type
    when given) and revision (a commit or its prefix, or the recorded ref); several
    exports of one repo without ``revision``: the newest one."""
    if store_path is not None:
        return [e for e in entries if e.store_path == store_path]
    pool = [e for e in entries if e.repo_id == repo_id
            and (repo_type is None or e.repo_type == repo_type)]
    if not pool and repo_id is not None:  # a bare NAME: the ORG/NAME it was pinned as
        pool = [e for e in entries if names_repo(repo_id, e.repo_id)
                and (repo_type is None or e.repo_type == repo_type)]
        ids = sorted({e.repo_id for e in pool})
        if len(ids) > 1:
            raise Failure(EXIT_BAD_INPUT, f"{repo_id!r} names several repos in the persist "
                          f"folder ({', '.join(ids)}): give the full repo id ORG/NAME")
    if revision is not None:
        pool = [e for e in pool if e.ref == revision or (
            HEX.fullmatch(revision) is not None
            and e.revision[:min(len(revision), len(e.revision))]
            == revision[:min(len(revision), len(e.revision))])]
    if revision is None and len({(e.repo_type, e.revision) for e in pool}) > 1:
        pool = [max(pool, key=lambda e: e.exported_at)]
    return pool
