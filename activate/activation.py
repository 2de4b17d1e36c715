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
from .hubfs import HubFS
from .linking import Action, Plan, Problem, Want, apply, plan
from .log import Log
from .noop import remove_receipts

__all__ = ["EnvironmentProblem", "Outcome", "Request", "request_of", "run_activate",
           "run_deactivate"]

#: Name of our lock file in the hub dir's ``.locks/`` (huggingface_hub's own lock folder,
#: skipped by ``scan_cache_dir``).
LOCK_NAME = "model-repo.lock"
DEFAULT_LOCK_TIMEOUT = 60.0


class EnvironmentProblem(Exception):
    """The cache or state cannot be used (lock timeout, unwritable directory)."""


@dataclass
class Outcome:
    """What a run did: ``plan`` (with problems), the environment, the actions carried
    out, and whether every linked model is in place (``complete``)."""

    plan: Plan
    env: dict[str, str]
    done: list[Action] = field(default_factory=list)
    complete: bool = True
    records: list[statemod.Record] = field(default_factory=list)


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
        wants=[Want(name, m.folder, m.revision, tuple(m.refs), m.path)
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
) -> Outcome:
    """Link ``request``'s models into ``hub_dir`` and return the outcome.

    ``dry_run``: plan and report, write nothing. ``read_only``: like dry_run, for
    ``model-repo env``. Raises :class:`EnvironmentProblem` when the hub dir or state dir
    cannot be used.
    """
    profile = request.profile
    wants = request.wants
    state_path = statemod.state_file(state_dir, hub_dir, profile)
    writing = not (dry_run or read_only)
    if writing:
        _ensure_hub_dir(hub_dir)
    with _hub_lock(hub_dir, lock_timeout, writing, log):
        result, failed, records = _converge(state_dir, state_path, profile, hub_dir, wants,
                                            writing=writing, before_write=before_write)
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
        for act, err in failed:
            names = sorted({w.name for w in wants if w.folder == act.path.split("/", 1)[0]})
            result.problems.append(
                Problem(names, os.path.join(hub_dir, act.path),
                        f"could not {act.op}: {err.strerror or err}",
                        "check the permissions of the cache (ls -ld), then activate again")
            )
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
                profile, hub_dir, records,
                complete=in_place and not result.problems,
                problems=[p.message() for p in result.problems],
            )
            _save_state(state_path, new)
    return outcome


def run_deactivate(
    profile: str,
    *,
    state_dir: str,
    hub_dir: str | None,
    log: Log,
    dry_run: bool = False,
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
) -> list[tuple[str, Plan]]:
    """Undo everything ``profile`` created (in ``hub_dir`` only, if given).

    Returns ``(hub dir, plan)`` per cache touched. Records that could not be undone
    (changed by someone else, or blocked) stay in the state for a later run.
    """
    results = []
    for path, st in statemod.list_states(state_dir):
        if st.profile != profile or (hub_dir and st.hub_dir != hub_dir):
            continue
        if not os.path.isdir(st.hub_dir):
            log.warning("hub dir is gone; forgetting its state", hub_dir=st.hub_dir)
            if not dry_run:
                statemod.delete(path)
            continue
        with _hub_lock(st.hub_dir, lock_timeout, not dry_run, log):
            result, _, remaining = _converge(state_dir, path, profile, st.hub_dir, [],
                                             writing=not dry_run)
            if not dry_run:
                if remaining:
                    _save_state(path, statemod.State(profile, st.hub_dir, remaining))
                else:
                    statemod.delete(path)
                remove_receipts(state_dir, profile, st.hub_dir)
        results.append((st.hub_dir, result))
    return results


def _converge(
    state_dir: str, state_path: str, profile: str, hub_dir: str, wants: list[Want], *,
    writing: bool, before_write: Callable[[str], None] | None = None,
) -> tuple[Plan, list[tuple[Action, OSError]], list[statemod.Record]]:
    """Under the hub lock: plan ``wants`` against the profile's records (keeping what
    other profiles in ``state_dir`` want), save the intent, apply when ``writing``.
    Returns the plan, the failed actions, and the records the state must keep (the
    intent when something failed, so a later run can finish)."""
    old = statemod.load(state_path, profile, hub_dir)
    others = statemod.load_others(state_dir, hub_dir, profile)
    fs = HubFS(hub_dir, before_write)
    result = plan(fs, wants, old.records, [(o.profile, r) for o in others for r in o.records],
                  os.path.isdir)
    failed: list[tuple[Action, OSError]] = []
    if writing and result.actions:
        _save_state(state_path, statemod.State(profile, hub_dir, result.intent))
        failed = apply(fs, result.actions)
    return result, failed, result.intent if failed else result.records


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
