"""Models that survive garbage collection: ``model-repo export``, ``import``, ``store ls``,
``store path``.

The persist folder (:func:`activate.persistdir.persist_dir`: ``--persist-dir`` >
``MODEL_REPO_PERSIST_DIR`` > ``NIX_HUG_PERSIST_DIR`` > ``persist_dir=`` in the config file
> ``$XDG_DATA_HOME/model-repo/persist``) is a Nix binary cache: ``nix copy --to
file://DIR?compression=none`` writes ``nix-cache-info``, ``<hash>.narinfo`` and
``nar/<file hash>.nar`` for a store path, and ``nix copy --from file://DIR`` puts it back
with no network. Beside them, :data:`MANIFEST` records what each path is::

    {"version": 1, "entries": [{"repoId": "org/name", "repoType": "model",
      "revision": "<commit: 40 hex, or its first 12 when only the store name tells it>",
      "ref": "main" | null, "storePath": "/nix/store/…-hf-org--name-<12 hex>",
      "narHash": "sha256-…", "narSize": <bytes>, "exportedAt": "<ISO 8601 UTC>",
      "files": [...], "include": [...], "exclude": [...], "names": [...]}]}

(``files``/``include``/``exclude``: the selection the path was fetched with, the Nix
options of the same names; auto-persist matches a prefetch on them. ``names``: the
model names, ``models.<name>``, that activated manifests give the path, so ``import
NAME`` works after the activation that knew them is gone.)

Compression defaults to ``none``: measured on this project's machines (Nix 2.8, two
cores) an 87 MB model took 81 s to export with Nix's default xz, 0.6 s uncompressed and
0.84 s with zstd for 7 % less space (weights barely compress). ``--compression zstd``
or ``xz`` choose otherwise.

Trust on import. A fixed-output path (what the Nix fetchers and ``prefetch
--add-to-store`` produce) is content-addressed: its narinfo carries ``CA:``, and Nix
accepts it without a signature because the store path itself is computed from the
content (checked by Nix on import). Any other path is unsigned input-addressed data,
which Nix refuses unless ``--no-check-sigs``: ``import`` asks for a confirmation on a
terminal, and without one (stdin not a terminal) fails with exit 2 unless ``--yes``
(aliases ``-y``, ``--no-check-sigs``, nix-hug's flags) is given.

Without ``nix copy`` (no ``nix`` on ``PATH``, or Nix before 2.4) the same folder layout
is written with ``nix-store --dump`` and read back through ``nix-store --import``, the
NAR's hash and the content address checked here (:func:`dump_to_cache`,
:func:`import_stream`). A folder nix-hug filled is read too: its
``nix-hug-manifest.json`` (:func:`read_nix_hug_manifest`), never written.

A failed import never leaves anything behind: Nix can leave an unregistered, partly
written directory at the store path (a truncated NAR: "coroutine has finished", a hash
mismatch); it is removed with ``nix-store --delete`` and the error says so.

Exit codes: 0 ok; 1 partial (``import --all`` with some entries not imported, or the
confirmation declined); 2 bad input (bad repo argument or setting, nothing recorded or
found for it, an unsigned import without a terminal or ``--yes``); 3 environment (Nix
missing, a corrupt persist folder, ``nix copy`` failing, folder not writable); 70
internal error.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    import argparse

from ..persistdir import ConfigError, narinfo_path
from .api import EXIT_BAD_INPUT, EXIT_ENVIRONMENT, EXIT_OK, Failure, exit_status, make_folder
from .persistcli import COMPRESSIONS

EXIT_PARTIAL = 1

MANIFEST = "model-repo-persist.json"
LOCK = ".model-repo-persist.lock"
MANIFEST_VERSION = 1
DEFAULT_STORE_DIR = "/nix/store"
NIX_MISSING = ("needs Nix (nix-store on PATH, and nix for nix copy): install it "
               "(https://nixos.org/download; on Debian `apt-get install nix-bin`)")
_NIX_FLAGS = ("--extra-experimental-features", "nix-command")
#: Store path base names: 32 characters of Nix's base-32, "-", a name.
_STORE_BASE = re.compile(r"[0-9a-df-np-sv-z]{32}-[A-Za-z0-9+._?=-]+")
#: The fetcher's store name for a Hub repo (``hfStoreName`` in
#: ``lib/fetchers/huggingface.nix``, ``store_name`` in :mod:`activate.hub.prefetch`):
#: ``hf-<id, "/" as "--">-<commit[:12]>``.
#: Repo ids never hold "--" (``validate_repo_id``), so the split is unambiguous.
_HF_NAME = re.compile(r"hf-(.+)-([0-9a-f]{12})")
_HEX = re.compile(r"[0-9a-f]{7,40}")


# ------------------------------------------------------------------ the manifest


@dataclass
class Entry:
    """One persisted store path (a manifest entry; field meanings in the module docstring)."""

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

    def to_json(self) -> dict[str, Any]:
        return {"repoId": self.repo_id, "repoType": self.repo_type,
                "revision": self.revision, "ref": self.ref, "storePath": self.store_path,
                "narHash": self.nar_hash, "narSize": self.nar_size,
                "exportedAt": self.exported_at, "files": list(self.files),
                "include": list(self.include), "exclude": list(self.exclude),
                "names": list(self.names)}

    @classmethod
    def from_json(cls, obj: Any, where: str) -> Entry:
        """Parse one entry; raises :class:`Failure` (exit 3) naming ``where`` and the field."""
        if not isinstance(obj, dict):
            raise Failure(EXIT_ENVIRONMENT, f"{where}: expected an object, got {obj!r:.60}")
        try:
            entry = cls(str(obj["repoId"]), str(obj.get("repoType", "model")),
                        str(obj["revision"]), str(obj["storePath"]), str(obj["narHash"]),
                        int(obj["narSize"]), str(obj.get("exportedAt", "")),
                        obj.get("ref"), list(obj.get("include") or []),
                        list(obj.get("exclude") or []), list(obj.get("files") or []),
                        list(obj.get("names") or []))
        except (KeyError, TypeError, ValueError) as exc:
            raise Failure(EXIT_ENVIRONMENT, f"{where}: missing or malformed field {exc}; "
                          "export the model again to rewrite it") from exc
        return entry

    def label(self) -> str:
        return f"{self.repo_id}@{self.revision[:12]}"


def manifest_path(directory: str) -> str:
    return os.path.join(directory, MANIFEST)


def read_manifest(directory: str) -> list[Entry]:
    """The entries of ``directory``'s manifest (``[]`` when there is none). Raises
    :class:`Failure` (exit 3) when it is unreadable, not JSON, or of another version."""
    path = manifest_path(directory)
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise Failure(EXIT_ENVIRONMENT, f"cannot read {path}: {exc.strerror}") from exc
    try:
        doc = json.loads(data)
    except ValueError as exc:
        raise Failure(EXIT_ENVIRONMENT, f"{path} is not valid JSON ({exc}): the persist "
                      "folder's manifest is corrupt; restore it from a backup, or remove "
                      "it and export the models again") from exc
    if not isinstance(doc, dict) or doc.get("version") != MANIFEST_VERSION or not isinstance(
            doc.get("entries"), list):
        raise Failure(EXIT_ENVIRONMENT, f"{path}: expected {{\"version\": 1, \"entries\": "
                      "[...]}; written by another model-repo version? update model-repo")
    return [Entry.from_json(e, f"{path}: entries[{i}]") for i, e in enumerate(doc["entries"])]


NIX_HUG_MANIFEST = "nix-hug-manifest.json"


def read_nix_hug_manifest(directory: str) -> list[Entry]:
    """The entries nix-hug's ``export`` recorded in the same kind of folder
    (``nix-hug-manifest.json``: a list of ``{repoId, type, rev, filters, storePath,
    exportedAt}``, nix-hug's ``cli/lib/persist.sh``), so ``import`` and ``store ls`` work
    on a nix-hug user's folder; NAR hash and size come from each path's narinfo. Read
    only: model-repo never writes that file. Raises :class:`Failure` (exit 3) when it is
    not a JSON list."""
    path = os.path.join(directory, NIX_HUG_MANIFEST)
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise Failure(EXIT_ENVIRONMENT, f"cannot read {path}: {exc.strerror}") from exc
    try:
        doc = json.loads(data or b"[]")
    except ValueError as exc:
        raise Failure(EXIT_ENVIRONMENT, f"{path} is not valid JSON ({exc})") from exc
    if not isinstance(doc, list):
        raise Failure(EXIT_ENVIRONMENT, f"{path}: expected a list of entries (nix-hug's format)")
    out = []
    for i, obj in enumerate(doc):
        if not isinstance(obj, dict) or not isinstance(obj.get("storePath"), str) or \
                not isinstance(obj.get("repoId"), str):
            raise Failure(EXIT_ENVIRONMENT, f"{path}: entry {i} lacks repoId or storePath")
        info, _ = check_cached(directory, obj["storePath"])
        try:
            nar_hash, nar_size = _narinfo_hash(info or {})
        except Failure:
            nar_hash, nar_size = "", 0
        out.append(Entry(obj["repoId"], str(obj.get("type") or "model"), str(obj.get("rev") or ""),
                         obj["storePath"], nar_hash, nar_size, str(obj.get("exportedAt") or "")))
    return out


def read_all(directory: str) -> list[Entry]:
    """model-repo's entries, then nix-hug's for store paths model-repo does not record."""
    ours = read_manifest(directory)
    known = {e.store_path for e in ours}
    return ours + [e for e in read_nix_hug_manifest(directory) if e.store_path not in known]


def _write_manifest(directory: str, entries: Sequence[Entry]) -> None:
    path = manifest_path(directory)
    tmp = f"{path}.tmp-{os.getpid()}"
    doc = {"version": MANIFEST_VERSION, "entries": [e.to_json() for e in entries]}
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(json.dumps(doc, indent=2) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


@contextlib.contextmanager
def _locked(directory: str) -> Iterator[None]:
    """Hold the persist folder's lock (``flock`` on :data:`LOCK`): one export at a time."""
    import fcntl

    fd = os.open(os.path.join(directory, LOCK), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


# ------------------------------------------------------------------------ Nix


@dataclass
class Nix:
    """The Nix commands this module runs, found on ``PATH``: ``nix-store`` (required) and
    ``nix`` (``nix copy``, ``nix path-info``, with ``nix-command`` enabled per call).
    Without ``nix``, or when its ``copy`` is unusable (Nix before 2.4 rejects the
    experimental-features flag), :func:`dump_to_cache` and :func:`import_stream` do the
    same with ``nix-store --dump`` / ``--import``."""

    nix: str | None
    nix_store: str

    @classmethod
    def find(cls, environ: Mapping[str, str]) -> Nix:
        """Locate them on ``environ["PATH"]``; raises :class:`Failure` (exit 3) without
        ``nix-store``."""
        path = environ.get("PATH", os.defpath)
        nix, nix_store = shutil.which("nix", path=path), shutil.which("nix-store", path=path)
        if nix_store is None:
            raise Failure(EXIT_ENVIRONMENT, f"export and import {NIX_MISSING}")
        return cls(nix, nix_store)

    def run(self, *argv: str, bar: tuple[int, str] | None = None
            ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` (output captured); ``bar`` = (bytes, label): a progress bar on a
        terminal (:func:`activate.hub.progress.run_measured`)."""
        if bar is not None:
            from .progress import run_measured

            return run_measured(list(argv), total=bar[0], desc=bar[1])
        return subprocess.run(list(argv), capture_output=True, text=True,
                              stdin=subprocess.DEVNULL)

    def valid(self, paths: Sequence[str]) -> set[str]:
        """Which of ``paths`` are valid (registered) store paths."""
        if not paths:
            return set()
        proc = self.run(self.nix_store, "--check-validity", "--print-invalid", *paths)
        if proc.returncode != 0:
            raise Failure(EXIT_ENVIRONMENT, "nix-store --check-validity failed: "
                          + _last_line(proc.stderr))
        invalid = set(proc.stdout.split())
        return {p for p in paths if p not in invalid}

    def path_info(self, store_path: str) -> dict[str, Any]:
        """``nix path-info --json`` of a valid path: ``narHash`` (SRI), ``narSize``, ``ca``…"""
        assert self.nix is not None
        proc = self.run(self.nix, *_NIX_FLAGS, "path-info", "--json", store_path)
        if proc.returncode != 0:
            raise Failure(EXIT_ENVIRONMENT, f"nix path-info {store_path} failed: "
                          + _last_line(proc.stderr))
        info = json.loads(proc.stdout)
        return info[0] if isinstance(info, list) else info[store_path]

    def delete(self, store_path: str) -> bool:
        """``nix-store --delete`` one path (ours, never a GC); True when it is gone."""
        self.run(self.nix_store, "--delete", store_path)
        return not os.path.lexists(store_path)


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error:")]
    return (errors or lines or ["(no output)"])[-1]


def store_dir_of(store_path: str) -> str:
    return os.path.dirname(store_path.rstrip("/"))


def check_store_path(value: str, what: str) -> str:
    """``value`` as a canonical store path (``<store dir>/<32-char hash>-<name>``, no
    trailing ``/``); raises :class:`Failure` (exit 2) naming ``what``."""
    path = os.path.normpath(value)
    if not os.path.isabs(path) or not _STORE_BASE.fullmatch(os.path.basename(path)):
        raise Failure(EXIT_BAD_INPUT, f"{what}: {value!r} is not a store path "
                      "(/nix/store/<32-character hash>-<name>)")
    return path


def parse_hf_name(store_path: str) -> tuple[str, str] | None:
    """``(repo id, commit[:12])`` from a store path named as the fetcher names a Hub repo
    (``…-hf-org--name-<12 hex>``), else None."""
    name = os.path.basename(store_path).split("-", 1)[1]
    m = _HF_NAME.fullmatch(name)
    if not m:
        return None
    return m.group(1).replace("--", "/"), m.group(2)


# --------------------------------------------------------------- binary cache


def parse_narinfo(text: str) -> dict[str, str]:
    """A narinfo's ``Key: value`` lines as a dict (Nix's ``NarInfo`` format)."""
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition(": ")
        if sep:
            out[key] = value
    return out


def check_cached(directory: str, store_path: str) -> tuple[dict[str, str] | None, str | None]:
    """Check the binary cache entry of ``store_path`` without reading the NAR through:
    the narinfo exists and names this path, the NAR file it points to exists with the
    recorded size. Returns ``(narinfo, None)`` or ``(narinfo or None, what is wrong)``."""
    path = narinfo_path(directory, store_path)
    try:
        with open(path, encoding="utf-8") as fh:
            info = parse_narinfo(fh.read())
    except FileNotFoundError:
        return None, f"{os.path.basename(path)} is missing from {directory}"
    except (OSError, UnicodeDecodeError) as exc:
        return None, f"cannot read {path}: {exc}"
    if info.get("StorePath") != store_path:
        return None, (f"{path} is corrupt: it describes {info.get('StorePath')!r}, not "
                      f"{store_path}")
    url = info.get("URL", "")
    if not url or url.startswith("/") or ".." in url.split("/"):
        return info, f"{path} is corrupt: no usable URL line"
    nar = os.path.join(directory, url)
    try:
        size = os.stat(nar).st_size
    except FileNotFoundError:
        return info, f"the NAR {nar} is missing"
    want = info.get("FileSize")
    if want is not None and want.isdigit() and int(want) != size:
        return info, f"the NAR {nar} has {size} bytes, its narinfo says {want} (truncated?)"
    return info, None


def _stale_or_damaged(nix: Nix, directory: str, store_path: str,
                      info: Mapping[str, str]) -> str | None:
    """Why the cache entry of the valid ``store_path`` cannot be kept, or None: its
    NarHash is not the store's (``nix-store -q --hash``), or the NAR file's sha256 is
    not its FileHash (read through once: cheaper than copying it again)."""
    import hashlib

    proc = nix.run(nix.nix_store, "--query", "--hash", store_path)
    if proc.returncode == 0 and proc.stdout.strip() != info.get("NarHash"):
        return f"its NarHash {info.get('NarHash')} is not the store's {proc.stdout.strip()}"
    algo, _, want = info.get("FileHash", "").partition(":")
    if algo != "sha256":
        return None
    digest = hashlib.sha256()
    nar = os.path.join(directory, info["URL"])
    try:
        with open(nar, "rb") as fh:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
    except OSError as exc:
        return f"cannot read {nar}: {exc.strerror}"
    if nix_base32(digest.digest()) != want:
        return f"the NAR {nar} does not match its FileHash (damaged)"
    return None


def _forget_cached(directory: str, store_path: str, info: Mapping[str, str] | None, *,
                   nar_bad: bool) -> None:
    """Remove ``store_path``'s narinfo and its NAR: always when ``nar_bad``, else unless
    another narinfo names the same NAR (identical contents at two store paths)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(narinfo_path(directory, store_path))
    url = (info or {}).get("URL", "")
    if not url or url.startswith("/") or ".." in url.split("/"):
        return
    for name in [] if nar_bad else os.listdir(directory):
        if name.endswith(".narinfo"):
            with contextlib.suppress(OSError), open(os.path.join(directory, name),
                                                    encoding="utf-8") as fh:
                if f"URL: {url}\n" in fh.read():
                    return
    with contextlib.suppress(FileNotFoundError):
        os.unlink(os.path.join(directory, url))


def persist_url(directory: str, compression: str | None = None) -> str:
    return f"file://{directory}" + (f"?compression={compression}" if compression else "")


# ------------------------------------------------------------------ export


@dataclass
class Candidate:
    """A store path that may hold ``repo_id``: its commit (40 hex, else the 12 of the
    store name), the refs the profiles' states give it, and its repo type."""

    store_path: str
    repo_id: str
    repo_type: str
    commit: str
    refs: set[str] = field(default_factory=set)


def names_repo(asked: str, repo_id: str) -> bool:
    """Whether the REPO argument ``asked`` names ``repo_id``: the same id, or ``asked``
    is a bare NAME and ``repo_id`` is ``ORG/NAME``. The Hub answers a bare name with the
    repo's full id (``gpt2`` is ``openai-community/gpt2``), which is what ``prefetch``
    pins and names the store path after; offline, a bare name is matched to the full
    ids found (several: the caller lists them)."""
    return repo_id == asked or ("/" not in asked and repo_id.endswith("/" + asked))


def _state_candidates(repo_id: str, repo_type: str | None, state_dir: str) -> list[Candidate]:
    """What the profiles in ``state_dir`` linked for ``repo_id`` (a bare NAME: for any
    ``ORG/NAME``, :func:`names_repo`): snapshot links give the store path and the full
    commit, ref records name commits."""
    from ..state import list_states

    types = [repo_type] if repo_type else ["model", "dataset"]

    def folder_repo(folder: str) -> tuple[str, str] | None:
        for t in types:  # <type>s--ORG--NAME (huggingface_hub's repo_folder_name)
            head = f"{t}s--"
            if folder.startswith(head):
                rid = folder[len(head):].replace("--", "/")
                if names_repo(repo_id, rid):
                    return rid, t
        return None

    found: dict[str, Candidate] = {}
    refs: dict[tuple[str, str], set[str]] = {}
    for _path, st in list_states(state_dir):
        for rec in st.records:
            folder, _, rest = rec.path.partition("/")
            which = folder_repo(folder) if rec.value else None
            if which is None:
                continue
            if rec.kind == "snapshot" and rest.startswith("snapshots/"):
                commit = rest[len("snapshots/"):]
                found.setdefault(rec.value, Candidate(rec.value, which[0], which[1], commit))
            elif rec.kind == "ref" and rest.startswith("refs/"):
                refs.setdefault((which[0], rec.value), set()).add(rest[len("refs/"):])
    for cand in found.values():
        cand.refs |= refs.get((cand.repo_id, cand.commit), set())
    return list(found.values())


def _store_candidates(repo_id: str, store_dir: str) -> list[str]:
    """Store paths (valid or not) named as the fetcher names ``repo_id`` (a bare NAME:
    any ``ORG/NAME``, :func:`names_repo`)."""
    exact = "hf-" + repo_id.replace("/", "--") + "-"  # <hash>-hf-ORG--NAME-<12 hex>
    bare = "--" + repo_id + "-" if "/" not in repo_id else None  # …--NAME-<12 hex>
    try:
        names = os.listdir(store_dir)
    except OSError:
        return []
    out = []
    for name in names:
        hit = (len(name) == 33 + len(exact) + 12 and name[33:].startswith(exact)) or (
            bare is not None and name[-12 - len(bare):-12] == bare
            and name[32:36] == "-hf-")
        if hit and _STORE_BASE.fullmatch(name):
            path = os.path.join(store_dir, name)
            parsed = parse_hf_name(path)
            if parsed and names_repo(repo_id, parsed[0]):
                out.append(path)
    return sorted(out)


@dataclass(frozen=True)
class NamedModel:
    """A model of an activated manifest: ``models.<name>`` and what it pins."""

    name: str
    repo_id: str
    repo_type: str
    revision: str
    refs: tuple[str, ...]
    path: str


def named_models(state_dir: str) -> list[NamedModel]:
    """The models of the manifests the profiles in ``state_dir`` last activated
    completely (each receipt names its manifest, usually a store path; see
    :mod:`activate.noop`). Unreadable receipts and manifests are skipped."""
    out: list[NamedModel] = []
    try:
        names = sorted(os.listdir(state_dir))
    except OSError:
        return out
    for fname in names:
        if not fname.startswith("receipt-") or ".tmp-" in fname:
            continue
        try:
            with open(os.path.join(state_dir, fname), "rb") as fh:
                head = fh.read(1 << 16).split(b"\0", 2)
            with open(head[1].decode("utf-8", "surrogateescape"), "rb") as fh:
                doc = json.loads(fh.read())
            models = doc["models"]
        except (OSError, IndexError, ValueError, KeyError, TypeError):
            continue
        if not isinstance(models, dict):
            continue
        for name, m in models.items():
            if isinstance(m, dict) and isinstance(m.get("path"), str) and \
                    isinstance(m.get("repoId"), str):
                out.append(NamedModel(name, m["repoId"], str(m.get("repoType") or "model"),
                                      str(m.get("revision") or ""),
                                      tuple(m.get("refs") or ("main",)), m["path"]))
    return out


def _matches_revision(cand: Candidate, revision: str) -> bool:
    if revision in cand.refs:
        return True
    if _HEX.fullmatch(revision):
        n = min(len(revision), len(cand.commit))
        return cand.commit[:n] == revision[:n]
    return False


def locate(nix: Nix, *, repo_id: str, repo_type: str | None, revision: str | None,
           state_dir: str, store_dir: str) -> Candidate:
    """The one valid store path holding ``repo_id`` at ``revision`` (a commit or a prefix
    of at least 7 hex digits, or a ref a profile's state records; None: the only one,
    else the one ``main`` names). Looks at what the profiles in ``state_dir`` linked,
    then at store paths named as the fetcher names the repo. Raises :class:`Failure`:
    exit 2 when none or several match (the message lists them and how to choose)."""
    cands = {c.store_path: c for c in _state_candidates(repo_id, repo_type, state_dir)}
    for path in _store_candidates(repo_id, store_dir):
        if path not in cands:
            parsed = parse_hf_name(path)
            assert parsed is not None
            cands[path] = Candidate(path, parsed[0], repo_type or "model", parsed[1])
    if any(c.repo_id == repo_id for c in cands.values()):  # the id as given comes first
        cands = {p: c for p, c in cands.items() if c.repo_id == repo_id}
    valid = nix.valid(sorted(cands))
    pool = [cands[p] for p in sorted(valid)]
    if revision is not None:
        every = pool
        pool = [c for c in pool if _matches_revision(c, revision)]
        if not pool and every and not _HEX.fullmatch(revision):
            listing = "; ".join(f"{c.store_path} (commit {c.commit[:12]})" for c in every)
            raise Failure(EXIT_BAD_INPUT, f"no profile records the ref {revision!r} of "
                          f"{repo_id}, and export works offline: give the commit "
                          f"(--revision <7+ hex digits>) of one of {listing}")
    elif len(pool) > 1:
        main = [c for c in pool if "main" in c.refs]
        pool = main if len(main) == 1 else pool
    at = f" at {revision}" if revision else ""
    if not pool:
        gone = sorted(set(cands) - valid)
        raise Failure(EXIT_BAD_INPUT, f"no store path of {repo_id}{at} is in the store"
                      + (f" (garbage-collected: {', '.join(gone)})" if gone else "")
                      + f": build it, or `model-repo prefetch {repo_id} --add-to-store"
                      + (f" --revision {revision}" if revision else "") + "`, then export; "
                      "or give the path with --store-path")
    if len(pool) > 1 and len({c.repo_id for c in pool}) > 1:
        ids = sorted({c.repo_id for c in pool})
        raise Failure(EXIT_BAD_INPUT, f"{repo_id!r} names several repos in the store "
                      f"({', '.join(ids)}): give the full repo id ORG/NAME")
    if len(pool) > 1:
        listing = "; ".join(f"{c.store_path} (commit {c.commit[:12]}"
                            + (f", refs {', '.join(sorted(c.refs))}" if c.refs else "") + ")"
                            for c in pool)
        raise Failure(EXIT_BAD_INPUT, f"several store paths hold {repo_id}{at}: {listing}; "
                      "choose one with --revision COMMIT or --store-path PATH")
    return pool[0]


def export_path(nix: Nix, directory: str, store_path: str, *, repo_id: str, repo_type: str,
                revision: str, ref: str | None = None, files: Sequence[str] = (),
                include: Sequence[str] = (), exclude: Sequence[str] = (),
                names: Sequence[str] = (), compression: str = "none",
                log: Any = None) -> Entry:
    """Copy the valid ``store_path`` into the persist folder ``directory`` (created when
    missing) and record it in the manifest, replacing an older entry for the same path.
    Returns the entry. Raises :class:`Failure` (exit 3) when ``nix copy`` fails or the
    folder cannot be written."""
    if compression not in COMPRESSIONS:
        raise Failure(EXIT_BAD_INPUT, f"--compression: {compression!r} is not one of "
                      f"{', '.join(COMPRESSIONS)}")
    make_folder(directory, "persist folder", "set another one (--persist-dir, "
                "MODEL_REPO_PERSIST_DIR or persist_dir= in the config file)")
    with _locked(directory):
        info, problem = check_cached(directory, store_path)
        if problem is None and info is not None:
            problem = _stale_or_damaged(nix, directory, store_path, info)
        if problem is not None and os.path.exists(narinfo_path(directory, store_path)):
            # nix copy skips a path whose narinfo exists: drop the bad entry first.
            if log:
                log.warning(f"replacing the persisted copy: {problem}", path=store_path)
            _forget_cached(directory, store_path, info,
                           nar_bad=problem.startswith(("the NAR ", "cannot read ")))
            info = None
        if problem is None and info is not None:
            if log:
                log.info("already in the persist folder", path=store_path, dir=directory)
        elif nix.nix is not None and not _copy_unusable(proc := nix.run(
                nix.nix, *_NIX_FLAGS, "copy", "--to", persist_url(directory, compression),
                store_path, bar=_bar(nix, store_path, None, "Exporting"))):
            if proc.returncode != 0:
                raise Failure(EXIT_ENVIRONMENT, f"nix copy {store_path} to {directory} "
                              "failed: " + _last_line(proc.stderr))
            info, problem = check_cached(directory, store_path)
            if problem is not None or info is None:
                raise Failure(EXIT_ENVIRONMENT, f"nix copy reported success but {problem}")
            if log:
                log.info("exported", path=store_path, dir=directory, compression=compression)
        else:
            if compression != "none" and log:
                log.warning(f"without nix copy the NAR is stored uncompressed, not "
                            f"{compression}")
            info = dump_to_cache(nix, directory, store_path)
            if log:
                log.info("exported with nix-store --dump", path=store_path, dir=directory)
        nar_hash, nar_size = _narinfo_hash(info)
        entry = Entry(repo_id, repo_type, revision, store_path, nar_hash, nar_size,
                      datetime.datetime.now(datetime.timezone.utc).isoformat(
                          timespec="seconds").replace("+00:00", "Z"),
                      ref, list(include), list(exclude), list(files), sorted(set(names)))
        entries = [e for e in read_manifest(directory) if e.store_path != store_path]
        _write_manifest(directory, entries + [entry])
    return entry


# ------------------------------------------- without nix copy: nix-store --dump/--import

_B32 = "0123456789abcdfghijklmnpqrsvwxyz"
_EXPORT_MAGIC = 0x4558494E


def nix_base32(digest: bytes) -> str:
    """Nix's base-32 of ``digest`` (libutil ``Hash::to_string(Base32)``: little-endian
    bits, 5 at a time, most significant digit first, alphabet without e o u t)."""
    value = int.from_bytes(digest, "little")
    n = (len(digest) * 8 - 1) // 5 + 1
    return "".join(_B32[(value >> (5 * i)) & 31] for i in range(n - 1, -1, -1))


def nix_base32_decode(text: str, size: int = 32) -> bytes | None:
    """The ``size`` bytes :func:`nix_base32` printed as ``text``, or None if malformed."""
    if len(text) != (size * 8 - 1) // 5 + 1 or any(c not in _B32 for c in text):
        return None
    value = 0
    for c in text:
        value = (value << 5) | _B32.index(c)
    try:
        return value.to_bytes(size, "little")
    except OverflowError:
        return None


def fixed_output_path(store_dir: str, name: str, nar_sha256: bytes) -> str:
    """The store path of a recursive sha256 fixed-output path without references (what
    ``nix-store --add-fixed --recursive sha256`` and the fetchers make): libstore
    ``makeFixedOutputPath`` → ``makeStorePath("source", …)``: sha256 of
    ``source:sha256:<hex>:<store dir>:<name>``, folded to 20 bytes by XOR, base-32."""
    import hashlib

    fingerprint = f"source:sha256:{nar_sha256.hex()}:{store_dir}:{name}".encode()
    full = hashlib.sha256(fingerprint).digest()
    folded = bytearray(20)
    for i, b in enumerate(full):
        folded[i % 20] ^= b
    return f"{store_dir}/{nix_base32(bytes(folded))}-{name}"


def _narinfo_hash(info: Mapping[str, str]) -> tuple[str, int]:
    """``(SRI NAR hash, NAR size)`` of a narinfo; raises :class:`Failure` (exit 3)."""
    import base64

    algo, _, b32 = info.get("NarHash", "").partition(":")
    digest = nix_base32_decode(b32) if algo == "sha256" else None
    size = info.get("NarSize", "")
    if digest is None or not size.isdigit():
        raise Failure(EXIT_ENVIRONMENT, f"the narinfo of {info.get('StorePath')} has no "
                      "usable NarHash/NarSize")
    return "sha256-" + base64.b64encode(digest).decode(), int(size)


def ca_verified(info: Mapping[str, str]) -> bool:
    """True when the narinfo's content address is the one its store path is made of
    (``CA: fixed:r:sha256:…`` equal to its NAR hash, no references, and
    :func:`fixed_output_path` of it is the path): importing it needs no trust, as the
    NAR is checked against that hash."""
    path = info.get("StorePath", "")
    algo, _, b32 = info.get("NarHash", "").partition(":")
    digest = nix_base32_decode(b32) if algo == "sha256" else None
    if digest is None or info.get("CA") != f"fixed:r:sha256:{b32}" or info.get("References"):
        return False
    name = os.path.basename(path).split("-", 1)[-1]
    return fixed_output_path(store_dir_of(path), name, digest) == path


def _copy_unusable(proc: subprocess.CompletedProcess[str]) -> bool:
    """True when ``nix copy`` failed because this ``nix`` cannot run it at all (Nix
    before 2.4: no ``--extra-experimental-features``, no ``copy``)."""
    err = proc.stderr
    return proc.returncode != 0 and ("unrecognised flag" in err or "unknown flag" in err
                                     or "'copy' is not a recognised command" in err)


def dump_to_cache(nix: Nix, directory: str, store_path: str) -> dict[str, str]:
    """Write ``store_path`` into the binary cache ``directory`` as ``nix copy`` would,
    with ``nix-store --dump`` (uncompressed NAR, ``nar/<sha256 base-32>.nar``, then the
    narinfo, then ``nix-cache-info`` when missing). Returns the narinfo's fields.
    Only for a path without references (a model's flat directory of files; a url model's
    directory of links to other paths needs ``nix copy``, which exports the closure).
    Raises :class:`Failure` (exit 3)."""
    import hashlib

    refs = nix.run(nix.nix_store, "--query", "--references", store_path).stdout.split()
    if refs:
        raise Failure(EXIT_ENVIRONMENT, f"{store_path} refers to other store paths "
                      f"({', '.join(refs[:3])}{', …' if len(refs) > 3 else ''}), whose "
                      "closure only `nix copy` exports: install Nix 2.4 or later (the `nix` "
                      "command)")
    nar_dir = os.path.join(directory, "nar")
    os.makedirs(nar_dir, exist_ok=True)
    tmp = os.path.join(nar_dir, f".dump-{os.getpid()}.tmp")
    digest = hashlib.sha256()
    size = 0
    from .progress import byte_bar, enabled

    total = 0
    if enabled():  # the NAR's size, for the bar
        with contextlib.suppress(ValueError):
            total = int(nix.run(nix.nix_store, "--query", "--size", store_path).stdout or 0)
    try:
        with subprocess.Popen([nix.nix_store, "--dump", store_path], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, stdin=subprocess.DEVNULL) as proc, \
                open(tmp, "wb") as out, \
                byte_bar(total, "Exporting " + os.path.basename(store_path)[33:]) as bar:
            assert proc.stdout is not None and proc.stderr is not None
            while chunk := proc.stdout.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
                size += len(chunk)
                bar.update(len(chunk))
            err = proc.stderr.read().decode(errors="replace")
        if proc.returncode != 0:
            raise Failure(EXIT_ENVIRONMENT, f"nix-store --dump {store_path} failed: "
                          + _last_line(err))
        b32 = nix_base32(digest.digest())
        nar = os.path.join(nar_dir, f"{b32}.nar")
        os.replace(tmp, nar)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    deriver = nix.run(nix.nix_store, "--query", "--deriver", store_path).stdout.strip()
    info = {"StorePath": store_path, "URL": f"nar/{b32}.nar", "Compression": "none",
            "FileHash": f"sha256:{b32}", "FileSize": str(size), "NarHash": f"sha256:{b32}",
            "NarSize": str(size), "References": ""}
    if deriver.startswith("/"):
        info["Deriver"] = os.path.basename(deriver)
    name = os.path.basename(store_path).split("-", 1)[1]
    if fixed_output_path(store_dir_of(store_path), name, digest.digest()) == store_path:
        info["CA"] = f"fixed:r:sha256:{b32}"
    path = narinfo_path(directory, store_path)
    with open(path + ".tmp", "w", encoding="utf-8") as fh:
        fh.write("".join(f"{k}: {v}\n" for k, v in info.items()))
    os.replace(path + ".tmp", path)
    cache_info = os.path.join(directory, "nix-cache-info")
    if not os.path.exists(cache_info):
        with open(cache_info, "w", encoding="utf-8") as fh:
            fh.write(f"StoreDir: {store_dir_of(store_path)}\n")
    return info


def _wire_str(data: bytes) -> bytes:
    """A string in Nix's serialisation: u64 length, bytes, zero padding to 8."""
    import struct

    return struct.pack("<Q", len(data)) + data + b"\0" * (-len(data) % 8)


def import_stream(nix: Nix, directory: str, store_path: str, *, no_check_sigs: bool) -> None:
    """Restore ``store_path`` with ``nix-store --import`` from the binary cache's NAR (what
    ``nix copy --from`` does, for a Nix without it). ``nix-store --import`` checks no
    hash, so this does: the NAR is streamed while its sha256 and size are compared with
    the narinfo, and the trailer that makes Nix register the path is sent only when
    they match (otherwise Nix sees an unexpected end of file and registers nothing).
    A path that is not :func:`ca_verified` needs ``no_check_sigs`` (the user's trust).
    Raises :class:`Failure` (exit 3; a partly written directory is removed)."""
    import hashlib
    import struct

    info, problem = check_cached(directory, store_path)
    if problem is not None or info is None:
        raise Failure(EXIT_ENVIRONMENT, f"cannot import {store_path}: {problem}")
    if not no_check_sigs and not ca_verified(info):
        raise Failure(EXIT_BAD_INPUT, f"{store_path} is neither signed nor content-"
                      "addressed: pass --yes to trust the persist folder")
    compression = info.get("Compression", "none")
    nar = os.path.join(directory, info["URL"])
    opener: Any
    if compression == "none":
        opener = open
    elif compression == "xz":
        import lzma

        opener = lzma.open
    else:
        raise Failure(EXIT_ENVIRONMENT, f"cannot import {store_path}: its NAR is "
                      f"{compression}-compressed, which needs `nix copy` (Nix 2.4 or later)")
    want_hash, want_size = _narinfo_hash(info)
    digest = hashlib.sha256()
    size = 0
    ok = False
    got = ""
    from .progress import byte_bar

    with subprocess.Popen([nix.nix_store, "--import"], stdin=subprocess.PIPE,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) as proc, \
            byte_bar(want_size, "Importing " + os.path.basename(store_path)[33:]) as bar:
        assert proc.stdin is not None and proc.stderr is not None
        try:
            proc.stdin.write(struct.pack("<Q", 1))
            with opener(nar, "rb") as fh:
                while chunk := fh.read(1 << 20):
                    digest.update(chunk)
                    size += len(chunk)
                    proc.stdin.write(chunk)
                    bar.update(len(chunk))
            import base64

            got = "sha256-" + base64.b64encode(digest.digest()).decode()
            ok = (got, size) == (want_hash, want_size)
            if ok:
                refs = [os.path.join(store_dir_of(store_path), r)
                        for r in info.get("References", "").split()]
                deriver = info.get("Deriver", "")
                trailer = struct.pack("<Q", _EXPORT_MAGIC) + _wire_str(store_path.encode())
                trailer += struct.pack("<Q", len(refs)) + b"".join(
                    _wire_str(r.encode()) for r in refs)
                trailer += _wire_str((os.path.join(store_dir_of(store_path), deriver)
                                      if deriver else "").encode())
                trailer += struct.pack("<Q", 0) + struct.pack("<Q", 0)
                proc.stdin.write(trailer)
        except (BrokenPipeError, EOFError, OSError) as exc:
            problem = f"{type(exc).__name__}: {exc}"
        finally:
            with contextlib.suppress(BrokenPipeError):
                proc.stdin.close()
        err = proc.stderr.read().decode(errors="replace")
    if ok and proc.returncode == 0 and nix.valid([store_path]):
        return
    leftover = ""
    if os.path.lexists(store_path) and not nix.valid([store_path]):
        leftover = (" (removed the partial copy left in the store)" if nix.delete(store_path)
                    else f"; run nix-store --delete {store_path}")
    reason = (problem or (_last_line(err) if proc.returncode != 0 else "")) if ok else (
        f"the NAR does not match its narinfo (NarHash {want_hash}, {want_size} bytes; "
        f"got {got or 'nothing'}, {size} bytes)")
    raise Failure(EXIT_ENVIRONMENT, f"cannot import {store_path} from {directory}: {reason}; "
                  f"nothing was imported{leftover}; export it again while it is in the "
                  "store, or rebuild it")


# ------------------------------------------------------------------ import


def status_of(nix: Nix, directory: str, entries: Sequence[Entry]) -> list[tuple[str, str]]:
    """For each entry: ``("valid", "")`` in the store, ``("persisted", "")`` only in the
    persist folder (importable), or ``("broken", why)`` (neither usable)."""
    valid = nix.valid([e.store_path for e in entries])
    out = []
    for e in entries:
        if e.store_path in valid:
            out.append(("valid", ""))
            continue
        _, problem = check_cached(directory, e.store_path)
        out.append(("broken", problem) if problem else ("persisted", ""))
    return out


def needs_trust(directory: str, store_path: str, *, with_nix_copy: bool = True) -> bool:
    """True when ``store_path`` can be imported only without a signature check: its
    narinfo has no content address (``CA:``) nor, for ``nix copy``, a signature
    (``Sig:``; Nix checks it against ``trusted-public-keys``). Without ``nix copy``
    only a content address that :func:`ca_verified` confirms counts."""
    info, _ = check_cached(directory, store_path)
    if info is None:
        return True
    if not with_nix_copy:
        return not ca_verified(info)
    return not (info.get("CA") or info.get("Sig"))


def import_path(nix: Nix, directory: str, store_path: str, *, no_check_sigs: bool,
                log: Any = None) -> bool:
    """Restore ``store_path`` from the persist folder into the store with no network;
    False when it was valid already. ``no_check_sigs``: pass ``--no-check-sigs`` (the
    caller has the user's confirmation for an unsigned path). Raises :class:`Failure`
    (exit 3) when the cache entry is broken or ``nix copy`` fails; a partly written
    directory Nix left at the store path is removed first, so nothing is half-imported."""
    if nix.valid([store_path]):
        return False
    cached, problem = check_cached(directory, store_path)
    if problem is not None:
        raise Failure(EXIT_ENVIRONMENT, f"cannot import {store_path}: {problem}; nothing "
                      "was imported (export it again while it is in the store, or rebuild it)")
    if log:
        log.info("importing", path=store_path, dir=directory)
    try:
        if nix.nix is None:
            import_stream(nix, directory, store_path, no_check_sigs=no_check_sigs)
            return True
        argv = [nix.nix, *_NIX_FLAGS, "copy", "--from", persist_url(directory)]
        if no_check_sigs:
            argv.append("--no-check-sigs")
        proc = nix.run(*argv, store_path, bar=_bar(nix, store_path, cached, "Importing"))
        if _copy_unusable(proc):
            import_stream(nix, directory, store_path, no_check_sigs=no_check_sigs)
            return True
    except KeyboardInterrupt:
        # Ctrl-C reaches Nix too; what it had written is not registered: remove it.
        if os.path.lexists(store_path) and not nix.valid([store_path]):
            nix.delete(store_path)
        raise
    if proc.returncode == 0 and nix.valid([store_path]):
        return True
    leftover = ""
    if os.path.lexists(store_path) and not nix.valid([store_path]):
        leftover = (" (removed the partial copy Nix left in the store)"
                    if nix.delete(store_path) else
                    f" and the partial copy Nix left at {store_path} could not be removed: "
                    f"run nix-store --delete {store_path}")
    reason = _last_line(proc.stderr) if proc.returncode != 0 else "the path is not valid after it"
    raise Failure(EXIT_ENVIRONMENT, f"cannot import {store_path} from {directory}: {reason}; "
                  f"nothing was imported{leftover}; the persist folder's copy is damaged: "
                  "export it again while it is in the store, or rebuild it")


def _bar(nix: Nix, store_path: str, narinfo: Mapping[str, str] | None,
         verb: str) -> tuple[int, str] | None:
    """The progress bar of a ``nix copy`` of ``store_path``: (bytes, label), its size
    from ``narinfo`` (import: ``FileSize``) or the store (export: ``narSize``); None
    when bars are off (not a terminal, ``-q``) or the size is unknown."""
    from .progress import enabled

    if not enabled():
        return None
    try:
        size = int(narinfo.get("FileSize") or narinfo.get("NarSize") or 0) if narinfo \
            else int(nix.path_info(store_path).get("narSize") or 0)
    except (Failure, ValueError, TypeError, AttributeError):
        return None
    name = os.path.basename(store_path).split("-", 1)[-1]
    return (size, f"{verb} {name}") if size > 0 else None


def confirm(paths: Sequence[str], directory: str, *, stdin: TextIO, stderr: TextIO) -> bool:
    """Ask on the terminal whether to import the unsigned ``paths`` without a signature
    check. Raises :class:`Failure` (exit 2) when stdin is not a terminal."""
    if not stdin.isatty():
        raise Failure(EXIT_BAD_INPUT, f"{len(paths)} path(s) in {directory} are neither "
                      "signed nor content-addressed, so Nix imports them only without a "
                      "signature check (--no-check-sigs); this is not a terminal to ask "
                      "on: pass --yes to trust the persist folder")
    stderr.write(f"Not signed and not content-addressed (the persist folder {directory} "
                 "must not have been tampered with):\n")
    for p in paths:
        stderr.write(f"  {p}\n")
    stderr.write("Import without a signature check (--no-check-sigs)? [y/N] ")
    stderr.flush()
    answer = stdin.readline().strip().lower()
    return answer in ("y", "yes")


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
            _HEX.fullmatch(revision) is not None
            and e.revision[:min(len(revision), len(e.revision))]
            == revision[:min(len(revision), len(e.revision))])]
    if revision is None and len({(e.repo_type, e.revision) for e in pool}) > 1:
        pool = [max(pool, key=lambda e: e.exported_at)]
    return pool


# ------------------------------------------------------------------ auto-persist


def restore_for_prefetch(environ: Mapping[str, str], log: Any, *, repo_id: str,
                         repo_type: str, commit: str, files: Sequence[str],
                         include: Sequence[str], exclude: Sequence[str]) -> Entry | None:
    """With ``auto_persist`` on: the persisted entry for exactly this pin (repo, type,
    commit, files, include, exclude), made valid in the store (imported when it was
    garbage-collected; auto-persist is the user's opt-in to trust their own persist
    folder, as nix-hug does), so ``prefetch --add-to-store`` need not download. None
    when auto-persist is off, nothing matches, or the import fails (logged as a
    warning: the caller downloads instead)."""
    from .config import load_config

    try:
        cfg = load_config(environ)
    except ConfigError as exc:
        log.warning(f"auto-persist skipped: {exc}")
        return None
    if not cfg.auto_persist:
        return None
    try:
        entries = read_manifest(cfg.persist_dir)
        for e in reversed(entries):
            if (e.repo_id, e.repo_type, e.revision) == (repo_id, repo_type, commit) and \
                    (e.files, e.include, e.exclude) == (list(files), list(include),
                                                        list(exclude)):
                nix = Nix.find(environ)
                if import_path(nix, cfg.persist_dir, e.store_path, no_check_sigs=True, log=log):
                    log.info("restored from the persist folder", path=e.store_path,
                             dir=cfg.persist_dir)
                return e
    except Failure as f:
        log.warning(f"auto-persist: {f.message}; downloading instead")
    return None


def export_after_prefetch(environ: Mapping[str, str], log: Any, *, store_path: str,
                          repo_id: str, repo_type: str, commit: str, ref: str | None,
                          files: Sequence[str], include: Sequence[str],
                          exclude: Sequence[str]) -> Entry | None:
    """With ``auto_persist`` on: export what ``prefetch --add-to-store`` just added. None
    when auto-persist is off. Raises :class:`Failure` (exit 2 bad setting, 3 export
    failed)."""
    from .config import load_config

    try:
        cfg = load_config(environ)
    except ConfigError as exc:
        raise Failure(EXIT_BAD_INPUT, str(exc)) from exc
    if not cfg.auto_persist:
        return None
    entry = export_path(Nix.find(environ), cfg.persist_dir, store_path, repo_id=repo_id,
                        repo_type=repo_type, revision=commit, ref=ref, files=files,
                        include=include, exclude=exclude, log=log)
    log.info("exported to the persist folder (auto_persist)", path=store_path,
             dir=cfg.persist_dir)
    return entry


# ------------------------------------------------------------------ command line


def run(args: argparse.Namespace, environ: Mapping[str, str], *,
        stdin: TextIO | None = None) -> int:
    """Run ``export``, ``import`` or ``store`` (``args.command``); returns the exit status.
    ``environ`` supplies ``PATH`` (Nix), the persist settings, ``MODEL_REPO_STATE_DIR``,
    ``NIX_STORE_DIR``. Output on stdout, logs on stderr."""
    from ..log import Log

    from .progress import configure

    configure(quiet=args.quiet)  # bars on a terminal only, never with -q
    level = "debug" if args.verbose else "error" if args.quiet else "info"
    log = Log(level, args.log_format, color=getattr(args, "color", "auto"),
              environ=environ)
    return exit_status(lambda: _run(args, environ, log, stdin if stdin is not None else sys.stdin),
                       log, bad_input=(ConfigError,))


def _repo(args: argparse.Namespace, environ: Mapping[str, str]) -> tuple[str | None, str | None,
                                                                         str | None, str | None]:
    """``(repo id, repo type or None, revision or None, store path or None)`` of REPO."""
    arg: str = args.repo
    revision = args.revision
    if arg.startswith("/"):
        path = check_store_path(arg, "REPO")
        return None, "dataset" if args.dataset else None, revision, path
    from .repoarg import RepoArgError, parse_repo

    try:
        ref = parse_repo(arg, endpoint=environ.get("HF_ENDPOINT") or None)
    except RepoArgError as exc:
        raise Failure(EXIT_BAD_INPUT, str(exc)) from exc
    if ref.file is not None:
        raise Failure(EXIT_BAD_INPUT, f"{arg!r} names one file; export and import work on "
                      "a repo's store path: give the repo (ORG/NAME)")
    repo_type = "dataset" if args.dataset else ref.repo_type
    return ref.repo_id, repo_type, revision or ref.revision, None


def _run(args: argparse.Namespace, environ: Mapping[str, str], log: Any, stdin: TextIO) -> int:
    from .config import load_config

    cfg = load_config(environ, persist_flag=args.persist_dir)
    for key in cfg.unknown_keys:
        log.warning(f"{cfg.config_file}: unknown setting {key!r} ignored (model-repo reads "
                    "persist_dir and auto_persist)")
    directory, source = cfg.persist_dir, cfg.persist_dir_source
    if args.command == "store":
        if args.store_command == "path":
            log.debug("persist folder", dir=directory, source=source)
            sys.stdout.write(directory + "\n")
            return EXIT_OK
        return _store_ls(args, environ, directory)
    nix = Nix.find(environ)
    if args.command == "export":
        return _export(args, environ, log, nix, directory)
    return _import(args, environ, log, nix, directory, stdin)


def _export(args: argparse.Namespace, environ: Mapping[str, str], log: Any, nix: Nix,
            directory: str) -> int:
    from ..statefile import state_dir

    states = state_dir(args.state_dir, environ)
    named = named_models(states)
    by_name = [m for m in named if m.name == args.repo and "/" not in args.repo]
    if by_name and not args.store_path:
        paths = sorted({m.path for m in by_name})
        if len(paths) > 1:
            raise Failure(EXIT_BAD_INPUT, f"the model name {args.repo!r} means several "
                          f"store paths in your activated manifests ({', '.join(paths)}): "
                          "give the repo id and --revision, or --store-path")
        m = by_name[0]
        if args.revision and not _matches_revision(
                Candidate(m.path, m.repo_id, m.repo_type, m.revision, set(m.refs)),
                args.revision):
            raise Failure(EXIT_BAD_INPUT, f"model {m.name!r} is {m.repo_id} at "
                          f"{m.revision}, not --revision {args.revision}")
        repo_id, repo_type, revision, path = m.repo_id, m.repo_type, m.revision, m.path
    else:
        repo_id, repo_type, revision, path = _repo(args, environ)
    if args.store_path:
        path = check_store_path(args.store_path, "--store-path")
    if path is not None:
        if not nix.valid([path]):
            raise Failure(EXIT_BAD_INPUT, f"{path} is not a valid store path (garbage-"
                          "collected, or never built): build it first")
        parsed = parse_hf_name(path)
        if repo_id is None:
            if parsed is None:
                raise Failure(EXIT_BAD_INPUT, f"{path} is not named as the fetcher names a "
                              "Hub repo (hf-ORG--NAME-<commit>): give the repo too "
                              "(model-repo export ORG/NAME --store-path PATH --revision COMMIT)")
            repo_id = parsed[0]
        commit = revision if revision and re.fullmatch(r"[0-9a-f]{40}", revision) else (
            parsed[1] if parsed else revision)
        if not commit:
            raise Failure(EXIT_BAD_INPUT, "--revision COMMIT: the commit of this store path "
                          "(its name does not tell it)")
        cand = Candidate(path, repo_id, repo_type or "model", commit)
    else:
        assert repo_id is not None
        store_dir = environ.get("NIX_STORE_DIR") or DEFAULT_STORE_DIR
        cand = locate(nix, repo_id=repo_id, repo_type=repo_type, revision=revision,
                      state_dir=states, store_dir=store_dir)
        if revision and re.fullmatch(r"[0-9a-f]{40}", revision) and len(cand.commit) < 40:
            cand.commit = revision
    ref = revision if revision and revision in cand.refs else (
        "main" if "main" in cand.refs else None)
    names = [m.name for m in named if m.path == cand.store_path]
    if by_name and ref is None and "main" in by_name[0].refs:
        ref = "main"
    entry = export_path(nix, directory, cand.store_path, repo_id=cand.repo_id,
                        repo_type=repo_type or cand.repo_type, revision=cand.commit, ref=ref,
                        files=args.files, include=args.include, exclude=args.exclude,
                        names=names, compression=args.compression, log=log)
    if args.json:
        sys.stdout.write(json.dumps(entry.to_json(), indent=2) + "\n")
    else:
        sys.stdout.write(f"{entry.store_path}\n")
    log.info("exported", repo=entry.repo_id, revision=entry.revision, dir=directory,
             size=entry.nar_size)
    return EXIT_OK


def _import(args: argparse.Namespace, environ: Mapping[str, str], log: Any, nix: Nix,
            directory: str, stdin: TextIO) -> int:
    entries = read_all(directory)
    if args.all:
        if args.repo:
            raise Failure(EXIT_BAD_INPUT, "give REPO or --all, not both")
        chosen = list({e.store_path: e for e in entries}.values())
        if not chosen:
            log.warning("nothing to import: the persist folder records no model",
                        dir=directory)
            return EXIT_OK
    else:
        if not args.repo:
            raise Failure(EXIT_BAD_INPUT, "give REPO (ORG/NAME or a store path), or --all")
        chosen = [e for e in entries if args.repo in e.names and "/" not in args.repo]
        if chosen:
            revision = args.revision
            chosen = select_entries(chosen, repo_id=chosen[-1].repo_id, repo_type=None,
                                    revision=revision, store_path=None)
            repo_id, path = args.repo, None
        else:
            repo_id, repo_type, revision, path = _repo(args, environ)
            chosen = select_entries(entries, repo_id=repo_id, repo_type=repo_type,
                                    revision=revision, store_path=path)
        if not chosen and path is not None and os.path.isfile(narinfo_path(directory, path)):
            # In the binary cache without a manifest entry (copied there by hand).
            chosen = [Entry("", "model", "", path, "", 0, "")]
        if not chosen:
            what = path or repo_id + (f" at {revision}" if revision else "")
            raise Failure(EXIT_BAD_INPUT, f"the persist folder {directory} records no "
                          f"{what}: `model-repo store ls` lists what it holds")
    states = dict(zip([e.store_path for e in chosen], status_of(nix, directory, chosen)))
    todo = [e for e in chosen if states[e.store_path][0] != "valid"]
    for e in chosen:
        if states[e.store_path][0] == "valid":
            log.info("already in the store", path=e.store_path)
            sys.stdout.write(f"{e.store_path}\n")
    unsigned = [e.store_path for e in todo if states[e.store_path][0] == "persisted"
                and needs_trust(directory, e.store_path, with_nix_copy=nix.nix is not None)]
    trusted = bool(args.yes)
    declined = False
    if unsigned and not trusted:
        trusted = confirm(unsigned, directory, stdin=stdin, stderr=sys.stderr)
        declined = not trusted
    failed = 0
    for e in todo:
        if e.store_path in unsigned and not trusted:
            log.warning("not imported (not confirmed)", path=e.store_path)
            failed += 1
            continue
        try:
            import_path(nix, directory, e.store_path,
                        no_check_sigs=e.store_path in unsigned, log=log)
        except Failure as f:
            if not args.all:
                raise
            log.error(f.message)
            failed += 1
            continue
        log.info("imported", path=e.store_path)
        sys.stdout.write(f"{e.store_path}\n")
    if declined and failed == len(todo):
        log.error("nothing imported: the confirmation was declined")
    return EXIT_PARTIAL if failed else EXIT_OK


def _store_ls(args: argparse.Namespace, environ: Mapping[str, str], directory: str) -> int:
    entries = read_all(directory)
    nix = Nix.find(environ)
    states = status_of(nix, directory, entries)
    rows = [{**e.to_json(), "status": st, "problem": why or None}
            for e, (st, why) in zip(entries, states)]
    if args.json:
        sys.stdout.write(json.dumps({"persistDir": directory, "entries": rows}, indent=2) + "\n")
    elif not rows:
        sys.stdout.write(f"# {directory}: nothing persisted (model-repo export ORG/NAME)\n")
    else:
        from .prefetch import human_size

        lines = [f"# {directory}"]
        width = max(len(e.repo_id) + 1 + 12 for e in entries) if entries else 0
        for e, (st, why) in zip(entries, states):
            lines.append(f"{st:<9} {(e.repo_id + '@' + e.revision[:12]):<{width}}  "
                         f"{e.repo_type:<7} {human_size(e.nar_size):>10}  {e.store_path}"
                         + (f"  ({why})" if why else ""))
        sys.stdout.write("\n".join(lines) + "\n")
    return EXIT_PARTIAL if any(st == "broken" for st, _ in states) else EXIT_OK
