"""One activation, deactivation or status read, end to end: lock, state, plan, apply.

This is the layer that does I/O around the pure planner in :mod:`activate.linking`.
"""

from __future__ import annotations

import errno
import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from . import state as statemod
from .envout import environment
from .hubfs import Changed, HubFS
from .linking import Action, Plan, Problem, Want, apply, plan, stamp_refs
from .log import Log
from .noop import remove_receipts

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
    )


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
) -> Outcome:
    """Link ``request``'s models into ``hub_dir`` and return the outcome.

    ``gc_roots``: keep one indirect GC root per store path of the manifest's models that
    is in place, and drop the roots of paths no longer linked (:mod:`activate.gcroots`).

    ``dry_run``: plan and report, write nothing. ``read_only``: like dry_run, for
    ``model-repo env``. Raises :class:`EnvironmentProblem` when the hub dir or state dir
    cannot be used.
    """
    profile = request.profile
    wants = request.wants
    writing = not (dry_run or read_only)
    key = os.path.realpath(hub_dir)
    state_path = statemod.state_file(state_dir, key, profile)
    _check_hub(state_dir, state_path, profile, hub_dir, key, log, adopt=writing)
    if writing:
        _ensure_hub_dir(hub_dir)
    with _hub_lock(hub_dir, lock_timeout, writing, log):
        result, failed, records = _converge(state_dir, state_path, profile, hub_dir, key, wants,
                                            writing=writing, before_write=before_write, log=log)
        for name in request.unlinked:
            if not os.path.isdir(request.paths[name]):
                result.notes.append(
                    f"{name}: store path {request.paths[name]} is missing; its MODEL_REPO "
                    "variable points nowhere until it is rebuilt"
                )
        outcome = Outcome(result, {})
        if writing:
            failed_actions = {id(a) for a, _ in failed}
            outcome.done = [a for a in result.actions if id(a) not in failed_actions]
        _report_failed(result, failed, wants, hub_dir)
        blocked = result.blocked_models
        in_place = all(w.name not in blocked for w in wants)
        if read_only:
            touched = {a.path.split("/", 1)[0] for a in result.actions if a.op != "unlink"}
            in_place = in_place and not any(w.folder in touched for w in wants)
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
        )
        outcome.records = records
        if writing:
            new = statemod.State(
                profile, key, records,
                complete=in_place and not result.problems,
                problems=[p.message() for p in result.problems],
                hub_id=statemod.hub_identity(hub_dir),
            )
            try:
                _save_state(state_path, new)
            except EnvironmentProblem as exc:
                outcome.state_error = str(exc)
        if gc_roots and not read_only:
            _sync_roots(state_dir, key, profile, request, blocked, dry_run, log)
    return outcome


def _sync_roots(state_dir: str, key: str, profile: str, request: Request, blocked: set[str],
                dry_run: bool, log: Log) -> None:
    from . import gcroots

    paths = {p for name, p in request.paths.items() if name not in blocked}
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


def _check_hub(state_dir: str, state_path: str, profile: str, hub_dir: str, key: str,
               log: Log, *, adopt: bool) -> None:
    """Refuse a hub dir that is not the one this profile's state was made in.

    A state with records whose hub dir is missing (an unmounted filesystem, a removed
    cache) or has another identity (``(st_dev, st_ino)``: the mount point instead of the
    mounted cache, a cache replaced by a new folder) raises :class:`EnvironmentProblem`:
    working on would forget the values the state keeps to restore. When there is no
    state for this path but one of this profile's states names another path with this
    hub dir's identity (the cache was renamed or moved), or a state of version 1 filed
    under another spelling of this hub dir, it is adopted (``adopt``).
    """
    try:
        state = statemod.read(state_path, header_only=True)  # read whole under the lock
    except statemod.CorruptState as exc:
        log.warning(exc.message())
        return
    current = statemod.hub_identity(hub_dir)
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
        for path, other in statemod.list_states(state_dir):
            same = (tuple(other.hub_id) == current if other.hub_id is not None
                    else os.path.realpath(other.hub_dir) == key)  # a state of version 1
            if other.profile == profile and other.hub_dir != key and same:
                log.warning("the hub cache was moved or renamed; taking over its state",
                            was=other.hub_dir, now=key)
                other.hub_dir = key
                _save_state(state_path, other)
                statemod.delete(path)
                return


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
    dropped without touching any cache (for a cache removed on purpose).
    """
    results = []
    key = os.path.realpath(hub_dir) if hub_dir else None
    corrupt: list[statemod.CorruptState] = []
    states = statemod.list_states(state_dir, corrupt)
    for exc in corrupt:
        log.warning(exc.message())
    for path, st in states:
        if st.profile != profile or (key and st.hub_dir != key):
            continue
        current = statemod.hub_identity(st.hub_dir)
        gone = current is None or (st.hub_id is not None and tuple(st.hub_id) != current)
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
            results.append((st.hub_dir, Plan()))
            continue
        if gone and st.records:
            raise EnvironmentProblem(
                f"the hub cache {st.hub_dir} is missing or is not the folder profile "
                f"{profile!r} linked into: is its filesystem mounted? The state is kept; "
                "mount it and run deactivate again, or add --forget if the cache was "
                "removed on purpose"
            )
        with _hub_lock(st.hub_dir, lock_timeout, not dry_run, log):
            result, failed, remaining = _converge(state_dir, path, profile, st.hub_dir,
                                                  st.hub_dir, [], writing=not dry_run, log=log)
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
        results.append((st.hub_dir, result))
    return results


def _converge(
    state_dir: str, state_path: str, profile: str, hub_dir: str, key: str,
    wants: list[Want], *, writing: bool, log: Log,
    before_write: Callable[[str], None] | None = None,
) -> tuple[Plan, list[tuple[Action, OSError]], list[statemod.Record]]:
    """Under the hub lock: plan ``wants`` against the profile's records (keeping what
    other profiles in ``state_dir`` want), save the intent, apply when ``writing``.
    ``key`` is the hub dir's real path (what states are filed under).
    Returns the plan, the failed actions, and the records the state must keep (the
    intent when something failed, so a later run can finish)."""
    try:
        old = statemod.load(state_path, profile, key)
    except statemod.CorruptState as exc:
        log.warning(exc.message())
        old = statemod.State(profile, key)
    corrupt: list[statemod.CorruptState] = []
    others = statemod.load_others(state_dir, key, profile, corrupt)
    for exc in corrupt:
        log.warning(exc.message())
    fs = HubFS(hub_dir, before_write)
    result = plan(fs, wants, old.records, [(o.profile, r) for o in others for r in o.records],
                  _store_kind)
    failed: list[tuple[Action, OSError]] = []
    if writing and result.disowned:
        _disown(state_dir, key, result.disowned, {o.profile: o for o in others})
    if not (writing and result.actions):
        return result, failed, result.records
    _save_state(state_path, statemod.State(profile, key, result.intent,
                                           hub_id=statemod.hub_identity(hub_dir)))
    skipped: list[Action] = []
    failed = apply(fs, result.actions, skipped)
    refused = {id(a) for a, _ in failed} | {id(a) for a in skipped}
    written = {a.path for a in result.actions if a.op == "ref" and id(a) not in refused}
    if not failed:
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
    """``dir``, ``missing`` or ``other``: what a model's store path is (followed)."""
    try:
        return "dir" if stat.S_ISDIR(os.stat(path).st_mode) else "other"
    except FileNotFoundError:
        return "missing"
    except OSError:
        return "other"


def _save_state(path: str, st: statemod.State) -> None:
    try:
        statemod.save(path, st)
    except OSError as exc:
        raise EnvironmentProblem(
            f"cannot write the state file {path}: {exc.strerror or exc}; make its folder "
            "writable or choose another with --state-dir / MODEL_REPO_STATE_DIR"
        ) from None


def _ensure_hub_dir(hub_dir: str) -> None:
    try:
        os.makedirs(hub_dir, exist_ok=True)
    except OSError as exc:
        raise EnvironmentProblem(
            f"cannot create the hub cache {hub_dir}: {exc.strerror or exc}; create it "
            "with write permission for this user, or choose another with --cache-dir"
        ) from None
    if not os.access(hub_dir, os.W_OK | os.X_OK):
        raise EnvironmentProblem(
            f"the hub cache {hub_dir} is not writable by this user; fix its permissions "
            "(for a shared cache: a common group and mode 2775) or choose another with "
            "--cache-dir"
        )


def _share_like_parent(path: str) -> None:
    """Give a folder we created in a group-shared cache (group rwx on the hub dir, as the
    NixOS module's 2775) the same group access, whatever this process's umask: every
    user of the group must be able to create the lock there."""
    parent = os.stat(os.path.dirname(path)).st_mode
    if parent & 0o070 == 0o070:
        os.chmod(path, (os.stat(path).st_mode & 0o7777) | 0o070 | (parent & stat.S_ISGID))


class _hub_lock:
    """The per-cache lock: ``<hub>/.locks/model-repo.lock`` held with filelock, mode 0664
    so users sharing a cache through a group can all take it. ``enabled=False`` (dry
    runs, read-only commands) takes no lock and writes nothing."""

    def __init__(self, hub_dir: str, timeout: float, enabled: bool, log: Log) -> None:
        self.enabled = enabled
        self.timeout = timeout
        self.log = log
        self.locks_dir = os.path.join(hub_dir, ".locks")
        self.path = os.path.join(self.locks_dir, LOCK_NAME)
        self._lock: object = None

    def __enter__(self) -> _hub_lock:
        if not self.enabled:
            return self
        import filelock

        for path, want_dir in ((self.locks_dir, True), (self.path, False)):
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                if want_dir:
                    try:
                        os.mkdir(path)
                        _share_like_parent(path)
                    except FileExistsError:
                        pass
                    except OSError as exc:
                        raise EnvironmentProblem(
                            f"cannot create {path}: {exc.strerror}; make the hub cache "
                            "writable by this user"
                        ) from None
                continue
            ok = stat.S_ISDIR(st.st_mode) if want_dir else stat.S_ISREG(st.st_mode)
            if not ok:
                raise EnvironmentProblem(
                    f"{path} is not a plain {'directory' if want_dir else 'file'} (a "
                    "symlink?); model-repo will not follow it: remove it and run again"
                )
        lock = filelock.FileLock(self.path, timeout=self.timeout, mode=0o664,
                                 preserve_lock_file=True)
        start = time.monotonic()
        try:
            lock.acquire()
        except filelock.Timeout:
            raise EnvironmentProblem(
                f"another model-repo activator has held {self.path} for more than "
                f"{self.timeout:g} s; wait for it to finish (or raise --lock-timeout)"
            ) from None
        except OSError as exc:
            if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
                raise EnvironmentProblem(
                    f"cannot open the lock {self.path}: {exc.strerror}; the hub cache "
                    "must be writable by every user who activates into it"
                ) from None
            raise
        waited = time.monotonic() - start
        if waited > 0.5:
            self.log.info("waited for the cache lock", seconds=round(waited, 2))
        self._lock = lock
        return self

    def __exit__(self, *exc: object) -> None:
        if self._lock is not None:
            self._lock.release()  # type: ignore[attr-defined]
            self._lock = None
