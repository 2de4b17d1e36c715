"""Nix archive (NAR) serialisation and the NAR hash of a file tree, streamed.

The NAR hash is what a fixed-output derivation with ``outputHashMode = "recursive"``
(``fetchgit``, ``fetchFromHuggingFace``, ``nix-store --add-fixed --recursive``) pins, and
what ``nix hash path`` prints. Standard library only.

Format (Nix ``src/libutil/archive.cc``, ``dump``; Eelco Dolstra's thesis, section 5.2.1,
figure 5.2). Every string is written as its length (64-bit little-endian) followed by
its bytes, zero-padded to a multiple of 8 bytes::

    nar       = str("nix-archive-1") node
    node      = str("(") str("type") body str(")")
    body      = str("regular") [str("executable") str("")] str("contents") contents
              | str("symlink") str("target") str(target)
              | str("directory") { str("entry") str("(") str("name") str(name)
                                   str("node") node str(")") }
    contents  = the file's size, then its bytes, padded like a string

- Directory entries are sorted by name, compared as bytes (C++ ``std::map<std::string>``,
  which orders unsigned bytes): ``"B" < "_" < "a" < "\\xc3\\xa9"`` whatever the locale.
- A regular file is ``executable`` when its *owner* execute bit (``S_IXUSR``) is set;
  group and other execute bits are ignored (``st.st_mode & S_IXUSR`` in Nix). Other
  permission bits, owners and times are not recorded.
- A symlink is recorded with its target, never followed (``lstat``): relative,
  absolute and dangling targets are all plain strings.
- Sockets, FIFOs and device files cannot be archived: :class:`NarError`.
- macOS's ``~nix~case~hack~`` renaming (``use-case-hack``) is not applied: file names
  are archived as they are, as Nix does on Linux.

File contents are read in chunks (1 MiB), so hashing a multi-GB model takes constant
memory.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import stat
import struct
from collections.abc import Callable
from typing import Union

PathLike = Union[str, bytes, "os.PathLike[str]", "os.PathLike[bytes]"]

#: The magic string every NAR starts with.
MAGIC = b"nix-archive-1"

#: Bytes read from a file at a time.
CHUNK_SIZE = 1 << 20

_ZEROS = b"\0" * 8

#: ``observe(relpath, size)`` is called for every regular file before its contents are
#: written; ``relpath`` is the file's path below the root, ``/``-separated (``""`` when
#: the root itself is a file), ``size`` its length in bytes. It returns a function that
#: receives each chunk of the contents, in order, or None to receive nothing.
Observer = Callable[[str, int], Union[Callable[[bytes], object], None]]


class NarError(Exception):
    """A path cannot be archived (unsupported file type, or it changed while being read)."""


def _str(data: bytes) -> bytes:
    """One NAR string: 8-byte little-endian length, the bytes, zero padding to 8."""
    return struct.pack("<Q", len(data)) + data + _ZEROS[: (-len(data)) % 8]


class _Writer:
    def __init__(self, write: Callable[[bytes], object], observe: Observer | None,
                 chunk_size: int):
        self.write = write
        self.observe = observe
        self.buf = bytearray(chunk_size)

    def token(self, *parts: bytes) -> None:
        self.write(b"".join(_str(p) for p in parts))

    def node(self, path: bytes, rel: bytes) -> None:
        try:
            st = os.lstat(path)
        except OSError as exc:
            raise NarError(f"cannot read {os.fsdecode(path)}: {exc.strerror}") from exc
        mode = st.st_mode
        if stat.S_ISREG(mode):
            self.token(b"(", b"type", b"regular")
            if mode & stat.S_IXUSR:
                self.token(b"executable", b"")
            self.token(b"contents")
            self.contents(path, rel, st)
            self.token(b")")
        elif stat.S_ISLNK(mode):
            self.token(b"(", b"type", b"symlink", b"target", os.readlink(path), b")")
        elif stat.S_ISDIR(mode):
            self.token(b"(", b"type", b"directory")
            with os.scandir(path) as it:
                names = sorted(entry.name for entry in it)
            for name in names:
                self.token(b"entry", b"(", b"name", name, b"node")
                self.node(os.path.join(path, name), rel + b"/" + name if rel else name)
                self.token(b")")
            self.token(b")")
        else:
            raise NarError(
                f"{os.fsdecode(path)} is neither a regular file, a directory nor a symlink "
                f"(mode {stat.filemode(mode)}): Nix cannot archive it; remove it"
            )

    def contents(self, path: bytes, rel: bytes, st: os.stat_result) -> None:
        size = st.st_size
        flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(path, flags)
        except OSError as exc:
            raise NarError(f"cannot open {os.fsdecode(path)}: {exc.strerror}") from exc
        try:
            fst = os.fstat(fd)
            if (fst.st_dev, fst.st_ino) != (st.st_dev, st.st_ino) or fst.st_size != size:
                raise NarError(f"{os.fsdecode(path)} changed while it was being archived")
            sink = self.observe(os.fsdecode(rel), size) if self.observe else None
            self.write(struct.pack("<Q", size))
            view = memoryview(self.buf)
            reader = io.FileIO(fd, "rb", closefd=False)
            left = size
            while left:
                n = reader.readinto(view[: min(left, len(view))]) or 0
                if n == 0:
                    raise NarError(
                        f"{os.fsdecode(path)} shrank while it was being archived "
                        f"({size - left} of {size} bytes read)")
                chunk = bytes(view[:n])
                self.write(chunk)
                if sink is not None:
                    sink(chunk)
                left -= n
            if reader.read(1):
                raise NarError(f"{os.fsdecode(path)} grew while it was being archived")
            self.write(_ZEROS[: (-size) % 8])
        finally:
            os.close(fd)


def write_nar(path: PathLike, write: Callable[[bytes], object], *,
              observe: Observer | None = None, chunk_size: int = CHUNK_SIZE) -> None:
    """Serialise ``path`` (a directory, regular file or symlink, not followed) as a NAR,
    passing the bytes to ``write`` in order, in pieces of at most ``chunk_size`` bytes of
    file contents (plus small framing pieces).

    ``observe``: see :data:`Observer` (used to verify each file's checksum in the same
    pass). Raises :class:`NarError` for unsupported file types, unreadable paths, and
    files whose size changes while being read.
    """
    w = _Writer(write, observe, chunk_size)
    w.token(MAGIC)
    w.node(os.fsencode(path), b"")


def nar_hash(path: PathLike, *, algorithm: str = "sha256",
             observe: Observer | None = None) -> bytes:
    """The raw digest (32 bytes for sha256) of ``path``'s NAR serialisation: the hash
    that ``nix hash path`` prints and a recursive fixed-output derivation pins.

    ``algorithm``: a :mod:`hashlib` name Nix also knows (``sha256``, ``sha512``,
    ``sha1``). Raises :class:`NarError` as :func:`write_nar`.
    """
    h = hashlib.new(algorithm)
    write_nar(path, h.update, observe=observe)
    return h.digest()


def sri(digest: bytes, algorithm: str = "sha256") -> str:
    """An SRI hash (W3C Subresource Integrity, as Nix prints it): ``"<algo>-"`` followed by
    the standard base64 (with padding) of the raw digest, e.g. ``sha256-47DEQpj8…=``."""
    return f"{algorithm}-{base64.b64encode(digest).decode('ascii')}"


def nar_hash_sri(path: PathLike, *, observe: Observer | None = None) -> str:
    """``path``'s NAR hash as an SRI sha256 string, identical to
    ``nix hash path --extra-experimental-features nix-command PATH``."""
    return sri(nar_hash(path, observe=observe))
