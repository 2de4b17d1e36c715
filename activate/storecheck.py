"""Is a store path still as Nix made it? A cheap check for ``model-repo status``.

Nix gives every file and directory of a store path the modification time 1 (one second
after the epoch: its ``canonicalisePathMetaData``). Removing a file from a directory of a
store path (``hf cache rm`` of a file through a snapshot linked whole into a writable
store, as root), adding one, or rewriting a file sets the mtime of that directory or
file to the time of the change. So in a store path where some entries still have mtime
1, an entry with another mtime was changed after Nix made it. A path made outside Nix (a
test's fake store) has no entry with mtime 1 and is never called changed; nor is a store
path whose only file was removed (an empty folder, told from one made outside Nix only by
``nix-store --verify-path``).
``nix-store --verify-path`` compares the whole content with Nix's database; this reads
only the ``lstat`` of each entry.

Standard library only.
"""

from __future__ import annotations

import os

#: The mtime Nix gives every entry of a store path.
NIX_MTIME = 1


def changed(store_path: str) -> str | None:
    """Why ``store_path`` is no longer as Nix made it (the first changed entry, relative
    to it), or None when it looks intact, is not a Nix-made path, or cannot be read."""
    try:
        top = os.lstat(store_path)
    except OSError:
        return None
    canonical = int(top.st_mtime) == NIX_MTIME
    first: str | None = None if canonical else "."
    for dirpath, dirnames, filenames in os.walk(store_path):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            try:
                st = os.lstat(path)
            except OSError:
                continue
            if int(st.st_mtime) == NIX_MTIME:
                canonical = True
            elif first is None:
                first = os.path.relpath(path, store_path)
    if canonical and first is not None:
        where = "its top folder" if first == "." else repr(first)
        return (f"{where} was changed after Nix made it (a file removed, added or "
                "rewritten)")
    return None


def top_changed(store_path: str) -> str | None:
    """:func:`changed`, at the cost of one ``lstat`` for a store path whose top folder
    still has Nix's mtime (the repeat path's check: a file removed from or added to the
    top folder, where a model's files are, is seen; a change deeper down is left to the
    next full run and to ``status``)."""
    try:
        if int(os.lstat(store_path).st_mtime) == NIX_MTIME:
            return None
    except OSError:
        return None
    return changed(store_path)
