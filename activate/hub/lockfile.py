"""``model-repo.lock.json``: Hub models pinned per file, version 1.

The pydantic models below are the format's single definition;
``schemas/lockfile.schema.json`` is generated from them (``python -m
activate.hub.lockfile > schemas/lockfile.schema.json``) and a test fails when the two
drift. ``lib`` reads the same file (``lockFile = ./model-repo.lock.json;``: a model that
gives only ``source.huggingface.repo`` and ``ref`` takes its commit and file hashes from
the entry of its name).

Shape::

    {"version": 1,
     "models": {"<model name>": {
        "repo": "ORG/NAME", "repoType": "model" | "dataset", "ref": "main",
        "commit": "<40 hex>",
        "exactFiles": [...], "include": [...], "exclude": [...],   # the selection
        "quant": "Q4_K_M", "mmproj": "none" | "<path>",   # optional: ORG/NAME:QUANT
        "files": {"<path>": {"size": <bytes>, "hash": "sha256-<base64>",
                             "lfs": true | false, "blobId": "<git blob sha1>"}}}}}

Writes are atomic (a temporary file in the same folder, fsync, ``os.replace``), keys
sorted, so a rewrite with nothing changed leaves the bytes as they were; a symlinked
lock file is written through to its target, keeping its mode. Commands writing the
same lock file take turns (:func:`lock_file_turn`) and merge into what is there then.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterator
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..gguf import QUANT_RE
from ..naming import MODEL_NAME_RE, ref_error, repo_id_error
from ..srihash import SRI_PATTERN, shown, sri_hash_error
from .api import EXIT_BAD_INPUT, EXIT_ENVIRONMENT, Failure

LOCK_VERSION = 1
DEFAULT_LOCK_FILE = "model-repo.lock.json"


class LockedFile(BaseModel):
    """One file of a locked model: its size in bytes, the SRI hash of its bytes (flat
    sha256), whether that hash is the Hub's LFS sha256, and its git blob id (sha1, of
    the LFS pointer for LFS files) — ``update`` reuses a small file's hash while its
    blob id is unchanged instead of downloading it again."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    size: Annotated[int, Field(ge=0, description="bytes")]
    # The pattern is the schema's (anchored, exactly the hashes the rule accepts); the
    # validator gives the rule's reason and fix (activate/srihash.py).
    hash: Annotated[str, Field(json_schema_extra={"pattern": SRI_PATTERN},
                               description="SRI hash of the file's bytes, sha256-<base64> "
                                           "(or sha512-<base64>)")]
    lfs: bool
    blobId: Annotated[str | None, Field(pattern=r"^[0-9a-f]{40}$",
                                        description="git blob sha1")] = None

    @field_validator("hash")
    @classmethod
    def _hash(cls, v: str) -> str:
        why = sri_hash_error(v)
        if why is not None:
            raise ValueError(f"the hash {shown(v)} {why} (the SRI hash rule, "
                             "activate/srihash.py)")
        return v


class LockedModel(BaseModel):
    """One model: the repo, the ref it follows, the commit it is pinned to, the
    selection it was pinned with, and its files by path from the repo root."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    repo: Annotated[str, Field(description="Hub repo id ORG/NAME")]
    repoType: Literal["model", "dataset"] = "model"
    ref: Annotated[str, Field(description="branch or tag that `model-repo update` follows")]
    commit: Annotated[str, Field(pattern=r"^[0-9a-f]{40}$")]
    exactFiles: list[str] = []
    include: list[str] = []
    exclude: list[str] = []
    #: ``lock NAME ORG/NAME:QUANT``: the tag ``update`` selects by again at each new
    #: commit (``exactFiles`` holds what it selected at ``commit``), and the
    #: ``--mmproj`` choice: absent for the tag's own, ``"none"``, or a path.
    #: Optional (absent in entries without a tag), so the format stays version 1.
    quant: Annotated[str | None, Field(pattern=f"^{QUANT_RE}$",
                                       description="GGUF quantization tag")] = None
    mmproj: Annotated[str | None, Field(
        min_length=1, description="with quant: 'none' or an mmproj path; absent: the "
        "tag's own")] = None
    files: dict[str, LockedFile]

    @field_validator("repo")
    @classmethod
    def _repo(cls, v: str) -> str:
        err = repo_id_error(v)
        if err:
            raise ValueError(err)
        return v

    @field_validator("ref")
    @classmethod
    def _ref(cls, v: str) -> str:
        err = ref_error(v)
        if err:
            raise ValueError(err)
        return v

    @field_validator("files")
    @classmethod
    def _paths(cls, v: dict[str, LockedFile]) -> dict[str, LockedFile]:
        from ..repopath import repo_path_error, shown

        for path in v:
            why = repo_path_error(path)
            if why is not None:
                raise ValueError(f"the file path {shown(path)} {why} (the repo file path "
                                 "rule, activate/repopath.py)")
        return v


class LockFile(BaseModel):
    """The lock file: a version and the models by name (the names of the Nix
    ``models`` attribute set, ``MODEL_NAME_RE``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    version: Literal[1]
    models: dict[str, LockedModel] = {}

    @field_validator("models")
    @classmethod
    def _names(cls, v: dict[str, LockedModel]) -> dict[str, LockedModel]:
        bad = [n for n in v if not re.fullmatch(MODEL_NAME_RE, n)]
        if bad:
            raise ValueError(f"invalid model name {bad[0]!r}: use letters, digits and "
                             "'_.+-', starting with a letter, digit or '_' (the Nix "
                             "models' names)")
        return v


def json_schema() -> dict[str, object]:
    """The lock file's JSON Schema (draft 2020-12), generated from :class:`LockFile`."""
    from ..manifest import schema_of

    return schema_of(LockFile, "model-repo lock file")


def render_schema() -> str:
    """The schema as committed in ``schemas/lockfile.schema.json``."""
    from ..manifest import schema_text

    return schema_text(json_schema())


def read_lock(path: str, *, missing_ok: bool = False) -> LockFile:
    """Read and validate a lock file. A missing file is an empty lock when
    ``missing_ok``; otherwise, and for a file that is not valid JSON or not this format,
    raises :class:`Failure` (exit 2) naming the file and the field."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        if missing_ok:
            return LockFile(version=LOCK_VERSION)
        raise Failure(EXIT_BAD_INPUT, f"no lock file at {path}: create it with `model-repo "
                      "lock NAME ORG/NAME`, or give --lock-file PATH") from None
    except OSError as exc:
        raise Failure(EXIT_ENVIRONMENT, f"cannot read the lock file {path}: "
                      f"{exc.strerror}") from None
    try:
        return LockFile.model_validate_json(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}"
            for e in exc.errors()[:5])
        raise Failure(EXIT_BAD_INPUT, f"{path} is not a model-repo lock file (version "
                      f"{LOCK_VERSION}): {problems}; fix it, or remove the entry and run "
                      "`model-repo lock` again") from None


def render_lock(lock: LockFile) -> str:
    """The lock file's text: JSON, keys sorted, two-space indent, a final newline.
    ``quant`` and ``mmproj`` are left out when unset (an entry without a tag reads and
    writes as before they existed)."""
    doc = lock.model_dump(mode="json")
    for entry in doc["models"].values():
        for key in ("quant", "mmproj"):
            if entry.get(key) is None:
                entry.pop(key, None)
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"


def write_lock(path: str, lock: LockFile) -> None:
    """Write ``lock`` to ``path`` atomically: a reader sees the old file or the new one,
    never a part (:func:`activate.statefile.write_if_changed`: a random temporary name
    beside it, fsync, rename; nothing is written when the text is unchanged).

    A symlinked ``path`` is written through to its target (the link stays a link, as an
    editor saving the file keeps it), and an existing file keeps its permission bits
    (a 0600 lock file stays 0600); a new file is 0644 less the umask. Raises
    :class:`Failure` (exit 3) when the folder is not writable."""
    from ..statefile import write_if_changed

    real = os.path.realpath(path)
    try:
        mode = os.stat(real).st_mode & 0o7777
    except FileNotFoundError:
        mode = None
    except OSError as exc:
        raise Failure(EXIT_ENVIRONMENT, f"cannot read the lock file {path}: "
                      f"{exc.strerror or exc}") from None
    try:
        wrote = write_if_changed(real, [render_lock(lock).encode()], durable=True,
                                 mode=0o644 if mode is None else mode)
        if wrote and mode is not None and os.stat(real).st_mode & 0o7777 != mode:
            os.chmod(real, mode)  # the umask masked the temporary file's mode
    except OSError as exc:
        raise Failure(EXIT_ENVIRONMENT, f"cannot write the lock file {path}: "
                      f"{exc.strerror or exc}") from None


#: How long a command waits for another one writing the same lock file (seconds).
LOCK_WAIT = 120.0


@contextlib.contextmanager
def lock_file_turn(path: str) -> Iterator[None]:
    """Take turns with every other ``lock``/``update`` writing ``path``: an exclusive
    ``flock`` on the folder holding the lock file (its target's, for a symlink), held
    while the body re-reads the file, merges and writes it. The folder is locked rather
    than the file, because the write replaces the file (a lock on it would be on the
    old inode) and a lock file beside it would be left behind. Raises :class:`Failure`
    (exit 3) when the folder cannot be opened, or after :data:`LOCK_WAIT` seconds of
    another process holding it."""
    import fcntl
    import time

    folder = os.path.dirname(os.path.realpath(path)) or "."
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise Failure(EXIT_ENVIRONMENT, f"cannot open the lock file's folder {folder}: "
                      f"{exc.strerror or exc}") from None
    try:
        end = time.monotonic() + LOCK_WAIT
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > end:
                    raise Failure(EXIT_ENVIRONMENT, f"another model-repo has been writing "
                                  f"{path} for {LOCK_WAIT:g} s: retry when it is done") from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)  # releases the lock


if __name__ == "__main__":  # python -m activate.hub.lockfile > schemas/lockfile.schema.json
    import sys

    sys.stdout.write(render_schema())
