"""Linking: plan the changes that put a manifest's models into the hub cache, then apply
them in an order that keeps the cache valid at every instant.

The layout (measured, see the README): ``<hub>/models--ORG--NAME/`` is a real directory,
``snapshots/<commit>`` a symlink to the model's store path, each ref a file holding
exactly the commit. The planner reads the cache and the profile's records and returns
actions; nothing is written until :func:`apply`. Rules:

- only paths this profile created are removed or restored, and only while they still
  hold what we put there;
- a snapshot is in place before any ref names it, and removed only after no ref names it;
- a path in the way that we did not create blocks that model (with the fix), not the run;
- a ref another profile holds at another commit is not taken: the later profile is blocked;
- every write re-checks, right before it, that the path still holds what was planned
  (compare, then rename): a concurrent writer's change is left alone and reported;
- a partial store path (``partial``) is linked file by file (:mod:`activate.tree`), so
  huggingface_hub never writes into the store through it;
- a snapshot serves a model only when every file of its store path opens through it: a
  folder we did not make is never changed (the model is blocked unless it is complete),
  a partial snapshot other profiles of the state dir use gets what we lack, and what our
  removals take from it is linked again for them;
- a record survives its own change: a snapshot changing form (link <-> tree) is ours in
  either form meanwhile, and a ref is ours only while it is the file we wrote (its stamp);
- while we hold a user's ref, ``refs/model-repo-kept/<holder>/<ref>`` (one per profile:
  :func:`kept_holder`) names their revision, so ``hf cache prune`` does not take it for
  detached (:meth:`_FolderPlan.keep_previous`).
"""

from __future__ import annotations

import os
import stat
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields, replace

from . import tree as treemod
from .hubfs import TEMP_PREFIX, Blocked, Changed, Entry, HubFS
from .naming import COMMIT_RE
from .state import Record

#: What a path must hold right before a write: ``(kind, value)`` as :class:`Entry`
#: gives it (``("missing", None)``, ``("file", content)``, ``("link", target)``).
Expect = tuple[str, "str | None"]
MISSING: Expect = ("missing", None)


@dataclass(frozen=True, slots=True)
class Want:
    """One linked model as the planner needs it (built from the manifest)."""

    name: str
    folder: str
    revision: str
    refs: tuple[str, ...]
    path: str
    #: Link file by file (:mod:`activate.tree`): a partial store path, or a whole one the
    #: layout rule (:func:`activate.tree.file_by_file`) keeps out of reach of cache tools.
    partial: bool = False


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
    ``value``), ``unlink``, ``rmdir`` (if empty), ``unprivate`` (a leftover private
    folder of temporary names: :meth:`~activate.hubfs.HubFS.remove_private`), ``tree`` (make or complete the partial
    snapshot of store path ``value``, dropping our links to the store paths in
    ``stale``), ``untree`` (remove our links to the store paths ``value`` and ``stale``,
    then the folders left empty), ``trim`` (remove our links to the store paths ``stale``
    only, keeping ``value``'s). ``expect``: what the path must still hold right before the
    write (None: no check needed, e.g. ``mkdir``); otherwise the write is skipped and
    reported. A ``link`` or ``ref`` expecting :data:`MISSING` is made in one step where
    nothing is; one replacing an entry goes through a temporary name (atomic rename).
    """

    op: str
    path: str
    value: str | None = None
    expect: Expect | None = None
    stale: tuple[str, ...] = ()
    #: For ``tree``, ``trim`` and ``untree``: store paths other profiles want this partial
    #: snapshot to serve; their files left missing by our removals are linked again.
    fill: tuple[str, ...] = ()
    #: For ``ref``: the modification time (ns, as text) the written file is given, which
    #: marks it as ours (:attr:`Record.stamp`).
    stamp: str | None = None
    #: For ``tree``: our links into ``stale`` store paths are replaced where ``value`` has
    #: the file and otherwise kept (a ref we did not write names the commit).
    keep_stale: bool = False

    def describe(self) -> str:
        return f"{self.op} {self.path}" + (f" -> {self.value}" if self.value else "")


class _Mkdir:
    """An :class:`Action` ``mkdir`` of ``path`` in two slots (the planner makes four per
    repo folder: 40,000 at 10,000 models); the other fields are :class:`Action`'s
    defaults (set below from its fields, so the two cannot drift)."""

    __slots__ = ("path",)
    op = "mkdir"

    def __init__(self, path: str) -> None:
        self.path = path

    def describe(self) -> str:
        return f"mkdir {self.path}"


for _f in fields(Action):
    if _f.name not in ("op", "path"):
        setattr(_Mkdir, _f.name, _f.default)
del _f


def mkdir_action(path: str) -> Action:
    """The action that makes folder ``path`` (:class:`_Mkdir`, typed as an Action)."""
    return _Mkdir(path)  # type: ignore[return-value]


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
    #: ``(profile, path)``: another profile's claim that it made ``path`` is dead (the
    #: path no longer holds any value it wrote: the user or a download replaced it).
    disowned: list[tuple[str, str]] = field(default_factory=list)

    @property
    def blocked_models(self) -> set[str]:
        return {name for p in self.problems for name in p.models}


def plan(
    fs: HubFS,
    wants: Iterable[Want],
    old: Iterable[Record],
    others: Iterable[tuple[str, Record]],
    store_kind: Callable[[str], str],
    holder: str,
) -> Plan:
    """Decide the actions that link ``wants`` and undo what ``old`` no longer wants.

    ``old`` is this profile's records; ``others`` is ``(profile, record)`` of the other
    profiles known for this hub dir (what they want is never removed or taken by us, and
    what they created and we want too becomes ours as well). ``store_kind(path)`` says
    what a store path is: ``dir``, ``damaged`` (a directory changed after Nix made it,
    :mod:`activate.storecheck`), ``missing`` or ``other``. ``holder``: this profile's
    folder under ``refs/model-repo-kept/`` (:func:`kept_holder`).
    """
    result = Plan()
    for rel in fs.leftover_privates():  # a stopped run's temporary names: ours
        result.actions.append(Action("unprivate", rel))
        result.notes.append(f"removing leftover {os.path.join(fs.hub_dir, rel)}")
    by_folder: dict[str, list[Want]] = defaultdict(list)
    for want in wants:
        by_folder[want.folder].append(want)
    old_by_folder: dict[str, dict[str, Record]] = defaultdict(dict)
    for rec in old:
        old_by_folder[rec.path.split("/", 1)[0]][rec.path] = rec
    others_at: dict[str, list[tuple[str, Record]]] = defaultdict(list)
    for profile, rec in others:
        others_at[rec.path].append((profile, rec))
    for folder in sorted(set(by_folder) | set(old_by_folder)):
        _FolderPlan(fs, folder, old_by_folder.get(folder, {}), others_at, store_kind,
                    result, holder).run(by_folder.get(folder, []))
    return result


def _entry_value(entry: Entry) -> Expect:
    """What a write must still find at a path that held ``entry`` (a link, or nothing)."""
    return (entry.kind, entry.target)


class _FolderPlan:
    """The decisions for one repo folder (``models--org--name``): its snapshots, refs,
    the prune of what this profile no longer wants, and its empty folders."""

    def __init__(self, fs: HubFS, folder: str, old: dict[str, Record],
                 others_at: Mapping[str, list[tuple[str, Record]]],
                 store_kind: Callable[[str], str], out: Plan, holder: str) -> None:
        self.fs = fs
        self.holder = holder
        self.folder = folder
        self.old = old
        self.others_at = others_at
        self.store_kind = store_kind
        self.out = out
        self.actions: list[Action] = []
        self.records: dict[str, Record] = {}
        self.problems: list[Problem] = []
        self.disk_refs: dict[str, str] = {}
        self.wanted_dirs: set[str] = set()  # folders this run needs (never pruned)

    def full(self, rel: str) -> str:
        return os.path.join(self.fs.hub_dir, rel)

    def block(self, names: Iterable[str], rel: str, reason: str, fix: str) -> None:
        self.problems.append(Problem(sorted(set(names)), self.full(rel), reason, fix))

    def wanted_by_other(self, rel: str, value: str | None) -> str | None:
        """The other profile that wants ``rel`` to hold ``value``, if any."""
        for profile, rec in self.others_at.get(rel, ()):
            if rec.kind != "dir" and rec.value == value:
                return profile
        return None

    def observe(self, rel: str, value: str | None, kind: str = "") -> None:
        """``rel`` holds ``value`` now (a ``kind`` entry): another profile whose record
        says it made ``rel`` but owns no such value has lost it (its own next run would
        conclude the same); its claim must not come back to life when someone writes its
        old value again. A directory is not a lost claim of a record that may be a tree."""
        others = self.others_at.get(rel) or []
        for i, (profile, rec) in enumerate(others):
            if rec.kind in ("ref", "snapshot") and rec.created and not rec.owns(value) \
                    and not (kind == "dir" and "tree" in rec.forms()):
                self.out.disowned.append((profile, rel))
                # Dead for this plan too: nothing is kept or filled in for it.
                others[i] = (profile, Record(rel, rec.kind, rec.value,
                                             named_before=rec.named_before))

    def keep_for(self, owner: str, rec: Record) -> None:
        """``owner`` still wants what ``rec`` made. If it owns it too, it undoes it when
        done; otherwise we keep our record, and undo it once nobody wants it. Links of a
        partial snapshot to store paths the owner does not want (ours, from earlier runs)
        are removed now: nobody else would."""
        self.out.notes.append(f"keeping {rec.path}: profile {owner!r} wants it too")
        if "tree" in rec.forms() and self.fs.lstat(rec.path).kind == "dir":
            wanted = {r.value for _, r in self.others_at.get(rec.path, ())}
            stale = tuple(sorted(v for v in {rec.value, *rec.owned} if v and v not in wanted))
            if stale and self.links_held(rec.path, rec.named_before, stale):
                # Our links stay ours (and this record with them): see :meth:`tree`.
                self.records[rec.path] = rec
                return
            if stale:
                # Every store path the others want is filled in, ours included when one
                # of them wants it too: a file of it may have been served by a link into
                # a stale path of ours, which goes now.
                self.actions.append(Action("trim", rec.path, rec.value, stale=stale,
                                           fill=self.tree_fill(rec.path, None)))
        if not any(r.created and r.kind != "dir" for _, r in self.others_at.get(rec.path, ())):
            self.records[rec.path] = rec

    def owned_by_other(self, rel: str, value: str | None) -> str | None:
        """The other profile that put ``value`` at ``rel`` (perhaps in a run that was
        stopped): that value is theirs, not the user's."""
        for profile, rec in self.others_at.get(rel, ()):
            if rec.kind != "dir" and rec.owns(value):
                return f"profile {profile!r}"
        return None

    def co_own(self, rel: str, kind: str, value: str | None) -> Record | None:
        """Another profile's record that created ``rel`` holding ``value``: wanting the
        same, we own it too (so whichever profile lets go last undoes it)."""
        for _profile, rec in self.others_at.get(rel, ()):
            if rec.kind == kind and rec.owns(value):
                return rec
        return None

    def check_stamp(self, rel: str, stamp: str | None) -> None:
        """The ref file ``rel`` now has ``stamp``: a record (ours or another profile's)
        that wrote it with another stamp has lost it to someone else's write, even if the
        value is the same again; its claim is dead (the other profile's in its state too)."""
        rec = self.old.get(rel)
        if rec is not None and rec.kind == "ref" and rec.stamp and stamp not in rec.stamp.split(","):
            self.old[rel] = Record(rel, "ref", rec.value, named_before=rec.named_before)
        others = self.others_at.get(rel)
        if others:
            for i, (profile, r) in enumerate(others):
                if r.kind == "ref" and r.stamp and stamp not in r.stamp.split(","):
                    others[i] = (profile, Record(rel, "ref", r.value))
                    if r.created:
                        self.out.disowned.append((profile, rel))

    def mine(self, rel: str, kind: str) -> Record | None:
        rec = self.old.get(rel)
        return rec if rec is not None and rec.kind == kind else None

    def mine_in_form(self, rel: str, kind: str) -> Record | None:
        """Our record of the snapshot ``rel`` when an entry of ``kind`` (``snapshot``: a
        link, ``tree``: a directory) there may be ours: a record of that kind, or of the
        other form while a change of form is under way (:attr:`Record.other_kind`)."""
        rec = self.old.get(rel)
        return rec if rec is not None and kind in rec.forms() else None

    def co_trees(self, rel: str) -> list[Record]:
        """Other profiles' records (this state dir) of a partial snapshot at ``rel`` that
        they made (or help to make): a directory there is theirs as well."""
        return [r for _, r in self.others_at.get(rel, ()) if "tree" in r.forms()]

    def tree_fill(self, rel: str, mine: str | None) -> tuple[str, ...]:
        """The store paths other profiles want the partial snapshot ``rel`` to serve
        (not ``mine``): what our removals there must leave served."""
        return tuple(sorted({r.value for r in self.co_trees(rel) if r.value} - {mine, None}))

    def model_repo_tree(self, rel: str, known: Iterable[str] = ()) -> bool:
        """True when directory ``rel`` is a partial snapshot of some model-repo profile
        (of another state dir, whose records we cannot read): it holds a link to one of
        model-repo's blob links (``blobs/model-repo-…``), which no download makes, into
        a store path not among ``known`` (the ones this state dir's profiles link)."""
        known = tuple(k + "/" for k in known if k)
        for file_rel, kind in self.fs.walk_files(rel):
            if kind == "link":
                link = self.fs.lstat(file_rel).target or ""
                blob = link.rsplit("/", 1)[-1]
                if link.startswith("../") and treemod.is_blob_name(blob) \
                        and "/blobs/" in link:
                    if not known:
                        return True
                    into = self.fs.lstat(f"{self.folder}/blobs/{blob}").target or ""
                    if into and not into.startswith(known):
                        return True
        return False

    def unserved(self, rel: str, target: str) -> list[str]:
        """The files of store path ``target`` that the snapshot directory ``rel`` does not
        serve (each must open as a regular file through it, whoever linked it); raises
        OSError when the store path cannot be listed."""
        return [f for f in treemod.store_files(target) if not _serves(self.fs, f"{rel}/{f}")]

    def others_in_tree(self, rel: str, values: Iterable[str]) -> bool:
        """True when our tree ``rel`` holds anything but our links into ``values`` (a file
        a download added, another profile's links): it cannot become a whole link."""
        values = tuple(v for v in values if v)
        for file_rel, kind in self.fs.walk_files(rel):
            if kind != "link" or _our_blob(self.fs, self.folder, self.fs.lstat(file_rel),
                                           values) is None:
                return True
        return False

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
                    elif name.startswith(TEMP_PREFIX) and self.fs.is_own_private(rel):
                        self.actions.append(Action("unprivate", rel))
                        self.out.notes.append(f"removing leftover {self.full(rel)}")
                for rel, kind in self.fs.walk_files(f"{folder}/refs"):
                    if kind == "file":
                        self.disk_refs[rel] = _read_ref(self.fs, rel)
                        self.check_stamp(rel, ref_stamp(self.fs, rel))
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
        # If the run stops half-way (even several runs in a row), the state must still
        # own every value it may have put anywhere and everything it has not yet undone.
        merged = dict(self.old)
        for rel, rec in self.records.items():
            before = self.old.get(rel)
            if before and before.created and rec.created:
                owned = {before.value, *before.owned, *rec.owned} - {rec.value, None}
                # A snapshot changing form: what is there may still be the old form.
                other = rec.other_kind or next(
                    (k for k in before.forms() if k != rec.kind), None)
                # A write without a stamp (none given) is judged by its value alone.
                stamps = {t for r in (before, rec) if r.stamp for t in r.stamp.split(",")
                          } if rec.stamp or not rec.created else set()
                rec = replace(rec, owned=tuple(sorted(owned)),  # type: ignore[arg-type]
                              other_kind=other, stamp=",".join(sorted(stamps)) or None)
            merged[rel] = rec
        self.out.intent.extend(merged.values())

    def ensure_dir(self, rel: str, names: Iterable[str]) -> bool:
        self.wanted_dirs.add(rel)
        if rel in self.records and self.records[rel].kind == "dir":
            return True  # planned already (blobs/ of two partial snapshots): one mkdir
        entry = self.fs.lstat(rel)
        if entry.kind == "dir":
            rec = self.old.get(rel)
            # A folder another profile made is ours too: whoever needs it last removes it.
            created = bool(rec and rec.created) or any(
                r.kind == "dir" and r.created for _, r in self.others_at.get(rel, ()))
            self.records[rel] = Record(rel, "dir", created=created)
            return True
        if entry.kind == "missing":
            self.actions.append(mkdir_action(rel))
            self.records[rel] = Record(rel, "dir", created=True)
            return True
        self.block(names, rel, f"{_what(entry)} is where a directory belongs; model-repo did "
                   "not create it", f"move it away (mv {self.full(rel)} ~/) and activate again")
        return False

    def link(self, wants: list[Want]) -> None:
        folder = self.folder
        targets: dict[str, tuple[str, bool, list[str]]] = {}
        for w in wants:
            targets.setdefault(w.revision, (w.path, w.partial, []))[2].append(w.name)
        snapshot_ok = {
            commit: self.snapshot(commit, target, partial, names)
            for commit, (target, partial, names) in sorted(targets.items())
        }
        ref_targets: dict[str, tuple[str, str, list[str]]] = {}
        for w in wants:
            if snapshot_ok[w.revision]:
                for ref in w.refs:
                    ref_targets.setdefault(ref, (w.revision, w.path, []))[2].append(w.name)
        if not ref_targets or not self.ensure_dir(f"{folder}/refs", [w.name for w in wants]):
            return
        for ref, (commit, target, names) in sorted(ref_targets.items()):
            parts = ref.split("/")
            if all(not self.nested_ref(f"{folder}/refs/" + "/".join(parts[:i]), ref, target,
                                       names, "file")
                   and self.ensure_dir(f"{folder}/refs/" + "/".join(parts[:i]), names)
                   for i in range(1, len(parts))):
                self.ref(f"{folder}/refs/{ref}", commit, target, names)

    def nested_ref(self, rel: str, ref: str, target: str, names: list[str], found: str) -> bool:
        """Block ``names`` and return True when another model-repo profile holds a ref
        at ``rel`` or inside it, in the way of our ``ref`` (``main`` vs ``main/x``: a ref
        is a file, so it cannot be a folder of refs too). The message names that profile:
        the ref is not the user's to move away. Only a ``found`` entry (``file`` where our
        ref needs a folder, ``dir`` where it needs a file) is checked."""
        entry = self.fs.lstat(rel)
        if entry.kind != found:
            return False
        holder = None
        for path, recs in self.others_at.items():
            if path == rel or path.startswith(rel + "/"):
                holder = next((f"profile {p!r} (its ref {path.split('/refs/', 1)[-1]!r})"
                               for p, r in recs if r.kind == "ref"), None)
                if holder:
                    break
        if holder is None:  # a profile of another state dir: its ref names its snapshot
            files = [(rel, "file")] if entry.kind == "file" else self.fs.walk_files(rel)
            for path, kind in files:
                if kind == "file" and not path.split("/")[-1].startswith(TEMP_PREFIX):
                    holder = self.foreign_holder(_read_ref(self.fs, path), target)
                    if holder:
                        break
        if holder is None:
            return False
        self.block(names, rel, f"{holder} holds a ref where this profile's ref {ref!r} "
                   "needs the other kind of entry: one repo cannot have both a ref and refs "
                   "inside it (main and main/x)", "give this model another ref (refs = [ "
                   "\"...\" ]) that does not nest with the other profile's; if that profile "
                   f"is gone, deactivate it (or remove its ref: rm -r {self.full(rel)}) and "
                   "activate again")
        return True

    def snapshot(self, commit: str, target: str, partial: bool, names: list[str]) -> bool:
        """Plan ``snapshots/<commit>``: a link to ``target``, or for a ``partial`` store path
        a directory of per-file links; True when it is (or will be) there and serves every
        file of ``target``."""
        rel = f"{self.folder}/snapshots/{commit}"
        entry = self.fs.lstat(rel)
        self.observe(rel, entry.target, entry.kind)
        link_rec = self.mine_in_form(rel, "snapshot")
        tree_rec = self.mine_in_form(rel, "tree")  # our tree's links may be there
        our_link = link_rec is not None and entry.kind == "link" and link_rec.owns(entry.target)
        our_tree = tree_rec is not None and entry.kind == "dir"
        if entry.kind == "dir" and not our_tree:
            return self.foreign_dir(rel, commit, target, names)
        if entry.kind == "link" and entry.target == target and not partial:
            co = None if our_link else self.co_own(rel, "snapshot", target)
            if tree_rec is not None:
                # A change from our tree was stopped: blob links it left go.
                self.actions.append(Action("untree", rel, None, stale=self.tree_values(
                    tree_rec, None)))
            self.records[rel] = Record(
                rel, "snapshot", target, created=our_link or co is not None,
                named_before=(link_rec if our_link else co).named_before  # type: ignore[union-attr]
                if (our_link or co) else ())
            return self.store_ok(target, rel, names)
        if our_link and entry.target != target:
            holder = self.wanted_by_other(rel, entry.target)
            if holder:  # ours together with a profile that still wants it as it is
                self.block(names, rel, f"profile {holder!r} wants this revision linked to "
                           f"{entry.target}; one revision cannot be two store paths (this "
                           f"profile wants {target})", "pin the same store path as that "
                           "profile (the same fetch), or set link = false for this model")
                self.records[rel] = link_rec  # type: ignore[assignment]
                return False
        if entry.kind not in ("missing", "dir") and not our_link:
            if entry.kind == "link" and entry.target == target:
                # Someone else's whole link to this very store path: it serves, though a
                # download through it would write into the store (not ours to change).
                self.records[rel] = Record(rel, "snapshot", target, created=False)
                return self.store_ok(target, rel, names)
            self.block(names, rel, f"{_what(entry)} that model-repo did not create holds this "
                       f"revision", f"if it is stale, remove it (rm {self.full(rel)}); otherwise "
                       "set link = false for this model")
            return False
        if not self.store_ok(target, rel, names):
            if link_rec or tree_rec:
                self.records[rel] = (link_rec or tree_rec)  # type: ignore[assignment]
            return False
        # Refs that already named this commit (pointing at nothing) do not hold our
        # snapshot once we no longer want it: the cache goes back to what it was.
        ours = link_rec if our_link else tree_rec if our_tree else None
        before = ours.named_before if ours else tuple(sorted(  # type: ignore[union-attr]
            p for p, c in self.disk_refs.items() if c == commit))
        if partial or (our_tree and (self.co_trees(rel) or self.others_in_tree(
                rel, self.tree_values(tree_rec, None)))):  # type: ignore[arg-type]
            # A partial model, or a whole one whose snapshot is a tree others use too
            # (another profile's links, a download's files): file by file. Our earlier
            # tree here (even one already removed) may have left blob links.
            return self.tree(rel, entry, target, our_link, tree_rec, before, names)
        if our_tree:
            # Our partial snapshot of this commit becomes a whole link (two steps).
            self.actions.append(Action("untree", rel, None, stale=self.tree_values(
                tree_rec, None)))  # type: ignore[arg-type]
            self.actions.append(Action("link", rel, target, expect=MISSING))
        else:
            if tree_rec is not None and entry.kind == "missing":
                # A change from our tree was stopped after removing it: blob links remain.
                self.actions.append(Action("untree", rel, None, stale=self.tree_values(
                    tree_rec, None)))
            # A new link is one symlinkat (atomic by itself); ours is replaced by rename.
            self.actions.append(Action("link", rel, target, expect=_entry_value(entry)))
        self.records[rel] = Record(rel, "snapshot", target, created=True, named_before=before)
        return True

    @staticmethod
    def tree_values(rec: Record, keep: str | None) -> tuple[str, ...]:
        """Every store path ``rec`` may have linked a tree of ours into, but ``keep``."""
        return tuple(sorted({rec.value, *rec.owned} - {keep, None}))  # type: ignore[arg-type]

    def foreign_dir(self, rel: str, commit: str, target: str, names: list[str]) -> bool:
        """Plan the snapshot ``rel`` that is a directory we did not make: another
        profile's partial snapshot of this state dir is ours too and gets what it lacks
        of ``target``; any other folder (a user's download, or the partial snapshot of a
        profile of another state dir, whose wants we cannot see) serves only when it
        holds every file of ``target``, and is never changed."""
        if not self.store_ok(target, rel, names):
            return False
        co = self.co_trees(rel)
        if co:
            same = next((r for r in co if r.owns(target)), None)
            # The refs that named it before this state dir's profiles made it (not the
            # ones written since, by a profile of another state dir that it serves).
            before = same.named_before if same else tuple(sorted(
                set.intersection(*(set(r.named_before) for r in co))))
            return self.tree(rel, Entry("dir"), target, False, None, before, names)
        try:
            missing = self.unserved(rel, target)
        except OSError as exc:
            self.block(names, rel, f"cannot list the store path {target}: {exc.strerror or exc}",
                       "check that it is a readable directory, then activate again")
            return False
        if missing and self.model_repo_tree(rel):
            more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
            self.block(names, rel, "another model-repo profile (of another state dir) has its "
                       f"partial snapshot of this revision here, without {missing[0]!r}{more} "
                       "of this model's files", "fetch the same files as the other profile "
                       "(the same include/exclude), or set link = false for this model; if "
                       "that profile is gone, deactivate it and activate again")
            return False
        if missing:
            more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
            self.block(names, rel, f"a snapshot folder model-repo did not create (your own "
                       f"download?) is at this revision without {missing[0]!r}{more} of the "
                       f"model's files, so it cannot serve the model offline; model-repo "
                       "does not change it", f"move it away (mv {self.full(rel)} ~/) and "
                       "activate again, or complete it (hf download with --revision "
                       f"{commit}), or set link = false for this model")
            return False
        self.records[rel] = Record(rel, "snapshot", target, created=False)
        return True

    def tree(self, rel: str, entry: Entry, target: str, our_link: bool, rec: Record | None,
             named_before: tuple[str, ...], names: list[str]) -> bool:
        """Plan the partial snapshot ``rel`` of store path ``target`` (see :mod:`activate.tree`):
        ours alone, or shared with other profiles (their files stay; ours are added
        where a file is not served yet)."""
        if not self.ensure_dir(f"{self.folder}/blobs", names):
            return False
        if our_link:
            # Our whole link of this commit becomes a directory (two steps).
            self.actions.append(Action("unlink", rel, expect=_entry_value(entry)))
        stale = self.tree_values(rec, target) if rec else ()
        if stale and self.links_held(rel, named_before, stale):
            # A file set change while a ref none of this state dir's profiles wrote names
            # the commit: whoever wrote it (a profile of another state dir, a download)
            # may be served by our links into the stale store paths. Those of files the
            # new store path has are replaced; the others stay (still ours) until no such
            # ref names the commit.
            if our_link or entry.kind != "dir" or not self.linked_exactly(rel, target):
                self.actions.append(Action("tree", rel, target, stale=stale, keep_stale=True))
            self.records[rel] = Record(rel, "tree", target, created=True, owned=stale,
                                       named_before=named_before)
            return True
        if our_link or stale or entry.kind != "dir" or not self.tree_in_place(rel, target):
            self.actions.append(Action("tree", rel, target, stale=stale,
                                       fill=self.tree_fill(rel, target)))
        self.records[rel] = Record(rel, "tree", target, created=True, named_before=named_before)
        return True

    def links_held(self, rel: str, named_before: tuple[str, ...],
                   stale: tuple[str, ...]) -> bool:
        """True (and noted) when our links in the partial snapshot ``rel`` into the
        ``stale`` store paths must stay: a ref :meth:`foreign_holder_of` finds names its
        commit."""
        holder = self.foreign_holder_of(rel, named_before)
        if holder:
            self.out.notes.append(f"keeping the links of {self.full(rel)} into "
                                  f"{', '.join(stale)}: {holder} (not written by this "
                                  "state dir) names this revision")
        return holder is not None

    def foreign_holder_of(self, rel: str, named_before: tuple[str, ...]) -> str | None:
        """A ref on disk naming the commit of our partial snapshot ``rel`` that no profile
        of this state dir wrote and that did not name it before we made it (``named_before``):
        written since by a profile of another state dir or the user's download, either of
        which may rely on the files our links serve there. None when there is none."""
        commit = rel.rsplit("/", 1)[1]
        for path, value in sorted(self.disk_refs.items()):
            if value != commit or path in named_before:
                continue
            mine = self.old.get(path)
            if mine is not None and mine.kind == "ref" and mine.owns(value):
                continue
            if any(r.kind == "ref" and r.owns(value) for _, r in self.others_at.get(path, ())):
                continue
            return path.split("/", 1)[1]
        return None

    def linked_exactly(self, rel: str, target: str) -> bool:
        """True when every file of ``target`` is our link into ``target`` in ``rel`` (not a
        link into another store path that happens to serve it)."""
        try:
            files = treemod.store_files(target)
        except OSError:
            return False
        return all(self.fs.lstat(f"{rel}/{f}").target == link
                   for f, _blob, link in treemod.entries(target, files))

    def tree_in_place(self, rel: str, target: str) -> bool:
        """True when the tree ``rel`` serves every file of ``target``."""
        try:
            return not self.unserved(rel, target)
        except (OSError, Blocked):
            return False

    def store_ok(self, target: str, rel: str, names: list[str]) -> bool:
        kind = self.store_kind(target)
        if kind == "dir":
            return True
        if kind == "damaged":
            from .storecheck import changed  # standard library, only for this report

            self.block(names, rel, f"the store path {target} is damaged: "
                       f"{changed(target) or 'it was changed after Nix made it'}",
                       f"check it (nix-store --verify-path {target}), then repair it "
                       f"(nix-store --repair-path {target}) or delete it (nix-store --delete "
                       f"{target}) and rebuild, then activate again")
        elif kind == "missing":
            from .persistdir import import_hint  # standard library, only for this report

            self.block(names, rel, f"the store path {target} is missing (garbage-collected?)",
                       import_hint(target) or
                       f"rebuild it (nix-store --realise {target}, or run your home-manager "
                       "switch / devenv shell / nixos-rebuild again), then activate again")
        else:
            self.block(names, rel, f"the store path {target} is not a directory; a model is "
                       "a directory of the repo's files", "point the model's path at the "
                       "directory of its files (for a single file, use its parent), rebuild, "
                       "then activate again")
        return False

    def ref(self, rel: str, commit: str, target: str, names: list[str]) -> None:
        """Plan ref file ``rel`` holding exactly ``commit`` (for store path ``target``)."""
        entry = self.fs.lstat(rel)
        rec = self.mine(rel, "ref")
        # Ours, removed by someone (hf cache rm of our revision): what it held before us
        # is still to be given back. So is it when another profile of this state dir held
        # it (its claim dies below): we give it back in its place.
        prev = rec if rec is not None and rec.created and rec.previous else next(
            (r for _, r in self.others_at.get(rel, ())
             if r.kind == "ref" and r.created and r.previous), None)
        if entry.kind != "file":
            self.observe(rel, None)
        if entry.kind == "missing":
            stamp = _new_stamp()
            previous, held = ((prev.previous, prev.previous_held) if prev
                              else (self.kept_elsewhere(rel), True))
            new = Record(rel, "ref", commit, created=True, previous=previous,
                         previous_held=held and previous is not None, stamp=stamp)
            self.keep_previous(rel, new)
            self.actions.append(Action("ref", rel, commit, expect=MISSING,
                                       stamp=stamp))
            self.records[rel] = new
            return
        if self.nested_ref(rel, rel.split("/refs/", 1)[1], target, names, "dir"):
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
        self.observe(rel, content)
        ours = rec is not None and rec.owns(content)
        if content == commit:
            if ours:
                self.records[rel] = replace(rec, value=commit, owned=())  # type: ignore[arg-type]
            else:
                co = self.co_own(rel, "ref", commit)
                self.records[rel] = (replace(co, value=commit, owned=()) if co else
                                     Record(rel, "ref", commit, created=False))
            self.keep_previous(rel, self.records[rel])
            return
        wanting = self.wanted_by_other(rel, content)
        holder = (f"profile {wanting!r}" if wanting else None) or self.owned_by_other(
            rel, content) or (None if ours else self.foreign_holder(content, target, rel))
        if holder:
            self.block(names, rel, f"{holder} holds this ref at {content}; one ref cannot "
                       f"name two revisions (this profile wants {commit})",
                       "give this model another ref (refs = [ \"...\" ]) or the same revision "
                       "as the other profile; if that profile is gone, remove the ref "
                       f"(rm {self.full(rel)}) and activate again")
            if ours:
                self.records[rel] = rec  # type: ignore[assignment]
                self.keep_previous(rel, rec)  # type: ignore[arg-type]
            return
        # Whatever it held (even bytes that are no commit) comes back when we let go.
        if ours:
            previous, held = rec.previous, rec.previous_held  # type: ignore[union-attr]
        else:
            previous = content
            held = self.fs.lstat(f"{self.folder}/snapshots/{content}").kind != "missing" \
                if COMMIT_RE.match(content) else False
        stamp = _new_stamp()
        new = Record(rel, "ref", commit, created=True, previous=previous, previous_held=held,
                     stamp=stamp)
        self.keep_previous(rel, new)  # before the ref moves: their revision stays named
        self.actions.append(Action("ref", rel, commit, expect=("file", content),
                                   stamp=stamp))
        self.records[rel] = new

    def kept_by_others(self, ref: str, *, foreign: bool = False) -> set[str]:
        """What the kept refs of other holders for ``ref`` (``refs/model-repo-kept/<other
        holder>/<ref>``) held when this run read the refs: of any state dir, or with
        ``foreign`` only those no profile of this state dir records (another state dir's,
        whose records we cannot read)."""
        return {self.disk_refs[p] for p in self.kept_paths_of_others(ref, foreign=foreign)}

    def kept_paths_of_others(self, ref: str, *, foreign: bool = False) -> list[str]:
        """The paths of the kept refs :meth:`kept_by_others` reads."""
        base = f"{self.folder}/refs/{KEPT_REFS}/"
        return [p for p in self.disk_refs
                if p.startswith(base) and p.endswith("/" + ref)
                and p.count("/") == base.count("/") + 1 + ref.count("/")
                and not p.startswith(f"{base}{self.holder}/")
                and not (foreign and any(r.kind == "ref" for _, r in self.others_at.get(p, ())))]

    def kept_last_by_us(self, ref: str, others: list[str]) -> bool:
        """True when our kept ref for ``ref`` was put in place after each of the kept refs
        ``others`` (their change times, set by the kernel when a file is renamed into
        place; the modification time is our random stamp): what it holds is the newer
        word on the user's value. False when ours is missing or any time is unreadable."""
        ours = f"{self.folder}/refs/{KEPT_REFS}/{self.holder}/{ref}"
        found = [_ref_stat(self.fs, rel) for rel in (ours, *others)]
        if any(st is None for st in found):
            return False
        times = [st.st_ctime_ns for st in found]  # type: ignore[union-attr]
        return all(times[0] > t for t in times[1:])

    def kept_elsewhere(self, rel: str) -> str | None:
        """For the missing ref ``rel``: the user's revision a profile of another state
        dir keeps named for it (its ``refs/model-repo-kept/<holder>/<ref>``), when exactly
        one such commit exists and its snapshot does. That profile took the user's ref,
        and the user's tool removed it with that profile's revision: its records, which
        we cannot read, hold the value to give back; we take its place. None otherwise."""
        found = self.kept_by_others(rel[len(self.folder) + len("/refs/"):], foreign=True)
        if len(found) != 1:
            return None
        (commit,) = found
        if not COMMIT_RE.match(commit) or self.fs.lstat(
                f"{self.folder}/snapshots/{commit}").kind == "missing":
            return None
        return commit

    def keep_previous(self, rel: str, rec: Record) -> None:
        """While ``rec`` (a ref we replaced) holds the user's ref, their revision keeps a
        ref huggingface_hub counts: ``refs/model-repo-kept/<holder>/<ref>`` names the
        commit the ref held before us, while that snapshot exists. ``hf cache prune`` (and
        ``scan_cache_dir``'s detached revisions) then see it as referenced, not as
        something to delete. One per profile (``holder``: :func:`kept_holder`), so a
        profile of another state dir, whose records we cannot read, never holds the one
        that must name the user's current revision. Removed with the ref's give-back.
        Something else where it belongs: left alone, with a note (the model is not
        blocked for it)."""
        previous = rec.previous
        if not (rec.created and rec.previous_held and previous and COMMIT_RE.match(previous)):
            return
        if self.fs.lstat(f"{self.folder}/snapshots/{previous}").kind == "missing":
            return
        ref = rel[len(self.folder) + len("/refs/"):]
        kept = f"{self.folder}/refs/{KEPT_REFS}/{self.holder}/{ref}"
        parts = kept.split("/")
        for i in range(3, len(parts)):
            sub = "/".join(parts[:i])
            kind = self.fs.lstat(sub).kind
            if kind == "missing":
                self.actions.append(mkdir_action(sub))
            elif kind != "dir":
                self.out.notes.append(f"cannot keep {previous} referenced: "
                                      f"{self.full(sub)} is not a folder")
                return
            self.wanted_dirs.add(sub)
            if sub not in self.records:  # as ensure_dir, without blocking the model
                before = self.old.get(sub)
                self.records[sub] = Record(sub, "dir", created=kind == "missing" or bool(
                    before and before.created) or any(
                    r.kind == "dir" and r.created for _, r in self.others_at.get(sub, ())))
        entry = self.fs.lstat(kept)
        mine = self.mine(kept, "ref")
        content = _read_ref(self.fs, kept) if entry.kind == "file" else None
        ours = mine is not None and mine.owns(content)
        if content == previous:  # (written by someone else: it does what we need, not ours)
            self.records[kept] = (replace(mine, value=content, owned=()) if ours  # type: ignore[arg-type]
                                  else Record(kept, "ref", content, created=False))
            return
        if entry.kind != "missing" and not ours:
            self.out.notes.append(f"cannot keep {previous} referenced: {self.full(kept)} "
                                  "holds something model-repo did not write")
            return
        # Missing, or ours naming an older value of the user's ref (a give-back the user
        # raced by moving the ref): it names their current revision now.
        stamp = _new_stamp()
        self.actions.append(Action("ref", kept, previous,
                                   expect=MISSING if entry.kind == "missing" else ("file", content),
                                   stamp=stamp))
        self.records[kept] = Record(kept, "ref", previous, created=True, stamp=stamp)

    def foreign_holder(self, content: str, target: str, ref: str = "") -> str | None:
        """When ``content`` names a snapshot linked into the same store by someone else (a
        profile of another user or state dir), say so: that ref is theirs, not the user's."""
        if not COMMIT_RE.match(content):
            return None
        snap = f"{self.folder}/snapshots/{content}"
        entry = self.fs.lstat(snap)
        ours = self.mine_in_form(snap, "snapshot") or self.mine_in_form(snap, "tree")
        made = [r for r in (ours, *(r for _, r in self.others_at.get(snap, ())))
                if r is not None and r.kind in ("snapshot", "tree") and r.created]
        if ref and made and not any(ref in r.named_before for r in made):
            # Set to a snapshot this state dir's profiles made, after they made it, by
            # none of them: by a profile of another state dir that uses it too (it holds
            # the ref), or by a download of yours.
            return (f"another model-repo profile (of another state dir) or a download of "
                    f"yours, which set it to model-repo's snapshot {content}")
        if ours is None and (entry.kind == "missing" or (
                entry.kind == "dir" and next(iter(self.fs.walk_files(snap)), None) is None)):
            # No download leaves this; a profile of another state dir changing its snapshot
            # (or stopped while it did) does: the ref is most likely its.
            return (f"another model-repo profile (of another state dir) in the middle of a "
                    f"change, or nobody (snapshots/{content} is "
                    f"{'missing' if entry.kind == 'missing' else 'an empty folder'})")
        if (entry.kind == "link" and entry.target is not None
                and os.path.dirname(entry.target) == os.path.dirname(target)
                and self.store_kind(entry.target) in ("dir", "damaged")):
            mine = self.mine_in_form(snap, "snapshot")
            if not (mine and mine.owns(entry.target)):
                return f"another model-repo profile (snapshots/{content} -> {entry.target})"
        if entry.kind == "dir":
            mine = self.mine_in_form(snap, "tree")
            known = [v for r in (*self.co_trees(snap), *([mine] if mine else []))
                     for v in (r.value, *r.owned) if v]
            if self.model_repo_tree(snap, known or [""]):
                # A partial snapshot (also) linked by a profile none of this state dir's.
                return (f"another model-repo profile (snapshots/{content} is its partial "
                        "snapshot)")
        return None

    def still_held(self, rec: Record, final_refs: Mapping[str, str]) -> str | None:
        """When ``rec`` is a kept ref of ours (``refs/model-repo-kept/<holder>/<ref>``) and
        the user's ``<ref>`` it keeps named is still held by a record that took it from
        them (ours, kept for another profile, or another profile's of this state dir):
        who holds it. Their own kept ref may be gone already (removed by a drop of theirs
        that left the ref to us), so ours stays while the ref is held."""
        prefix = f"{self.folder}/refs/{KEPT_REFS}/{self.holder}/"
        if rec.kind != "ref" or not rec.path.startswith(prefix):
            return None
        name = rec.path[len(prefix):]
        if rec.value in self.kept_by_others(name):
            return None  # named by another profile's kept ref: ours can go
        ref = f"{self.folder}/refs/{name}"
        current = final_refs.get(ref)
        mine = self.records.get(ref)
        if mine is not None and mine.kind == "ref" and mine.previous == rec.value \
                and mine.owns(current):
            return "this profile"
        for profile, r in self.others_at.get(ref, ()):
            if r.kind == "ref" and r.previous == rec.value and r.owns(current):
                return f"profile {profile!r}"
        return None

    def removed_with_our_revision(self, rec: Record, current: str | None) -> bool:
        """True when ``rec``, a ref we took from the user, is gone and nothing replaced it
        (``current`` is None): the user's tool removed it with our revision (`hf cache
        rm <commit>`, ``delete_revisions``: huggingface_hub removes the refs naming what it
        deletes), so their value is still to be given back, unless their own revision
        went too (then huggingface_hub would have removed their ref as well), the
        folder the ref lives in is gone (the whole repo removed), or a holder of another
        state dir keeps a revision named for it in a kept ref newer than ours
        (:meth:`kept_last_by_us`: that profile gives it back)."""
        if not (rec.created and rec.previous and current is None
                and self.fs.lstat(rec.path).kind == "missing"):
            return False
        if self.fs.lstat(rec.path.rsplit("/", 1)[0]).kind != "dir":
            return False
        ref = rec.path[len(self.folder) + len("/refs/"):]
        others = self.kept_paths_of_others(ref, foreign=True)
        if others and not self.kept_last_by_us(ref, others):
            # A profile of another state dir took the ref after us (our claim may be
            # stale: the user may have moved it meanwhile): it gives theirs back. One
            # whose kept ref is older than ours took it before us: ours is newer.
            return False
        return not rec.previous_held or self.fs.lstat(
            f"{self.folder}/snapshots/{rec.previous}").kind != "missing"

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
        # Refs given back before the refs that kept their revisions named.
        for rec in sorted((r for r in gone if r.kind == "ref"),
                          key=lambda r: (f"/refs/{KEPT_REFS}/" in r.path, r.path)):
            owner = self.wanted_by_other(rec.path, rec.value)
            current = final_refs.get(rec.path)
            if owner:
                self.keep_for(owner, rec)
            elif held := self.still_held(rec, final_refs):
                # The user's ref is still held (another profile wants it): their revision
                # stays named until it is given back (a later run of ours removes this).
                notes.append(f"keeping {rec.path}: {held} still holds the user's ref")
                records[rec.path] = rec
            elif (present := self.fs.lstat(rec.path).kind == "file" and rec.owns(current)) \
                    or self.removed_with_our_revision(rec, current):
                # The ref goes back exactly as it was before us (even if the snapshot its
                # value names has gone meanwhile: that is the user's to decide).
                expect = ("file", current) if present else MISSING
                if rec.previous and rec.previous_held:
                    # Back to a value that named an existing snapshot: it holds it again.
                    actions.append(Action("ref", rec.path, rec.previous, expect=expect))
                    final_refs[rec.path] = rec.previous
                elif rec.previous:
                    actions.append(Action("ref", rec.path, rec.previous, expect=expect))
                    final_refs[rec.path] = rec.previous
                    restored.add(rec.path)
                else:
                    actions.append(Action("unlink", rec.path, expect=expect))
                    final_refs.pop(rec.path, None)
            else:
                notes.append(f"not touching {rec.path}: it changed since model-repo wrote it")
        # A ref given back its value from before us names what it named then: it must not
        # keep a snapshot of ours alive later either.
        for rel, rec in list(records.items()):
            if rec.kind in ("snapshot", "tree") and rec.created:
                commit = rel.rsplit("/", 1)[1]
                extra = [p for p in restored if final_refs.get(p) == commit
                         and p not in rec.named_before]
                if extra:
                    records[rel] = replace(rec, named_before=tuple(sorted((*rec.named_before, *extra))))
        for rec in sorted((r for r in gone if r.kind in ("snapshot", "tree")), key=lambda r: r.path):
            owner = self.wanted_by_other(rec.path, rec.value)
            entry = self.fs.lstat(rec.path)
            commit = rec.path.rsplit("/", 1)[1]
            holders = [p for p, c in final_refs.items()
                       if c == commit and p not in rec.named_before and p not in restored]
            # A ref another profile of this state dir keeps at this commit (one it could
            # not move yet) holds the snapshot too, whenever it was written.
            kept = next((f"profile {o!r}'s {p}" for p, c in final_refs.items() if c == commit
                         for o, r in self.others_at.get(p, ()) if r.kind == "ref"
                         and r.value == commit), None)
            forms = rec.forms()  # both while a change of form was stopped
            tree_ours = "tree" in forms and entry.kind == "dir"
            ours = tree_ours or ("snapshot" in forms and entry.kind == "link"
                                 and rec.owns(entry.target))
            untree = Action("untree", rec.path, None, stale=self.tree_values(rec, None),
                            fill=self.tree_fill(rec.path, None))
            if owner:
                self.keep_for(owner, rec)
            elif "tree" in forms and entry.kind == "missing":
                # Gone already; blob links a stopped run made may remain.
                actions.append(untree)
            elif not ours:
                if entry.kind != "missing":
                    notes.append(f"not touching {rec.path}: it changed since model-repo made it")
            elif tree_ours and untree.fill and not self.foreign_holder_of(rec.path,
                                                                          rec.named_before):
                # Other profiles' files stay served; the folder is theirs now. (While a
                # ref none of this state dir's profiles wrote names it, our links stay:
                # the holders below.)
                actions.append(untree)
            elif kept:
                notes.append(f"keeping {rec.path}: {kept} names it")
                records[rec.path] = rec
            elif holders:
                notes.append(f"keeping {rec.path}: {holders[0]} (not model-repo's) names it")
                records[rec.path] = rec
            elif tree_ours:
                actions.append(untree)
            else:
                actions.append(Action("unlink", rec.path, expect=_entry_value(entry)))
                if "tree" in forms:  # blob links of a change of form that was stopped
                    actions.append(untree)
        # Folders we created go when empty, deepest first; the others are never removed.
        for rec in sorted((r for r in self.old.values() if r.kind == "dir" and r.created),
                          key=lambda r: r.path.count("/"), reverse=True):
            blobs_needed = rec.path == f"{self.folder}/blobs" and any(
                r.kind == "tree" and r.created for r in records.values())
            if rec.path in self.wanted_dirs or blobs_needed or any(
                    p != rec.path and p.startswith(rec.path + "/") for p in records):
                records.setdefault(rec.path, rec)
                continue
            if self.fs.lstat(rec.path).kind == "dir":
                actions.append(Action("rmdir", rec.path))
            records.pop(rec.path, None)


#: Folder under a repo's ``refs/`` naming the user's revisions while we hold their refs.
KEPT_REFS = "model-repo-kept"


def kept_holder(state_path: str) -> str:
    """The folder of a profile's kept refs (``refs/model-repo-kept/<holder>/<ref>``): 12
    hex digits of the SHA-256 of its state file's real path, so profiles of two state dirs
    (two users of one cache, root's NixOS unit beside a user's Home Manager) never share
    one, even under one profile name."""
    import hashlib

    real = os.path.realpath(state_path)
    return hashlib.sha256(real.encode("utf-8", "surrogateescape")).hexdigest()[:12]

#: Largest ref file we replace (and keep to restore); a ref is 40 bytes.
_REF_MAX = 4096


def _new_stamp() -> str:
    """A modification time (ns, as text) for a ref file we write: this second, with random
    nanoseconds, so no other writer's file has it (a download rewriting the file, or
    another profile writing the same value, gives it another)."""
    import time

    return str(time.time_ns() // 10**9 * 10**9 + int.from_bytes(os.urandom(4), "big") % 10**9)


def ref_stamp(fs: HubFS, rel: str) -> str | None:
    """The modification time (ns, as text) of the ref file ``rel`` (not following
    links): the stamp :func:`apply` gave it if it is still the file we wrote; None when
    there is no such file."""
    st = _ref_stat(fs, rel)
    return str(st.st_mtime_ns) if st is not None else None


def _ref_stat(fs: HubFS, rel: str) -> os.stat_result | None:
    """The ``stat`` of the regular file ``rel`` (not following links); None when there is
    no such file or it cannot be looked at."""
    parent, _, name = rel.rpartition("/")
    try:
        if fs.lstat(rel).kind != "file":  # (its folders exist: their descriptors are kept)
            return None
        st = os.stat(name, dir_fd=fs.dir_fd(parent), follow_symlinks=False)
    except (OSError, Blocked):
        return None
    return st if stat.S_ISREG(st.st_mode) else None


def stamp_refs(fs: HubFS, records: list[Record], written: set[str]) -> list[Record]:
    """``records`` (the list, changed in place and returned) with the stamp of each ref
    we created and hold (:attr:`Record.stamp`) as it is now: those written by this run
    (``written``), and those with none yet (states of version 2). A ref written by this
    run that holds another value already is no longer ours; one that cannot be seen now
    (gone, or a folder on its way replaced) keeps the claim as planned."""
    out = records  # changed in place: a copy is megabytes at 10,000 models
    current = None
    try:
        for i, rec in enumerate(records):
            if rec.kind == "ref" and rec.created and (rec.path in written or not rec.stamp):
                folder = rec.path.split("/", 1)[0]
                if folder != current:
                    fs.forget()  # descriptors of one repo folder at a time (as apply)
                    current = folder
                stamp = ref_stamp(fs, rec.path)
                try:
                    other = stamp is not None and _read_ref(fs, rec.path) != rec.value
                except (OSError, Blocked):
                    stamp, other = None, False
                if stamp is not None and not other:
                    rec.stamp = stamp
                elif other and rec.path in written:
                    # Rewritten by someone else right after our write: not ours any more.
                    out[i] = Record(rec.path, "ref", rec.value, named_before=rec.named_before)
                # Not to be seen now (its folder moved away or replaced, or removed): the
                # claim stays as planned; the next run looks again.
    finally:
        fs.forget()
    return out


def _read_ref(fs: HubFS, rel: str) -> str:
    """A ref file's content, byte-exact (undecodable bytes kept as surrogates)."""
    return fs.read_file(rel, _REF_MAX + 1).decode("utf-8", "surrogateescape")


def _what(entry: Entry) -> str:
    return f"a symlink to {entry.target!r}" if entry.kind == "link" else f"a {entry.kind}"


def _encode(value: str | None) -> bytes:
    return (value or "").encode("utf-8", "surrogateescape")


def apply(fs: HubFS, actions: Iterable[Action],
          skipped: list[Action] | None = None) -> list[tuple[Action, OSError]]:
    """Carry out ``actions`` in order; return the ones that failed with their error.

    Before each write the path is compared with the action's ``expect`` (what the planner
    saw); a path changed meanwhile (a concurrent download moving a ref, say) is left
    alone and returned as failed with :class:`~activate.hubfs.Changed`'s message. After a
    failure in a repo folder, that folder's remaining actions are skipped (the next run
    re-plans them); other folders go on. Those skipped actions are appended to
    ``skipped`` when given.
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
                if skipped is not None:
                    skipped.append(act)
                continue
            try:
                _apply_one(fs, act)
            except (OSError, Blocked) as exc:
                err = exc if isinstance(exc, OSError) else OSError(str(exc))
                failed.append((act, err))
                broken.add(folder)
    finally:
        try:
            fs.drop_private()
        finally:
            fs.forget()
    return failed


def _apply_one(fs: HubFS, act: Action) -> None:
    op = act.op
    if op == "mkdir":
        fs.mkdir(act.path)
    elif op == "link" and act.expect == MISSING:
        fs.create_symlink(act.path, act.value or "")
    elif op == "link":
        fs.replace_symlink(act.path, act.value or "", expect=act.expect)
    elif op == "ref" and act.expect == MISSING:
        fs.create_file(act.path, _encode(act.value),
                       mtime_ns=int(act.stamp) if act.stamp else None)
    elif op == "ref":
        fs.replace_file(act.path, _encode(act.value), expect=act.expect,
                        mtime_ns=int(act.stamp) if act.stamp else None)
    elif op == "unlink":
        fs.unlink(act.path, expect=act.expect)
    elif op == "rmdir":
        fs.rmdir_if_empty(act.path)
    elif op == "unprivate":
        fs.remove_private(act.path)
    elif op == "tree":
        _make_tree(fs, act.path, act.value or "", act.stale, keep_stale=act.keep_stale)
        _fill(fs, act.path, act.fill)
    elif op == "trim":
        _remove_tree(fs, act.path, act.stale, keep=act.value)
        _fill(fs, act.path, act.fill)
    elif op == "untree":
        _remove_tree(fs, act.path, (act.value or "", *act.stale), keep=None)
        _fill(fs, act.path, act.fill)
        if fs.lstat(act.path).kind == "dir":
            fs.rmdir_if_empty(act.path)
    else:  # pragma: no cover - the planner makes no other ops
        raise ValueError(f"unknown action {op}")


def _make_tree(fs: HubFS, rel: str, target: str, stale: tuple[str, ...],
               only_missing: bool = False, keep_stale: bool = False) -> None:
    """Make (or complete) the partial snapshot ``rel`` of ``target``: each file of it not
    yet served there is linked (a file another profile's link or a download already
    serves is left as it is; our link into a ``stale`` store path is replaced); then drop
    our other links to the ``stale`` store paths, unless ``keep_stale``.
    Something foreign where a link belongs (and serving nothing): Changed.
    ``only_missing``: add links only where nothing is (filling in for another profile)."""
    folder = rel.split("/", 1)[0]
    if fs.lstat(rel).kind == "missing":
        fs.mkdir(rel)
    files = treemod.store_files(target)
    made_dirs = set()
    for f, blob, link in treemod.entries(target, files):
        parts = f.split("/")
        file_rel = f"{rel}/{f}"
        if only_missing and any(fs.lstat(f"{rel}/" + "/".join(parts[:i])).kind not in
                                ("dir", "missing") for i in range(1, len(parts))):
            continue
        for i in range(1, len(parts)):
            sub = f"{rel}/" + "/".join(parts[:i])
            if sub not in made_dirs:
                kind = fs.lstat(sub).kind
                if kind == "missing":
                    fs.mkdir(sub)
                elif kind != "dir":
                    raise Changed(sub, f"a {kind} where a folder of the snapshot belongs")
                made_dirs.add(sub)
        entry = fs.lstat(file_rel)
        old_blob = None
        if entry.kind != "missing" and entry.target != link:
            if only_missing:
                continue
            old_blob = _our_blob(fs, folder, entry, stale)
            if old_blob is None:
                if _serves(fs, file_rel):
                    continue  # another profile's link, or a download, serves this file
                raise Changed(file_rel, f"{_what(entry)} that model-repo did not create")
        blob_rel = f"{folder}/blobs/{blob}"
        blob_entry = fs.lstat(blob_rel)
        if blob_entry.kind == "missing":
            fs.create_symlink(blob_rel, f"{target}/{f}")
        elif blob_entry.target != f"{target}/{f}":
            raise Changed(blob_rel, f"{_what(blob_entry)} where model-repo's blob link belongs")
        if entry.kind == "missing":
            fs.create_symlink(file_rel, link)
        elif old_blob is not None:
            fs.replace_symlink(file_rel, link, expect=("link", entry.target))
    if stale and not keep_stale:
        _remove_tree(fs, rel, stale, keep=target)


def _fill(fs: HubFS, rel: str, others: tuple[str, ...]) -> None:
    """Link again, in the partial snapshot ``rel``, the files of the store paths
    ``others`` (wanted there by other profiles) that our removals left missing. A store
    path that is gone, or a path in the way, is that profile's to report."""
    if not others or fs.lstat(rel).kind != "dir":
        return
    for other in others:
        try:
            _make_tree(fs, rel, other, (), only_missing=True)
        except (Changed, Blocked, FileNotFoundError):
            continue


def _serves(fs: HubFS, rel: str) -> bool:
    """True when the snapshot file ``rel`` opens as a regular file (through whatever
    links it is: a read, nothing is written through them). Its folders are walked
    without following links."""
    parent, _, name = rel.rpartition("/")
    try:
        if fs.lstat(parent).kind != "dir":
            return False
        return stat.S_ISREG(os.stat(name, dir_fd=fs.dir_fd(parent)).st_mode)
    except (OSError, Blocked):
        return False


def _our_blob(fs: HubFS, folder: str, entry: Entry, targets: tuple[str, ...]) -> str | None:
    """The blob link ``entry`` (a file link of a tree) goes through, when it is one of ours
    pointing into one of ``targets``."""
    found = _our_blob_link(fs, folder, entry, targets)
    return found[0] if found else None


def _our_blob_link(fs: HubFS, folder: str, entry: Entry,
                   targets: tuple[str, ...]) -> tuple[str, str] | None:
    """:func:`_our_blob` with the blob link's target as it was seen: ``(path, target)``
    (a removal must find exactly that target there)."""
    link = entry.target or ""
    blob = link.rsplit("/", 1)[-1]
    if entry.kind != "link" or not link.startswith("../") or "/blobs/" not in link \
            or not treemod.is_blob_name(blob):
        return None
    blob_rel = f"{folder}/blobs/{blob}"
    target = fs.lstat(blob_rel).target or ""
    if any(target.startswith(t + "/") for t in targets if t):
        return blob_rel, target
    return None


def _named_ours(folder: str, rel: str, file_rel: str, entry: Entry,
                targets: tuple[str, ...]) -> str | None:
    """The blob link (``folder/blobs/<name>``) of the file link ``entry`` at ``file_rel``
    in the snapshot ``rel`` when the link is exactly the one we make for that file of one
    of the store paths ``targets`` (:func:`activate.tree.entries`), whatever its blob link
    holds now."""
    if entry.kind != "link":
        return None
    file = file_rel[len(rel) + 1:]
    for t in targets:
        blob = treemod.blob_name(t, file)
        if entry.target == treemod.file_link_target(file, blob):
            return f"{folder}/blobs/{blob}"
    return None


def _remove_tree(fs: HubFS, rel: str, targets: tuple[str, ...], keep: str | None) -> None:
    """Remove, in the partial snapshot ``rel``, our file links and blob links into the
    store paths ``targets`` (never into ``keep``), then the folders they leave empty.
    Works from what is on disk, so a store path already garbage-collected is no obstacle."""
    folder = rel.split("/", 1)[0]
    targets = tuple(t for t in targets if t and t != keep)
    # A blob link is named after (store path, file): partial snapshots of two commits
    # linking one store path share it, and it stays while another one links through it.
    shared = _blobs_used_by_others(fs, folder, rel) if targets else set()
    for file_rel, kind in list(fs.walk_files(rel)) if fs.lstat(rel).kind == "dir" else []:
        if kind != "link":
            continue
        entry = fs.lstat(file_rel)
        found = _our_blob_link(fs, folder, entry, targets)
        if found is None:
            blob_rel = _named_ours(folder, rel, file_rel, entry, targets)
            if blob_rel is None:
                continue
            # Our file link, its blob link gone or replaced: gone, the file link goes too;
            # replaced (someone else's entry), the change stops here, the record stays
            # and a later run finishes it.
            blob = fs.lstat(blob_rel)
            if blob.kind != "missing":
                raise Changed(blob_rel, f"{_what(blob)} where model-repo's blob link belongs")
            fs.unlink(file_rel, expect=("link", entry.target))
            continue
        blob_rel, blob_target = found
        fs.unlink(file_rel, expect=("link", entry.target))
        if blob_rel.rsplit("/", 1)[1] not in shared:
            fs.unlink(blob_rel, expect=("link", blob_target))
    # Blob links whose file link is already gone (a run stopped between the two unlinks).
    for name in fs.list_dir(f"{folder}/blobs"):
        if treemod.is_blob_name(name) and name not in shared:
            blob_rel = f"{folder}/blobs/{name}"
            entry = fs.lstat(blob_rel)
            if entry.kind == "link" and any((entry.target or "").startswith(t + "/") for t in targets):
                fs.unlink(blob_rel, expect=("link", entry.target))
    # Sub-folders of our snapshot left empty (also by an earlier, interrupted run), except
    # those the kept store path has.
    needed = set()
    if keep:
        for f in treemod.store_files(keep):
            parts = f.split("/")
            needed.update(f"{rel}/" + "/".join(parts[:i]) for i in range(1, len(parts)))
    subs = _sub_dirs(fs, rel) if fs.lstat(rel).kind == "dir" else []
    for sub in sorted(subs, key=lambda p: p.count("/"), reverse=True):
        if sub not in needed:
            fs.rmdir_if_empty(sub)


def _blobs_used_by_others(fs: HubFS, folder: str, rel: str) -> set[str]:
    """Names of our blob links (``model-repo-…``) that a snapshot folder of ``folder``
    other than ``rel`` links a file to."""
    used: set[str] = set()
    snapshots = f"{folder}/snapshots"
    for name in fs.list_dir(snapshots):
        other = f"{snapshots}/{name}"
        if other == rel or fs.lstat(other).kind != "dir":
            continue
        for file_rel, kind in fs.walk_files(other):
            if kind == "link":
                blob = (fs.lstat(file_rel).target or "").rsplit("/", 1)[-1]
                if treemod.is_blob_name(blob):
                    used.add(blob)
    return used


def _sub_dirs(fs: HubFS, rel: str) -> list[str]:
    """Every folder below ``rel`` (not following links)."""
    out = []
    for name in fs.list_dir(rel):
        child = f"{rel}/{name}"
        if fs.lstat(child).kind == "dir":
            out.append(child)
            out.extend(_sub_dirs(fs, child))
    return out
