"""The thin I/O layer over one hub cache directory.

The hub dir is opened once (:func:`open_hub`: its path resolved one component at a time
from ``/``, refusing steps another user could have planted, as systemd's ``chase()`` with
``CHASE_SAFE``), and every later operation is relative to that one descriptor, as Go's
``os.Root`` and Rust's cap-std do: the hub dir is the same folder for the whole run even
if its path is swapped meanwhile. Every operation takes a path relative to the hub dir
and walks it one component at a time with ``O_NOFOLLOW`` directory descriptors, so a
symlink planted anywhere inside the cache is never followed where we create or remove
entries. Writes are atomic: a
temporary name in this run's private folder in ``.locks/`` (never under ``refs/`` or
``snapshots/``, where huggingface_hub would read it as a ref or a revision), then
``rename`` onto the final name. Standard library only.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass

#: Prefix of the temporary names the activator creates (its private folder in
#: :data:`LOCKS_DIR`, and the entries in it); a folder so named that is this user's
#: is a stopped run's leftover, removed by the next run.
TEMP_PREFIX = ".model-repo-tmp-"

#: huggingface_hub's lock folder in the hub dir (constants: ``<HF_HUB_CACHE>/.locks``,
#: which ``scan_cache_dir`` skips). Our lock file is there, and a run's private folder
#: of temporary names is made there, so one folder serves every repo folder (a rename or
#: hard link works across folders of one filesystem).
LOCKS_DIR = ".locks"

#: errno values of ``link`` on filesystems that have no hard links.
_NO_HARDLINKS = (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK, errno.ENOSYS)

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class UnsafePath(Exception):
    """A step of the hub dir's path :func:`open_hub` will not take; the message names
    it, its owner and the fix."""


class HubRoot:
    """The hub dir opened once by :func:`open_hub`.

    ``path``: as given; ``real``: symlinks resolved, as ``os.path.realpath`` spells it
    (what states are filed under); ``fd``: an ``O_DIRECTORY`` descriptor of the hub dir,
    None when it does not exist; ``identity``: its ``(st_dev, st_ino)`` (None when
    missing). :meth:`close` closes the descriptor.
    """

    __slots__ = ("path", "real", "fd", "identity")

    def __init__(self, path: str, real: str, fd: int | None,
                 identity: tuple[int, int] | None) -> None:
        self.path = path
        self.real = real
        self.fd = fd
        self.identity = identity

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> HubRoot:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


#: Symlinks followed while resolving one hub path before giving up (Linux's own limit).
_MAX_LINKS = 40


def open_hub(path: str, *, create: bool = False) -> HubRoot:
    """Open the hub dir ``path`` (absolute) once and return it as a :class:`HubRoot`.

    The path is resolved one component at a time from ``/``: each directory opened with
    ``O_DIRECTORY | O_NOFOLLOW`` relative to its parent's descriptor, each symlink read
    and its target resolved the same way, so what is checked is what is opened. Each
    step is checked as systemd's ``chase()`` with ``CHASE_SAFE`` does, turned around for
    a writer: see :func:`_unsafe_step` (as root, every directory and symlink on the way
    must be root's). ``create``: make missing directories (mode 0777 masked by the umask,
    as ``os.makedirs``); otherwise a missing hub dir gives ``fd=None``.

    Raises :class:`UnsafePath` for a refused step, ``NotADirectoryError`` for a component
    that is a file (when creating), OSError when a directory cannot be read or created.
    """
    euid = os.geteuid()
    todo = [c for c in path.split("/") if c][::-1]  # a stack: next component last
    fd = os.open("/", _DIR_FLAGS)
    parent_st = os.fstat(fd)
    done = ""
    links = 0
    try:
        while todo:
            name = todo.pop()
            if name == ".":
                continue
            if name == "..":
                up = os.open("..", _DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd, parent_st, done = up, os.fstat(up), done.rpartition("/")[0]
                continue
            try:
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                if not create:
                    os.close(fd)
                    return HubRoot(path, os.path.realpath(path), None, None)
                try:
                    os.mkdir(name, 0o777, dir_fd=fd)
                except FileExistsError:
                    pass  # made meanwhile: look again
                todo.append(name)
                continue
            where = f"{done}/{name}"
            if stat.S_ISLNK(st.st_mode):
                _check_step(path, done or "/", parent_st, where, "symlink", st, euid)
                links += 1
                if links > _MAX_LINKS:
                    raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), path)
                target = os.readlink(name, dir_fd=fd)
                if target.startswith("/"):
                    root = os.open("/", _DIR_FLAGS)
                    os.close(fd)
                    fd, parent_st, done = root, os.fstat(root), ""
                todo.extend([c for c in target.split("/") if c][::-1])
                continue
            if not stat.S_ISDIR(st.st_mode):
                if not create:
                    os.close(fd)
                    return HubRoot(path, os.path.realpath(path), None, None)
                raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), where)
            try:
                child = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                links += 1
                if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.ENOENT) \
                        and links <= _MAX_LINKS:
                    todo.append(name)  # swapped between the stat and the open: again
                    continue
                raise
            child_st = os.fstat(child)
            os.close(fd)
            fd = child
            _check_step(path, done or "/", parent_st, where, "directory", child_st, euid)
            parent_st, done = child_st, where
    except BaseException:
        os.close(fd)
        raise
    return HubRoot(path, done or "/", fd, (parent_st.st_dev, parent_st.st_ino))


def _unsafe_step(parent: os.stat_result, child: os.stat_result, euid: int) -> bool:
    """True when stepping from directory ``parent`` into ``child`` (a directory or a
    symlink) is unsafe for a process with ``euid``.

    As root, anything not root's is unsafe: another user could have put it there (a
    symlink planted in a group-writable folder, a folder swapped in) to make root write
    where that user cannot. This turns systemd's ``CHASE_SAFE`` rule (which guards a
    privileged reader against a step from an unprivileged directory into a privileged
    one) around for a privileged writer. Another user's run may step anywhere: it can
    only write where it may anyway, and caches shared by a group hold folders made by
    several users (the identity check of the state still applies).
    """
    return euid == 0 and child.st_uid != 0


def _check_step(path: str, parent: str, parent_st: os.stat_result, where: str, kind: str,
                child_st: os.stat_result, euid: int) -> None:
    if not _unsafe_step(parent_st, child_st, euid):
        return
    raise UnsafePath(
        f"the hub cache {path}: {where} is a {kind} owned by {_user(child_st.st_uid)}, in "
        f"{parent} owned by {_user(parent_st.st_uid)}; model-repo running as "
        f"{_user(euid)} does not follow a path through another user's {kind} (it could "
        "have been put there to make this run write elsewhere). Nothing was written. If "
        f"it is not meant to be there, move it away (ls -la {parent}) and put the cache "
        "back; otherwise run model-repo as its owner or choose another --cache-dir")


def _user(uid: int) -> str:
    try:
        import pwd

        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except (ImportError, KeyError):
        return f"uid {uid}"


class Blocked(Exception):
    """A path the activator must not touch is in the way.

    ``path`` is relative to the hub dir; ``found`` says what is there.
    """

    def __init__(self, path: str, found: str) -> None:
        super().__init__(f"{path}: {found}")
        self.path = path
        self.found = found


class Changed(OSError):
    """A path no longer holds what the planner saw (another program wrote it meanwhile):
    the write is skipped, nothing of theirs is replaced. ``path`` is relative to the hub
    dir; ``found`` says what is there now."""

    def __init__(self, path: str, found: str) -> None:
        super().__init__(f"{path} changed while activating: it is now {found}; it was "
                         "left alone")
        self.path = path
        self.found = found


@dataclass(frozen=True, slots=True)
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

    def __init__(self, hub_dir: str, before_write: Callable[[str], None] | None = None,
                 root: HubRoot | None = None, private_parent: int | None = None):
        """``root``: the hub dir opened once (:func:`open_hub`), owned by the caller; every
        operation is relative to it. Without it the hub dir is opened on first use with
        :func:`open_hub` (and closed by :meth:`close`). ``private_parent``: a descriptor
        of :data:`LOCKS_DIR` the caller holds (the lock's, opened with the lock
        file: then a later swap of that name cannot stop the run's writes), owned by the
        caller; without it the folder is opened by name when first needed."""
        self.hub_dir = hub_dir
        self.before_write = before_write
        self._root = root
        self._own_root = root is None
        self._fds: dict[str, int] = {}
        self._missing: set[str] = set()
        self._temp_prefix = f"{TEMP_PREFIX}{os.getpid()}-{os.urandom(4).hex()}-"
        self._temp_count = 0
        #: This run's private folder: (its descriptor, its name), see :meth:`_private`.
        self._private_dir: tuple[int, str] | None = None
        self._private_parent = private_parent

    # -- reading ----------------------------------------------------------------

    def lstat(self, rel: str) -> Entry:
        """What ``rel`` is; an intermediate component that is not a real directory
        raises :class:`Blocked`."""
        parent, name = _split(rel)
        try:
            dfd = self.dir_fd(parent)
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
        dfd = self.dir_fd(parent)
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
        try:
            return os.read(fd, limit)
        finally:
            os.close(fd)

    def list_dir(self, rel: str) -> list[str]:
        """Names in directory ``rel`` ([] when it is missing)."""
        try:
            dfd = self.dir_fd(rel)
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

    def dir_fd(self, rel: str) -> int:
        """A descriptor of directory ``rel``, every component opened with O_NOFOLLOW.

        Raises :class:`Blocked` when a component exists but is not a real directory,
        ``_Missing`` when one does not exist. Descriptors are kept (owned by this
        object) until :meth:`forget`; the planner and :func:`~activate.linking.apply`
        call it after each repo folder, so a folder's entries cost one open per
        directory. :data:`LOCKS_DIR` is the caller's ``private_parent`` when given.
        """
        fd = self._fds.get(rel)
        if fd is not None:
            return fd
        if rel == LOCKS_DIR and self._private_parent is not None:
            return self._private_parent
        for missing in self._missing:
            if rel == missing or rel.startswith(missing + "/"):
                raise _Missing(missing)
        if not rel:
            if self._root is None:
                self._root = open_hub(self.hub_dir)
            if self._root.fd is None:
                raise _Missing("")  # a dry run before the hub dir exists
            return self._root.fd
        parent, name = _split(rel)
        pfd = self.dir_fd(parent)
        try:
            fd = os.open(name, _DIR_FLAGS, dir_fd=pfd)
        except FileNotFoundError:
            self._missing.add(rel)
            raise _Missing(rel) from None
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise Blocked(rel, _describe(pfd, name)) from None
            raise
        self._fds[rel] = fd
        return fd

    def forget(self) -> None:
        """Close every kept descriptor but the hub dir's own and the private folder's,
        and forget what was missing."""
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()
        self._missing.clear()

    def drop_private(self) -> None:
        """Remove this run's private folder of temporary names (:meth:`_private`) if it
        was made: only the folder we made (compared by device and inode; one the member
        of a group cache put in its place under that name stays) and only when empty (a
        write stopped by an error leaves it to the next run's :meth:`leftover_privates`)."""
        if self._private_dir is None:
            return
        fd, name = self._private_dir
        self._private_dir = None
        try:
            own = os.fstat(fd)
            pfd = self._private_parent_fd()
            found = os.stat(name, dir_fd=pfd, follow_symlinks=False)
            if (found.st_dev, found.st_ino) == (own.st_dev, own.st_ino):
                self._hook(f"rmdir {LOCKS_DIR}/{name}")
                os.rmdir(name, dir_fd=pfd)
        except (OSError, Blocked):
            pass  # moved, not empty or hidden: the next run's planner removes it
        finally:
            os.close(fd)

    def close(self) -> None:
        """:meth:`forget` and :meth:`drop_private`, and close the hub dir if this object
        opened it."""
        try:
            self.drop_private()
        finally:
            self.forget()
            if self._own_root and self._root is not None:
                self._root.close()
                self._root = None

    # -- writing ----------------------------------------------------------------

    def _hook(self, what: str) -> None:
        if self.before_write is not None:
            self.before_write(what)

    def mkdir(self, rel: str, mode: int = 0o777) -> None:
        """Create directory ``rel`` (its parent must exist); mode is masked by umask."""
        parent, name = _split(rel)
        dfd = self.dir_fd(parent)
        self._hook(f"mkdir {rel}")
        os.mkdir(name, mode, dir_fd=dfd)
        self._missing.discard(rel)

    def rmdir_if_empty(self, rel: str) -> bool:
        """Remove directory ``rel`` if it is empty and this user's (a folder we made is
        ours; an empty one someone else put in its place is left); never recursive.
        True if removed."""
        try:
            if self.list_dir(rel):
                return False
        except Blocked:
            return False
        parent, name = _split(rel)
        try:
            dfd = self.dir_fd(parent)
            if os.stat(name, dir_fd=dfd, follow_symlinks=False).st_uid != os.geteuid():
                return False
            self._hook(f"rmdir {rel}")
            fd = self._fds.pop(rel, None)
            if fd is not None:
                os.close(fd)
            os.rmdir(name, dir_fd=dfd)
            return True
        except (FileNotFoundError, _Missing):
            return False
        except OSError as exc:
            if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
                return False
            raise

    def create_symlink(self, rel: str, target: str) -> None:
        """Create symlink ``rel`` -> ``target`` where nothing is (one ``symlinkat``:
        atomic by itself); FileExistsError if something appeared meanwhile."""
        parent, name = _split(rel)
        dfd = self.dir_fd(parent)
        self._hook(f"symlink {rel}")
        os.symlink(target, name, dir_fd=dfd)

    def check(self, rel: str, expect: tuple[str, str | None] | None) -> None:
        """Raise :class:`Changed` unless ``rel`` holds ``expect``: ``(kind, value)`` with
        the link target for links and the (surrogate-escaped) content for files."""
        if expect is None:
            return
        entry = self.lstat(rel)
        value = entry.target
        if entry.kind == "file" and expect[0] == "file":
            value = self.read_file(rel, 4097).decode("utf-8", "surrogateescape")
        if (entry.kind, value) != tuple(expect):
            found = f"a symlink to {value!r}" if entry.kind == "link" else (
                f"a file holding {value!r}" if entry.kind == "file" else f"{entry.kind}")
            raise Changed(rel, found)

    def replace_symlink(self, rel: str, target: str,
                        expect: tuple[str, str | None] | None = None) -> None:
        """Atomically make ``rel`` a symlink to ``target`` via a temporary name in this
        run's private folder (:meth:`_private`); ``expect``: what ``rel`` must hold right
        before the rename (else :class:`Changed`)."""

        def make(tfd: int, tmp: str) -> None:
            os.symlink(target, tmp, dir_fd=tfd)

        self._atomic(rel, make, expect)

    def create_file(self, rel: str, content: bytes, mtime_ns: int | None = None) -> None:
        """Make regular file ``rel`` holding exactly ``content`` where nothing is: written
        under a temporary name, then hard-linked onto ``rel`` (``link`` never replaces:
        something that appeared meanwhile raises :class:`Changed`). ``mtime_ns``: the
        modification time it has from the start (it marks the file as ours)."""
        parent, name = _split(rel)
        tmp = self._temp_name()
        tfd = self._private()
        pfd = self.dir_fd(parent)
        self._hook(f"create {tmp}")
        self._write_new(tfd, tmp, content, mtime_ns)
        try:
            self._hook(f"link onto {rel}")
            try:
                os.link(tmp, name, src_dir_fd=tfd, dst_dir_fd=pfd, follow_symlinks=False)
            except FileExistsError:
                raise Changed(rel, "present (something created it meanwhile)") from None
            except OSError as exc:
                if exc.errno not in _NO_HARDLINKS:
                    raise
                # A filesystem without hard links: check, then rename (a narrow window).
                self.check(rel, ("missing", None))
                os.rename(tmp, name, src_dir_fd=tfd, dst_dir_fd=pfd)
                return
            self._hook(f"unlink {tmp}")
        finally:
            try:
                os.unlink(tmp, dir_fd=tfd)
            except FileNotFoundError:
                pass

    @staticmethod
    def _write_new(dfd: int, name: str, content: bytes, mtime_ns: int | None = None) -> None:
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o666, dir_fd=dfd)
        try:
            os.write(fd, content)
            if mtime_ns is not None:
                os.utime(fd, ns=(mtime_ns, mtime_ns))
        finally:
            os.close(fd)

    def replace_file(self, rel: str, content: bytes,
                     expect: tuple[str, str | None] | None = None,
                     mtime_ns: int | None = None) -> None:
        """Atomically make ``rel`` a regular file holding exactly ``content``; ``expect``
        as for :meth:`replace_symlink`, ``mtime_ns`` as for :meth:`create_file`."""

        def make(tfd: int, tmp: str) -> None:
            self._write_new(tfd, tmp, content, mtime_ns)

        self._atomic(rel, make, expect)

    def _temp_name(self) -> str:
        self._temp_count += 1
        return f"{self._temp_prefix}{self._temp_count}"

    def _private(self) -> int:
        """The descriptor of this run's private folder (made on first use in
        :data:`LOCKS_DIR`, itself made when missing: ``.model-repo-tmp-…``, mode
        0700, removed by :meth:`drop_private`), where temporary entries are made before
        they are renamed (or linked) into place relative to it: another user who may
        write the folder around it (a group cache) can rename it but not change what is
        in it, so what lands in place is what we made."""
        if self._private_dir is not None:
            return self._private_dir[0]
        pfd = self._private_parent_fd(create=True)
        name = self._temp_name()
        self._hook(f"mkdir {LOCKS_DIR}/{name}")
        os.mkdir(name, 0o700, dir_fd=pfd)
        fd = os.open(name, _DIR_FLAGS, dir_fd=pfd)
        self._private_dir = (fd, name)
        return fd

    def _private_parent_fd(self, create: bool = False) -> int:
        try:
            return self.dir_fd(LOCKS_DIR)
        except _Missing:
            if not create:
                raise
        self.mkdir(LOCKS_DIR)
        return self.dir_fd(LOCKS_DIR)

    def _atomic(self, rel: str, make: Callable[[int, str], None],
                expect: tuple[str, str | None] | None = None) -> None:
        parent, name = _split(rel)
        tmp = self._temp_name()
        tfd = self._private()
        pfd = self.dir_fd(parent)
        self._hook(f"create {tmp}")
        make(tfd, tmp)
        try:
            self._hook(f"rename onto {rel}")
            self.check(rel, expect)
            os.rename(tmp, name, src_dir_fd=tfd, dst_dir_fd=pfd)
        except BaseException:
            try:
                os.unlink(tmp, dir_fd=tfd)
            except OSError:
                pass
            raise

    def leftover_privates(self) -> list[str]:
        """The private folders (:meth:`_private`) stopped runs of this user left in
        :data:`LOCKS_DIR`, as paths relative to the hub dir (this run's excluded)."""
        mine = self._private_dir[1] if self._private_dir else None
        try:
            names = self.list_dir(LOCKS_DIR)
        except Blocked:
            return []
        return [f"{LOCKS_DIR}/{n}" for n in names if n.startswith(TEMP_PREFIX)
                and n != mine and self.is_own_private(f"{LOCKS_DIR}/{n}")]

    def is_own_private(self, rel: str) -> bool:
        """True when ``rel`` is a folder under a temporary name made by a run of this
        user (:meth:`_private`, left by a run that was stopped)."""
        parent, name = _split(rel)
        try:
            st = os.stat(name, dir_fd=self.dir_fd(parent), follow_symlinks=False)
        except (OSError, Blocked):
            return False
        return (name.startswith(TEMP_PREFIX) and stat.S_ISDIR(st.st_mode)
                and st.st_uid == os.geteuid())

    def remove_private(self, rel: str) -> None:
        """Remove the leftover private folder ``rel`` (:meth:`is_own_private`): the
        temporary entries in it (never followed), then the folder."""
        parent, name = _split(rel)
        pfd = self.dir_fd(parent)
        fd = os.open(name, _DIR_FLAGS, dir_fd=pfd)
        try:
            for entry in os.listdir(fd):
                if not stat.S_ISDIR(os.stat(entry, dir_fd=fd, follow_symlinks=False).st_mode):
                    self._hook(f"unlink {rel}/{entry}")
                    os.unlink(entry, dir_fd=fd)
        finally:
            os.close(fd)
        self._hook(f"rmdir {rel}")
        os.rmdir(name, dir_fd=pfd)

    def unlink(self, rel: str, expect: tuple[str, str | None] | None = None) -> None:
        """Remove the non-directory ``rel`` (a link is removed, never followed), if it
        still holds ``expect`` (else :class:`Changed`)."""
        parent, name = _split(rel)
        dfd = self.dir_fd(parent)
        self._hook(f"unlink {rel}")
        self.check(rel, expect)
        os.unlink(name, dir_fd=dfd)


class _Missing(FileNotFoundError):
    """A component of a path does not exist (found missing now, or earlier in this
    object's life: another program may remove a folder between the plan and a write)."""


def _split(rel: str) -> tuple[str, str]:
    parent, _, name = rel.rpartition("/")
    return parent, name


def _describe(dfd: int, name: str) -> str:
    try:
        st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
    except OSError:
        return "not a directory"
    if stat.S_ISLNK(st.st_mode):
        try:
            return f"a symlink to {os.readlink(name, dir_fd=dfd)!r}, not a directory"
        except OSError:  # replaced again meanwhile
            return "a symlink, not a directory"
    return "not a directory"
