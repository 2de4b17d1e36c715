"""Linking: plan the changes that put a manifest's models into the hub cache, then apply
them in an order that keeps the cache valid at every instant.

The layout (measured, see the README): ``<hub>/models--ORG--NAME/`` is a real directory,
``snapshots/<commit>`` a symlink to the model's store path, each ref a file holding
exactly the commit. The planner reads the cache and the profile's records and returns
actions; nothing is written until :func:`apply`. Rules:

- only paths this profile created are removed or restored, and only while they still
  hold what we put there;
- a snapshot is in place before any ref names it, and removed only after no ref names it;
- a path in the way that we did not create blocks that model (with the fix), not the run.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace

from .hubfs import TEMP_PREFIX, Blocked, Entry, HubFS
from .state import Record


@dataclass(frozen=True, slots=True)
class Want:
    """One linked model as the planner needs it (built from the manifest)."""

    name: str
    folder: str
    revision: str
    refs: tuple[str, ...]
    path: str


@dataclass
class Problem:
    """Why a model is not in place: ``path`` (absolute) and the ``fix`` a user can run."""

    models: list[str]
    path: str
    reason: str
    fix: str

    def message(self) -> str:
        return f"{', '.join(self.models)}: {self.path}: {self.reason}; fix: {self.fix}"


@dataclass(frozen=True, slots=True)
class Action:
    """One change: ``mkdir``, ``link`` (snapshot symlink to ``value``), ``ref`` (write
    ``value``), ``unlink``, ``rmdir`` (if empty). ``temp`` is the folder holding the
    temporary name of an atomic write."""

    op: str
    path: str
    value: str | None = None
    temp: str | None = None

    def describe(self) -> str:
        return f"{self.op} {self.path}" + (f" -> {self.value}" if self.value else "")


@dataclass
class Plan:
    """What :func:`plan` decided: actions in order, the records after them, problems,
    notes (warnings that do not make the run partial), and the records to keep if the
    run stops half-way (``intent``: old and new together)."""

    actions: list[Action] = field(default_factory=list)
    records: list[Record] = field(default_factory=list)
    intent: list[Record] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def blocked_models(self) -> set[str]:
        return {name for p in self.problems for name in p.models}


def plan(
    fs: HubFS,
    wants: Iterable[Want],
    old: Iterable[Record],
    others: Iterable[tuple[str, Record]],
    store_exists: Callable[[str], bool],
) -> Plan:
    """Decide the actions that link ``wants`` and undo what ``old`` no longer wants.

    ``old`` is this profile's records; ``others`` is ``(profile, record)`` of the other
    profiles known for this hub dir (their links are never removed by us).
    """
    result = Plan()
    by_folder: dict[str, list[Want]] = defaultdict(list)
    for want in wants:
        by_folder[want.folder].append(want)
    old_by_folder: dict[str, dict[str, Record]] = defaultdict(dict)
    for rec in old:
        old_by_folder[rec.path.split("/", 1)[0]][rec.path] = rec
    others_want: dict[tuple[str, str | None], str] = {}
    for profile, rec in others:
        if rec.kind != "dir":
            others_want[(rec.path, rec.value)] = profile
    for folder in sorted(set(by_folder) | set(old_by_folder)):
        _FolderPlan(fs, folder, old_by_folder.get(folder, {}), others_want, store_exists,
                    result).run(by_folder.get(folder, []))
    return result


class _FolderPlan:
    """The decisions for one repo folder (``models--org--name``): its snapshots, refs,
    the prune of what this profile no longer wants, and its empty folders."""

    def __init__(self, fs: HubFS, folder: str, old: dict[str, Record],
                 others_want: Mapping[tuple[str, str | None], str],
                 store_exists: Callable[[str], bool], out: Plan) -> None:
        self.fs = fs
        self.folder = folder
        self.old = old
        self.others_want = others_want
        self.store_exists = store_exists
        self.out = out
        self.actions: list[Action] = []
        self.records: dict[str, Record] = {}
        self.problems: list[Problem] = []
        self.disk_refs: dict[str, str] = {}

    def full(self, rel: str) -> str:
        return os.path.join(self.fs.hub_dir, rel)

    def block(self, names: Iterable[str], rel: str, reason: str, fix: str) -> None:
        self.problems.append(Problem(sorted(set(names)), self.full(rel), reason, fix))

    def run(self, wants: list[Want]) -> None:
        folder = self.folder
        names = [w.name for w in wants]
        try:
            if self.fs.lstat(folder).kind == "dir":
                # Leftovers of an interrupted run are ours by name: remove them first.
                for name in self.fs.list_dir(folder):
                    rel = f"{folder}/{name}"
                    if name.startswith(TEMP_PREFIX) and self.fs.lstat(rel).kind in ("link", "file"):
                        self.actions.append(Action("unlink", rel))
                        self.out.notes.append(f"removing leftover {self.full(rel)}")
                for rel, kind in self.fs.walk_files(f"{folder}/refs"):
                    if kind == "file":
                        self.disk_refs[rel] = _read_ref(self.fs, rel)
            if wants and self.ensure_dir(folder, names) and self.ensure_dir(f"{folder}/snapshots", names):
                self.link(wants)
            self.prune()
        except Blocked as exc:
            self.block(names, exc.path, f"{exc.found}; model-repo does not follow links it "
                       "did not create", f"move {self.full(exc.path)} away and activate again")
            # Keep what we knew: records we could not check stay for a later run.
            for rel, rec in self.old.items():
                self.records.setdefault(rel, rec)
        finally:
            self.fs.forget()
        self.out.actions.extend(self.actions)
        self.out.problems.extend(self.problems)
        self.out.records.extend(self.records.values())
        # If the run stops half-way, the state must still own everything it may have
        # created and everything it has not yet undone.
        merged = dict(self.old)
        for rel, rec in self.records.items():
            before = self.old.get(rel)
            if before and before.created and rec.created and before.value != rec.value:
                rec = replace(rec, former=before.value)
            merged[rel] = rec
        self.out.intent.extend(merged.values())

    def ensure_dir(self, rel: str, names: Iterable[str]) -> bool:
        entry = self.fs.lstat(rel)
        if entry.kind == "dir":
            rec = self.old.get(rel)
            self.records[rel] = Record(rel, "dir", created=bool(rec and rec.created))
            return True
        if entry.kind == "missing":
            self.actions.append(Action("mkdir", rel))
            self.records[rel] = Record(rel, "dir", created=True)
            return True
        self.block(names, rel, f"{_what(entry)} is where a directory belongs; model-repo did "
                   "not create it", f"move it away (mv {self.full(rel)} ~/) and activate again")
        return False

    def link(self, wants: list[Want]) -> None:
        folder = self.folder
        targets: dict[str, tuple[str, list[str]]] = {}
        for w in wants:
            targets.setdefault(w.revision, (w.path, []))[1].append(w.name)
        snapshot_ok = {
            commit: self.snapshot(commit, target, names)
            for commit, (target, names) in sorted(targets.items())
        }
        ref_targets: dict[str, tuple[str, list[str]]] = {}
        for w in wants:
            if snapshot_ok[w.revision]:
                for ref in w.refs:
                    ref_targets.setdefault(ref, (w.revision, []))[1].append(w.name)
        if not ref_targets or not self.ensure_dir(f"{folder}/refs", [w.name for w in wants]):
            return
        for ref, (commit, names) in sorted(ref_targets.items()):
            parts = ref.split("/")
            if all(self.ensure_dir(f"{folder}/refs/" + "/".join(parts[:i]), names)
                   for i in range(1, len(parts))):
                self.ref(f"{folder}/refs/{ref}", commit, names)

    def snapshot(self, commit: str, target: str, names: list[str]) -> bool:
        """Plan ``snapshots/<commit>`` -> ``target``; True when it is (or will be) there."""
        rel = f"{self.folder}/snapshots/{commit}"
        entry = self.fs.lstat(rel)
        rec = self.old.get(rel) if rel in self.old and self.old[rel].kind == "snapshot" else None
        ours = rec is not None and rec.owns(entry.target)
        missing = f"the store path {target} is missing (garbage-collected?)"
        restore = (f"rebuild it (nix-store --realise {target}, or run your home-manager "
                   "switch / devenv shell / nixos-rebuild again), then activate again")
        if entry.kind == "dir":
            # A real snapshot directory for the same commit (a user's download) satisfies us.
            self.records[rel] = Record(rel, "snapshot", target, created=False)
            return True
        if entry.kind == "link" and entry.target == target:
            self.records[rel] = Record(rel, "snapshot", target, created=ours,
                                       named_before=rec.named_before if ours else ())  # type: ignore[union-attr]
            if not self.store_exists(target):
                self.block(names, rel, missing, restore)
                return False
            return True
        if entry.kind == "missing" or (entry.kind == "link" and ours):
            if not self.store_exists(target):
                self.block(names, rel, missing, restore)
                if rec:
                    self.records[rel] = rec  # keep our old link; it is pruned or replaced later
                return False
            # A new link is one symlinkat (atomic by itself); ours is replaced by rename.
            self.actions.append(Action("link", rel, target, temp=self.folder if ours else None))
            # Refs that already named this commit (pointing at nothing) do not hold our
            # link once we no longer want it: the cache goes back to what it was.
            before = rec.named_before if ours else tuple(sorted(  # type: ignore[union-attr]
                p for p, c in self.disk_refs.items() if c == commit))
            self.records[rel] = Record(rel, "snapshot", target, created=True, named_before=before)
            return True
        self.block(names, rel, f"{_what(entry)} that model-repo did not create holds this "
                   f"revision", f"if it is stale, remove it (rm {self.full(rel)}); otherwise "
                   "set link = false for this model")
        return False

    def ref(self, rel: str, commit: str, names: list[str]) -> None:
        """Plan ref file ``rel`` holding exactly ``commit``."""
        entry = self.fs.lstat(rel)
        rec = self.old.get(rel) if rel in self.old and self.old[rel].kind == "ref" else None
        if entry.kind == "missing":
            self.actions.append(Action("ref", rel, commit, temp=self.folder))
            self.records[rel] = Record(rel, "ref", commit, created=True)
            return
        if entry.kind != "file":
            self.block(names, rel, f"{_what(entry)} is where the ref file belongs; model-repo "
                       "did not create it", f"move it away (mv {self.full(rel)} ~/) and "
                       "activate again")
            return
        content = self.disk_refs.get(rel)
        if content is None:
            content = _read_ref(self.fs, rel)
        if len(content) > _REF_MAX:
            self.block(names, rel, "a file too large to be a ref is where the ref belongs; "
                       "model-repo did not create it", f"move it away (mv {self.full(rel)} ~/) "
                       "and activate again")
            return
        ours = rec is not None and rec.owns(content)
        if content == commit:
            self.records[rel] = Record(rel, "ref", commit, created=ours,
                                       previous=rec.previous if ours else None)  # type: ignore[union-attr]
            return
        # Whatever it held (even bytes that are no commit) comes back when we let go.
        previous = rec.previous if ours else content  # type: ignore[union-attr]
        self.actions.append(Action("ref", rel, commit, temp=self.folder))
        self.records[rel] = Record(rel, "ref", commit, created=True, previous=previous)

    def prune(self) -> None:
        """Undo what ``old`` created and nobody wants any more: refs first (restoring
        replaced values), then snapshots no remaining ref names, then empty folders."""
        records, actions, notes = self.records, self.actions, self.out.notes
        gone = [r for rel, r in self.old.items() if rel not in records and r.created]
        final_refs = dict(self.disk_refs)
        for act in actions:
            if act.op == "ref" and act.value:
                final_refs[act.path] = act.value
        restored: set[str] = set()  # back to a value from before us: it holds no link of ours
        for rec in sorted((r for r in gone if r.kind == "ref"), key=lambda r: r.path):
            owner = self.others_want.get((rec.path, rec.value))
            if owner:
                notes.append(f"keeping {rec.path}: profile {owner!r} wants it too")
            elif self.fs.lstat(rec.path).kind == "file" and rec.owns(final_refs.get(rec.path)):
                if rec.previous:
                    actions.append(Action("ref", rec.path, rec.previous, temp=self.folder))
                    final_refs[rec.path] = rec.previous
                    restored.add(rec.path)
                else:
                    actions.append(Action("unlink", rec.path))
                    final_refs.pop(rec.path, None)
            else:
                notes.append(f"not touching {rec.path}: it changed since model-repo wrote it")
        # A ref given back its value from before us names what it named then: it must not
        # keep a link of ours alive later either.
        for rel, rec in list(records.items()):
            if rec.kind == "snapshot" and rec.created:
                commit = rel.rsplit("/", 1)[1]
                extra = [p for p in restored if final_refs.get(p) == commit
                         and p not in rec.named_before]
                if extra:
                    records[rel] = replace(rec, named_before=tuple(sorted((*rec.named_before, *extra))))
        for rec in sorted((r for r in gone if r.kind == "snapshot"), key=lambda r: r.path):
            owner = self.others_want.get((rec.path, rec.value))
            entry = self.fs.lstat(rec.path)
            commit = rec.path.rsplit("/", 1)[1]
            holders = [p for p, c in final_refs.items()
                       if c == commit and p not in rec.named_before and p not in restored]
            if owner:
                notes.append(f"keeping {rec.path}: profile {owner!r} wants it too")
            elif entry.kind != "link" or not rec.owns(entry.target):
                if entry.kind != "missing":
                    notes.append(f"not touching {rec.path}: it changed since model-repo made it")
            elif holders:
                notes.append(f"keeping {rec.path}: {holders[0]} (not model-repo's) names it")
                records[rec.path] = rec
            else:
                actions.append(Action("unlink", rec.path))
        # Folders we created go when empty, deepest first; the others are never removed.
        for rec in sorted((r for r in self.old.values() if r.kind == "dir" and r.created),
                          key=lambda r: r.path.count("/"), reverse=True):
            if any(p != rec.path and p.startswith(rec.path + "/") for p in records):
                records.setdefault(rec.path, rec)
                continue
            if self.fs.lstat(rec.path).kind == "dir":
                actions.append(Action("rmdir", rec.path))
            records.pop(rec.path, None)


#: Largest ref file we replace (and keep to restore); a ref is 40 bytes.
_REF_MAX = 4096


def _read_ref(fs: HubFS, rel: str) -> str:
    """A ref file's content, byte-exact (undecodable bytes kept as surrogates)."""
    return fs.read_file(rel, _REF_MAX + 1).decode("utf-8", "surrogateescape")


def _what(entry: Entry) -> str:
    return f"a symlink to {entry.target!r}" if entry.kind == "link" else f"a {entry.kind}"


def apply(fs: HubFS, actions: Iterable[Action]) -> list[tuple[Action, OSError]]:
    """Carry out ``actions`` in order; return the ones that failed with their error.

    After a failure in a repo folder, that folder's remaining actions are skipped (the
    next run re-plans them); other folders go on.
    """
    failed: list[tuple[Action, OSError]] = []
    broken: set[str] = set()
    current = None
    try:
        for act in actions:
            folder = act.path.split("/", 1)[0]
            if folder != current:
                fs.forget()  # keep descriptors of one repo folder at a time
                current = folder
            if folder in broken:
                continue
            try:
                if act.op == "mkdir":
                    fs.mkdir(act.path)
                elif act.op == "link" and act.temp is None:
                    fs.create_symlink(act.path, act.value or "")
                elif act.op == "link":
                    fs.replace_symlink(act.path, act.value or "", act.temp)
                elif act.op == "ref":
                    fs.replace_file(act.path, (act.value or "").encode("utf-8", "surrogateescape"),
                                    act.temp or folder)
                elif act.op == "unlink":
                    fs.unlink(act.path)
                elif act.op == "rmdir":
                    if not fs.rmdir_if_empty(act.path):
                        continue
                else:  # pragma: no cover - the planner makes no other ops
                    raise ValueError(f"unknown action {act.op}")
            except (OSError, Blocked) as exc:
                err = exc if isinstance(exc, OSError) else OSError(str(exc))
                failed.append((act, err))
                broken.add(folder)
    finally:
        fs.forget()
    return failed
