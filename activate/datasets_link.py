"""Link prepared datasets into the ``datasets`` library's cache, so
``datasets.load_dataset("org/name")`` works offline.

With ``HF_HUB_OFFLINE=1``, ``datasets`` (3.0, the tested floor, to 5.x) loads a Hub
dataset only from what it prepared before in ``HF_DATASETS_CACHE``:
``load.CachedDatasetModuleFactory`` globs ``<cache>/<org>___<snake name>/*/*/*`` and the
packaged module
``packaged_modules/cache/cache.py`` picks, among those ``<config>/<version>/<hash>``
directories, the newest by mtime whose ``dataset_info.json`` names that config. A
prepared store path (:mod:`activate.datasets_prepare`, ``lib/datasets.nix``) holds
``<config>/<version>/<commit>/`` directories; this module makes, per config::

    <cache>/<org>___<snake name>/<config>/<version>/<commit>/   a real directory (ours)
        dataset_info.json, <snake name>-<split>.arrow, ...     symlinks into the store

The ``<commit>`` directory is real, not a link into the store: ``Dataset.map`` and the
other cached transforms write ``cache-<fingerprint>.arrow`` beside the dataset's arrow
files (``Dataset._get_cache_file_path``), which must land in the user's cache and never
in the store (root could write there). Those files are the user's: a drop removes our
links and directories, and keeps a directory that still holds anything else.

Safety, as in the hub cache: every change relative to directory handles opened with
``O_NOFOLLOW`` (:class:`~activate.hubfs.HubFS`); only new names are created; only
what a profile's state records is removed, and a link only while it still points where
we made it point; entries are recorded in the state before they are made (an
interrupted run converges on the next). Profiles co-own identical entries; the last
owner removes them. Runs on one cache are serialised by ``flock`` on
``<cache>/.model-repo.lock`` (beside the ``*.lock`` files ``datasets`` itself writes
there). States live in ``<state dir>/datasets/``.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import re
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .hubfs import Blocked, Changed, HubFS, HubRoot, UnsafePath, open_hub

STATE_SUBDIR = "datasets"
STATE_VERSION = 1
LOCK_NAME = ".model-repo.lock"

_UPPER_UPPER = re.compile(r"([A-Z]+)([A-Z][a-z])")
_LOWER_UPPER = re.compile(r"([a-z\d])([A-Z])")


@dataclass(frozen=True)
class Prepared:
    """One dataset to link: manifest model ``name``, its ``repo_id`` and the store
    ``path`` of its prepared arrow cache."""

    name: str
    repo_id: str
    path: str


@dataclass
class Result:
    """What :func:`sync` did: ``problems`` (``(model name, absolute path, reason, fix)``
    each), ``done`` (descriptions of the changes), ``blocked`` model names."""

    problems: list[tuple[str, str, str, str]] = field(default_factory=list)
    done: list[str] = field(default_factory=list)
    blocked: set[str] = field(default_factory=set)
    #: A dry run found entries to make: the wanted datasets are not in place yet.
    pending: bool = False


class DatasetsCacheProblem(Exception):
    """The datasets cache or its state cannot be used (lock timeout, unwritable)."""


def cache_folder(repo_id: str) -> str:
    """The folder ``datasets`` keeps ``repo_id``'s prepared configs in: ``org___snake``
    (``name`` alone without an org). Mirrors ``CachedDatasetModuleFactory.get_module``
    and ``datasets.naming.camelcase_to_snakecase`` (``TinySet`` -> ``tiny_set``)."""
    parts = repo_id.split("/")
    name = _UPPER_UPPER.sub(r"\1_\2", parts[-1])
    parts[-1] = _LOWER_UPPER.sub(r"\1_\2", name).lower()
    return "___".join(parts)


def has_state(state_dir: str, profile: str) -> bool:
    """True when ``profile`` has a datasets state (in any datasets cache)."""
    return bool(profile_states(state_dir, profile))


def profile_states(state_dir: str, profile: str) -> list[tuple[str, str]]:
    """``(state path, cache dir)`` of every datasets state of ``profile``. Raises
    :class:`DatasetsCacheProblem` for a state of ``profile`` of another version (a
    rollback refuses instead of forgetting what a newer activator linked); unreadable
    states are skipped here (:func:`sync` refuses to work beside one: it cannot tell what
    that state owns)."""
    directory = os.path.join(state_dir, STATE_SUBDIR)
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return []
    found = []
    for name in names:
        if name.endswith(".json") and not name.startswith("."):
            try:  # another profile's unreadable state is not this profile's concern
                data = _load(os.path.join(directory, name), any_version=True)
            except DatasetsCacheProblem:
                continue
            if data and data.get("profile") == profile:
                _load(os.path.join(directory, name))  # of another version: raises
                found.append((os.path.join(directory, name), str(data.get("cache"))))
    return found


def status(state_dir: str, profile: str | None) -> list[dict[str, object]]:
    """The ``model-repo status`` items of the datasets states (of ``profile``, or all):
    ``{profile, datasetsCacheDir, stateFile, upToDate, entries, blocked}``, each link
    entry ``{path, kind, value, created, status}`` with status ``ok``, ``dangling`` (its
    store path is gone), ``missing`` or ``changed``. Reads only (``lstat``, ``readlink``);
    raises :class:`DatasetsCacheProblem` for a state it cannot read."""
    directory = os.path.join(state_dir, STATE_SUBDIR)
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return []
    report: list[dict[str, object]] = []
    for name in names:
        if not name.endswith(".json") or name.startswith("."):
            continue
        spath = os.path.join(directory, name)
        data = _load(spath)
        if not data or (profile is not None and data.get("profile") != profile):
            continue
        cache = str(data.get("cache"))
        entries = []
        for rel, kind, value in (tuple(e) for e in data.get("entries", [])):
            if kind != "link":
                continue
            full = os.path.join(cache, rel)
            try:
                found = os.readlink(full)
                state = ("ok" if os.path.exists(full) else "dangling") if found == value \
                    else "changed"
            except FileNotFoundError:
                state = "missing"
            except OSError:
                state = "changed"
            entries.append({"path": full, "kind": "link", "value": value, "created": True,
                            "status": state})
        report.append({"profile": data.get("profile"), "datasetsCacheDir": cache,
                       "stateFile": spath, "upToDate": True, "entries": entries,
                       "blocked": []})
    return report


def state_path(state_dir: str, cache_key: str, profile: str) -> str:
    """Where ``profile``'s datasets state for the cache ``cache_key`` (its real path)
    lives: ``<state dir>/datasets/<sha256[:32]>.json``."""
    digest = hashlib.sha256(f"{cache_key}\0{profile}".encode("utf-8", "surrogateescape"))
    return os.path.join(state_dir, STATE_SUBDIR, digest.hexdigest()[:32] + ".json")


def wanted(prepared: list[Prepared]) -> tuple[list[tuple[str, str, str | None, str]],
                                              list[tuple[str, str, str, str]]]:
    """The entries ``prepared`` needs in the cache, parents first: ``(relative path,
    kind, link target or None, model name)`` with kind ``dir`` or ``link``; and the
    problems of store paths that are missing or not laid out as
    :func:`~activate.datasets_prepare.prepare_dataset` writes them."""
    out: list[tuple[str, str, str | None, str]] = []
    problems: list[tuple[str, str, str, str]] = []
    seen: set[str] = set()
    for p in prepared:
        folder = cache_folder(p.repo_id)
        try:
            leaves = _leaves(p.path)
        except OSError as exc:
            problems.append((p.name, p.path, f"the prepared dataset cannot be read "
                             f"({exc.strerror or exc})", "rebuild it (nix-store --realise)"))
            continue
        if not leaves:
            problems.append((p.name, p.path, "holds no <config>/<version>/<hash>/ "
                             "directory with a dataset_info.json",
                             "set prepared to a store path lib/datasets.nix built"))
            continue
        for rel, files in leaves:
            parts = [folder, *rel.split("/")]
            for i in range(1, len(parts) + 1):
                d = "/".join(parts[:i])
                if d not in seen:
                    seen.add(d)
                    out.append((d, "dir", None, p.name))
            for f in files:
                out.append((f"{folder}/{rel}/{f}", "link", f"{p.path}/{rel}/{f}", p.name))
    return out, problems


def _leaves(path: str) -> list[tuple[str, list[str]]]:
    leaves = []
    for config in sorted(os.listdir(path)):
        for version in sorted(os.listdir(os.path.join(path, config))):
            for digest in sorted(os.listdir(os.path.join(path, config, version))):
                rel = f"{config}/{version}/{digest}"
                files = sorted(os.listdir(os.path.join(path, rel)))
                if "dataset_info.json" in files:
                    leaves.append((rel, files))
    return leaves


def _load(path: str, any_version: bool = False) -> dict | None:
    """A datasets state; None when missing. Raises :class:`DatasetsCacheProblem` when it
    is unreadable or (unless ``any_version``) of another version."""
    try:
        with open(path, "rb") as fh:
            data = json.load(fh)
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise DatasetsCacheProblem(f"the datasets state {path} is unreadable ({exc}): move it "
                                   "aside and activate again") from None
    if not any_version and data.get("version") != STATE_VERSION:
        raise DatasetsCacheProblem(f"the datasets state {path} has version "
                                   f"{data.get('version')!r}; this activator reads "
                                   f"{STATE_VERSION}: upgrade model-repo")
    return data


def _save(path: str, data: dict) -> None:
    """Write the datasets state ``data`` to ``path`` with the one atomic writer
    (:func:`activate.statefile.write_if_changed`, durable: it remembers what we own)."""
    from .statefile import write_if_changed

    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    write_if_changed(path, [json.dumps(data, indent=1, sort_keys=True).encode()],
                     durable=True)


def _others(state_dir: str, key: str, profile: str) -> set[tuple[str, str, str | None]]:
    """Entries other profiles' datasets states record in the same cache."""
    found: set[tuple[str, str, str | None]] = set()
    directory = os.path.join(state_dir, STATE_SUBDIR)
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return found
    for name in names:
        if not name.endswith(".json") or name.startswith("."):
            continue
        data = _load(os.path.join(directory, name))  # unknown entries: never guess, raise
        if data and data.get("cache") == key and data.get("profile") != profile:
            found.update((e[0], e[1], e[2]) for e in data.get("entries", []))
    return found


class _lock:
    """``flock`` on ``<cache>/.model-repo.lock`` (opened ``O_NOFOLLOW`` relative to the
    opened cache), ``timeout`` seconds at most."""

    def __init__(self, root: HubRoot, timeout: float) -> None:
        self.root, self.cache_dir, self.timeout, self.fd = root, root.path, timeout, -1

    def __enter__(self) -> _lock:
        path = os.path.join(self.cache_dir, LOCK_NAME)
        try:
            self.fd = os.open(LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                              0o666, dir_fd=self.root.fd)
        except OSError as exc:
            raise DatasetsCacheProblem(
                f"cannot open the lock {path} ({exc.strerror}): it must be a regular file "
                "the activating user can write; check the datasets cache") from None
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return self
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES) or time.monotonic() > deadline:
                    os.close(self.fd)
                    raise DatasetsCacheProblem(
                        f"the datasets cache {self.cache_dir} stayed locked ({path}) for "
                        f"{self.timeout:g}s: another activation runs; try again") from None
                time.sleep(0.05)

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)


def sync(cache_dir: str, profile: str, state_dir: str, prepared: list[Prepared], *,
         dry_run: bool = False, lock_timeout: float = 60.0,
         before_write: Callable[[str], None] | None = None) -> Result:
    """Make ``cache_dir`` (a ``datasets`` cache, absolute) hold ``prepared`` for
    ``profile`` and nothing else of ``profile``'s: link what is missing, remove what
    ``profile`` linked before and no longer wants (an empty ``prepared`` drops
    everything). ``dry_run``: plan and report, change nothing.

    A name that exists and is not ours blocks its dataset (a problem, ``blocked``; nothing
    of that dataset is made), except a directory (``<org>___<name>/<config>/<version>/
    <commit>``: new names are added beside the user's, never removed by us) and an
    identical symlink (in place; left to its maker).
    Raises :class:`DatasetsCacheProblem` when the cache, its lock or the state cannot be
    used.
    """
    result = Result()
    want, problems = wanted(prepared)
    result.problems.extend(problems)
    result.blocked.update(problem[0] for problem in problems)
    with _safe_path():
        root = open_hub(cache_dir)  # every step checked (as root: root's folders only)
        if root.fd is None:
            if not want:
                return result  # nothing wanted; a state there is kept for when it is back
            if dry_run:
                result.done.append(f"would create the datasets cache {cache_dir}")
                result.pending = True
                return result
            root = open_hub(cache_dir, create=True)
    try:
        return _sync_in(root, profile, state_dir, want, result, dry_run=dry_run,
                        lock_timeout=lock_timeout, before_write=before_write)
    finally:
        root.close()


def _sync_in(root: HubRoot, profile: str, state_dir: str,
             want: list[tuple[str, str, str | None, str]], result: Result, *, dry_run: bool,
             lock_timeout: float, before_write: Callable[[str], None] | None) -> Result:
    """:func:`sync` once the cache is open (``root``)."""
    cache_dir, key = root.path, root.real
    spath = state_path(state_dir, key, profile)
    with _lock(root, lock_timeout) if not dry_run else _nolock():
        data = _load(spath) or {"version": STATE_VERSION, "profile": profile, "cache": key,
                                "entries": []}
        mine = {(e[0], e[1], e[2]) for e in data["entries"]}
        others = _others(state_dir, key, profile)
        fs = HubFS(cache_dir, before_write, root=root)
        try:
            make, record, drop, owner = _plan(fs, want, mine, others, result)
            if dry_run:
                result.pending = bool(make)
                result.done.extend(f"would {op} {rel}" for op, rel, _ in make)
                result.done.extend(f"would remove {e[0]}" for e in drop)
                return result
            wanted_set = {(rel, kind, value) for rel, kind, value, _ in want}
            remaining = (mine & wanted_set) | set(record)
            intent = remaining | set(drop) | {(rel, kv[0], kv[1]) for _, rel, kv in make}
            if intent != mine:
                _write(spath, data, intent)  # recorded before it is made
            for op, rel, (kind, value) in make:
                try:
                    if kind == "dir":
                        fs.mkdir(rel)
                        _share_like_parent(fs, rel)
                    else:
                        fs.create_symlink(rel, value)
                except (OSError, Blocked) as exc:
                    model = owner[rel]
                    result.blocked.add(model)
                    result.problems.append((
                        model, os.path.join(cache_dir, rel),
                        f"could not {op}: {getattr(exc, 'strerror', None) or exc}",
                        "check the cache's permissions (ls -ld), then activate again"))
                    continue
                result.done.append(f"{op} {rel}")
                remaining.add((rel, kind, value))
            for entry in drop:
                gone, note = _remove(fs, entry, others)
                if not gone:
                    remaining.add(entry)
                    result.problems.append(("(pruning)", os.path.join(cache_dir, entry[0]),
                                            note, "activate again; what another program "
                                            "wrote there is kept"))
                elif note:
                    result.done.append(note)
            _write(spath, data, remaining)
        finally:
            fs.close()
    return result


def _share_like_parent(fs: HubFS, rel: str) -> None:
    """A directory we made in a group-shared cache (group rwx, as the NixOS module's 2775)
    gets group rwx and the parent's setgid bit whatever our umask: every user of the
    group must be able to write ``Dataset.map`` caches into it. Through the directory's
    own descriptor (no path is followed)."""
    parent = rel.rsplit("/", 1)[0] if "/" in rel else ""
    pmode = os.fstat(fs.dir_fd(parent)).st_mode
    if pmode & 0o070 == 0o070:
        fd = fs.dir_fd(rel)
        os.fchmod(fd, (os.fstat(fd).st_mode & 0o7777) | 0o070 | (pmode & stat.S_ISGID))


class _safe_path:
    """:class:`~activate.hubfs.UnsafePath` (a step of the cache's path that
    :func:`~activate.hubfs.open_hub` refuses, e.g. a folder of another user on root's
    way) as :class:`DatasetsCacheProblem`, with its message and fix."""

    def __enter__(self) -> _safe_path:
        return self

    def __exit__(self, kind: object, exc: object, tb: object) -> None:
        if isinstance(exc, UnsafePath):
            raise DatasetsCacheProblem(f"the datasets cache: {exc}") from None


class _nolock:
    def __enter__(self) -> _nolock:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def _write(spath: str, data: dict, entries: set[tuple[str, str, str | None]]) -> None:
    if not entries:
        try:
            os.unlink(spath)
        except FileNotFoundError:
            pass
        return
    data = dict(data, entries=sorted([list(e) for e in entries], key=lambda e: e[0]))
    _save(spath, data)


def _plan(fs: HubFS, want: list[tuple[str, str, str | None, str]],
          mine: set[tuple[str, str, str | None]], others: set[tuple[str, str, str | None]],
          result: Result) -> tuple[list, list, list, dict[str, str]]:
    """Decide, reading only: ``(make, record, drop, owner)``: what to make (op, rel,
    (kind, value)), the entries in place that are ours or co-owned, the entries of ours
    no longer wanted (deepest first), and rel -> model."""
    make: list[tuple[str, str, tuple[str, str | None]]] = []
    record: list[tuple[str, str, str | None]] = []
    owner: dict[str, str] = {}
    blocked_prefix: dict[str, str] = {}
    wanted_set = set()
    for rel, kind, value, model in want:
        owner[rel] = model
        entry = (rel, kind, value)
        wanted_set.add(entry)
        if model in result.blocked or any(rel.startswith(p + "/") for p in blocked_prefix):
            result.blocked.add(model)
            continue
        try:
            found = fs.lstat(rel)
        except Blocked as exc:
            _block(result, model, fs, rel, str(exc), blocked_prefix)
            continue
        ours = entry in mine or entry in others
        if found.kind == "missing":
            make.append(("mkdir" if kind == "dir" else "link", rel, (kind, value)))
        elif kind == "dir" and found.kind == "dir":
            # Ours (or co-owned): recorded. Not ours (the user's own folders, or a commit
            # dir we made and forgot on a drop because it held the user's map caches):
            # our links go in beside what is there, under names that must be free.
            if ours:
                record.append(entry)
        elif kind == "link" and found.kind == "link" and found.target == value:
            if ours:
                record.append(entry)
        else:
            what = f"a symlink to {found.target!r}" if found.kind == "link" else found.kind
            _block(result, model, fs, rel, what, blocked_prefix)
    drop = sorted((e for e in mine if e not in wanted_set), key=lambda e: e[0], reverse=True)
    # a blocked model's entries of ours stay recorded (not dropped, not made)
    blocked_models = result.blocked
    make = [m for m in make if owner[m[1]] not in blocked_models]
    return make, record, drop, owner


def _block(result: Result, model: str, fs: HubFS, rel: str, what: str,
           prefixes: dict[str, str]) -> None:
    result.blocked.add(model)
    prefixes[rel] = model
    result.problems.append((
        model, os.path.join(fs.hub_dir, rel),
        f"is {what}, not what model-repo links there (left alone)",
        "move it aside (it is yours or another tool's), then activate again"))


def _remove(fs: HubFS, entry: tuple[str, str, str | None],
            others: set[tuple[str, str, str | None]]) -> tuple[bool, str]:
    """Remove one entry of ours unless another profile records it. Returns ``(gone from
    our state, note)``: a link that changed and a directory that holds anything else (the
    user's ``cache-*.arrow`` of ``Dataset.map``) are kept and forgotten, never removed or
    emptied; an entry behind a symlink on its way stays recorded (it cannot be checked
    without following the link)."""
    rel, kind, value = entry
    path = os.path.join(fs.hub_dir, rel)
    if entry in others:
        return True, ""  # left to the other profiles that record it
    try:
        found = fs.lstat(rel)
        if found.kind == "missing":
            return True, ""
        if kind == "dir":
            if found.kind == "dir" and fs.rmdir_if_empty(rel):
                return True, f"remove {rel}"
            return True, f"kept {path}: it holds files model-repo did not make"
        fs.unlink(rel, ("link", value))
        return True, f"remove {rel}"
    except Blocked as exc:
        if _under_a_file(fs, rel):
            return True, ""  # a file took the place of a folder on its way: it is gone
        return False, f"changed ({exc}); kept"
    except Changed as exc:
        # Not our link any more (replaced, or never made before an interruption and
        # then taken): left alone and forgotten, there is nothing of ours to remove.
        return True, f"kept {path}: it is {exc.found}, not ours"
    except FileNotFoundError:
        return True, ""


def _under_a_file(fs: HubFS, rel: str) -> bool:
    """True when a folder on the way to ``rel`` is now a non-directory that is not a
    symlink (so ``rel`` cannot exist); a symlink there says nothing (never followed)."""
    parts = rel.split("/")
    for i in range(1, len(parts)):
        try:
            kind = fs.lstat("/".join(parts[:i])).kind
        except Blocked:
            return False
        if kind == "link":
            return False
        if kind not in ("dir", "missing"):
            return True
        if kind == "missing":
            return False
    return False
