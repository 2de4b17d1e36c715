"""The no-op path: when the manifest is the same file as at the last complete run of
the same invocation and every link and ref it made still holds, print that run's
environment and stop.

A complete run leaves a receipt in the state dir (what it linked and printed). Reading
it needs neither ``json`` nor ``re`` (whose imports alone cost ~12 ms), nor pydantic,
filelock or structlog, nor platformdirs when the state dir is given (the modules give
it); nothing is written, not even the lock. A repeat activation of 100 models then costs
little more than the interpreter's own start-up.
"""

from __future__ import annotations

import errno
import os
import stat

from .statefile import state_dir, write_if_changed
from .tree import Below, verify

# The no-op path must not import typing or collections (~10 ms): annotations are
# strings (PEP 563) and these names exist only for type checkers.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Collection, Iterator, Mapping


def verify_records(hub_dir: str, records: list[Mapping[str, object]],
                   below: Below | None = None, check_store: bool = True) -> bool:
    """True when every record still holds on disk (the no-op check; standard library
    only, a few syscalls per record), and (``check_store``) every store path a snapshot
    names has its top folder as Nix made it (:func:`activate.storecheck.top_changed`,
    one ``lstat`` per store path). Entries are read relative to the hub dir's descriptor
    (``below``, or opened here), so a path of any length is checked."""
    own = below is None
    if below is None:
        below = Below.open(hub_dir)
        if below is None:
            return False
    try:
        return _verify(hub_dir, records, below, check_store)
    finally:
        if own:
            below.close()


def _verify(hub_dir: str, records: list[Mapping[str, object]], below: Below,
            check_store: bool) -> bool:
    from .storecheck import top_changed

    intact: dict[str, bool] = {}
    for rec in records:
        rel = str(rec["path"])
        kind = rec["kind"]
        try:
            if kind == "dir":
                if not stat.S_ISDIR(below.lstat(rel).st_mode):
                    return False
            elif kind == "snapshot":
                value = str(rec["value"])
                try:
                    if below.readlink(rel) != value:
                        return False
                except OSError as exc:
                    if exc.errno != errno.EINVAL or rec.get("created"):
                        return False
                    # A snapshot folder we did not make serves while it has every file.
                    if not (stat.S_ISDIR(below.lstat(rel).st_mode)
                            and verify(hub_dir, rel, value, below)):
                        return False
                if not os.path.isdir(value):
                    return False
                if check_store and not _intact(value, intact, top_changed):
                    return False
            elif kind == "tree":
                value = str(rec["value"])
                if not verify(hub_dir, rel, value, below):
                    return False
                # A file removed from the store path is no longer listed: verify cannot
                # see it; the top folder's mtime does.
                if check_store and not _intact(value, intact, top_changed):
                    return False
            elif kind == "ref":
                if below.read(rel, 64) != str(rec["value"]).encode():
                    return False
            else:
                return False
        except OSError:
            return False
    return True


def _intact(store_path: str, intact: dict[str, bool], top_changed: object) -> bool:
    """``top_changed(store_path) is None``, asked once per store path (``intact``)."""
    if store_path not in intact:
        intact[store_path] = top_changed(store_path) is None  # type: ignore[operator]
    return intact[store_path]


#: 3: a receipt written before the layout rule (a whole link into a store not mounted
#: read-only, activate.tree.file_by_file) does not answer, so the first run after an
#: update is a full one and links such a model file by file.
_MAGIC = "model-repo-receipt-3"


def _hub_choices(cache_flag: str | None, environ: Mapping[str, str]) -> str:
    """The hub dirs an invocation can resolve to, as absolute paths: the ``--cache-dir``
    value and huggingface_hub's default in ``environ``, resolved against the working
    directory and HOME as :mod:`activate.cachedir` does. A receipt answers only the same
    resolved choices (``--cache-dir hub`` from another folder is another cache)."""
    from .cachedir import default_hub_cache, flag_hub_dir

    flag = flag_hub_dir(cache_flag, environ) if cache_flag else ""
    return f"{flag}\x1f{os.path.abspath(default_hub_cache(environ))}"


def receipt_file(directory: str, manifest_path: str, cache_flag: str | None,
                 environ: Mapping[str, str], choices: str | None = None) -> str:
    """Where the receipt of activating ``manifest_path`` (with ``--cache-dir`` value
    ``cache_flag`` in ``environ``; ``choices``: :func:`_hub_choices` when already known)
    lives: ``<state dir>/receipt-<crc32>``. The name only spreads receipts out; the content
    says exactly which invocation it answers."""
    import zlib

    if choices is None:
        choices = _hub_choices(cache_flag, environ)
    key = f"{os.path.abspath(manifest_path)}\0{choices}".encode("utf-8", "surrogateescape")
    return os.path.join(directory, f"receipt-{zlib.crc32(key):08x}")


def _receipt_key(manifest_path: str, choices: str) -> list[str]:
    st = os.stat(manifest_path)
    identity = f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}"
    return [_MAGIC, os.path.abspath(manifest_path), choices, identity, ""]


def write_receipt(directory: str, manifest_path: str, cache_flag: str | None,
                  environ: Mapping[str, str], profile: str, hub_dir: str,
                  records: Collection[tuple[str, str, str, bool]],
                  env: Mapping[str, str]) -> None:
    """Record a complete activation for the no-op path; remove older receipts of the same
    profile and hub dir (earlier generations' manifests).

    ``records``: ``(kind, path relative to hub, value, created)`` as in the state (any
    sized iterable, read once).
    Fields are NUL-separated text (no value can hold NUL), read without ``json``/``re``;
    written a record at a time, and not replaced when unchanged.
    """
    choices = _hub_choices(cache_flag, environ)
    target = receipt_file(directory, manifest_path, cache_flag, environ, choices)
    remove_receipts(directory, profile, hub_dir, keep=target)

    def chunks() -> Iterator[bytes]:
        head = _receipt_key(manifest_path, choices) + [profile, hub_dir, str(len(records))]
        yield _encode(head, first=True)
        for kind, path, value, created in records:
            yield _encode([kind, path, value, "1" if created else ""])
        yield _encode([str(len(env))])
        for name, value in env.items():
            yield _encode([name, value])

    write_if_changed(target, chunks())  # a repeat run writes nothing


def _encode(fields: list[str], first: bool = False) -> bytes:
    return (("" if first else "\0") + "\0".join(fields)).encode("utf-8", "surrogateescape")


def remove_receipt(directory: str, manifest_path: str, cache_flag: str | None,
                   environ: Mapping[str, str]) -> None:
    """Forget the receipt of this invocation (the run was not complete)."""
    _remove(receipt_file(directory, manifest_path, cache_flag, environ))


def remove_receipts(directory: str, profile: str, hub_dir: str, keep: str | None = None) -> None:
    """Remove every receipt of ``profile`` for ``hub_dir`` (and unreadable ones) but
    ``keep``: deactivation, and older manifests of the same profile."""
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        path = os.path.join(directory, name)
        if name.startswith("receipt-") and path != keep and ".tmp-" not in name:
            head = _read_fields(path, head_only=True)
            if head is None or head[5:7] == [profile, hub_dir]:
                _remove(path)


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _read_fields(path: str, head_only: bool = False) -> list[str] | None:
    """The receipt's fields; with ``head_only``, at least its first 7 (key, profile,
    hub dir) without reading a large receipt whole."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read(1 << 16) if head_only else fh.read()
            if head_only and raw.count(b"\0") < 7:
                raw += fh.read()
    except OSError:
        return None
    fields = raw.decode("utf-8", "surrogateescape").split("\0")
    return fields if fields and fields[0] == _MAGIC else None


def try_noop(
    manifest_path: str,
    *,
    cache_flag: str | None,
    state_flag: str | None,
    environ: Mapping[str, str],
) -> dict[str, str] | None:
    """The environment of the last complete run of this same invocation when the
    manifest file is unchanged and every record still holds; None when a full run is
    needed (any doubt means None).

    Reads the manifest's identity (stat), one receipt and the cache entries it lists:
    no JSON, no regular expressions, no pydantic, filelock or structlog; writes nothing.
    """
    try:
        directory = state_dir(state_flag, environ)
        choices = _hub_choices(cache_flag, environ)
        fields = _read_fields(receipt_file(directory, manifest_path, cache_flag, environ, choices))
        if fields is None or fields[:5] != _receipt_key(manifest_path, choices):
            return None
        hub_dir = fields[6]
        count = int(fields[7])
        at = 8
        records = []
        for _ in range(count):
            kind, path, value, created = fields[at:at + 4]
            records.append({"kind": kind, "path": path, "value": value, "created": bool(created)})
            at += 4
        env_count = int(fields[at])
        pairs = fields[at + 1:at + 1 + 2 * env_count]
        if len(pairs) != 2 * env_count or at + 1 + 2 * env_count != len(fields):
            return None
    except (OSError, ValueError):
        return None
    if not verify_records(hub_dir, records):
        return None
    return dict(zip(pairs[0::2], pairs[1::2]))
