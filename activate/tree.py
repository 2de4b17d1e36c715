"""Partial snapshots: the layout for a store path that may hold only some of a
revision's files (fetched with ``include``/``exclude``).

A snapshot symlinked whole into the store is safe only when nothing will ever be added to
it: huggingface_hub, online, downloads a missing file into ``snapshots/<commit>/<file>``,
which through such a link is a write INTO the store path (as root it succeeds and corrupts
the store; as a user it fails). So a partial snapshot is a real directory::

    snapshots/<commit>/            real directory (and real sub-directories)
        <file> -> ../../blobs/model-repo-<h>      one relative link per file
    blobs/model-repo-<h> -> <store path>/<file>   one link per file into the store

where ``<h>`` is a digest of (store path, file). huggingface_hub then adds what is missing
beside our links, in ``blobs/<etag>`` and the snapshot directory, as for any download.
Two hops (snapshot -> blob -> store) because huggingface_hub's ``delete_revisions``
(from 1.32.0) unlinks the first hop of a file it considers unreferenced: that is our blob
link, never a store file (before 1.32.0 it resolves links fully: README, "What the
activator guarantees").

Standard library only, no typing or collections (the no-op path verifies trees).
"""

from __future__ import annotations

import os

BLOB_PREFIX = "model-repo-"

#: The longest relative path handed to the kernel in one call: below PATH_MAX (4096 bytes
#: on Linux, 1024 on darwin) with room to spare; a longer one is walked a directory at a
#: time (a partial model's file path may be up to 4,096 bytes on its own).
_ONE_CALL = 960
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


def file_by_file(store_path: str) -> bool:
    """True when a whole (not partial) store path must also be linked file by file: the
    layout rule for whole snapshots. A whole link ``snapshots/<commit> -> store path``
    lets huggingface_hub's cache operations reach into the store: ``hf cache rm
    hf://models/ORG/NAME/<file>`` unlinks ``snapshots/<commit>/<file>``, which through the
    link is the store file, for any caller who can write the store (root on a store that
    is a plain directory). The rule: link whole only when the store path's file system is
    mounted read-only (``statvfs`` ``ST_RDONLY``, what NixOS's ``/nix/store`` is), so no
    caller, root included, can change it through the link; otherwise (a single-user Nix
    whose user owns the store, a multi-user store root can write, darwin's store volume)
    file by file, as a partial store path is. Whether *this* process can write the store
    (``os.access``) is not the question: another caller (root) may act on the cache. One
    ``statvfs``; a path that cannot be read is left to the planner (False: it blocks the
    model with its own message)."""
    try:
        return not os.statvfs(store_path).f_flag & os.ST_RDONLY
    except OSError:
        return False


class Below:
    """Read entries below one directory through its descriptor ``fd`` (owned by this
    object: :meth:`close`), whatever the length of their relative paths: a short one in
    one call (``dir_fd=fd``), a long one from descriptors of its parent directories,
    opened one component at a time (``O_NOFOLLOW``) and kept until :meth:`close`. Only
    reads; standard library only (the no-op path uses it)."""

    __slots__ = ("fd", "_dirs")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._dirs: dict[str, int] = {}

    @classmethod
    def open(cls, directory: str) -> Below | None:
        """The directory at ``directory`` (followed), or None when it cannot be opened."""
        try:
            return cls(os.open(directory, _DIR_FLAGS))
        except OSError:
            return None

    def at(self, rel: str) -> tuple[int, str]:
        """``(directory descriptor, name)`` to reach ``rel`` with a ``dir_fd`` call.
        Raises OSError when a directory on the way cannot be opened."""
        if len(rel) < _ONE_CALL:
            return self.fd, rel
        parent, _, name = rel.rpartition("/")
        return self._dir(parent), name

    def _dir(self, rel: str) -> int:
        fd = self._dirs.get(rel)
        if fd is None:
            if len(rel) < _ONE_CALL:
                fd = os.open(rel, _DIR_FLAGS, dir_fd=self.fd)
            else:
                parent, _, name = rel.rpartition("/")
                fd = os.open(name, _DIR_FLAGS | os.O_NOFOLLOW,
                             dir_fd=self._dir(parent) if parent else self.fd)
            self._dirs[rel] = fd
        return fd

    def readlink(self, rel: str) -> str:
        fd, name = self.at(rel)
        return os.readlink(name, dir_fd=fd)

    def lstat(self, rel: str) -> os.stat_result:
        fd, name = self.at(rel)
        return os.stat(name, dir_fd=fd, follow_symlinks=False)

    def exists(self, rel: str) -> bool:
        """True when something (a link too) is at ``rel``."""
        try:
            self.lstat(rel)
        except OSError:
            return False
        return True

    def read(self, rel: str, limit: int) -> bytes:
        """The first ``limit`` bytes of regular file ``rel`` (not following a link)."""
        fd, name = self.at(rel)
        f = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
        try:
            return os.read(f, limit)
        finally:
            os.close(f)

    def close(self) -> None:
        for fd in self._dirs.values():
            os.close(fd)
        self._dirs.clear()
        os.close(self.fd)


def store_files(store_path: str) -> list[str]:
    """The relative paths of every non-directory under ``store_path``, sorted, ``/``
    separated (symlinks inside the store path are listed, not followed). Raises OSError."""
    out = []
    for dirpath, dirnames, filenames in os.walk(store_path):
        rel_dir = os.path.relpath(dirpath, store_path)
        for name in dirnames[:]:
            if os.path.islink(os.path.join(dirpath, name)):
                filenames.append(name)
                dirnames.remove(name)
        for name in filenames:
            out.append(name if rel_dir == "." else f"{rel_dir}/{name}")
    return sorted(out)


def is_blob_name(name: str) -> bool:
    """True for a name :func:`blob_name` makes (``model-repo-`` + 40 lower-case hex), not
    for anything else beginning so (a copy or a rename someone else made)."""
    return len(name) == len(BLOB_PREFIX) + 40 and name.startswith(BLOB_PREFIX) and all(
        c in "0123456789abcdef" for c in name[len(BLOB_PREFIX):])


def blob_name(store_path: str, file: str) -> str:
    """Name of the blob link for ``file`` of ``store_path`` in the repo's ``blobs/``:
    ``model-repo-`` + 40 hex of SHA-256 (never a Hub etag, which is 40 or 64 bare hex)."""
    import hashlib

    digest = hashlib.sha256(f"{store_path}\0{file}".encode("utf-8", "surrogateescape"))
    return BLOB_PREFIX + digest.hexdigest()[:40]


def file_link_target(file: str, blob: str) -> str:
    """Relative target of ``snapshots/<commit>/<file>`` pointing at ``blobs/<blob>``."""
    return "../" * (2 + file.count("/")) + "blobs/" + blob


def entries(store_path: str, files: list[str]) -> list[tuple[str, str, str]]:
    """``(file, blob name, file link target)`` for each file of a tree."""
    out = []
    for f in files:
        b = blob_name(store_path, f)
        out.append((f, b, file_link_target(f, b)))
    return out


def verify(hub_dir: str, snapshot_rel: str, store_path: str,
           below: Below | None = None) -> bool:
    """True when the snapshot directory ``snapshot_rel`` (relative to ``hub_dir``) serves
    every file of ``store_path``: each opens there as a regular file, through our links,
    another profile's or a download's (an empty or missing store path: False). One
    ``stat`` per file: the no-op path's check of a partial snapshot, and of a user's own
    snapshot folder that satisfied a model. ``below``: the hub dir already opened (else
    it is opened here); files are reached relative to it, so a path of any length is
    checked."""
    import stat

    own = below is None
    if below is None:
        below = Below.open(hub_dir)
        if below is None:
            return False
    try:
        files = store_files(store_path)
        for f in files:
            fd, name = below.at(f"{snapshot_rel}/{f}")
            if not stat.S_ISREG(os.stat(name, dir_fd=fd).st_mode):
                return False
        return bool(files)
    except OSError:
        return False
    finally:
        if own:
            below.close()
