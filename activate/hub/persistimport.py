"""``model-repo import``: restore persisted store paths into the Nix store with no
network; and the restore before ``prefetch --add-to-store`` with ``auto_persist``.

Trust on import. A fixed-output path (what the Nix fetchers and ``prefetch
--add-to-store`` produce) is content-addressed: its narinfo carries ``CA:``, and Nix
accepts it without a signature because the store path itself is computed from the
content (checked by Nix on import). Any other path is unsigned input-addressed data,
which Nix refuses unless ``--no-check-sigs``: ``import`` asks for a confirmation on a
terminal, and without one (stdin not a terminal) fails with exit 2 unless ``--yes``
(aliases ``-y``, ``--no-check-sigs``, nix-hug's flags) is given.

Without ``nix copy`` (no ``nix`` on ``PATH``, or Nix before 2.4) the NAR is read back
through ``nix-store --import``, its hash and the content address checked here
(:func:`import_stream`).

A failed import never leaves anything behind: Nix can leave an unregistered, partly
written directory at the store path (a truncated NAR: "coroutine has finished", a hash
mismatch); it is removed with ``nix-store --delete`` and the error says so.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    import argparse

    from .api import RemoteFile
    from .nar import Observer

    #: prefetch's ``_checker(expected, seen, bad)``: an observer checking each file.
    Checker = Callable[[dict[str, RemoteFile], dict[str, int], list[str]], Observer]

from ..persistdir import ConfigError, narinfo_path
from .api import EXIT_BAD_INPUT, EXIT_ENVIRONMENT, EXIT_OK, Failure
from .binarycache import (ca_verified, check_cached, fixed_output_path, narinfo_hash,
                          open_nofollow, persist_url)
from .nar import NarError, nar_hash, sri
from .nixstore import (NIX_FLAGS, copy_bar, Nix, check_store_path, copy_unusable, last_line,
                       parse_hf_name, store_dir_of)
from .persistcli import repo_of
from .persistmanifest import Entry, read_all, read_manifest, select_entries

EXIT_PARTIAL = 1
_EXPORT_MAGIC = 0x4558494E


def _wire_str(data: bytes) -> bytes:
    """A string in Nix's serialisation: u64 length, bytes, zero padding to 8."""
    import struct

    return struct.pack("<Q", len(data)) + data + b"\0" * (-len(data) % 8)


def status_of(nix: Nix, directory: str, entries: Sequence[Entry]) -> list[tuple[str, str]]:
    """For each entry: ``("valid", "")`` in the store, ``("persisted", "")`` only in the
    persist folder (importable), or ``("broken", why)`` (neither usable, or the entry
    itself is broken: :attr:`Entry.problem`). One entry never hides the others: paths
    Nix cannot even check are broken ones."""
    paths = sorted({e.store_path for e in entries if not e.problem})
    try:
        valid = nix.valid(paths)
        unusable: dict[str, str] = {}
    except Failure:
        valid, unusable = set(), {}
        for p in paths:
            try:
                valid |= nix.valid([p])
            except Failure as f:
                unusable[p] = f.message
    out = []
    for e in entries:
        if e.problem or e.store_path in unusable:
            out.append(("broken", e.problem or unusable[e.store_path]))
        elif e.store_path in valid:
            out.append(("valid", ""))
        else:
            _, problem = check_cached(directory, e.store_path)
            out.append(("broken", problem) if problem else ("persisted", ""))
    return out


def needs_trust(directory: str, store_path: str, *, with_nix_copy: bool = True) -> bool:
    """True when ``store_path`` can be imported only without a signature check: its
    narinfo has no content address (``CA:``) nor, for ``nix copy``, a signature
    (``Sig:``; Nix checks it against ``trusted-public-keys``). Without ``nix copy``
    only a content address that :func:`activate.hub.binarycache.ca_verified` confirms counts."""
    info, _ = check_cached(directory, store_path)
    if info is None:
        return True
    if not with_nix_copy:
        return not ca_verified(info)
    return not (info.get("CA") or info.get("Sig"))


def import_stream(nix: Nix, directory: str, store_path: str, *, no_check_sigs: bool) -> None:
    """Restore ``store_path`` with ``nix-store --import`` from the binary cache's NAR (what
    ``nix copy --from`` does, for a Nix without it). ``nix-store --import`` checks no
    hash, so this does: the NAR is streamed while its sha256 and size are compared with
    the narinfo, and the trailer that makes Nix register the path is sent only when
    they match (otherwise Nix sees an unexpected end of file and registers nothing).
    A path that is not :func:`activate.hub.binarycache.ca_verified` needs ``no_check_sigs`` (the user's trust).
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
    import lzma

    def opener(path: str, mode: str) -> Any:
        raw = open_nofollow(path)
        return raw if compression == "none" else lzma.open(raw, mode)

    if compression not in ("none", "xz"):
        raise Failure(EXIT_ENVIRONMENT, f"cannot import {store_path}: its NAR is "
                      f"{compression}-compressed, which needs `nix copy` (Nix 2.4 or later)")
    want_hash, want_size = narinfo_hash(info)
    digest = hashlib.sha256()
    size = 0
    ok = unreadable = False
    got = ""
    from .progress import byte_bar
    from .signals import on_interrupt

    with subprocess.Popen([nix.nix_store, "--import"], stdin=subprocess.PIPE,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) as proc, \
            on_interrupt.child(proc), \
            byte_bar(want_size, "Importing " + os.path.basename(store_path)[33:]) as bar:
        assert proc.stdin is not None and proc.stderr is not None
        try:
            proc.stdin.write(struct.pack("<Q", 1))
            with opener(nar, "rb") as fh:
                # Never past the narinfo's NarSize (+1 to see it is longer): a
                # decompression bomb or an endless file is cut there.
                while chunk := fh.read(min(1 << 20, want_size + 1 - size)):
                    digest.update(chunk)
                    size += len(chunk)
                    if size > want_size:
                        break
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
        except (BrokenPipeError, EOFError, OSError, lzma.LZMAError) as exc:
            problem = f"{type(exc).__name__}: {exc}"
            unreadable = not isinstance(exc, BrokenPipeError)  # else Nix refused it
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
    reason = f"cannot read its NAR ({problem})" if unreadable else (
        (problem or (last_line(err) if proc.returncode != 0 else "")) if ok else (
            f"the NAR does not match its narinfo (NarHash {want_hash}, {want_size} bytes; "
            f"got {got or 'nothing'}, {size} bytes)"))
    raise Failure(EXIT_ENVIRONMENT, f"cannot import {store_path} from {directory}: {reason}; "
                  f"nothing was imported{leftover}; export it again while it is in the "
                  "store, or rebuild it")


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

    def remove_partial() -> None:
        if os.path.lexists(store_path) and not nix.valid([store_path]):
            nix.delete(store_path)

    from .signals import on_interrupt

    with on_interrupt.cleanup(remove_partial):
        return _import_path(nix, directory, store_path, no_check_sigs=no_check_sigs,
                            bar=copy_bar(nix, store_path, cached, "Importing"))


def _import_path(nix: Nix, directory: str, store_path: str, *, no_check_sigs: bool,
                 bar: tuple[int, str] | None = None) -> bool:
    """The import itself (:func:`import_path`)."""
    try:
        if nix.nix is None:
            import_stream(nix, directory, store_path, no_check_sigs=no_check_sigs)
            return True
        argv = [nix.nix, *NIX_FLAGS, "copy", "--from", persist_url(directory)]
        if no_check_sigs:
            argv.append("--no-check-sigs")
        proc = nix.run(*argv, store_path, bar=bar)
        if copy_unusable(proc):
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
    reason = last_line(proc.stderr) if proc.returncode != 0 else "the path is not valid after it"
    raise Failure(EXIT_ENVIRONMENT, f"cannot import {store_path} from {directory}: {reason}; "
                  f"nothing was imported{leftover}; the persist folder's copy is damaged: "
                  "export it again while it is in the store, or rebuild it")


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


def restore_for_prefetch(environ: Mapping[str, str], log: Any, *, repo_id: str,
                         repo_type: str, commit: str, files: Sequence[str],
                         include: Sequence[str], exclude: Sequence[str],
                         chosen: Sequence[RemoteFile], checker: Checker) -> Entry | None:
    """With ``auto_persist`` on: the persisted entry for exactly this pin (repo, type,
    commit, files, include, exclude), made valid in the store, so ``prefetch
    --add-to-store`` need not download; its ``nar_hash`` is the one computed here.

    The persist folder may be writable by others (issue 14, finding 2), so nothing of it
    is believed: the entry's store path must be named as the fetcher names this repo
    and commit; a path not in the store is imported only when its narinfo is
    content-addressed (:func:`activate.hub.binarycache.ca_verified`; Nix checks the NAR
    against it, without ``--no-check-sigs``); then the path's tree is read once: its
    files must be exactly ``chosen`` (the Hub's listing at the commit), each with the
    Hub's size and checksum (``checker``: prefetch's observer of git blob sha1 / LFS
    sha256), and its NAR hash must give the store path. Anything else: a warning, a
    path imported here is deleted again, and None (the caller downloads). None too when
    auto-persist is off or nothing matches."""
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
    except Failure as f:
        log.warning(f"auto-persist: {f.message}; downloading instead")
        return None
    for e in reversed(entries):
        if not e.problem and (e.repo_id, e.repo_type, e.revision) == (repo_id, repo_type,
                                                                      commit) and \
                (e.files, e.include, e.exclude) == (list(files), list(include), list(exclude)):
            break
    else:
        return None
    try:
        path = check_store_path(e.store_path, "storePath")
        if path != e.store_path or parse_hf_name(path) != (repo_id, commit[:12]):
            raise Failure(EXIT_ENVIRONMENT, f"the persisted {e.store_path!r} is not named "
                          f"as the fetcher names {repo_id} at {commit[:12]}")
        nix = Nix.find(environ)
        imported = False
        if not nix.valid([path]):
            info, problem = check_cached(cfg.persist_dir, path)
            if problem is None and info is not None and not ca_verified(info):
                problem = f"its narinfo has no content address that gives {path}"
            if problem is not None:
                raise Failure(EXIT_ENVIRONMENT, f"cannot restore {path}: {problem}")
            imported = import_path(nix, cfg.persist_dir, path, no_check_sigs=False, log=log)
        digest, problem = _check_tree(path, chosen, checker)
        if problem is not None:
            if imported:
                nix.delete(path)
            raise Failure(EXIT_ENVIRONMENT, f"the persisted {path} is not {repo_id} at "
                          f"{commit}: {problem}")
    except Failure as f:
        log.warning(f"auto-persist: {f.message}; downloading instead")
        return None
    if imported:
        log.info("restored from the persist folder", path=path, dir=cfg.persist_dir)
    return dataclasses.replace(e, nar_hash=sri(digest))


def _check_tree(path: str, chosen: Sequence[RemoteFile],
                checker: Checker) -> tuple[bytes, str | None]:
    """``(NAR sha256 digest, None)`` when the tree at the store ``path`` is exactly
    ``chosen`` with the Hub's sizes and checksums and the fixed-output path of its own
    NAR hash; else ``(b"", why not)``. Reads the tree once (the NAR hash, with
    ``checker`` observing each file)."""

    expected = {f.path: f for f in chosen}
    seen: dict[str, int] = {}
    bad: list[str] = []
    try:
        digest = nar_hash(path, observe=checker(expected, seen, bad))
    except NarError as exc:
        return b"", str(exc)
    problems = ([f"missing {p}" for p in sorted(set(expected) - set(seen))]
                + [f"unexpected {p}" for p in sorted(set(seen) - set(expected))]
                + [f"{p}: {seen[p]} bytes, the Hub says {f.size}"
                   for p, f in expected.items() if p in seen and seen[p] != f.size] + bad)
    name = os.path.basename(path).split("-", 1)[1]
    if not problems and fixed_output_path(store_dir_of(path), name, digest) != path:
        problems.append("its contents are not what its name is made of")
    if problems:
        return b"", "; ".join(problems[:5]) + ("; …" if len(problems) > 5 else "")
    return digest, None


def run_import(args: argparse.Namespace, environ: Mapping[str, str], log: Any, nix: Nix,
               directory: str, stdin: TextIO) -> int:
    """``model-repo import``: restore REPO's entries (or all with ``--all``) from
    ``directory``, asking on ``stdin`` for unsigned paths unless ``--yes``; prints each
    path now valid. Returns 0, or 1 when some were not imported (broken entries, a
    declined confirmation); raises :class:`Failure`."""
    entries = read_all(directory)
    if args.all:
        if args.repo:
            raise Failure(EXIT_BAD_INPUT, "give REPO or --all, not both")
        chosen = list({e.store_path: e for e in entries if not e.problem}.values())
        chosen += [e for e in entries if e.problem]
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
            repo_id, repo_type, revision, path = repo_of(args, environ)
            chosen = select_entries(entries, repo_id=repo_id, repo_type=repo_type,
                                    revision=revision, store_path=path)
        if not chosen and path is not None and os.path.isfile(narinfo_path(directory, path)):
            # In the binary cache without a manifest entry (copied there by hand).
            chosen = [Entry("", "model", "", path, "", 0, "")]
        if not chosen:
            what = path or repo_id + (f" at {revision}" if revision else "")
            raise Failure(EXIT_BAD_INPUT, f"the persist folder {directory} records no "
                          f"{what}: `model-repo store ls` lists what it holds")
        good = [e for e in chosen if not e.problem]
        if not good:
            raise Failure(EXIT_ENVIRONMENT, f"the persist folder's entry is broken: "
                          f"{chosen[0].problem}")
        chosen = good
    skipped = [e for e in chosen if e.problem]
    for e in skipped:
        log.error(f"broken entry skipped: {e.problem}")
    failed = len(skipped)
    chosen = [e for e in chosen if not e.problem]
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
    if declined and failed - len(skipped) == len(todo):
        log.error("nothing imported: the confirmation was declined")
    return EXIT_PARTIAL if failed else EXIT_OK
