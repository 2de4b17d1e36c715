"""Where profile states live (standard library only: the no-op path uses this without
paying for the typed records of :mod:`activate.state`).

One JSON file per (hub dir, profile) in the state dir: ``--state-dir`` >
``$MODEL_REPO_STATE_DIR`` > platformdirs' ``user_state_dir("model-repo")``
(``$XDG_STATE_HOME/model-repo`` or ``~/.local/state/model-repo`` on Linux). The modules
pass the dir explicitly (Home Manager: ``xdg.stateHome``; devenv: its state dir; NixOS:
``/var/lib/model-repo``), which also keeps platformdirs off the no-op path.
"""

from __future__ import annotations

import os

# The no-op path must not import typing or collections (~10 ms): annotations are
# strings (PEP 563) and these names exist only for type checkers.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

#: 3: a record may carry a 9th and 10th field, ``other_kind`` and ``stamp``
#: (:class:`activate.state.Record`).
STATE_VERSION = 3


def state_dir(flag: str | None, environ: Mapping[str, str]) -> str:
    """The directory holding profile states (see the module docstring for precedence)."""
    if flag:
        return os.path.abspath(flag)
    override = environ.get("MODEL_REPO_STATE_DIR")
    if override:
        return os.path.abspath(override)
    import platformdirs  # only here: it costs ~15 ms, a third of the no-op path's budget

    return platformdirs.user_state_dir("model-repo", appauthor=False)


def state_file(directory: str, hub_dir: str, profile: str) -> str:
    """Path of the state of ``profile`` for ``hub_dir``: ``<dir>/<sha256[:32]>.json``."""
    import hashlib

    key = hashlib.sha256(f"{hub_dir}\0{profile}".encode("utf-8", "surrogateescape")).hexdigest()[:32]
    return os.path.join(directory, f"{key}.json")


#: Temporary files :func:`create_temp` made that are not yet renamed or removed; a
#: signal handler that ends the process at once (:mod:`activate.hub.signals`) removes
#: them with :func:`remove_temps`.
_LIVE_TEMPS: set[str] = set()


def create_temp(path: str, mode: int = 0o600) -> tuple[int, str]:
    """Create a new temporary file beside ``path``: ``.<name>.tmp-<16 random hex>``,
    opened for writing with ``O_EXCL | O_NOFOLLOW`` (a file or symlink planted under any
    name is never opened nor followed), ``mode`` masked by the umask. Returns ``(fd,
    temporary path)``; the caller renames or unlinks it, then calls
    :func:`forget_temp`. Raises OSError."""
    directory, base = os.path.split(path)
    for _ in range(100):
        tmp = os.path.join(directory, f".{base}.tmp-{os.urandom(8).hex()}")
        # Registered first: a signal handler running right after the file exists (before
        # the next statement) must find it.
        _LIVE_TEMPS.add(tmp)
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                         | os.O_CLOEXEC, mode)
        except BaseException as exc:
            _LIVE_TEMPS.discard(tmp)
            if isinstance(exc, FileExistsError):
                continue
            raise
        return fd, tmp
    raise FileExistsError(f"cannot create a temporary file beside {path}")  # pragma: no cover


def forget_temp(tmp: str) -> None:
    """``tmp`` (from :func:`create_temp`) was renamed or removed."""
    _LIVE_TEMPS.discard(tmp)


def remove_temps() -> None:
    """Unlink every temporary file :func:`create_temp` made that is still there (for a
    signal handler about to end the process; never raises)."""
    for tmp in list(_LIVE_TEMPS):
        try:
            os.unlink(tmp)
        except OSError:
            pass
        _LIVE_TEMPS.discard(tmp)


def write_if_changed(path: str, chunks: Iterable[bytes], *, durable: bool = False,
                     mode: int = 0o600) -> bool:
    """Write ``chunks`` to ``path`` atomically, streaming: a temporary name beside it
    (:func:`create_temp`: random, ``O_EXCL | O_NOFOLLOW``, so a symlink planted under a
    guessable name is never followed), then ``rename`` (which replaces a symlink at
    ``path`` itself, never its target). When the file already holds exactly these
    bytes (same SHA-256) it is left alone and False is returned. ``durable``: fsync before
    the rename (the state, which remembers what we own). ``mode``: of a new file, masked
    by the umask. Raises OSError (the temporary file is removed first).
    """
    import hashlib

    digest = hashlib.sha256()
    fd, tmp = create_temp(path, mode)
    try:
        with open(fd, "wb") as fh:
            for chunk in chunks:
                digest.update(chunk)
                fh.write(chunk)
            fh.flush()
            if file_digest(path) == digest.digest():
                os.unlink(tmp)
                return False
            if durable:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    finally:
        forget_temp(tmp)
    return True


def file_digest(path: str) -> bytes | None:
    """SHA-256 of the file at ``path``, read in 64 KiB chunks (a state of 10,000 models is
    a few MiB: a larger chunk only raises the run's peak memory); None if unreadable."""
    import hashlib

    digest = hashlib.sha256()
    try:
        with open(os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC), "rb") as fh:
            while chunk := fh.read(1 << 16):
                digest.update(chunk)
    except OSError:
        return None
    return digest.digest()
