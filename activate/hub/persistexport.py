"""``model-repo export``: find the store path of a model (what the profiles linked, else
store paths named as the fetcher names the repo), copy it into the persist folder and
record it in the manifest; and the export after ``prefetch --add-to-store`` with
``auto_persist``.

Compression defaults to ``none``: measured on this project's machines (Nix 2.8, two
cores) an 87 MB model took 81 s to export with Nix's default xz, 0.6 s uncompressed and
0.84 s with zstd for 7 % less space (weights barely compress). ``--compression zstd``
or ``xz`` choose otherwise.

Without ``nix copy`` (no ``nix`` on ``PATH``, or Nix before 2.4) the same folder layout
is written with ``nix-store --dump`` (:func:`dump_to_cache`).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import re
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import argparse

from ..persistdir import ConfigError, narinfo_path
from .api import EXIT_BAD_INPUT, EXIT_ENVIRONMENT, EXIT_OK, Failure, make_folder
from .binarycache import (check_cached, fixed_output_path, nar_file, narinfo_hash,
                          nix_base32, open_nofollow, persist_url)
from .nixstore import (copy_bar, DEFAULT_STORE_DIR, NIX_FLAGS, STORE_BASE, Nix, check_store_path,
                       copy_unusable, last_line, parse_hf_name, store_dir_of)
from .persistcli import COMPRESSIONS, repo_of
from .persistmanifest import HEX, Entry, locked, names_repo, read_manifest, write_manifest

@dataclass
class Candidate:
    """A store path that may hold ``repo_id``: its commit (40 hex, else the 12 of the
    store name), the refs the profiles' states give it, and its repo type."""

    store_path: str
    repo_id: str
    repo_type: str
    commit: str
    refs: set[str] = field(default_factory=set)


def _state_candidates(repo_id: str, repo_type: str | None, state_dir: str) -> list[Candidate]:
    """What the profiles in ``state_dir`` linked for ``repo_id`` (a bare NAME: for any
    ``ORG/NAME``, :func:`names_repo`): snapshot links give the store path and the full
    commit, ref records name commits."""
    from ..state import StateProblem, list_states

    types = [repo_type] if repo_type else ["model", "dataset"]

    def folder_repo(folder: str) -> tuple[str, str] | None:
        for t in types:  # <type>s--ORG--NAME (huggingface_hub's repo_folder_name)
            head = f"{t}s--"
            if folder.startswith(head):
                rid = folder[len(head):].replace("--", "/")
                if names_repo(repo_id, rid):
                    return rid, t
        return None

    found: dict[str, Candidate] = {}
    refs: dict[tuple[str, str], set[str]] = {}
    try:
        states = list_states(state_dir, aside=False)  # a lookup: renames nothing
    except StateProblem:
        states = []  # unreadable, or a newer model-repo's: no candidates from it
    for _path, st in states:
        for rec in st.records:
            folder, _, rest = rec.path.partition("/")
            which = folder_repo(folder) if rec.value else None
            if which is None:
                continue
            if rec.kind in ("snapshot", "tree") and rest.startswith("snapshots/"):
                commit = rest[len("snapshots/"):]
                found.setdefault(rec.value, Candidate(rec.value, which[0], which[1], commit))
            elif rec.kind == "ref" and rest.startswith("refs/"):
                refs.setdefault((which[0], rec.value), set()).add(rest[len("refs/"):])
    for cand in found.values():
        cand.refs |= refs.get((cand.repo_id, cand.commit), set())
    return list(found.values())


def _store_candidates(repo_id: str, store_dir: str) -> list[str]:
    """Store paths (valid or not) named as the fetcher names ``repo_id`` (a bare NAME:
    any ``ORG/NAME``, :func:`names_repo`)."""
    exact = "hf-" + repo_id.replace("/", "--") + "-"  # <hash>-hf-ORG--NAME-<12 hex>
    bare = "--" + repo_id + "-" if "/" not in repo_id else None  # …--NAME-<12 hex>
    try:
        names = os.listdir(store_dir)
    except OSError:
        return []
    out = []
    for name in names:
        hit = (len(name) == 33 + len(exact) + 12 and name[33:].startswith(exact)) or (
            bare is not None and name[-12 - len(bare):-12] == bare
            and name[32:36] == "-hf-")
        if hit and STORE_BASE.fullmatch(name):
            path = os.path.join(store_dir, name)
            parsed = parse_hf_name(path)
            if parsed and names_repo(repo_id, parsed[0]):
                out.append(path)
    return sorted(out)


@dataclass(frozen=True)
class NamedModel:
    """A model of an activated manifest: ``models.<name>`` and what it pins."""

    name: str
    repo_id: str
    repo_type: str
    revision: str
    refs: tuple[str, ...]
    path: str


def named_models(state_dir: str) -> list[NamedModel]:
    """The models of the manifests the profiles in ``state_dir`` last activated
    completely (each receipt names its manifest, usually a store path; see
    :mod:`activate.noop`). Unreadable receipts and manifests are skipped."""
    out: list[NamedModel] = []
    try:
        names = sorted(os.listdir(state_dir))
    except OSError:
        return out
    for fname in names:
        if not fname.startswith("receipt-") or ".tmp-" in fname:
            continue
        try:
            with open(os.path.join(state_dir, fname), "rb") as fh:
                head = fh.read(1 << 16).split(b"\0", 2)
            with open(head[1].decode("utf-8", "surrogateescape"), "rb") as fh:
                doc = json.loads(fh.read())
            models = doc["models"]
        except (OSError, IndexError, ValueError, KeyError, TypeError):
            continue
        if not isinstance(models, dict):
            continue
        for name, m in models.items():
            if isinstance(m, dict) and isinstance(m.get("path"), str) and \
                    isinstance(m.get("repoId"), str):
                out.append(NamedModel(name, m["repoId"], str(m.get("repoType") or "model"),
                                      str(m.get("revision") or ""),
                                      tuple(m.get("refs") or ("main",)), m["path"]))
    return out


def matches_revision(cand: Candidate, revision: str) -> bool:
    """True when ``revision`` is one of ``cand``'s refs or a prefix of its commit (7 to
    40 hex digits, compared over the shorter of the two)."""
    if revision in cand.refs:
        return True
    if HEX.fullmatch(revision):
        n = min(len(revision), len(cand.commit))
        return cand.commit[:n] == revision[:n]
    return False


def locate(nix: Nix, *, repo_id: str, repo_type: str | None, revision: str | None,
           state_dir: str, store_dir: str) -> Candidate:
    """The one valid store path holding ``repo_id`` at ``revision`` (a commit or a prefix
    of at least 7 hex digits, or a ref a profile's state records; None: the only one,
    else the one ``main`` names). Looks at what the profiles in ``state_dir`` linked,
    then at store paths named as the fetcher names the repo. Raises :class:`Failure`:
    exit 2 when none or several match (the message lists them and how to choose)."""
    cands = {c.store_path: c for c in _state_candidates(repo_id, repo_type, state_dir)}
    for path in _store_candidates(repo_id, store_dir):
        if path not in cands:
            parsed = parse_hf_name(path)
            assert parsed is not None
            cands[path] = Candidate(path, parsed[0], repo_type or "model", parsed[1])
    if any(c.repo_id == repo_id for c in cands.values()):  # the id as given comes first
        cands = {p: c for p, c in cands.items() if c.repo_id == repo_id}
    valid = nix.valid(sorted(cands))
    pool = [cands[p] for p in sorted(valid)]
    if revision is not None:
        every = pool
        pool = [c for c in pool if matches_revision(c, revision)]
        if not pool and every and not HEX.fullmatch(revision):
            listing = "; ".join(f"{c.store_path} (commit {c.commit[:12]})" for c in every)
            raise Failure(EXIT_BAD_INPUT, f"no profile records the ref {revision!r} of "
                          f"{repo_id}, and export works offline: give the commit "
                          f"(--revision <7+ hex digits>) of one of {listing}")
    elif len(pool) > 1:
        main = [c for c in pool if "main" in c.refs]
        pool = main if len(main) == 1 else pool
    at = f" at {revision}" if revision else ""
    if not pool:
        gone = sorted(set(cands) - valid)
        raise Failure(EXIT_BAD_INPUT, f"no store path of {repo_id}{at} is in the store"
                      + (f" (garbage-collected: {', '.join(gone)})" if gone else "")
                      + f": build it, or `model-repo prefetch {repo_id} --add-to-store"
                      + (f" --revision {revision}" if revision else "") + "`, then export; "
                      "or give the path with --store-path")
    if len(pool) > 1 and len({c.repo_id for c in pool}) > 1:
        ids = sorted({c.repo_id for c in pool})
        raise Failure(EXIT_BAD_INPUT, f"{repo_id!r} names several repos in the store "
                      f"({', '.join(ids)}): give the full repo id ORG/NAME")
    if len(pool) > 1:
        listing = "; ".join(f"{c.store_path} (commit {c.commit[:12]}"
                            + (f", refs {', '.join(sorted(c.refs))}" if c.refs else "") + ")"
                            for c in pool)
        raise Failure(EXIT_BAD_INPUT, f"several store paths hold {repo_id}{at}: {listing}; "
                      "choose one with --revision COMMIT or --store-path PATH")
    return pool[0]


def _stale_or_damaged(nix: Nix, directory: str, store_path: str,
                      info: Mapping[str, str]) -> str | None:
    """Why the cache entry of the valid ``store_path`` cannot be kept, or None: its
    NarHash is not the store's (``nix-store -q --hash``), or the NAR file's sha256 is
    not its FileHash (read through once: cheaper than copying it again)."""
    import hashlib

    proc = nix.run(nix.nix_store, "--query", "--hash", store_path)
    if proc.returncode == 0 and proc.stdout.strip() != info.get("NarHash"):
        return f"its NarHash {info.get('NarHash')} is not the store's {proc.stdout.strip()}"
    algo, _, want = info.get("FileHash", "").partition(":")
    if algo != "sha256":
        return None
    digest = hashlib.sha256()
    nar = os.path.join(directory, info["URL"])  # checked by check_cached
    try:
        with open_nofollow(nar) as fh:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
    except OSError as exc:
        return f"cannot read {nar}: {exc.strerror}"
    if nix_base32(digest.digest()) != want:
        return f"the NAR {nar} does not match its FileHash (damaged)"
    return None


def _forget_cached(directory: str, store_path: str, info: Mapping[str, str] | None, *,
                   nar_bad: bool) -> None:
    """Remove ``store_path``'s narinfo and its NAR: always when ``nar_bad``, else unless
    another narinfo names the same NAR (identical contents at two store paths)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(narinfo_path(directory, store_path))
    url = (info or {}).get("URL", "")
    nar, _ = nar_file(directory, url)
    if nar is None:
        return
    for name in [] if nar_bad else os.listdir(directory):
        if name.endswith(".narinfo"):
            with contextlib.suppress(OSError), open_nofollow(os.path.join(directory,
                                                                          name)) as fh:
                if f"URL: {url}\n".encode() in fh.read():
                    return
    with contextlib.suppress(FileNotFoundError):
        os.unlink(nar)


def export_path(nix: Nix, directory: str, store_path: str, *, repo_id: str, repo_type: str,
                revision: str, ref: str | None = None, files: Sequence[str] = (),
                include: Sequence[str] = (), exclude: Sequence[str] = (),
                names: Sequence[str] = (), compression: str = "none",
                log: Any = None) -> Entry:
    """Copy the valid ``store_path`` into the persist folder ``directory`` (created when
    missing) and record it in the manifest, replacing an older entry for the same path.
    Returns the entry. Raises :class:`Failure` (exit 3) when ``nix copy`` fails or the
    folder cannot be written."""
    if compression not in COMPRESSIONS:
        raise Failure(EXIT_BAD_INPUT, f"--compression: {compression!r} is not one of "
                      f"{', '.join(COMPRESSIONS)}")
    make_folder(directory, "persist folder", "set another one (--persist-dir, "
                "MODEL_REPO_PERSIST_DIR or persist_dir= in the config file)")
    nar_dir = os.path.join(directory, "nar")
    if os.path.islink(nar_dir):
        raise Failure(EXIT_ENVIRONMENT, f"{nar_dir} is a symbolic link, which model-repo "
                      "never writes through: remove it (and check who can write "
                      f"{directory})")
    shared = writable_by_others(directory) or writable_by_others(nar_dir)
    with locked(directory):
        info, problem = check_cached(directory, store_path)
        if problem is None and info is not None:
            problem = _stale_or_damaged(nix, directory, store_path, info)
        if problem is not None and os.path.lexists(narinfo_path(directory, store_path)):
            # nix copy skips a path whose narinfo exists: drop the bad entry first.
            if log:
                log.warning(f"replacing the persisted copy: {problem}", path=store_path)
            _forget_cached(directory, store_path, info,
                           nar_bad=problem.startswith(("the NAR ", "cannot read ")))
            info = None
        if problem is None and info is not None:
            if log:
                log.info("already in the persist folder", path=store_path, dir=directory)
        elif nix.nix is not None and not shared and not copy_unusable(proc := nix.run(
                nix.nix, *NIX_FLAGS, "copy", "--to", persist_url(directory, compression),
                store_path, bar=copy_bar(nix, store_path, None, "Exporting"))):
            if proc.returncode != 0:
                raise Failure(EXIT_ENVIRONMENT, f"nix copy {store_path} to {directory} "
                              "failed: " + last_line(proc.stderr))
            info, problem = check_cached(directory, store_path)
            if problem is not None or info is None:
                raise Failure(EXIT_ENVIRONMENT, f"nix copy reported success but {problem}")
            if log:
                log.info("exported", path=store_path, dir=directory, compression=compression)
        else:
            if shared and nix.nix is not None and log:
                log.warning("the persist folder can be written by other users: exporting "
                            "with model-repo's own writer, which never follows a planted "
                            "link (nix-store --dump), not nix copy", dir=directory)
            if compression != "none" and log:
                log.warning(f"without nix copy the NAR is stored uncompressed, not "
                            f"{compression}")
            try:
                info = dump_to_cache(nix, directory, store_path)
            except OSError as exc:
                raise Failure(EXIT_ENVIRONMENT, f"cannot write {store_path} into "
                              f"{directory}: {exc.strerror or exc}") from exc
            if log:
                log.info("exported with nix-store --dump", path=store_path, dir=directory)
        nar_hash, nar_size = narinfo_hash(info)
        entry = Entry(repo_id, repo_type, revision, store_path, nar_hash, nar_size,
                      datetime.datetime.now(datetime.timezone.utc).isoformat(
                          timespec="seconds").replace("+00:00", "Z"),
                      ref, list(include), list(exclude), list(files), sorted(set(names)))
        entries = [e for e in read_manifest(directory) if e.store_path != store_path]
        try:
            write_manifest(directory, entries + [entry])
        except OSError as exc:
            raise Failure(EXIT_ENVIRONMENT, f"cannot write the manifest in {directory}: "
                          f"{exc.strerror or exc}") from exc
    return entry


def writable_by_others(path: str) -> bool:
    """True when a user other than this process's could create or replace entries in the
    folder ``path`` (owned by another user, or group- or world-writable; False when it
    does not exist). ``nix copy --to`` writes there through temporary names it does not
    create exclusively (``<file>.tmp.<pid>.<n>``, followed if planted as links), so
    :func:`export_path` writes such a folder with :func:`dump_to_cache` instead."""
    import stat

    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    return st.st_uid != os.geteuid() or bool(st.st_mode & (stat.S_IWGRP | stat.S_IWOTH))


def dump_to_cache(nix: Nix, directory: str, store_path: str) -> dict[str, str]:
    """Write ``store_path`` into the binary cache ``directory`` as ``nix copy`` would,
    with ``nix-store --dump`` (uncompressed NAR, ``nar/<sha256 base-32>.nar``, then the
    narinfo, then ``nix-cache-info`` when missing). Returns the narinfo's fields.
    Only for a path without references (a model's flat directory of files; a url model's
    directory of links to other paths needs ``nix copy``, which exports the closure).
    Raises :class:`Failure` (exit 3)."""
    import hashlib

    refs = nix.run(nix.nix_store, "--query", "--references", store_path).stdout.split()
    if refs:
        raise Failure(EXIT_ENVIRONMENT, f"{store_path} refers to other store paths "
                      f"({', '.join(refs[:3])}{', …' if len(refs) > 3 else ''}), whose "
                      "closure only `nix copy` exports: install Nix 2.4 or later (the `nix` "
                      "command)")
    from ..statefile import create_temp, forget_temp, write_if_changed
    from .signals import on_interrupt

    nar_dir = os.path.join(directory, "nar")
    os.makedirs(nar_dir, exist_ok=True)
    if os.path.islink(nar_dir):
        raise Failure(EXIT_ENVIRONMENT, f"{nar_dir} is a symbolic link, which model-repo "
                      "never writes through: remove it (and check who can write "
                      f"{directory})")
    from .progress import byte_bar, enabled

    total = 0
    if enabled():  # the NAR's size, for the bar
        with contextlib.suppress(ValueError):
            total = int(nix.run(nix.nix_store, "--query", "--size", store_path).stdout or 0)
    fd, tmp = create_temp(os.path.join(nar_dir, "dump"), 0o644)
    digest = hashlib.sha256()
    size = 0
    try:
        with subprocess.Popen([nix.nix_store, "--dump", store_path], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, stdin=subprocess.DEVNULL) as proc, \
                on_interrupt.child(proc), open(fd, "wb") as out, \
                byte_bar(total, "Exporting " + os.path.basename(store_path)[33:]) as bar:
            assert proc.stdout is not None and proc.stderr is not None
            while chunk := proc.stdout.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
                size += len(chunk)
                bar.update(len(chunk))
            err = proc.stderr.read().decode(errors="replace")
        if proc.returncode != 0:
            raise Failure(EXIT_ENVIRONMENT, f"nix-store --dump {store_path} failed: "
                          + last_line(err))
        b32 = nix_base32(digest.digest())
        nar = os.path.join(nar_dir, f"{b32}.nar")
        os.replace(tmp, nar)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        forget_temp(tmp)
    deriver = nix.run(nix.nix_store, "--query", "--deriver", store_path).stdout.strip()
    info = {"StorePath": store_path, "URL": f"nar/{b32}.nar", "Compression": "none",
            "FileHash": f"sha256:{b32}", "FileSize": str(size), "NarHash": f"sha256:{b32}",
            "NarSize": str(size), "References": ""}
    if deriver.startswith("/"):
        info["Deriver"] = os.path.basename(deriver)
    name = os.path.basename(store_path).split("-", 1)[1]
    if fixed_output_path(store_dir_of(store_path), name, digest.digest()) == store_path:
        info["CA"] = f"fixed:r:sha256:{b32}"
    write_if_changed(narinfo_path(directory, store_path),
                     ["".join(f"{k}: {v}\n" for k, v in info.items()).encode()], mode=0o644)
    cache_info = os.path.join(directory, "nix-cache-info")
    if not os.path.lexists(cache_info):
        write_if_changed(cache_info, [f"StoreDir: {store_dir_of(store_path)}\n".encode()],
                         mode=0o644)
    return info


def export_after_prefetch(environ: Mapping[str, str], log: Any, *, store_path: str,
                          repo_id: str, repo_type: str, commit: str, ref: str | None,
                          files: Sequence[str], include: Sequence[str],
                          exclude: Sequence[str]) -> Entry | None:
    """With ``auto_persist`` on: export what ``prefetch --add-to-store`` just added. None
    when auto-persist is off. Raises :class:`Failure` (exit 2 bad setting, 3 export
    failed)."""
    from .config import load_config

    try:
        cfg = load_config(environ)
    except ConfigError as exc:
        raise Failure(EXIT_BAD_INPUT, str(exc)) from exc
    if not cfg.auto_persist:
        return None
    entry = export_path(Nix.find(environ), cfg.persist_dir, store_path, repo_id=repo_id,
                        repo_type=repo_type, revision=commit, ref=ref, files=files,
                        include=include, exclude=exclude, log=log)
    log.info("exported to the persist folder (auto_persist)", path=store_path,
             dir=cfg.persist_dir)
    return entry


def run_export(args: argparse.Namespace, environ: Mapping[str, str], log: Any, nix: Nix,
               directory: str) -> int:
    """``model-repo export``: find REPO's store path (a model name, a repo id and
    revision, or a store path), copy it into ``directory`` and print it (or the entry
    with ``--json``). Returns the exit status; raises :class:`Failure`."""
    from ..statefile import state_dir

    states = state_dir(args.state_dir, environ)
    named = named_models(states)
    by_name = [m for m in named if m.name == args.repo and "/" not in args.repo]
    if by_name and not args.store_path:
        paths = sorted({m.path for m in by_name})
        if len(paths) > 1:
            raise Failure(EXIT_BAD_INPUT, f"the model name {args.repo!r} means several "
                          f"store paths in your activated manifests ({', '.join(paths)}): "
                          "give the repo id and --revision, or --store-path")
        m = by_name[0]
        if args.revision and not matches_revision(
                Candidate(m.path, m.repo_id, m.repo_type, m.revision, set(m.refs)),
                args.revision):
            raise Failure(EXIT_BAD_INPUT, f"model {m.name!r} is {m.repo_id} at "
                          f"{m.revision}, not --revision {args.revision}")
        repo_id, repo_type, revision, path = m.repo_id, m.repo_type, m.revision, m.path
    else:
        repo_id, repo_type, revision, path = repo_of(args, environ)
    if args.store_path:
        path = check_store_path(args.store_path, "--store-path")
    if path is not None:
        if not nix.valid([path]):
            raise Failure(EXIT_BAD_INPUT, f"{path} is not a valid store path (garbage-"
                          "collected, or never built): build it first")
        parsed = parse_hf_name(path)
        if repo_id is None:
            if parsed is None:
                raise Failure(EXIT_BAD_INPUT, f"{path} is not named as the fetcher names a "
                              "Hub repo (hf-ORG--NAME-<commit>): give the repo too "
                              "(model-repo export ORG/NAME --store-path PATH --revision COMMIT)")
            repo_id = parsed[0]
        commit = revision if revision and re.fullmatch(r"[0-9a-f]{40}", revision) else (
            parsed[1] if parsed else revision)
        if not commit:
            raise Failure(EXIT_BAD_INPUT, "--revision COMMIT: the commit of this store path "
                          "(its name does not tell it)")
        cand = Candidate(path, repo_id, repo_type or "model", commit)
    else:
        assert repo_id is not None
        store_dir = environ.get("NIX_STORE_DIR") or DEFAULT_STORE_DIR
        cand = locate(nix, repo_id=repo_id, repo_type=repo_type, revision=revision,
                      state_dir=states, store_dir=store_dir)
        if revision and re.fullmatch(r"[0-9a-f]{40}", revision) and len(cand.commit) < 40:
            cand.commit = revision
    ref = revision if revision and revision in cand.refs else (
        "main" if "main" in cand.refs else None)
    names = [m.name for m in named if m.path == cand.store_path]
    if by_name and ref is None and "main" in by_name[0].refs:
        ref = "main"
    entry = export_path(nix, directory, cand.store_path, repo_id=cand.repo_id,
                        repo_type=repo_type or cand.repo_type, revision=cand.commit, ref=ref,
                        files=args.files, include=args.include, exclude=args.exclude,
                        names=names, compression=args.compression, log=log)
    if args.json:
        sys.stdout.write(json.dumps(entry.to_json(), indent=2) + "\n")
    else:
        sys.stdout.write(f"{entry.store_path}\n")
    log.info("exported", repo=entry.repo_id, revision=entry.revision, dir=directory,
             size=entry.nar_size)
    return EXIT_OK
