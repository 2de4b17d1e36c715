"""The Nix binary-cache format of the persist folder: Nix's base-32, the store path of a
content-addressed (fixed-output) path, narinfo files and the check of one cache entry.

A binary cache (``nix copy --to file://DIR``) holds ``nix-cache-info``, one
``<store hash>.narinfo`` per store path (``Key: value`` lines: ``StorePath``, ``URL``,
``Compression``, ``FileHash``, ``FileSize``, ``NarHash``, ``NarSize``, ``References``,
``Deriver``, ``CA``, ``Sig``; Nix's ``NarInfo``) and the NAR it points to,
``nar/<file hash>.nar``. Standard library only; no Nix command runs here.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from typing import BinaryIO

from ..persistdir import narinfo_path
from .api import EXIT_ENVIRONMENT, Failure
from .nixstore import store_dir_of

_B32 = "0123456789abcdfghijklmnpqrsvwxyz"


def nix_base32(digest: bytes) -> str:
    """Nix's base-32 of ``digest`` (libutil ``Hash::to_string(Base32)``: little-endian
    bits, 5 at a time, most significant digit first, alphabet without e o u t)."""
    value = int.from_bytes(digest, "little")
    n = (len(digest) * 8 - 1) // 5 + 1
    return "".join(_B32[(value >> (5 * i)) & 31] for i in range(n - 1, -1, -1))


def nix_base32_decode(text: str, size: int = 32) -> bytes | None:
    """The ``size`` bytes :func:`nix_base32` printed as ``text``, or None if malformed."""
    if len(text) != (size * 8 - 1) // 5 + 1 or any(c not in _B32 for c in text):
        return None
    value = 0
    for c in text:
        value = (value << 5) | _B32.index(c)
    try:
        return value.to_bytes(size, "little")
    except OverflowError:
        return None


def fixed_output_path(store_dir: str, name: str, nar_sha256: bytes) -> str:
    """The store path of a recursive sha256 fixed-output path without references (what
    ``nix-store --add-fixed --recursive sha256`` and the fetchers make): libstore
    ``makeFixedOutputPath`` → ``makeStorePath("source", …)``: sha256 of
    ``source:sha256:<hex>:<store dir>:<name>``, folded to 20 bytes by XOR, base-32."""
    import hashlib

    fingerprint = f"source:sha256:{nar_sha256.hex()}:{store_dir}:{name}".encode()
    full = hashlib.sha256(fingerprint).digest()
    folded = bytearray(20)
    for i, b in enumerate(full):
        folded[i % 20] ^= b
    return f"{store_dir}/{nix_base32(bytes(folded))}-{name}"


def open_nofollow(path: str) -> BinaryIO:
    """``path`` opened for reading in binary mode, not through a symlink (``O_NOFOLLOW``:
    a link planted in a persist folder another user can write is an error, ELOOP,
    never read). Raises OSError."""
    return open(os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC), "rb")


def parse_narinfo(text: str) -> dict[str, str]:
    """A narinfo's ``Key: value`` lines as a dict (Nix's ``NarInfo`` format)."""
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition(": ")
        if sep:
            out[key] = value
    return out


def narinfo_hash(info: Mapping[str, str]) -> tuple[str, int]:
    """``(SRI NAR hash, NAR size)`` of a narinfo; raises :class:`Failure` (exit 3)."""
    import base64

    algo, _, b32 = info.get("NarHash", "").partition(":")
    digest = nix_base32_decode(b32) if algo == "sha256" else None
    size = info.get("NarSize", "")
    if digest is None or not size.isdigit():
        raise Failure(EXIT_ENVIRONMENT, f"the narinfo of {info.get('StorePath')} has no "
                      "usable NarHash/NarSize")
    return "sha256-" + base64.b64encode(digest).decode(), int(size)


def ca_verified(info: Mapping[str, str]) -> bool:
    """True when the narinfo's content address is the one its store path is made of
    (``CA: fixed:r:sha256:…`` equal to its NAR hash, no references, and
    :func:`fixed_output_path` of it is the path): importing it needs no trust, as the
    NAR is checked against that hash."""
    path = info.get("StorePath", "")
    algo, _, b32 = info.get("NarHash", "").partition(":")
    digest = nix_base32_decode(b32) if algo == "sha256" else None
    if digest is None or info.get("CA") != f"fixed:r:sha256:{b32}" or info.get("References"):
        return False
    name = os.path.basename(path).split("-", 1)[-1]
    return fixed_output_path(store_dir_of(path), name, digest) == path


def nar_file(directory: str, url: str) -> tuple[str | None, str]:
    """``(path, "")`` of the file a narinfo's ``URL`` names inside the cache
    ``directory``, or ``(None, why not)``: the URL must be relative, of plain names (no
    empty, ``.`` or ``..`` segment, no NUL), and every folder on the way a real folder
    of ``directory``, not a symbolic link (a link planted in a folder another user can
    write would lead reads, and the removal of a stale NAR, outside it). The last
    segment itself is checked by the caller (``lstat``; ``unlink`` never follows it)."""
    parts = url.split("/")
    if not url or "\0" in url or any(p in ("", ".", "..") for p in parts):
        return None, f"no usable URL line ({url!r:.80})"
    here = directory
    for part in parts[:-1]:
        here = os.path.join(here, part)
        try:
            st = os.lstat(here)
        except OSError:
            return os.path.join(directory, url), ""  # missing: reported as a missing NAR
        if not stat.S_ISDIR(st.st_mode):
            return None, f"{here} is not a folder (a symbolic link?)"
    return os.path.join(directory, url), ""


def check_cached(directory: str, store_path: str) -> tuple[dict[str, str] | None, str | None]:
    """Check the binary cache entry of ``store_path`` without reading the NAR through:
    the narinfo exists and names this path, the NAR file it points to exists with the
    recorded size. Returns ``(narinfo, None)`` or ``(narinfo or None, what is wrong)``."""
    path = narinfo_path(directory, store_path)
    try:
        with open_nofollow(path) as fh:
            info = parse_narinfo(fh.read().decode("utf-8"))
    except FileNotFoundError:
        return None, f"{os.path.basename(path)} is missing from {directory}"
    except (OSError, UnicodeDecodeError) as exc:
        return None, f"cannot read {path}: {exc}"
    if info.get("StorePath") != store_path:
        return None, (f"{path} is corrupt: it describes {info.get('StorePath')!r}, not "
                      f"{store_path}")
    nar, problem = nar_file(directory, info.get("URL", ""))
    if nar is None:
        return info, f"{path} is corrupt: {problem}"
    try:
        st = os.lstat(nar)
    except FileNotFoundError:
        return info, f"the NAR {nar} is missing"
    except OSError as exc:
        return info, f"cannot read the NAR {nar}: {exc.strerror}"
    if not stat.S_ISREG(st.st_mode):
        return info, f"the NAR {nar} is not a regular file (a symbolic link?)"
    size = st.st_size
    want = info.get("FileSize")
    if want is not None and want.isdigit() and int(want) != size:
        return info, f"the NAR {nar} has {size} bytes, its narinfo says {want} (truncated?)"
    return info, None


def persist_url(directory: str, compression: str | None = None) -> str:
    """The ``file://`` store URL of the folder ``directory`` for ``nix copy``, with
    ``?compression=`` when given (the folder's path must need no URL escaping:
    :func:`activate.persistdir.persist_dir` checks it)."""
    return f"file://{directory}" + (f"?compression={compression}" if compression else "")
