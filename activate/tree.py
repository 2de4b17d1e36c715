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
unlinks the first hop of a file it considers unreferenced: that is our blob link, never a
store file.

Standard library only, no typing or collections (the no-op path verifies trees).
"""

from __future__ import annotations

import os

BLOB_PREFIX = "model-repo-"


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


def verify(hub_dir: str, snapshot_rel: str, store_path: str) -> bool:
    """True when the snapshot directory ``snapshot_rel`` (relative to ``hub_dir``) serves
    every file of ``store_path``: each opens there as a regular file, through our links,
    another profile's or a download's (an empty or missing store path: False). One
    ``stat`` per file: the no-op path's check of a partial snapshot, and of a user's own
    snapshot folder that satisfied a model."""
    import stat

    base = os.path.join(hub_dir, snapshot_rel)
    try:
        files = store_files(store_path)
        return bool(files) and all(stat.S_ISREG(os.stat(os.path.join(base, f)).st_mode)
                                   for f in files)
    except OSError:
        return False
