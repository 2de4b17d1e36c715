"""One activation, deactivation or status read, end to end: lock, state, plan, apply.

This is the layer that does I/O around the pure planner in :mod:`activate.linking`.
"""

from __future__ import annotations

import errno
import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from . import state as statemod
from .envout import environment
from .hubfs import LOCKS_DIR, Changed, HubFS, HubRoot, UnsafePath, open_hub
from .linking import Action, Plan, Problem, Want, apply, kept_holder, plan, stamp_refs
from .log import Log
from .noop import remove_receipts
from .tree import file_by_file

__all__ = ["EnvironmentProblem", "Outcome", "Request", "request_of", "run_activate",
           "run_deactivate"]

#: Name of our lock file in the hub dir's ``.locks/`` (huggingface_hub's own lock folder,
#: skipped by ``scan_cache_dir``).
LOCK_NAME = "model-repo.lock"
DEFAULT_LOCK_TIMEOUT = 60.0


class EnvironmentProblem(Exception):
    """The cache or state cannot be used (lock timeout, unwritable directory, a hub dir
    that vanished or is not the one the state was made in)."""


@dataclass
class Outcome:
    """What a run did: ``plan`` (with problems), the environment, the actions carried
    out, and whether every linked model is in place (``complete``)."""

    plan: Plan
    env: dict[str, str]
    done: list[Action] = field(default_factory=list)
    complete: bool = True
    records: list[statemod.Record] = field(default_factory=list)
    #: Set when the final state save failed: every link is in place and the state
    #: saved before the changes still owns them all, but the run must say so (exit 3).
    state_error: str | None = None
    #: The hub dir's real path (what states and receipts are filed under).
    hub_key: str = ""


@dataclass(frozen=True)
class Request:
    """What one activation needs from a validated manifest, in plain objects: the
    manifest's pydantic models can then be freed (megabytes at 10,000 models).

    ``paths``: model name -> store path, every model; ``wants``: the linked ones;
    ``unlinked``: names with ``link = false``.
    """

    profile: str
    offline: bool
    paths: dict[str, str]
    wants: list[Want]
    unlinked: tuple[str, ...]
    #: Prepared datasets to link into the ``datasets`` cache (:mod:`activate.datasets_link`).
    prepared: tuple = ()
    #: model name -> its one file's path inside its store path (``MODEL_REPO_<NAME>_FILE``).
    files: dict[str, str] = field(default_factory=dict)


def request_of(manifest: object) -> Request:
    """The :class:`Request` of a validated :class:`~activate.manifest.Manifest`."""
    models = manifest.models  # type: ignore[attr-defined]
    return Request(
        profile=manifest.profile,  # type: ignore[attr-defined]
        offline=manifest.offline,  # type: ignore[attr-defined]
        paths={name: m.path for name, m in models.items()},
        wants=[Want(name, m.folder, m.revision, tuple(m.refs), m.path, m.partial)
               for name, m in models.items() if m.link],
        unlinked=tuple(name for name, m in models.items() if not m.link),
        prepared=tuple(_prepared_of(models)),
        files={name: m.file for name, m in models.items() if m.file is not None},
    )


def _prepared_of(models: dict) -> list:
    from .datasets_link import Prepared

    return [Prepared(name, m.repo_id, m.prepared) for name, m in models.items()
            if m.prepared is not None]


def run_activate(
    request: Request,
    *,
    hub_dir: str,
    explicit_hub: bool,
    state_dir: str,
    log: Log,
    dry_run: bool = False,
    read_only: bool = False,
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
    before_write: Callable[[str], None] | None = None,
    gc_roots: bool = False,
    datasets_dir: tuple[str, bool] | None = None,
) -> Outcome:
    """Link ``request``'s models into ``hub_dir`` and return the outcome.

    ``gc_roots``: keep one indirect GC root per existing store path of the manifest's
    models (every one is exported, linked, blocked or ``link = false``), and drop the roots
    of paths no longer in it (:mod:`activate.gcroots`).

    ``datasets_dir``: ``(datasets cache dir, explicit)`` to link ``request.prepared`` into
    (and to drop what this profile linked there before); None: no datasets linking.

    ``dry_run``: plan and report, write nothing. ``read_only``: like dry_run, for
    ``model-repo env``. Raises :class:`EnvironmentProblem` when the hub dir or state dir
    cannot be used.
    """
    writing = not (dry_run or read_only)
    profile = request.profile
    root = _open_hub(hub_dir, create=False)
    try:
        key = root.real
        state_path = statemod.state_file(state_dir, key, profile)
        _check_hub(state_dir, state_path, profile, hub_dir, key, root.identity, log,
                   adopt=writing)
        if writing:
            root = _ensure_hub_dir(root)
        return _activate_in(request, root, state_path, hub_dir=hub_dir,
                            explicit_hub=explicit_hub, state_dir=state_dir, log=log,
                            dry_run=dry_run, read_only=read_only, lock_timeout=lock_timeout,
                            before_write=before_write, gc_roots=gc_roots,
                            datasets_dir=datasets_dir)
    finally:
        root.close()


def _with_layout(wants: list[Want]) -> list[Want]:
    """``wants`` with every whole model the layout rule (:func:`activate.tree.file_by_file`:
    a store not mounted read-only) says to link file by file marked ``partial``, so no
    huggingface_hub cache operation can change its store path through the snapshot."""
    return [replace(w, partial=True) if not w.partial and file_by_file(w.path) else w
            for w in wants]


def _activate_in(request: Request, root: HubRoot, state_path: str, *, hub_dir: str,
                 explicit_hub: bool, state_dir: str, log: Log, dry_run: bool, read_only: bool,
                 lock_timeout: float, before_write: Callable[[str], None] | None,
                 gc_roots: bool, datasets_dir: tuple[str, bool] | None = None) -> Outcome:
    """:func:`run_activate` once the hub dir is open (``root``) and checked."""
    profile = request.profile
    wants = _with_layout(request.wants)
    writing = not (dry_run or read_only)
    key = root.real
    with _hub_lock(root, lock_timeout, writing, log) as lock:
        result, failed, records = _converge(state_dir, state_path, profile, root, key, wants,
                                            writing=writing, before_write=before_write, log=log,
                                            locks_fd=lock.dir_fd)
        for name in request.unlinked:
            if not os.path.isdir(request.paths[name]):
                result.notes.append(
                    f"{name}: store path {request.paths[name]} is missing; its MODEL_REPO "
                    "variable points nowhere until it is rebuilt"
                )
        outcome = Outcome(result, {}, hub_key=key)
        if writing:
            failed_actions = {id(a) for a, _ in failed}
            outcome.done = [a for a in result.actions if id(a) not in failed_actions]
        _report_failed(result, failed, wants, hub_dir)
        blocked = result.blocked_models
        in_place = all(w.name not in blocked for w in wants)
        if read_only:
            touched = {a.path.split("/", 1)[0] for a in result.actions if a.op != "unlink"}
            in_place = in_place and not any(w.folder in touched for w in wants)
        if datasets_dir is not None:
            in_place = _sync_datasets(request, datasets_dir[0], state_dir, result, log,
                                      dry_run=not writing, read_only=read_only,
                                      lock_timeout=lock_timeout,
                                      before_write=before_write) and in_place
        outcome.complete = in_place
        offline = request.offline
        if offline and not in_place:
            log.warning(
                "offline variables not exported: not every model is linked",
                models=sorted(blocked) or None,
            )
        outcome.env = environment(
            request.paths,
            hub_dir=hub_dir if explicit_hub else None,
            offline=offline and in_place,
            datasets_dir=datasets_dir[0] if datasets_dir and datasets_dir[1] else None,
            model_files=request.files,
        )
        outcome.records = records
        if writing:
            new = statemod.State(
                profile, key, records,
                complete=in_place and not result.problems,
                problems=[p.message() for p in result.problems],
                hub_id=root.identity,
            )
            try:
                _save_state(state_path, new)
            except EnvironmentProblem as exc:
                outcome.state_error = str(exc)
        if gc_roots and not read_only:
            _sync_roots(state_dir, key, profile, request, dry_run, log)
    return outcome


def _sync_roots(state_dir: str, key: str, profile: str, request: Request, dry_run: bool,
                log: Log) -> None:
    from . import gcroots

    # Every exported path stays rooted: a blocked model's MODEL_REPO_* variable still
    # names its store path, which must not be collected under it.
    paths = set(request.paths.values()) | {p.path for p in request.prepared}
    try:
        added, removed = gcroots.sync(gcroots.roots_dir(state_dir, key, profile), paths,
                                      dry_run=dry_run)
    except (gcroots.GcRootError, OSError) as exc:
        raise EnvironmentProblem(str(exc)) from None
    verb = "would" if dry_run else "did"
    for p in added:
        log.info(f"{verb} add a GC root for {p}")
    for p in removed:
        log.info(f"{verb} remove the GC root of {p}")


def _sync_datasets(request: Request, datasets_dir: str, state_dir: str, result: Plan,
                   log: Log, *, dry_run: bool, read_only: bool, lock_timeout: float,
                   before_write: Callable[[str], None] | None) -> bool:
    """Link ``request.prepared`` into ``datasets_dir`` (:func:`activate.datasets_link.sync`);
    its problems join ``result``'s. True when every prepared dataset is in place (for
    ``read_only``, ``model-repo env``: already in place, nothing left to make)."""
    from . import datasets_link

    try:
        if not request.prepared and not datasets_link.has_state(state_dir, request.profile):
            return True
        res = datasets_link.sync(datasets_dir, request.profile, state_dir,
                                 list(request.prepared), dry_run=dry_run,
                                 lock_timeout=lock_timeout, before_write=before_write)
    except (datasets_link.DatasetsCacheProblem, OSError) as exc:
        raise EnvironmentProblem(str(exc)) from None
    _report_datasets(res, result, log)
    key = os.path.realpath(datasets_dir)
    try:
        states = datasets_link.profile_states(state_dir, request.profile)
    except datasets_link.DatasetsCacheProblem as exc:
        raise EnvironmentProblem(str(exc)) from None
    for _path, cache in states:
        if cache != key:  # the datasets cache moved (HF_DATASETS_CACHE changed): drop there
            _drop_datasets(cache, request.profile, state_dir, result, log, dry_run=dry_run,
                           lock_timeout=lock_timeout)
    return not res.blocked and not (read_only and res.pending)


def _report_datasets(res: object, result: Plan, log: Log) -> None:
    for line in res.done:  # type: ignore[attr-defined]
        log.info(f"datasets cache: {line}")
    for name, path, reason, fix in res.problems:  # type: ignore[attr-defined]
        result.problems.append(Problem([name], path, reason, fix))


def _drop_datasets(cache: str, profile: str, state_dir: str, result: Plan, log: Log, *,
                   dry_run: bool, lock_timeout: float) -> None:
    """Remove what ``profile`` linked into the datasets cache ``cache``; a cache that is
    missing keeps its state (an unmounted filesystem), with a warning."""
    from . import datasets_link

    if not os.path.isdir(cache):
        log.warning("the datasets cache is missing; its state is kept", cache=cache)
        return
    try:
        res = datasets_link.sync(cache, profile, state_dir, [], dry_run=dry_run,
                                 lock_timeout=lock_timeout)
    except (datasets_link.DatasetsCacheProblem, OSError) as exc:
        raise EnvironmentProblem(str(exc)) from None
    _report_datasets(res, result, log)


def _move_roots(state_dir: str, was: str, key: str, profile: str, log: Log) -> None:
    """The GC roots of a state taken over (its hub dir moved) go with it: filed under the
    old hub dir they would outlive every later drop."""
    from . import gcroots

    try:
        gcroots.move(gcroots.roots_dir(state_dir, was, profile),
                     gcroots.roots_dir(state_dir, key, profile))
    except (gcroots.GcRootError, OSError) as exc:
        log.warning(f"the GC roots of the moved hub cache stay where they were: {exc}")


def _report_failed(result: Plan, failed: list[tuple[Action, OSError]], wants: list[Want],
                   hub_dir: str) -> None:
    for act, err in failed:
        names = sorted({w.name for w in wants if w.folder == act.path.split("/", 1)[0]})
        if isinstance(err, Changed):
            reason, fix = str(err), "activate again; what the other program wrote is kept"
        else:
            reason = f"could not {act.op}: {err.strerror or err}"
            fix = "check the permissions of the cache (ls -ld), then activate again"
        result.problems.append(Problem(names or ["(pruning)"], os.path.join(hub_dir, act.path),
                                       reason, fix))


def _open_hub(hub_dir: str, *, create: bool) -> HubRoot:
    """:func:`~activate.hubfs.open_hub`, its errors as :class:`EnvironmentProblem`."""
    try:
        return open_hub(hub_dir, create=create)
    except UnsafePath as exc:
        raise EnvironmentProblem(str(exc)) from None
    except OSError as exc:
        verb = "create" if create else "open"
        raise EnvironmentProblem(
            f"cannot {verb} the hub cache {hub_dir}: {exc.strerror or exc}; create it "
            "with write permission for this user, or choose another with --cache-dir"
        ) from None


def _check_hub(state_dir: str, state_path: str, profile: str, hub_dir: str, key: str,
               current: tuple[int, int] | None, log: Log, *, adopt: bool) -> None:
    """Refuse a hub dir that is not the one this profile's state was made in.

    A state with records whose hub dir is missing (an unmounted filesystem, a removed
    cache) or has another identity (``(st_dev, st_ino)``: the mount point instead of the
    mounted cache, a cache replaced by a new folder) raises :class:`EnvironmentProblem`:
    working on would forget the values the state keeps to restore. When there is no
    state for this path but one of this profile's states names another path with this
    hub dir's identity (the cache was renamed or moved), or a state of version 1 filed
    under another spelling of this hub dir, it is adopted (``adopt``).

    ``key``: the hub dir's real path, ``current``: its identity as opened (None when
    missing). A state of this profile filed under ``hub_dir`` as spelled, when that is
    not its real path, must have this identity too: the path was a real folder when that
    state was made, and now leads elsewhere (a symlink put in its place): refused.
    """
    if hub_dir != key:
        _check_spelling(state_dir, profile, hub_dir, key, current, adopt=adopt)
    try:
        # read whole under the lock; a read-only run renames nothing aside
        state = statemod.read(state_path, header_only=True, aside=adopt)
    except statemod.CorruptState as exc:
        log.warning(exc.message())
        return
    if state is not None and state.records:
        if current is None:
            raise EnvironmentProblem(
                f"the hub cache {hub_dir} is missing, but profile {profile!r} has links "
                "and refs there (its state is kept): is its filesystem mounted? Mount it "
                "and activate again; if you removed the cache on purpose, run "
                f"`model-repo deactivate --profile '{profile}' --cache-dir {hub_dir} --forget`"
            )
        if state.hub_id is not None and tuple(state.hub_id) != current:
            raise EnvironmentProblem(
                f"the hub cache {hub_dir} is not the folder profile {profile!r} linked "
                f"into (device:inode was {state.hub_id[0]}:{state.hub_id[1]}, now "
                f"{current[0]}:{current[1]}): is its filesystem mounted? Mount it and "
                "activate again; if it was replaced on purpose, run `model-repo deactivate "
                f"--profile '{profile}' --cache-dir {hub_dir} --forget` first"
            )
        return
    if state is None and adopt and current is not None:
        for path, summary, other in statemod.summaries(
                state_dir, update_index=True,
                relevant=lambda p, h: p == profile and h != key):
            same = (tuple(summary.hub_id) == current if summary.hub_id is not None
                    else os.path.realpath(summary.hub_dir) == key)  # a state of version 1
            if same:
                try:
                    other = other or statemod.read(path)
                except statemod.CorruptState as exc:
                    log.warning(exc.message())
                    continue
                if other is None:
                    continue
                log.warning("the hub cache was moved or renamed; taking over its state",
                            was=other.hub_dir, now=key)
                was, other.hub_dir = other.hub_dir, key
                _save_state(state_path, other)
                statemod.delete(path)
                _move_roots(state_dir, was, key, profile, log)
                return


def _check_spelling(state_dir: str, profile: str, hub_dir: str, key: str,
                    current: tuple[int, int] | None, *, adopt: bool) -> None:
    path = statemod.state_file(state_dir, hub_dir, profile)
    try:
        state = statemod.read(path, header_only=True, aside=adopt)
    except statemod.CorruptState:
        return  # reported when it is read in full
    if state is None or not state.records or state.hub_dir != hub_dir or state.hub_id is None:
        return
    if tuple(state.hub_id) == current:
        return  # the same folder under another name (renamed, then symlinked): adopted
    now = f"{current[0]}:{current[1]}" if current else "nothing"
    raise EnvironmentProblem(
        f"the hub cache {hub_dir} now leads to {key}, which is not the folder profile "
        f"{profile!r} linked into (device:inode was {state.hub_id[0]}:{state.hub_id[1]}, "
        f"now {now}): was the folder replaced by a symlink? Nothing was written. Put the "
        f"cache back at {hub_dir} and activate again; if you moved it on purpose, run "
        f"`model-repo deactivate --profile '{profile}' --cache-dir {hub_dir} --forget` "
        "first")


def run_deactivate(
    profile: str,
    *,
    state_dir: str,
    hub_dir: str | None,
    log: Log,
    dry_run: bool = False,
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
    forget: bool = False,
) -> list[tuple[str, Plan]]:
    """Undo everything ``profile`` created (in ``hub_dir`` only, if given).

    Returns ``(hub dir, plan)`` per cache touched. Records that could not be undone
    (changed by someone else, or blocked) stay in the state for a later run. A hub dir
    that is missing or not the folder the state was made in raises
    :class:`EnvironmentProblem` and keeps the state, unless ``forget``: then that state is
    dropped, with its GC roots, without touching any cache (for a cache removed on
    purpose).
    """
    results = []
    from . import datasets_link

    if hub_dir is None:  # a whole-profile drop takes its datasets links too
        try:
            dstates = datasets_link.profile_states(state_dir, profile)
        except datasets_link.DatasetsCacheProblem as exc:
            raise EnvironmentProblem(str(exc)) from None
        for _path, cache in dstates:
            dplan = Plan()
            _drop_datasets(cache, profile, state_dir, dplan, log, dry_run=dry_run,
                           lock_timeout=lock_timeout)
            results.append((cache, dplan))
    # States are filed under the real path; one filed under the path as given is matched
    # too (a cache whose folder was replaced by a symlink, to --forget it).
    keys = {os.path.realpath(hub_dir), hub_dir} if hub_dir else None
    corrupt: list[statemod.CorruptState] = []
    states = statemod.list_states(state_dir, corrupt, aside=not dry_run)
    for exc in corrupt:
        log.warning(exc.message())
    for path, st in states:
        if st.profile != profile or (keys and st.hub_dir not in keys):
            continue
        try:
            root = _open_hub(st.hub_dir, create=False)
        except EnvironmentProblem:
            if not forget:
                raise
            root = HubRoot(st.hub_dir, st.hub_dir, None, None)  # not our folder: gone
        try:
            results.append(_deactivate_one(profile, path, st, root, state_dir=state_dir,
                                           log=log, dry_run=dry_run,
                                           lock_timeout=lock_timeout, forget=forget))
        finally:
            root.close()
    if not dry_run:
        statemod.drop_index_if_alone(state_dir)
    return results


def _deactivate_one(profile: str, path: str, st: statemod.State, root: HubRoot, *,
                    state_dir: str, log: Log, dry_run: bool, lock_timeout: float,
                    forget: bool) -> tuple[str, Plan]:
    """:func:`run_deactivate` for one state (at ``path``) and its opened hub dir."""
    current = root.identity
    gone = current is None or (st.hub_id is not None and tuple(st.hub_id) != current) \
        or (st.hub_id is None and root.real != st.hub_dir)
    if forget:
        if not gone:
            raise EnvironmentProblem(
                f"the hub cache {st.hub_dir} is there: --forget only drops the state of a "
                "cache that is gone; run deactivate without it to undo the links"
            )
        log.warning("forgetting the state of a hub cache that is gone", hub_dir=st.hub_dir,
                    state=path)
        if not dry_run:
            statemod.delete(path)
            remove_receipts(state_dir, profile, st.hub_dir)
            from . import gcroots

            gcroots.drop(gcroots.roots_dir(state_dir, st.hub_dir, profile))
        return st.hub_dir, Plan()
    if gone and st.records:
        raise EnvironmentProblem(
            f"the hub cache {st.hub_dir} is missing or is not the folder profile "
            f"{profile!r} linked into: is its filesystem mounted? The state is kept; "
            "mount it and run deactivate again, or add --forget if the cache was "
            "removed on purpose"
        )
    if root.fd is None:  # no hub dir, no records: nothing to undo there
        if not dry_run:
            from . import gcroots

            statemod.delete(path)
            gcroots.drop(gcroots.roots_dir(state_dir, st.hub_dir, profile))
            remove_receipts(state_dir, profile, st.hub_dir)
        return st.hub_dir, Plan()
    with _hub_lock(root, lock_timeout, not dry_run, log) as lock:
        result, failed, remaining = _converge(state_dir, path, profile, root, st.hub_dir, [],
                                              writing=not dry_run, log=log,
                                              locks_fd=lock.dir_fd)
        _report_failed(result, failed, [], st.hub_dir)
        if not dry_run:
            if remaining:
                _save_state(path, statemod.State(profile, st.hub_dir, remaining,
                                                 hub_id=current))
            else:
                statemod.delete(path)
                from . import gcroots

                gcroots.drop(gcroots.roots_dir(state_dir, st.hub_dir, profile))
            remove_receipts(state_dir, profile, st.hub_dir)
    return st.hub_dir, result


def _converge(
    state_dir: str, state_path: str, profile: str, root: HubRoot, key: str,
    wants: list[Want], *, writing: bool, log: Log,
    before_write: Callable[[str], None] | None = None, locks_fd: int | None = None,
) -> tuple[Plan, list[tuple[Action, OSError]], list[statemod.Record]]:
    """Under the hub lock: plan ``wants`` against the profile's records (keeping what
    other profiles in ``state_dir`` want), save the intent, apply when ``writing``.
    ``root``: the hub dir, opened; ``key``: the path its states are filed under;
    ``locks_fd``: the lock's ``.locks`` folder (:attr:`_hub_lock.dir_fd`), where the
    run's temporary names are made.
    Returns the plan, the failed actions, and the records the state must keep (the
    intent when something failed, so a later run can finish)."""
    hub_dir = root.path
    _store_kinds.clear()  # looked at afresh by every run (tests run many in one process)
    try:
        old = statemod.load(state_path, profile, key, aside=writing)
    except statemod.CorruptState as exc:
        log.warning(exc.message())
        old = statemod.State(profile, key)
    corrupt: list[statemod.CorruptState] = []
    folders = {w.folder for w in wants} | {r.path.split("/", 1)[0] for r in old.records}
    others = statemod.load_others(state_dir, key, profile, corrupt, aside=writing,
                                  folders=folders, update_index=writing)
    for exc in corrupt:
        log.warning(exc.message())
    fs = HubFS(hub_dir, before_write, root=root, private_parent=locks_fd)
    result = plan(fs, wants, old.records, [(o.profile, r) for o in others for r in o.records],
                  _store_kind, kept_holder(state_path))
    failed: list[tuple[Action, OSError]] = []
    if writing and result.disowned:
        _disown(state_dir, key, result.disowned, {o.profile: o for o in others})
    if not (writing and result.actions):
        return result, failed, result.records
    _save_state(state_path, statemod.State(profile, key, result.intent,
                                           hub_id=root.identity))
    skipped: list[Action] = []
    failed = apply(fs, result.actions, skipped)
    refused = {id(a) for a, _ in failed} | {id(a) for a in skipped}
    written = {a.path for a in result.actions if a.op == "ref" and id(a) not in refused}
    if not failed:
        result.intent = []  # (saved; not needed past a complete apply)
        return result, failed, stamp_refs(fs, result.records, written)
    # Keep the intent (it owns everything this run may have made), except where a write
    # certainly did not happen (refused or skipped): there, what was known before the
    # run. A record claiming a value never written would let this profile later take
    # for its own (and "restore" over) what another profile or the user put there.
    undone = {a.path for a, _ in failed} | {a.path for a in skipped}
    before = {r.path: r for r in old.records}
    kept = [before.get(r.path) if r.path in undone else r for r in result.intent]
    return result, failed, stamp_refs(fs, [r for r in kept if r is not None], written)


def _disown(state_dir: str, key: str, disowned: list[tuple[str, str]],
            states: dict[str, statemod.State]) -> None:
    """Mark other profiles' dead claims (:attr:`Plan.disowned`) in their states: they
    still want the path, but no longer made it. Safe under the hub lock: a profile's
    state for this hub dir is written only under it."""
    by_profile: dict[str, set[str]] = {}
    for profile, path in disowned:
        by_profile.setdefault(profile, set()).add(path)
    for profile, paths in by_profile.items():
        st = states[profile]
        st.records = [statemod.Record(r.path, r.kind, r.value, named_before=r.named_before)
                      if r.path in paths else r for r in st.records]
        st.complete = False
        _save_state(statemod.state_file(state_dir, key, profile), st)


def _store_kind(path: str) -> str:
    """``dir``, ``damaged`` (a directory changed after Nix made it: a file removed, added
    or rewritten, :mod:`activate.storecheck`), ``missing`` or ``other``: what a model's
    store path is (followed). Each path is looked at once per run."""
    kind = _store_kinds.get(path)
    if kind is None:
        try:
            kind = "dir" if stat.S_ISDIR(os.stat(path).st_mode) else "other"
        except FileNotFoundError:
            kind = "missing"
        except OSError:
            kind = "other"
        if kind == "dir":
            from .storecheck import changed

            kind = "damaged" if changed(path) else "dir"
        _store_kinds[path] = kind
    return kind


_store_kinds: dict[str, str] = {}


def _save_state(path: str, st: statemod.State) -> None:
    try:
        statemod.save(path, st)
    except OSError as exc:
        raise EnvironmentProblem(
            f"cannot write the state file {path}: {exc.strerror or exc}; make its folder "
            "writable or choose another with --state-dir / MODEL_REPO_STATE_DIR"
        ) from None


def _ensure_hub_dir(root: HubRoot) -> HubRoot:
    """``root``, or the hub dir created and opened when it is missing; refuse one this
    user cannot write. Raises :class:`EnvironmentProblem`."""
    if root.fd is None:
        made = _open_hub(root.path, create=True)
        if made.real != root.real:  # pragma: no cover - a path swapped while creating
            made.close()
            raise EnvironmentProblem(
                f"the hub cache {root.path} changed while it was being created; activate "
                "again")
        root = made
    if not os.access(".", os.W_OK | os.X_OK, dir_fd=root.fd):
        raise EnvironmentProblem(
            f"the hub cache {root.path} is not writable by this user; fix its permissions "
            "(for a shared cache: a common group and mode 2775) or choose another with "
            "--cache-dir"
        )
    return root


def _share_like_parent(fd: int, parent_fd: int) -> None:
    """Give a folder we created (``fd``) in a group-shared cache (group rwx on the hub
    dir ``parent_fd``, as the NixOS module's 2775) the same group access, whatever this
    process's umask: every user of the group must be able to create the lock there."""
    parent = os.fstat(parent_fd).st_mode
    if parent & 0o070 == 0o070:
        os.fchmod(fd, (os.fstat(fd).st_mode & 0o7777) | 0o070 | (parent & stat.S_ISGID))


#: How often a run waiting for the cache lock tries again (seconds).
_LOCK_POLL = 0.05
_LOCK_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_LOCK_FILE_FLAGS = os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


class _hub_lock:
    """The per-cache lock: ``<hub>/.locks/model-repo.lock``, held with ``flock`` on a
    descriptor opened relative to the hub dir's (``.locks`` with ``O_DIRECTORY |
    O_NOFOLLOW``, the lock file with ``O_NOFOLLOW``): nothing on the way is followed, so
    another user swapping ``.locks`` for a symlink cannot make this run create anything
    outside the cache. A lock file we create is mode 0664 and a ``.locks`` we create
    takes the hub dir's group access (setgid included), whatever the umask, so users
    sharing a cache through a group can all take it; an existing lock file is only
    opened (never truncated, never chmod-ed: it may be a hard link planted by someone
    else). Waits at most ``timeout`` seconds. ``enabled=False`` (dry runs, read-only
    commands) takes no lock and writes nothing."""

    def __init__(self, root: HubRoot, timeout: float, enabled: bool, log: Log) -> None:
        self.enabled = enabled
        self.timeout = timeout
        self.log = log
        self.root = root
        self.locks_dir = os.path.join(root.path, LOCKS_DIR)
        self.path = os.path.join(self.locks_dir, LOCK_NAME)
        self._fd: int | None = None
        self.dir_fd: int | None = None

    def __enter__(self) -> _hub_lock:
        if not self.enabled:
            return self
        assert self.root.fd is not None, "the hub dir is opened before the lock"
        for _ in range(10):
            dfd = self._open_locks_dir(self.root.fd)
            try:
                fd = self._open_lock_file(dfd)
                break
            except FileNotFoundError:
                os.close(dfd)
                continue  # .locks was removed or replaced meanwhile: open it again
            except BaseException:
                os.close(dfd)
                raise
        else:  # pragma: no cover - replaced ten times in a row
            raise EnvironmentProblem(f"{self.locks_dir} keeps being replaced; run again")
        try:
            self._wait(fd)
        except BaseException:
            os.close(fd)
            os.close(dfd)
            raise
        self._fd = fd
        self.dir_fd = dfd
        return self

    def _not_plain(self, path: str, what: str) -> EnvironmentProblem:
        return EnvironmentProblem(
            f"{path} is not a plain {what} (a symlink?); model-repo will not follow it: "
            "remove it and run again")

    def _open_locks_dir(self, hub_fd: int) -> int:
        created = False
        for _ in range(10):
            try:
                dfd = os.open(LOCKS_DIR, _LOCK_DIR_FLAGS, dir_fd=hub_fd)
                break
            except FileNotFoundError:
                try:
                    os.mkdir(LOCKS_DIR, 0o777, dir_fd=hub_fd)
                    created = True
                except FileExistsError:
                    pass
                except OSError as exc:
                    raise EnvironmentProblem(
                        f"cannot create {self.locks_dir}: {exc.strerror}; make the hub "
                        "cache writable by this user") from None
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise self._not_plain(self.locks_dir, "directory") from None
                raise EnvironmentProblem(
                    f"cannot open {self.locks_dir}: {exc.strerror}; make the hub cache "
                    "writable by this user") from None
        else:  # pragma: no cover - removed ten times in a row
            raise EnvironmentProblem(f"{self.locks_dir} keeps disappearing; run again")
        if created:
            _share_like_parent(dfd, hub_fd)
        return dfd

    def _open_lock_file(self, dfd: int) -> int:
        for _ in range(10):
            try:
                fd = os.open(LOCK_NAME, _LOCK_FILE_FLAGS | os.O_CREAT | os.O_EXCL, 0o664,
                             dir_fd=dfd)
                os.fchmod(fd, 0o664)  # ours, just made: group-writable whatever the umask
                return fd
            except FileExistsError:
                pass
            except FileNotFoundError:
                raise  # the folder itself is gone (the caller opens it again)
            except OSError as exc:
                raise self._lock_error(exc) from None
            try:
                fd = os.open(LOCK_NAME, _LOCK_FILE_FLAGS, dir_fd=dfd)
            except FileNotFoundError:
                continue  # removed meanwhile: create it
            except OSError as exc:
                raise self._lock_error(exc) from None
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                os.close(fd)
                raise self._not_plain(self.path, "file")
            return fd
        raise FileNotFoundError(errno.ENOENT, "removed again and again", self.path)  # pragma: no cover

    def _lock_error(self, exc: OSError) -> EnvironmentProblem:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            return self._not_plain(self.path, "file")
        return EnvironmentProblem(
            f"cannot open the lock {self.path}: {exc.strerror}; the hub cache must be "
            "writable by every user who activates into it")

    def _wait(self, fd: int) -> None:
        import fcntl

        start = time.monotonic()
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise self._lock_error(exc) from None
            if time.monotonic() - start >= self.timeout:
                raise EnvironmentProblem(
                    f"another model-repo activator has held {self.path} for more than "
                    f"{self.timeout:g} s; wait for it to finish (or raise --lock-timeout)")
            time.sleep(_LOCK_POLL)
        waited = time.monotonic() - start
        if waited > 0.5:
            self.log.info("waited for the cache lock", seconds=round(waited, 2))

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            os.close(self._fd)  # releases the flock
            self._fd = None
        if self.dir_fd is not None:
            os.close(self.dir_fd)
            self.dir_fd = None
