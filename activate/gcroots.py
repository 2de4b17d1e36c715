"""GC roots for the store paths a profile links, for users outside the modules.

The modules need none: a Home Manager generation, a NixOS system and a devenv shell
reference the manifest, whose closure holds every model, so ``nix-collect-garbage -d``
keeps them while that generation exists. A cache linked by hand (``model-repo activate``
run from a script, ``nix develop``, ``integration.mkLinkScript``) has no such root:
``model-repo activate --gc-roots`` registers one indirect root per store path it links,

    <state dir>/gcroots/<32 hex of sha256(hub dir, profile)>/<store path's base name>
        -> /nix/store/<hash>-<name>

with ``nix-store --realise PATH --add-root LINK --indirect`` (Nix then lists LINK in
``/nix/var/nix/gcroots/auto``), and removes the roots of paths it no longer links;
``model-repo deactivate`` removes them all. Removing a root is unlinking LINK: Nix drops
an indirect root whose link is gone.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess


class GcRootError(Exception):
    """``nix-store`` is missing or refused to register a root."""


def roots_dir(state_dir: str, hub_key: str, profile: str) -> str:
    """Where ``profile``'s roots for the hub dir ``hub_key`` (its real path) live."""
    digest = hashlib.sha256(f"{hub_key}\0{profile}".encode("utf-8", "surrogateescape"))
    return os.path.join(state_dir, "gcroots", digest.hexdigest()[:32])


def roots(directory: str) -> dict[str, str]:
    """The roots in ``directory``: link name -> store path (empty when it is missing)."""
    current: dict[str, str] = {}
    try:
        for name in os.listdir(directory):
            path = os.path.join(directory, name)
            try:
                current[name] = os.readlink(path)
            except OSError:
                continue  # not ours: not a link
    except FileNotFoundError:
        pass
    return current


def sync(directory: str, store_paths: set[str], *, dry_run: bool = False) -> tuple[list[str], list[str]]:
    """Make ``directory`` hold exactly one root per path of ``store_paths`` (those that
    exist). Returns ``(added, removed)`` store paths. Raises :class:`GcRootError`."""
    wanted = {os.path.basename(p): p for p in store_paths if os.path.isdir(p)}
    current = roots(directory)
    added = [p for n, p in sorted(wanted.items()) if current.get(n) != p]
    removed = [p for n, p in sorted(current.items()) if n not in wanted]
    if dry_run:
        return added, removed
    if added:
        nix_store = shutil.which("nix-store")
        if nix_store is None:
            raise GcRootError("--gc-roots needs nix-store on PATH (Nix) to register roots")
        os.makedirs(directory, mode=0o755, exist_ok=True)
        for path in added:
            link = os.path.join(directory, os.path.basename(path))
            res = subprocess.run([nix_store, "--realise", path, "--add-root", link, "--indirect"],
                                 capture_output=True, text=True)
            if res.returncode != 0:
                lines = (res.stderr.strip() or "no message").splitlines()
                raise GcRootError(f"nix-store could not register a GC root for {path}: "
                                  f"{lines[-1]}")
    for name, target in current.items():
        if name not in wanted:
            os.unlink(os.path.join(directory, name))
    return added, removed


def move(old: str, new: str) -> list[str]:
    """Give the roots in ``old`` to ``new`` (a state taken over when its hub dir moved):
    each store path still there is rooted in ``new`` first, then ``old`` is dropped, so a
    path is never unrooted in between. Returns the store paths rooted in ``new``. Raises
    :class:`GcRootError` (``old`` is then kept)."""
    if old == new:
        return []
    paths = set(roots(old).values())
    if not paths:
        drop(old)
        return []
    kept = set(roots(new).values()) | paths
    added, _ = sync(new, kept)
    drop(old)
    return added


def drop(directory: str) -> list[str]:
    """Remove every root in ``directory`` and the directory; returns their store paths."""
    removed, _ = [], None
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    for name in names:
        path = os.path.join(directory, name)
        if os.path.islink(path):
            removed.append(os.readlink(path))
            os.unlink(path)
    try:
        os.rmdir(directory)
    except OSError:
        pass
    return removed
