"""``model-repo prefetch``: download a repo's files at a commit, verify them, compute the
NAR hash the Nix fetcher will produce, and print the pin.

Files are downloaded with huggingface_hub's ``snapshot_download`` into a flat directory
(no ``.git``, no ``.cache``), verified against the Hub's checksums (git blob sha1, LFS
sha256), and hashed as a NAR (:mod:`activate.hub.nar`). That tree is what the Nix
fetcher (``lib/fetchers/huggingface.nix``: ``fetchgit`` with LFS at the commit,
``.git`` removed) produces, so the printed hash is its fixed-output hash.
``--add-to-store`` registers the tree as that fixed-output path.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .api import DEFAULT_REF, EXIT_ENVIRONMENT, EXIT_OK, Failure, RemoteFile, Resolved, make_folder
from .sparse import fnmatch_escape

#: How to get a download folder that can be created.
_DOWNLOAD_FIX = "set MODEL_REPO_PREFETCH_DIR (or XDG_CACHE_HOME) to a writable folder"


def store_name(repo_id: str, commit: str) -> str:
    """The store path name the Nix fetcher gives a Hub repo: ``hfStoreName`` in
    ``lib/fetch.nix``, ``"hf-" + repo with "/" -> "--" + "-" + first 12 hex of the
    commit`` (``hf-sentence-transformers--all-MiniLM-L6-v2-c9745ed1d9f2``)."""
    return "hf-" + repo_id.replace("/", "--") + "-" + commit[:12]


def nix_string(s: str) -> str:
    """A Nix double-quoted string literal for ``s`` (escapes ``\\``, ``"``, ``${``,
    newlines, tabs, carriage returns)."""
    out = s.replace("\\", "\\\\").replace('"', '\\"').replace("${", "\\${")
    out = out.replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
    return f'"{out}"'


def human_size(n: int) -> str:
    """``n`` bytes with a binary unit, one decimal: ``87.7 MiB``."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{n} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError  # pragma: no cover


def render_nix(*, repo_id: str, repo_type: str, commit: str, ref: str | None, date: str,
               include: Sequence[str], exclude: Sequence[str], sri_hash: str,
               files: Sequence[str] = ()) -> str:
    """The attribute set for a model definition (``models.<name> = …`` in the modules,
    or the argument of ``lib.fetchModel``), ending with a newline. ``files``,
    ``include``, ``exclude`` are printed as the Nix options of the same names.

    ``ref`` None (a commit was given) prints no comment; a ref other than ``main`` that
    the activator accepts (:func:`activate.naming.ref_error`) is printed as ``ref``.
    """
    from ..naming import ref_error

    lines = ["{", "  source.huggingface = {", f"    repo = {nix_string(repo_id)};"]
    rev = f"    revision = {nix_string(commit)};"
    if ref is not None:
        rev += f"  # {ref} on {date}"
    lines.append(rev)
    if ref is not None and ref != DEFAULT_REF and ref_error(ref) is None:
        lines.append(f"    ref = {nix_string(ref)};")
    if repo_type != "model":
        lines.append(f"    repoType = {nix_string(repo_type)};")
    for key, values in (("files", files), ("include", include), ("exclude", exclude)):
        if values:
            lines.append(f"    {key} = [ " + " ".join(nix_string(v) for v in values) + " ];")
    lines += ["  };", f"  hash = {nix_string(sri_hash)};", "}"]
    return "\n".join(lines) + "\n"


def _checker(expected: dict[str, RemoteFile], seen: dict[str, int],
             bad: list[str]) -> Callable[[str, int], Callable[[bytes], object] | None]:
    """An :data:`activate.nar.Observer` that checks each file against the Hub's
    checksum: LFS files by sha256, the others by git blob sha1 (``blob <size>\\0``
    + contents). Records sizes in ``seen`` and mismatches in ``bad``."""

    def observe(rel: str, size: int) -> Callable[[bytes], object] | None:
        seen[rel] = size
        want = expected.get(rel)
        if want is None:
            return None
        if want.lfs_sha256:
            h, target = hashlib.sha256(), want.lfs_sha256
        elif want.blob_id:
            h, target = hashlib.sha1(f"blob {size}\0".encode()), want.blob_id
        else:
            return None
        left = [size]

        def update(chunk: bytes) -> None:
            h.update(chunk)
            left[0] -= len(chunk)
            if left[0] == 0 and h.hexdigest() != target:
                kind = "sha256" if want.lfs_sha256 else "git blob id"
                bad.append(f"{rel}: {kind} {h.hexdigest()}, the Hub says {target}")

        if size == 0:
            update(b"")
        return update

    return observe


def download_dir(environ: Mapping[str, str]) -> str:
    """The folder holding resumable prefetch downloads: ``$MODEL_REPO_PREFETCH_DIR``, else
    ``$XDG_CACHE_HOME/model-repo/prefetch``, else the platform's user cache dir
    (``~/.cache/model-repo/prefetch`` on Linux, platformdirs' ``user_cache_dir``)."""
    given = environ.get("MODEL_REPO_PREFETCH_DIR")
    if given:
        return os.path.abspath(os.path.expanduser(given))
    xdg = environ.get("XDG_CACHE_HOME")
    if xdg and os.path.isabs(xdg):
        return os.path.join(xdg, "model-repo", "prefetch")
    from platformdirs import user_cache_dir

    return os.path.join(user_cache_dir("model-repo", appauthor=False), "prefetch")


def download_key(repo_id: str, repo_type: str, commit: str) -> str:
    """The name of a repo's resumable download folder at a commit:
    ``<type>s--ORG--NAME--<commit>`` (a repo at a commit never changes, so files
    completed by an interrupted run are valid for the next one)."""
    return f"{repo_type}s--{repo_id.replace('/', '--')}--{commit}"


def _link_or_copy(src: str, dst: str) -> None:
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


class TurnLock:
    """An exclusive ``flock`` on ``path`` that leaves no file behind: the holder unlinks
    ``path`` before it lets go, and a taker that finds, once it holds the lock, that
    ``path`` is gone or is another inode (the previous holder removed it while it waited)
    lets go and opens the path again. So at any time at most one process holds a lock on
    the file ``path`` names (the usual protocol of lock files removed after use).
    Opened ``O_NOFOLLOW``: a symlink planted at ``path`` is an error (``OSError``),
    never followed."""

    def __init__(self, path: str):
        self.path = path
        self._fd: int | None = None

    def acquire(self, on_wait: Callable[[], object] = lambda: None) -> None:
        """Take the lock, calling ``on_wait()`` once if another process holds it first
        (then waiting for as long as it does)."""
        import fcntl

        waited = False
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                         0o600)
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    if not waited:
                        waited = True
                        on_wait()
                    fcntl.flock(fd, fcntl.LOCK_EX)
                held = os.fstat(fd)
                try:
                    now = os.stat(self.path, follow_symlinks=False)
                except FileNotFoundError:
                    now = None
            except BaseException:
                os.close(fd)
                raise
            if now is not None and (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino):
                self._fd = fd
                return
            os.close(fd)  # the holder before us removed it: take the new file's lock

    def release(self) -> None:
        """Remove the lock file, then let go (a waiter then sees it gone and retries)."""
        if self._fd is None:
            return
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        finally:
            os.close(self._fd)
            self._fd = None


def prefetch(args: argparse.Namespace, sel: Any, environ: Mapping[str, str], log: Any,
             session: Any, res: Resolved, chosen: list[RemoteFile],
             nix_store: str | None) -> int:
    """Download ``chosen`` at the commit, verify and NAR-hash them, optionally
    ``nix-store --add-fixed`` them, and print the pin. Raises :class:`Failure`.

    Downloads go to a resumable folder, :func:`download_dir` / :func:`download_key`
    (huggingface_hub's ``snapshot_download`` with ``local_dir``: a file whose download
    metadata names this commit is not requested again; a file cut short starts again, as
    huggingface_hub 2.x names partial files per process). The tree that is hashed is
    ``<download dir>/model-repo-prefetch-*/<store name>``: hard links (copies across file
    systems) of exactly the chosen files. It is removed in every case, also on
    SIGINT/SIGTERM (:mod:`activate.hub.signals`); the download folder is removed after a
    success and kept after an interruption or a failure, for the next run. Two prefetches
    of the same repo and commit take turns (a lock file beside the download folder), so
    one never removes the folder the other is filling; the lock file is removed by whoever
    holds it last (:class:`TurnLock`), so nothing is left beside the folders.

    With ``--add-to-store`` and ``auto_persist`` (:mod:`activate.hub.config`), a copy of
    this exact pin in the persist folder is restored instead of downloading
    (:func:`activate.hub.persistimport.restore_for_prefetch`), and a path just added is
    exported after the pin is printed (:func:`activate.hub.persistexport.export_after_prefetch`).
    """
    if nix_store is not None:  # auto_persist: restore this pin instead of downloading it
        from .persistimport import restore_for_prefetch

        kept = restore_for_prefetch(environ, log, repo_id=res.repo_id,
                                    repo_type=res.repo_type, commit=res.commit,
                                    files=sel.files, include=sel.include, exclude=sel.exclude,
                                    chosen=chosen, checker=_checker)
        if kept is not None:
            return _print_pin(args, sel, res, chosen, store_name(res.repo_id, res.commit),
                              kept.nar_hash, kept.store_path)
    root = download_dir(environ)
    make_folder(root, "download folder", _DOWNLOAD_FIX)
    lock = TurnLock(os.path.join(root, download_key(res.repo_id, res.repo_type, res.commit)
                                 + ".lock"))
    lock.acquire(lambda: log.warning("another prefetch of this repo and commit is running: "
                                     "waiting for it", lock=lock.path))
    try:
        name, sri_hash, store_path = _fetch_and_hash(args, sel, environ, log, session, res,
                                                     chosen, nix_store, root)
    finally:
        lock.release()

    code = _print_pin(args, sel, res, chosen, name, sri_hash, store_path)
    if store_path is not None:  # auto_persist: export what was added (after the pin)
        from .persistexport import export_after_prefetch

        export_after_prefetch(environ, log, store_path=store_path, repo_id=res.repo_id,
                              repo_type=res.repo_type, commit=res.commit, ref=res.ref,
                              files=sel.files, include=sel.include, exclude=sel.exclude)
    return code


def _fetch_and_hash(args: argparse.Namespace, sel: Any, environ: Mapping[str, str],
                    log: Any, session: Any, res: Resolved, chosen: list[RemoteFile],
                    nix_store: str | None, root: str) -> tuple[str, str, str | None]:
    """The download, check, hash and ``--add-to-store`` steps of :func:`prefetch`, under
    its lock; returns (store name, SRI hash, store path or None). Raises
    :class:`Failure`."""
    import tempfile

    from huggingface_hub import snapshot_download
    from huggingface_hub.utils import disable_progress_bars, filter_repo_objects

    from .nar import NarError, nar_hash, sri
    from .signals import on_interrupt

    total = sum(f.size for f in chosen)
    dl = os.path.join(root, download_key(res.repo_id, res.repo_type, res.commit))
    make_folder(dl, "download folder", _DOWNLOAD_FIX)
    have = 0
    for f in chosen:
        try:
            st = os.stat(os.path.join(dl, f.path))
        except OSError:
            continue
        have += st.st_size if st.st_size == f.size else 0
    free = shutil.disk_usage(dl).free
    if free < total - have + (64 << 20):
        raise Failure(EXIT_ENVIRONMENT, f"not enough space in {dl}: the files need "
                      f"{human_size(total - have)} more, {human_size(free)} is free; set "
                      "MODEL_REPO_PREFETCH_DIR (or XDG_CACHE_HOME) to a folder on a "
                      "larger disk")
    if have:
        log.info("resuming", folder=dl, complete=human_size(have))
    workdir = tempfile.mkdtemp(prefix="model-repo-prefetch-", dir=root)
    on_interrupt.remove_on_signal(workdir)
    on_interrupt.set_message(f"downloaded files are kept in {dl}: run the same command "
                             "again to resume")
    try:
        name = store_name(res.repo_id, res.commit)
        tree = os.path.join(workdir, name)
        os.mkdir(tree)
        from . import progress

        if not progress.enabled():  # not a terminal, or -q (commands.run_command)
            disable_progress_bars()
        # Same files as git's sparse checkout: pass the user's patterns when
        # huggingface_hub's glob rules select the same set, else the exact paths.
        allow: list[str] | None = None
        ignore: list[str] | None = None
        if sel.patterns:
            allow, ignore = list(sel.include) or None, list(sel.exclude) or None
            wanted = {f.path for f in chosen}
            if sel.files or set(filter_repo_objects(
                    [f.path for f in res.files], allow_patterns=allow,
                    ignore_patterns=ignore)) != wanted:
                allow, ignore = [fnmatch_escape(p) for p in sorted(wanted)], None
        log.info("downloading", files=len(chosen), size=human_size(total), into=dl)
        guard = _GrowthGuard(dl, total - have + GROWTH_SLACK, workdir)
        try:
            with guard:
                session.call("downloading the files", lambda: snapshot_download(
                    res.repo_id, repo_type=res.repo_type, revision=res.commit,
                    local_dir=dl, allow_patterns=allow, ignore_patterns=ignore,
                    endpoint=session.endpoint, token=session.token,
                    tqdm_class=progress.rate_bar_class()), repo_id=res.repo_id,
                    repo_type=res.repo_type, ref=sel.revision)
        except (ValueError, KeyError, TypeError, OSError) as exc:
            # huggingface_hub lists the repo again itself: a Hub answering it otherwise
            # than our checked listing (a path outside the folder, a field missing)
            from .api import printable

            raise Failure(EXIT_ENVIRONMENT, f"downloading the files of {res.repo_id} failed: "
                          f"{type(exc).__name__}: {printable(str(exc))[:300]}; retry, or "
                          "check HF_ENDPOINT") from exc
        for f in chosen:
            src = os.path.join(dl, f.path)
            if os.path.isfile(src):
                _link_or_copy(src, os.path.join(tree, f.path))
        expected = {f.path: f for f in chosen}
        seen: dict[str, int] = {}
        bad: list[str] = []
        log.info("hashing", path=tree)
        try:
            digest = nar_hash(tree, observe=_checker(expected, seen, bad))
        except NarError as exc:
            raise Failure(EXIT_ENVIRONMENT, f"cannot hash the download: {exc}") from exc
        missing = sorted(set(expected) - set(seen))
        extra = sorted(set(seen) - set(expected))
        sizes = [f"{p}: {seen[p]} bytes, the Hub says {expected[p].size}"
                 for p in expected if p in seen and seen[p] != expected[p].size]
        problems = ([f"missing {p}" for p in missing] + [f"unexpected {p}" for p in extra]
                    + sizes + bad)
        if problems:
            shutil.rmtree(dl, ignore_errors=True)  # a corrupt file must not be reused
            raise Failure(EXIT_ENVIRONMENT, "the download does not match the Hub's listing "
                          f"of {res.repo_id} at {res.commit}: " + "; ".join(problems[:10])
                          + ("; …" if len(problems) > 10 else "") + "; retry")
        sri_hash = sri(digest)
        store_path = None
        if nix_store is not None:
            proc = subprocess.run([nix_store, "--add-fixed", "--recursive", "sha256", tree],
                                  capture_output=True, text=True)
            if proc.returncode != 0:
                raise Failure(EXIT_ENVIRONMENT, "nix-store --add-fixed failed "
                              f"(exit {proc.returncode}): {proc.stderr.strip()}")
            store_path = proc.stdout.strip().splitlines()[-1]
            log.info("added to the store", path=store_path)
        shutil.rmtree(dl, ignore_errors=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        on_interrupt.forget(workdir)
        on_interrupt.set_message("")  # past this point nothing is kept for a rerun
    return name, sri_hash, store_path


#: Bytes a snapshot download may write beyond the listed sizes before it is stopped.
GROWTH_SLACK = 16 << 20


def _folder_bytes(folder: str) -> int:
    """Bytes of the regular files under ``folder`` (0 when it is gone)."""
    total = 0
    for dirpath, _dirs, names in os.walk(folder):
        for n in names:
            try:
                total += os.lstat(os.path.join(dirpath, n)).st_size
            except OSError:
                pass
    return total


class _GrowthGuard:
    """Stops a snapshot download that writes more than ``limit`` bytes into ``folder``
    (the listed sizes still to download, plus :data:`GROWTH_SLACK`): huggingface_hub
    reads a file's body to its end, so a Hub sending an endless body would fill the
    disk. Polled every 50 ms from a thread; past the limit it removes ``folder`` (its
    files cannot be trusted) and ``workdir``, writes one line and ends the process with
    exit 3 (``os._exit``: huggingface_hub's worker threads cannot be stopped otherwise,
    as for a signal, :mod:`activate.hub.signals`)."""

    def __init__(self, folder: str, limit: int, workdir: str):
        import threading

        self.folder, self.limit, self.workdir = folder, limit, workdir
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True,
                                        name="model-repo-growth-guard")

    def __enter__(self) -> _GrowthGuard:
        self.start = _folder_bytes(self.folder)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()

    def _watch(self) -> None:
        while not self._done.wait(0.05):
            grown = _folder_bytes(self.folder) - self.start
            if grown > self.limit:
                shutil.rmtree(self.folder, ignore_errors=True)
                shutil.rmtree(self.workdir, ignore_errors=True)
                line = (f"model-repo: error: the Hub sent more than the {self.limit} bytes "
                        f"its listing announces for this download ({grown} written); "
                        "nothing was kept; retry, or check HF_ENDPOINT\n")
                try:
                    os.write(2, line.encode())
                finally:
                    os._exit(EXIT_ENVIRONMENT)


def _print_pin(args: argparse.Namespace, sel: Any, res: Resolved, chosen: list[RemoteFile],
               name: str, sri_hash: str, store_path: str | None) -> int:
    """Print the pin (Nix attribute set, or JSON with ``--json``) on stdout."""
    import datetime

    date = datetime.datetime.now(datetime.timezone.utc).date().isoformat()
    if args.json:
        import json

        doc = {
            "repo": res.repo_id, "repoType": res.repo_type, "revision": res.commit,
            "ref": res.ref, "date": date, "hash": sri_hash,
            "exactFiles": list(sel.files), "include": list(sel.include),
            "exclude": list(sel.exclude),
            "files": [{"path": f.path, "size": f.size} for f in chosen],
            "name": name, "storePath": store_path,
        }
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
    else:
        from .ggufsel import model_ref

        sys.stdout.write(render_nix(repo_id=model_ref(res.repo_id, sel), repo_type=res.repo_type,
                                    commit=res.commit, ref=res.ref, date=date,
                                    files=sel.files, include=sel.include,
                                    exclude=sel.exclude, sri_hash=sri_hash))
        if store_path is not None:
            sys.stdout.write(f"# store path: {store_path}\n")
    return EXIT_OK
