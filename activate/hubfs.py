"""The thin I/O layer over one hub cache directory.

Every operation takes a path relative to the hub dir and walks it one component at a
time with ``O_NOFOLLOW`` directory descriptors, so a symlink planted anywhere inside the
cache is never followed where we create or remove entries. Writes are atomic: a
temporary name in the repo folder (never under ``refs/`` or ``snapshots/``, where
huggingface_hub would read it as a ref or a revision), then ``rename`` onto the final
name. Standard library only.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

#: Prefix of the temporary names the activator creates in a repo folder; anything so
#: named is ours by construction and removed by the next run.
TEMP_PREFIX = ".model-repo-tmp-"

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class Blocked(Exception):
    """A path the activator must not touch is in the way.

    ``path`` is relative to the hub dir; ``found`` says what is there.
    """

    def __init__(self, path: str, found: str) -> None:
        super().__init__(f"{path}: {found}")
        self.path = path
        self.found = found


@dataclass(frozen=True)
class Entry:
    """What one path in the cache is, without following it.

    ``kind`` is ``missing``, ``dir``, ``link``, ``file`` or ``other``; ``target`` is the
    link's text for links, ``content`` the first bytes of a regular file when asked.
    """

    kind: str
    target: str | None = None


class HubFS:
    """Read and change one hub dir. ``before_write`` (if set) is called with a short
    description before every change: the hook the crash tests use to inject faults."""

    def __init__(self, hub_dir: str, before_write: Callable[[str], None] | None = None):
        self.hub_dir = hub_dir
        self.before_write = before_write
        self.writes = 0

    # -- reading ----------------------------------------------------------------

    def lstat(self, rel: str) -> Entry:
        """What ``rel`` is; an intermediate component that is not a real directory
        raises :class:`Blocked`."""
        parent, name = _split(rel)
        try:
            with self.open_dir(parent) as dfd:
                try:
                    st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
                except FileNotFoundError:
                    return Entry("missing")
                if stat.S_ISLNK(st.st_mode):
                    return Entry("link", os.readlink(name, dir_fd=dfd))
                if stat.S_ISDIR(st.st_mode):
                    return Entry("dir")
                if stat.S_ISREG(st.st_mode):
                    return Entry("file")
                return Entry("other")
        except _Missing:
            return Entry("missing")

    def read_file(self, rel: str, limit: int = 4096) -> bytes:
        """The first ``limit`` bytes of regular file ``rel`` (not following links)."""
        parent, name = _split(rel)
        with self.open_dir(parent) as dfd:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
            try:
                return os.read(fd, limit)
            finally:
                os.close(fd)

    def list_dir(self, rel: str) -> list[str]:
        """Names in directory ``rel`` ([] when it is missing)."""
        try:
            with self.open_dir(rel) as dfd:
                return os.listdir(dfd)
        except _Missing:
            return []

    def walk_files(self, rel: str) -> Iterator[tuple[str, str]]:
        """Yield ``(relative path, kind)`` of every non-directory below ``rel``."""
        for name in self.list_dir(rel):
            child = f"{rel}/{name}"
            entry = self.lstat(child)
            if entry.kind == "dir":
                yield from self.walk_files(child)
            else:
                yield child, entry.kind

    @contextmanager
    def open_dir(self, rel: str) -> Iterator[int]:
        """A descriptor of directory ``rel``, every component opened with O_NOFOLLOW.

        Raises :class:`Blocked` when a component exists but is not a real directory,
        ``_Missing`` when one does not exist.
        """
        try:
            fd = os.open(self.hub_dir, _DIR_FLAGS & ~os.O_NOFOLLOW)
        except FileNotFoundError:
            raise _Missing("") from None  # a dry run before the hub dir exists
        try:
            walked = ""
            for part in rel.split("/") if rel else ():
                walked = f"{walked}/{part}" if walked else part
                try:
                    nfd = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    raise _Missing(walked) from None
                except OSError as exc:
                    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                        raise Blocked(walked, _describe(fd, part)) from None
                    raise
                os.close(fd)
                fd = nfd
            yield fd
        finally:
            os.close(fd)

    # -- writing ----------------------------------------------------------------

    def _hook(self, what: str) -> None:
        if self.before_write is not None:
            self.before_write(what)
        self.writes += 1

    def mkdir(self, rel: str, mode: int = 0o777) -> None:
        """Create directory ``rel`` (its parent must exist); mode is masked by umask."""
        parent, name = _split(rel)
        with self.open_dir(parent) as dfd:
            self._hook(f"mkdir {rel}")
            os.mkdir(name, mode, dir_fd=dfd)

    def rmdir_if_empty(self, rel: str) -> bool:
        """Remove directory ``rel`` if it is empty; never recursive. True if removed."""
        try:
            if self.list_dir(rel):
                return False
        except Blocked:
            return False
        parent, name = _split(rel)
        try:
            with self.open_dir(parent) as dfd:
                self._hook(f"rmdir {rel}")
                os.rmdir(name, dir_fd=dfd)
                return True
        except (FileNotFoundError, _Missing):
            return False
        except OSError as exc:
            if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
                return False
            raise

    def replace_symlink(self, rel: str, target: str, temp_dir: str) -> None:
        """Atomically make ``rel`` a symlink to ``target`` via a temporary name in
        ``temp_dir`` (same filesystem, not read by huggingface_hub)."""

        def make(tfd: int, tmp: str) -> None:
            os.symlink(target, tmp, dir_fd=tfd)

        self._atomic(rel, temp_dir, make)

    def replace_file(self, rel: str, content: bytes, temp_dir: str) -> None:
        """Atomically make ``rel`` a regular file holding exactly ``content``."""

        def make(tfd: int, tmp: str) -> None:
            fd = os.open(
                tmp,
                os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                0o666,
                dir_fd=tfd,
            )
            try:
                os.write(fd, content)
            finally:
                os.close(fd)

        self._atomic(rel, temp_dir, make)

    def _atomic(self, rel: str, temp_dir: str, make: Callable[[int, str], None]) -> None:
        parent, name = _split(rel)
        tmp = f"{TEMP_PREFIX}{os.getpid()}-{os.urandom(6).hex()}"
        with self.open_dir(temp_dir) as tfd, self.open_dir(parent) as pfd:
            self._hook(f"create {temp_dir}/{tmp}")
            make(tfd, tmp)
            try:
                self._hook(f"rename onto {rel}")
                os.rename(tmp, name, src_dir_fd=tfd, dst_dir_fd=pfd)
            except BaseException:
                try:
                    os.unlink(tmp, dir_fd=tfd)
                except OSError:
                    pass
                raise

    def unlink(self, rel: str) -> None:
        """Remove the non-directory ``rel`` (a link is removed, never followed)."""
        parent, name = _split(rel)
        with self.open_dir(parent) as dfd:
            self._hook(f"unlink {rel}")
            os.unlink(name, dir_fd=dfd)

    def remove_temps(self, rel: str) -> list[str]:
        """Remove leftovers of an interrupted run (our temporary names) in ``rel``."""
        removed = []
        for name in self.list_dir(rel):
            if name.startswith(TEMP_PREFIX):
                child = f"{rel}/{name}"
                if self.lstat(child).kind in ("link", "file"):
                    self.unlink(child)
                    removed.append(child)
        return removed


class _Missing(Exception):
    """A component of a path does not exist."""


def _split(rel: str) -> tuple[str, str]:
    parent, _, name = rel.rpartition("/")
    return parent, name


def _describe(dfd: int, name: str) -> str:
    try:
        st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
    except OSError:
        return "not a directory"
    if stat.S_ISLNK(st.st_mode):
        return f"a symlink to {os.readlink(name, dir_fd=dfd)!r}, not a directory"
    return "not a directory"
