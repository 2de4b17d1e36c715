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

from .hubfs import Blocked, HubFS
from .naming import COMMIT_RE
from .state import Record


@dataclass(frozen=True)
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


@dataclass(frozen=True)
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
    dangling: list[str] = field(default_factory=list)

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
        _plan_folder(
            fs, folder, by_folder.get(folder, []), old_by_folder.get(folder, {}),
            others_want, store_exists, result,
        )
    return result


def _plan_folder(
    fs: HubFS,
    folder: str,
    wants: list[Want],
    old: dict[str, Record],
    others_want: Mapping[tuple[str, str | None], str],
    store_exists: Callable[[str], bool],
    out: Plan,
) -> None:
    actions: list[Action] = []
    records: dict[str, Record] = {}
    problems: list[Problem] = []
    hub = fs.hub_dir

    def block(names: Iterable[str], rel: str, reason: str, fix: str) -> None:
        problems.append(Problem(sorted(set(names)), os.path.join(hub, rel), reason, fix))

    def ensure_dir(rel: str, names: Iterable[str]) -> bool:
        entry = fs.lstat(rel)
        if entry.kind == "dir":
            rec = old.get(rel)
            records[rel] = Record(rel, "dir", created=bool(rec and rec.created))
            return True
        if entry.kind == "missing":
            actions.append(Action("mkdir", rel))
            records[rel] = Record(rel, "dir", created=True)
            return True
        found = f"a symlink to {entry.target!r}" if entry.kind == "link" else f"a {entry.kind}"
        block(names, rel, f"{found} is where a directory belongs; model-repo did not create it",
              f"move it away (mv {os.path.join(hub, rel)} ~/) and activate again")
        return False

    all_names = [w.name for w in wants]
    try:
        # Leftovers of an interrupted run are ours by name: remove them first.
        for name in fs.list_dir(folder) if fs.lstat(folder).kind == "dir" else []:
            if name.startswith(".model-repo-tmp-"):
                kind = fs.lstat(f"{folder}/{name}").kind
                if kind in ("link", "file"):
                    actions.append(Action("unlink", f"{folder}/{name}"))
                    out.notes.append(f"removing leftover {os.path.join(hub, folder, name)}")

        snapshot_ok: dict[str, bool] = {}
        if wants and ensure_dir(folder, all_names) and ensure_dir(f"{folder}/snapshots", all_names):
            targets: dict[str, tuple[str, list[str]]] = {}
            for w in wants:
                targets.setdefault(w.revision, (w.path, []))[1].append(w.name)
            for commit, (target, names) in sorted(targets.items()):
                snapshot_ok[commit] = _plan_snapshot(
                    fs, f"{folder}/snapshots/{commit}", target, names, old, store_exists,
                    actions, records, block, out, folder,
                )
            ref_targets: dict[str, tuple[str, list[str]]] = {}
            for w in wants:
                if snapshot_ok.get(w.revision):
                    for ref in w.refs:
                        ref_targets.setdefault(ref, (w.revision, []))[1].append(w.name)
            if ref_targets and ensure_dir(f"{folder}/refs", all_names):
                for ref, (commit, names) in sorted(ref_targets.items()):
                    parts = ref.split("/")
                    ok = all(
                        ensure_dir(f"{folder}/refs/" + "/".join(parts[:i]), names)
                        for i in range(1, len(parts))
                    )
                    if ok:
                        _plan_ref(fs, f"{folder}/refs/{ref}", commit, names, old,
                                  actions, records, block)
        _plan_prune(fs, folder, old, records, others_want, actions, out)
    except Blocked as exc:
        block(all_names, exc.path, f"{exc.found}; model-repo does not follow links it did "
              "not create", f"move {os.path.join(hub, exc.path)} away and activate again")
        # Keep what we knew: records we could not check stay for a later run.
        for rel, rec in old.items():
            records.setdefault(rel, rec)
    out.actions.extend(actions)
    out.problems.extend(problems)
    out.records.extend(records.values())
    # If the run stops half-way, the state must still own everything it may have
    # created and everything it has not yet undone.
    merged = dict(old)
    for rel, rec in records.items():
        before = old.get(rel)
        if before and before.created and rec.created and before.value != rec.value:
            rec = replace(rec, former=before.value)
        merged[rel] = rec
    out.intent.extend(merged.values())


def _plan_snapshot(
    fs: HubFS,
    rel: str,
    target: str,
    names: list[str],
    old: dict[str, Record],
    store_exists: Callable[[str], bool],
    actions: list[Action],
    records: dict[str, Record],
    block: Callable[..., None],
    out: Plan,
    folder: str,
) -> bool:
    entry = fs.lstat(rel)
    rec = old.get(rel)
    ours = bool(rec and rec.kind == "snapshot" and rec.owns(entry.target))
    full = os.path.join(fs.hub_dir, rel)
    restore = (
        f"rebuild it (nix-store --realise {target}, or run your home-manager switch / "
        "devenv shell / nixos-rebuild again), then activate again"
    )
    if entry.kind == "dir":
        # A real snapshot directory for the same commit (a user's download) satisfies us.
        records[rel] = Record(rel, "snapshot", target, created=False)
        return True
    if entry.kind == "link" and entry.target == target:
        records[rel] = Record(rel, "snapshot", target, created=ours)
        if not store_exists(target):
            out.dangling.append(full)
            block(names, full, f"the store path {target} is missing (garbage-collected?)", restore)
            return False
        return True
    if entry.kind == "missing" or (entry.kind == "link" and ours):
        if not store_exists(target):
            block(names, full, f"the store path {target} is missing (garbage-collected?)", restore)
            if rec:
                records[rel] = rec  # keep our old link; it is pruned or replaced later
            return False
        actions.append(Action("link", rel, target, temp=folder))
        records[rel] = Record(rel, "snapshot", target, created=True)
        return True
    what = f"a symlink to {entry.target!r}" if entry.kind == "link" else f"a {entry.kind}"
    block(names, full, f"{what} that model-repo did not create holds this revision",
          f"if it is stale, remove it (rm {full}); otherwise set link = false for this model")
    return False


def _plan_ref(
    fs: HubFS,
    rel: str,
    commit: str,
    names: list[str],
    old: dict[str, Record],
    actions: list[Action],
    records: dict[str, Record],
    block: Callable[..., None],
) -> None:
    entry = fs.lstat(rel)
    rec = old.get(rel) if rel in old and old[rel].kind == "ref" else None
    full = os.path.join(fs.hub_dir, rel)
    if entry.kind == "missing":
        actions.append(Action("ref", rel, commit, temp=rel.split("/", 1)[0]))
        records[rel] = Record(rel, "ref", commit, created=True)
        return
    if entry.kind != "file":
        what = f"a symlink to {entry.target!r}" if entry.kind == "link" else f"a {entry.kind}"
        block(names, full, f"{what} is where the ref file belongs; model-repo did not create it",
              f"move it away (mv {full} ~/) and activate again")
        return
    content = fs.read_file(rel).decode("utf-8", "replace")
    ours = rec is not None and rec.owns(content)
    if content == commit:
        records[rel] = Record(rel, "ref", commit, created=ours,
                              previous=rec.previous if ours else None)  # type: ignore[union-attr]
        return
    if ours:
        previous = rec.previous  # type: ignore[union-attr]  # our older value: keep the original
    else:
        previous = content if COMMIT_RE.match(content) else None
    actions.append(Action("ref", rel, commit, temp=rel.split("/", 1)[0]))
    records[rel] = Record(rel, "ref", commit, created=True, previous=previous)


def _plan_prune(
    fs: HubFS,
    folder: str,
    old: dict[str, Record],
    records: dict[str, Record],
    others_want: Mapping[tuple[str, str | None], str],
    actions: list[Action],
    out: Plan,
) -> None:
    gone = [r for rel, r in old.items() if rel not in records and r.created]
    # Refs first, so no ref ever names a snapshot that is already gone.
    final_refs: dict[str, str] = {}
    for rel, kind in fs.walk_files(f"{folder}/refs"):
        if kind == "file":
            final_refs[rel] = fs.read_file(rel).decode("utf-8", "replace")
    for act in actions:
        if act.op == "ref" and act.value:
            final_refs[act.path] = act.value
    for rec in sorted((r for r in gone if r.kind == "ref"), key=lambda r: r.path):
        owner = others_want.get((rec.path, rec.value))
        if owner:
            out.notes.append(f"keeping {rec.path}: profile {owner!r} wants it too")
            continue
        if fs.lstat(rec.path).kind == "file" and rec.owns(final_refs.get(rec.path)):
            if rec.previous:
                actions.append(Action("ref", rec.path, rec.previous, temp=folder))
                final_refs[rec.path] = rec.previous
            else:
                actions.append(Action("unlink", rec.path))
                final_refs.pop(rec.path, None)
        else:
            out.notes.append(f"not touching {rec.path}: it changed since model-repo wrote it")
    named = set(final_refs.values())
    for rec in sorted((r for r in gone if r.kind == "snapshot"), key=lambda r: r.path):
        owner = others_want.get((rec.path, rec.value))
        entry = fs.lstat(rec.path)
        if owner:
            out.notes.append(f"keeping {rec.path}: profile {owner!r} wants it too")
        elif entry.kind != "link" or not rec.owns(entry.target):
            if entry.kind != "missing":
                out.notes.append(f"not touching {rec.path}: it changed since model-repo made it")
        elif rec.path.rsplit("/", 1)[1] in named:
            out.notes.append(f"keeping {rec.path}: a ref model-repo does not own names it")
            records[rec.path] = rec
        else:
            actions.append(Action("unlink", rec.path))
    # Folders we created go when empty, deepest first; the others are never removed.
    for rec in sorted((r for r in old.values() if r.kind == "dir" and r.created),
                      key=lambda r: r.path.count("/"), reverse=True):
        keep_dir = any(p != rec.path and p.startswith(rec.path + "/") for p in records)
        if keep_dir:
            records.setdefault(rec.path, rec)
            continue
        if fs.lstat(rec.path).kind == "dir":
            actions.append(Action("rmdir", rec.path))
            records.pop(rec.path, None)
        else:
            records.pop(rec.path, None)


def apply(fs: HubFS, actions: Iterable[Action]) -> list[tuple[Action, OSError]]:
    """Carry out ``actions`` in order; return the ones that failed with their error.

    After a failure in a repo folder, that folder's remaining actions are skipped (the
    next run re-plans them); other folders go on.
    """
    failed: list[tuple[Action, OSError]] = []
    broken: set[str] = set()
    for act in actions:
        folder = act.path.split("/", 1)[0]
        if folder in broken:
            continue
        try:
            if act.op == "mkdir":
                fs.mkdir(act.path)
            elif act.op == "link":
                fs.replace_symlink(act.path, act.value or "", act.temp or folder)
            elif act.op == "ref":
                fs.replace_file(act.path, (act.value or "").encode(), act.temp or folder)
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
    return failed
