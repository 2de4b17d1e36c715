"""``model-repo lock`` and ``model-repo update``: the lock file's entries, pinned per file.

``lock NAME REPO`` resolves the ref, pins the selected files from the Hub's own hashes
(:func:`activate.hub.pin.pin_files`) and writes the entry ``NAME`` of the lock file
(:mod:`activate.hub.lockfile`). ``update [NAME…]`` moves each named model (default:
all) to its ref's current commit and prints what changed: files added, removed and
changed, and the bytes a build will download (the added and changed files; an unchanged
file keeps its store path). Small files whose git blob id did not change are not
downloaded again (their hash is reused).

Every model is resolved and pinned before anything is written: any error (repo gone,
gated without a token, network) leaves the lock file as it was; the write itself is
atomic (:func:`activate.hub.lockfile.write_lock`). ``--dry-run`` writes nothing.
``update --check`` only resolves the refs and exits 1 when the lock file is behind
one of them (for CI jobs), 0 when it is current.
Concurrent commands on one lock file take turns for the write and merge into the file
as it is then (:func:`activate.hub.lockfile.lock_file_turn`): ``lock NAME`` sets its
entry, ``update`` moves an entry only if no other command changed it meanwhile.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .api import (DEFAULT_TIMEOUT, EXIT_BAD_INPUT, EXIT_OK, GATED_NO_TOKEN, TIMEOUT_ENV,
                  Failure, HubSession, Resolved, printable, timeout_setting)
from .ggufsel import with_gguf
from .selection import Selection, select_files, selection
from .lockfile import (LOCK_VERSION, LockedFile, LockedModel, LockFile, lock_file_turn,
                       read_lock, write_lock)
from .prefetch import human_size

#: ``update --check``: the lock file is behind a ref it follows.
EXIT_BEHIND = 1
#: ``--lock-file`` when not given (:mod:`activate.hub.cli`).
DEFAULT_LOCK = "model-repo.lock.json"


@dataclass
class Change:
    """What moving one model from its locked commit (``old``, None: a new entry) to
    ``new`` changes: paths added/removed/changed, and the bytes of the added and changed
    files (what a build downloads)."""

    name: str
    old: LockedModel | None
    new: LockedModel
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)

    @property
    def download_bytes(self) -> int:
        return sum(self.new.files[p].size for p in self.added + self.changed)

    @property
    def moved(self) -> bool:
        return self.old is None or self.old != self.new


def diff(name: str, old: LockedModel | None, new: LockedModel) -> Change:
    """The :class:`Change` between two entries of one model (paths sorted)."""
    before = old.files if old is not None else {}
    return Change(name, old, new,
                  added=sorted(set(new.files) - set(before)),
                  removed=sorted(set(before) - set(new.files)),
                  changed=sorted(p for p in set(new.files) & set(before)
                                 if new.files[p].hash != before[p].hash))


def pin_entry(session: HubSession, sel: Selection, log: Any, old: LockedModel | None,
              res: Resolved | None = None) -> LockedModel:
    """Resolve ``sel`` (unless ``res`` is its resolution already) and pin its files per
    file; a lock entry. ``old`` (the model's current entry) lends the hashes of small
    files whose git blob id is unchanged. Raises :class:`Failure`."""
    from .pin import pin_files

    if res is None:
        res = session.resolve(sel.repo_id, sel.repo_type, sel.revision,
                              paths=sel.only_files)
    if res.ref is None:
        raise Failure(EXIT_BAD_INPUT, f"--revision {sel.revision!r} is a commit: a lock entry "
                      "follows a branch or tag (main, v1.0) that `model-repo update` moves "
                      "along; give one")
    if "/" not in res.repo_id:
        raise Failure(EXIT_BAD_INPUT, f"invalid repo id {res.repo_id!r}: the Nix options "
                      "take a full repo id ORG/NAME, and the Hub gave no other name for it")
    from ..naming import ref_error

    err = ref_error(res.ref)
    if err:
        raise Failure(EXIT_BAD_INPUT, f"--revision {res.ref!r}: {err}; a lock entry's ref is "
                      "written to the hub cache as refs/<ref>")
    sel = with_gguf(res, sel)  # ORG/NAME:QUANT -> exact files (exactFiles)
    chosen = select_files(res, sel)
    if not chosen:
        raise Failure(EXIT_BAD_INPUT, f"no file of {res.repo_id} at {res.commit} matches "
                      f"--include {list(sel.include)} --exclude {list(sel.exclude)} "
                      f"(`model-repo ls {res.repo_id}` lists them)")
    if res.gated and not session.has_token:
        raise Failure(EXIT_BAD_INPUT, f"{GATED_NO_TOKEN}; then accept its conditions on "
                      f"{session.page(res.repo_id, res.repo_type)}")
    known = {}
    if old is not None:
        known = {f.blobId: f.hash for f in old.files.values() if f.blobId and not f.lfs}
    pinned = pin_files(session, res, chosen, log, known)
    return LockedModel(
        repo=res.repo_id, repoType=res.repo_type, ref=res.ref, commit=res.commit,
        exactFiles=list(sel.files), include=list(sel.include), exclude=list(sel.exclude),
        **_gguf_entry(sel),
        files={p.path: LockedFile(size=p.size, hash=p.hash, lfs=p.lfs, blobId=p.blob_id)
               for p in pinned})


def _gguf_entry(sel: Selection) -> dict[str, str]:
    """A lock entry's ``quant`` and ``mmproj`` fields for ``sel`` (none without a tag;
    ``mmproj`` only when ``--mmproj`` chose: ``"none"`` or the path)."""
    from .ggufsel import NO_MMPROJ

    if sel.quant is None:
        return {}
    fields = {"quant": sel.quant}
    if sel.mmproj != "auto":
        fields["mmproj"] = NO_MMPROJ if sel.mmproj is None else sel.mmproj
    return fields


def entry_selection(old: LockedModel) -> Selection:
    """The :class:`Selection` ``update`` pins a lock entry with at its ref's new commit:
    an entry with a ``quant`` selects by its tag (and ``mmproj`` choice) again among the
    new commit's files, so a renamed or re-split quantization is followed; ``exactFiles``
    is then only what the tag picked last time. Otherwise the entry's own selection."""
    from .ggufsel import NO_MMPROJ

    if old.quant is None:
        return Selection(old.repo, old.repoType, old.ref, tuple(old.exactFiles),
                         tuple(old.include), tuple(old.exclude))
    mmproj = "auto" if old.mmproj is None else None if old.mmproj == NO_MMPROJ else old.mmproj
    return Selection(old.repo, old.repoType, old.ref, (), tuple(old.include),
                     tuple(old.exclude), quant=old.quant, mmproj=mmproj)


def run_lock(args: argparse.Namespace, environ: Mapping[str, str], log: Any) -> int:
    """``model-repo lock NAME REPO``: pin REPO at its ref and write it as entry NAME of
    ``--lock-file`` (created when missing; the other entries are kept). Raises
    :class:`Failure`."""
    from ..naming import MODEL_NAME_RE

    if not re.fullmatch(MODEL_NAME_RE, args.name):
        raise Failure(EXIT_BAD_INPUT, f"NAME {args.name!r}: give the model's name in the Nix "
                      "models set (letters, digits, '_.+-'; starting with a letter, digit or "
                      "'_')")
    sel = selection(args, environ)
    lock = read_lock(args.lock_file, missing_ok=True)  # a broken file fails before the Hub
    session = HubSession(environ, log, timeout_setting(environ, TIMEOUT_ENV, DEFAULT_TIMEOUT))
    old = lock.models.get(args.name)
    entry = pin_entry(session, sel, log, old if old is not None and old.repo == sel.repo_id
                      else None)
    change = diff(args.name, old, entry)
    if change.moved:
        with lock_file_turn(args.lock_file):  # merge into the file as it is now
            now = read_lock(args.lock_file, missing_ok=True)
            write_lock(args.lock_file, LockFile(version=LOCK_VERSION,
                                                models={**now.models, args.name: entry}))
    _report(args, [change], dry_run=False)
    return EXIT_OK


def run_update(args: argparse.Namespace, environ: Mapping[str, str], log: Any) -> int:
    """``model-repo update [NAME…] [--dry-run]``: move the named models (default: all) of
    ``--lock-file`` to their refs' current commits and print what changed. Nothing is
    written on any error, nor with ``--dry-run``. Raises :class:`Failure`."""
    lock = read_lock(args.lock_file)
    names = list(dict.fromkeys(args.names)) or sorted(lock.models)
    unknown = [n for n in names if n not in lock.models]
    if unknown:
        raise Failure(EXIT_BAD_INPUT, f"{', '.join(unknown)}: not in {args.lock_file} (it "
                      f"has {', '.join(sorted(lock.models)) or 'no model'}); add a model "
                      "with `model-repo lock NAME ORG/NAME`")
    session = HubSession(environ, log, timeout_setting(environ, TIMEOUT_ENV, DEFAULT_TIMEOUT))
    if getattr(args, "check", False):
        return _check(args, lock, names, session)
    changes = []
    for name in names:
        old = lock.models[name]
        sel = entry_selection(old)
        info = session.resolve(old.repo, old.repoType, old.ref, paths=sel.only_files)
        if info.commit == old.commit:
            changes.append(diff(name, old, old))
            continue
        changes.append(diff(name, old, pin_entry(session, sel, log, old, info)))
    if not args.dry_run and any(c.moved for c in changes):
        with lock_file_turn(args.lock_file):  # merge into the file as it is now
            now = read_lock(args.lock_file)
            models = dict(now.models)
            for c in changes:
                if not c.moved:
                    continue
                if now.models.get(c.name) != c.old:  # another command changed it meanwhile
                    log.warning("kept the entry another command wrote meanwhile",
                                model=c.name, lockFile=args.lock_file)
                    c.new, c.added, c.removed, c.changed = c.old, [], [], []
                    continue
                models[c.name] = c.new
            write_lock(args.lock_file, LockFile(version=LOCK_VERSION, models=models))
    _report(args, changes, dry_run=args.dry_run)
    return EXIT_OK


def _check(args: argparse.Namespace, lock: LockFile, names: list[str],
           session: HubSession) -> int:
    """``update --check``: resolve each named model's ref (no file is pinned or
    downloaded, nothing is written) and print, per model, whether the lock file is
    behind it (text, or ``--json``: ``{lockFile, check: true, models: [{name, repo, ref,
    from, to, behind}]}``). Returns 1 (:data:`EXIT_BEHIND`) when any is behind, else 0:
    a CI job fails while the lock file needs ``model-repo update``."""
    rows = []
    for name in names:
        old = lock.models[name]
        info = session.resolve(old.repo, old.repoType, old.ref)
        rows.append((name, old, info.commit))
    behind = [name for name, old, commit in rows if commit != old.commit]
    if args.json:
        import json

        doc = {"lockFile": args.lock_file, "check": True, "models": [
            {"name": name, "repo": old.repo, "ref": old.ref, "from": old.commit,
             "to": commit, "behind": commit != old.commit} for name, old, commit in rows]}
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
    else:
        lines = [f"{name}: {old.repo} {old.ref} " + (
            f"{old.commit[:12]} is behind {commit[:12]}" if commit != old.commit
            else f"{old.commit[:12]}, up to date") for name, old, commit in rows]
        if behind:
            lines.append(f"{len(behind)} of {len(rows)} behind: run `model-repo update "
                         f"{' '.join(behind)}`" + (f" --lock-file {args.lock_file}"
                                                   if args.lock_file != DEFAULT_LOCK else ""))
        sys.stdout.write("\n".join(lines) + "\n")
    return EXIT_BEHIND if behind else EXIT_OK


def _report(args: argparse.Namespace, changes: list[Change], *, dry_run: bool) -> None:
    """Print each change (text, or ``--json``: ``{lockFile, dryRun, models: [{name,
    repo, ref, from, to, added: [{path, size}], removed: [path], changed: [{path, size}],
    downloadBytes}]}``)."""
    if args.json:
        import json

        doc = {"lockFile": args.lock_file, "dryRun": dry_run, "models": [
            {"name": c.name, "repo": c.new.repo, "ref": c.new.ref,
             "from": c.old.commit if c.old else None, "to": c.new.commit,
             "added": [{"path": p, "size": c.new.files[p].size} for p in c.added],
             "removed": c.removed,
             "changed": [{"path": p, "size": c.new.files[p].size} for p in c.changed],
             "downloadBytes": c.download_bytes} for c in changes]}
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
        return
    lines = []
    for c in changes:
        head = f"{c.name}: {c.new.repo} {printable(c.new.ref)}"
        if not c.moved:
            lines.append(f"{head} {c.new.commit[:12]}, up to date")
            continue
        verb = "would move" if dry_run else "moved" if c.old else "locked"
        frm = f"{c.old.commit[:12]} -> " if c.old else ""
        lines.append(f"{head} {verb} {frm}{c.new.commit[:12]}")
        for mark, paths in (("+", c.added), ("~", c.changed)):
            for p in paths:
                lines.append(f"  {mark} {printable(p)}  {human_size(c.new.files[p].size)}")
        lines += [f"  - {printable(p)}" for p in c.removed]
        lines.append(f"  {len(c.added)} added, {len(c.removed)} removed, {len(c.changed)} "
                     f"changed; {human_size(c.download_bytes)} to download "
                     f"({c.download_bytes} bytes)")
    sys.stdout.write("\n".join(lines) + "\n")
