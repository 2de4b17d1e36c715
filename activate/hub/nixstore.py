"""The Nix store calls of export and import: finding ``nix-store`` and ``nix``, asking
which store paths are valid, ``nix path-info``, deleting a path Nix left half-written,
and the names of store paths (a canonical store path; the fetcher's ``hf-…`` names).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .api import EXIT_BAD_INPUT, EXIT_ENVIRONMENT, Failure

DEFAULT_STORE_DIR = "/nix/store"
NIX_MISSING = ("needs Nix (nix-store on PATH, and nix for nix copy): install it "
               "(https://nixos.org/download; on Debian `apt-get install nix-bin`)")
NIX_FLAGS = ("--extra-experimental-features", "nix-command")
#: Store path base names: 32 characters of Nix's base-32, "-", a name.
STORE_BASE = re.compile(r"[0-9a-df-np-sv-z]{32}-[A-Za-z0-9+._?=-]+")
#: The fetcher's store name for a Hub repo (``hfStoreName`` in
#: ``lib/fetchers/huggingface.nix``, ``store_name`` in :mod:`activate.hub.prefetch`):
#: ``hf-<id, "/" as "--">-<commit[:12]>``.
#: Repo ids never hold "--" (``validate_repo_id``), so the split is unambiguous.
_HF_NAME = re.compile(r"hf-(.+)-([0-9a-f]{12})")


@dataclass
class Nix:
    """The Nix commands export and import run, found on ``PATH``: ``nix-store``
    (required) and ``nix`` (``nix copy``, ``nix path-info``, with ``nix-command``
    enabled per call). Without ``nix``, or when its ``copy`` is unusable (Nix before 2.4
    rejects the experimental-features flag),
    :func:`activate.hub.persistexport.dump_to_cache` and
    :func:`activate.hub.persistimport.import_stream` do the same with ``nix-store
    --dump`` / ``--import``."""

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
        """Run ``argv`` to its end, output captured; a SIGINT/SIGTERM meanwhile is passed
        on to it (:mod:`activate.hub.signals`). ``bar`` = (bytes, label): a progress bar on
        a terminal (:func:`activate.hub.progress.communicate_measured`)."""
        from .signals import on_interrupt

        with subprocess.Popen(list(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              stdin=subprocess.DEVNULL, text=True) as proc, \
                on_interrupt.child(proc):
            if bar is None:
                out, err = proc.communicate()
            else:
                from .progress import communicate_measured

                out, err = communicate_measured(proc, total=bar[0], desc=bar[1])
        return subprocess.CompletedProcess(list(argv), proc.returncode, out, err)

    def valid(self, paths: Sequence[str]) -> set[str]:
        """Which of ``paths`` are valid (registered) store paths."""
        if not paths:
            return set()
        proc = self.run(self.nix_store, "--check-validity", "--print-invalid", *paths)
        if proc.returncode != 0:
            raise Failure(EXIT_ENVIRONMENT, "nix-store --check-validity failed: "
                          + last_line(proc.stderr))
        invalid = set(proc.stdout.split())
        return {p for p in paths if p not in invalid}

    def path_info(self, store_path: str) -> dict[str, Any]:
        """``nix path-info --json`` of a valid path: ``narHash`` (SRI), ``narSize``, ``ca``…"""
        assert self.nix is not None
        proc = self.run(self.nix, *NIX_FLAGS, "path-info", "--json", store_path)
        if proc.returncode != 0:
            raise Failure(EXIT_ENVIRONMENT, f"nix path-info {store_path} failed: "
                          + last_line(proc.stderr))
        info = json.loads(proc.stdout)
        return info[0] if isinstance(info, list) else info[store_path]

    def delete(self, store_path: str) -> bool:
        """``nix-store --delete`` one path (ours, never a GC); True when it is gone."""
        self.run(self.nix_store, "--delete", store_path)
        return not os.path.lexists(store_path)


def last_line(text: str) -> str:
    """The line of a Nix command's stderr that says what went wrong: the last
    ``error:`` line, else the last non-empty one."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error:")]
    return (errors or lines or ["(no output)"])[-1]


def store_dir_of(store_path: str) -> str:
    """The store directory of ``store_path`` (``/nix/store``)."""
    return os.path.dirname(store_path.rstrip("/"))


def check_store_path(value: str, what: str) -> str:
    """``value`` as a canonical store path (``<store dir>/<32-char hash>-<name>``, no
    trailing ``/``); raises :class:`Failure` (exit 2) naming ``what``."""
    path = os.path.normpath(value)
    if not os.path.isabs(path) or not STORE_BASE.fullmatch(os.path.basename(path)):
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


def copy_unusable(proc: subprocess.CompletedProcess[str]) -> bool:
    """True when ``nix copy`` failed because this ``nix`` cannot run it at all (Nix
    before 2.4: no ``--extra-experimental-features``, no ``copy``)."""
    err = proc.stderr
    return proc.returncode != 0 and ("unrecognised flag" in err or "unknown flag" in err
                                     or "'copy' is not a recognised command" in err)


def copy_bar(nix: Nix, store_path: str, narinfo: Mapping[str, str] | None,
             verb: str) -> tuple[int, str] | None:
    """The progress bar of a ``nix copy`` of ``store_path`` (for :meth:`Nix.run`):
    (bytes, label), its size from ``narinfo`` (import: ``FileSize``) or the store
    (export: ``narSize``); None when bars are off (not a terminal, ``-q``) or the size is
    unknown."""
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
