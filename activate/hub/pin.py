"""Per-file pinning: a repo at a commit pinned file by file from the Hub's own hashes.

Each selected file gets an SRI hash of its bytes (a flat sha256, what ``sha256sum``
prints, as Nix's ``fetchurl`` checks it):

- an LFS file: the sha256 the Hub publishes in its tree listing (``lfs.oid``, the
  git-lfs pointer's ``oid sha256:…``, git-lfs spec v1); nothing is downloaded;
- any other file (configs, tokenizers: small by the Hub's own LFS rule): downloaded from
  ``resolve/<commit>/<path>``, checked against the listing's git blob id
  (``sha1("blob <size>\\0" + bytes)``, git's object format) and its size, and hashed.

So pinning downloads at most the non-LFS files' total. The Nix side
(``lib/fetchers/hub-files.nix``) fetches each file with one fixed-output ``fetchurl`` of
the same URL and hash, and lays them out as a flat snapshot directory.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .api import EXIT_ENVIRONMENT, Failure, RemoteFile, Resolved


@dataclass(frozen=True)
class PinnedFile:
    """One file pinned for a per-file fetch: ``path`` from the repo root, ``size`` in
    bytes, ``hash`` the SRI hash of its bytes (``sha256-<base64>``), ``lfs`` whether the
    hash is the Hub's published LFS sha256 (True) or was computed from a download."""

    path: str
    size: int
    hash: str
    lfs: bool
    blob_id: str | None = None


def sri_from_hex(sha256_hex: str) -> str:
    """``sha256-<base64>`` (an SRI hash, as Nix writes it) of 64 hex characters; raises
    ValueError for anything else."""
    raw = bytes.fromhex(sha256_hex)
    if len(raw) != 32:
        raise ValueError(f"not a sha256: {sha256_hex!r}")
    return "sha256-" + base64.b64encode(raw).decode()


def hex_from_sri(sri_hash: str) -> str:
    """The 64 hex characters of a ``sha256-<base64>`` SRI hash; raises ValueError (the
    SRI hash rule's reason, :mod:`activate.srihash`, or "not a sha256" for sha512)."""
    from ..srihash import shown, sri_hash_error

    why = sri_hash_error(sri_hash)
    if why is not None:
        raise ValueError(f"the hash {shown(sri_hash)} {why}")
    if not sri_hash.startswith("sha256-"):
        raise ValueError(f"the hash {shown(sri_hash)} is not a sha256 SRI hash")
    return base64.b64decode(sri_hash[len("sha256-"):], validate=True).hex()


def file_url(endpoint: str, repo_id: str, repo_type: str, commit: str, path: str) -> str:
    """``<endpoint>/[datasets/]<repo>/resolve/<commit>/<path, percent-encoded>``, the URL
    huggingface_hub downloads a file from (its ``hf_hub_url``); the Nix fetcher builds
    the same one (``lib/fetchers/hub-files.nix``)."""
    from huggingface_hub import hf_hub_url

    return hf_hub_url(repo_id, path, repo_type=repo_type, revision=commit,
                      endpoint=endpoint)


def _download_hash(session: Any, res: Resolved, f: RemoteFile) -> str:
    """Download one non-LFS file (in memory chunks, nothing written), check its size and
    git blob id, return its sha256 hex. Reading stops one byte past the listed size (an
    endless body costs ``size + 1`` bytes), and at the per-file or the command's
    deadline; 5xx, network errors and 429 (``Retry-After``) are retried
    (:func:`activate.hub.transport.stream`). Raises :class:`Failure`."""
    from huggingface_hub.utils import hf_raise_for_status

    from .api import Deadline, FILE_TIMEOUT_ENV, printable
    from .transport import iter_body, stream

    url = file_url(session.endpoint, res.repo_id, res.repo_type, res.commit, f.path)
    doing = f"downloading {printable(f.path)}"
    per_file = Deadline(min(session.file_timeout, max(session.deadline.left(), 0.0)),
                        f"{FILE_TIMEOUT_ENV}=SECONDS (now {session.file_timeout:g})"
                        if session.file_timeout <= session.deadline.left()
                        else session.deadline.what)

    def fetch() -> tuple[int, str, str]:
        sha256 = hashlib.sha256()
        sha1 = hashlib.sha1(f"blob {f.size}\0".encode())
        n = 0
        with stream("GET", url, headers=session.headers(), deadline=per_file,
                    doing=doing) as r:
            hf_raise_for_status(r)
            for chunk in iter_body(r):
                chunk = chunk[:f.size + 1 - n]
                n += len(chunk)
                sha256.update(chunk)
                sha1.update(chunk)
                if n > f.size:
                    break  # longer than the listing says: no need to read more
                per_file.check(doing)
        return n, sha1.hexdigest(), sha256.hexdigest()

    n, blob_id, digest = session.call(doing, fetch, repo_id=res.repo_id,
                                      repo_type=res.repo_type, ref=res.commit)
    if n != f.size or (f.blob_id and blob_id != f.blob_id):
        got = f"more than {f.size} bytes" if n > f.size else f"{n} bytes, git blob id {blob_id}"
        raise Failure(EXIT_ENVIRONMENT, f"{printable(f.path)} of {res.repo_id} at "
                      f"{res.commit} does not match the Hub's listing ({got}; the Hub says "
                      f"{f.size} bytes, {f.blob_id}): retry, or check HF_ENDPOINT")
    return digest


def pin_files(session: Any, res: Resolved, chosen: Sequence[RemoteFile],
              log: Any, known: Mapping[str, str] | None = None) -> list[PinnedFile]:
    """Pin ``chosen`` (files of ``res``, a repo at a commit): LFS files by the Hub's
    published sha256, the others downloaded and hashed — unless ``known`` (git blob id
    -> SRI hash, from a lock file) already has that blob: a blob id names the bytes
    (git's object id), so its hash is reused without a download. Returns them in the
    order given. Raises :class:`Failure` on a Hub error or a download that does not
    match the listing (exit 3), on a gated repo without access (exit 2)."""
    from .progress import byte_bar

    out = []
    fetched = 0
    todo = sum(f.size for f in chosen if not f.lfs_sha256
               and not (known and f.blob_id and f.blob_id in known))
    bar = byte_bar(todo, f"Pinning {res.repo_id}") if todo else None
    for f in chosen:
        if f.lfs_sha256:
            try:
                out.append(PinnedFile(f.path, f.size, sri_from_hex(f.lfs_sha256), True,
                                      f.blob_id))
            except ValueError:
                raise Failure(EXIT_ENVIRONMENT, f"the Hub's listing gives {f.path} an LFS "
                              f"sha256 that is not 64 hex characters ({f.lfs_sha256!r}); "
                              "check HF_ENDPOINT") from None
            continue
        if known and f.blob_id and f.blob_id in known:
            out.append(PinnedFile(f.path, f.size, known[f.blob_id], False, f.blob_id))
            continue
        digest = _download_hash(session, res, f)
        fetched += f.size
        if bar is not None:
            bar.update(f.size)
        out.append(PinnedFile(f.path, f.size, sri_from_hex(digest), False, f.blob_id))
    if bar is not None:
        bar.close()
    log.info("pinned per file", files=len(out), lfs=sum(p.lfs for p in out),
             downloaded=fetched)
    return out


def render_files_nix(files: Sequence[PinnedFile], indent: str = "    ") -> list[str]:
    """Lines of the ``fileHashes = { "<path>" = "sha256-…"; … };`` attribute (each line
    commented with the size in bytes and ``lfs`` when the hash is the Hub's)."""
    from .prefetch import nix_string

    lines = [f"{indent}fileHashes = {{"]
    for p in files:
        note = f"  # {p.size} bytes" + (", lfs" if p.lfs else "")
        lines.append(f"{indent}  {nix_string(p.path)} = {nix_string(p.hash)};{note}")
    lines.append(f"{indent}}};")
    return lines


def render_per_file_nix(*, repo_id: str, repo_type: str, commit: str, ref: str | None,
                        date: str, include: Sequence[str], exclude: Sequence[str],
                        files: Sequence[PinnedFile], exact: Sequence[str] = ()) -> str:
    """The model definition for a per-file pin (``source.huggingface.fileHashes``, no
    ``hash``), ending with a newline; the other lines as
    :func:`activate.hub.prefetch.render_nix` prints them."""
    from .prefetch import render_nix

    text = render_nix(repo_id=repo_id, repo_type=repo_type, commit=commit, ref=ref,
                      date=date, include=include, exclude=exclude, sri_hash="",
                      files=exact)
    lines = text.rstrip("\n").split("\n")
    # drop `hash = "";`, put fileHashes before the closing `};` of source.huggingface
    lines = [ln for ln in lines if ln != '  hash = "";']
    close = lines.index("  };")
    lines[close:close] = render_files_nix(files)
    return "\n".join(lines) + "\n"
