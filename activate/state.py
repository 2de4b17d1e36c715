"""The profile's own state: which cache entries it created, outside the hub dir.

Where state files live is decided in :mod:`activate.statefile`. A state file is JSON
lines: a header object (version, profile, hub dir, the hub dir's identity, whether the last
run was complete, its problems), then one array per record, so 10,000 models are written
and read one line at a time instead of as one large document.

A state is never dropped silently: a file that cannot be read as a state (or holds a
record pointing outside its hub dir) is renamed aside to ``<file>.corrupt-<unix time>`` and
reported, so the values it kept to restore can still be recovered by hand.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from .statefile import STATE_VERSION, state_dir, state_file, write_if_changed

__all__ = ["Record", "State", "CorruptState", "StateProblem", "NewerState", "Summary", "load",
           "load_others", "list_states", "summaries", "save", "delete", "state_dir",
           "state_file", "hub_identity", "valid_record_path"]

#: Record kinds: ``dir`` (a folder we may remove when empty), ``snapshot`` (symlink to a
#: store path), ``ref`` (file holding a commit), ``tree`` (a partial snapshot: a real
#: directory of per-file links to the store path ``value``, see :mod:`activate.tree`).
KINDS = ("dir", "snapshot", "ref", "tree")
#: The two forms of a snapshot: a whole link, or a partial tree.
_FORMS = ("snapshot", "tree")


@dataclass(slots=True)
class Record:
    """One cache entry a profile wants or created, relative to the hub dir.

    ``kind``: one of :data:`KINDS`. ``value``: the link target or the ref's content.
    ``created``: we made it (or replaced it), so we may undo it. ``previous``: for a ref we
    replaced, what it held before (byte-exact, restored when we let go). ``owned``: while a
    change is under way (states saved before applying one, possibly several runs in a row
    that were all stopped), every other value we may have put at this path; any of them
    on disk is still ours. ``named_before``: for a snapshot we linked, the refs that already
    named its commit (pointing at nothing); they do not keep the link once we drop it.
    ``previous_held``: for a ref we replaced, whether the snapshot its previous value names
    existed then: given back, it holds that snapshot again (a snapshot of ours it names is
    kept while it does). ``other_kind``: while a snapshot changes form under way (a whole
    link ``snapshot`` <-> a partial ``tree``, states saved before applying, possibly several
    stopped runs in a row), the kind it had before: a link holding one of our values, or a
    tree of links into them, is then ours in either form, so the next run finishes the
    change and a drop removes whichever form is there. ``stamp``: for a ref we wrote, the
    modification time (ns, as text) we gave the file, random in its last nine digits
    (while a change is under way, each one we may have given, comma-separated); a ref
    file with another one was rewritten by someone else (a download, a profile of another
    state dir), even if it holds our value again, and is no longer ours.
    """

    path: str
    kind: str
    value: str | None = None
    created: bool = False
    previous: str | None = None
    owned: tuple[str, ...] = ()
    named_before: tuple[str, ...] = ()
    previous_held: bool = False
    other_kind: str | None = None
    stamp: str | None = None

    def owns(self, value: str | None) -> bool:
        """True when ``value`` on disk is one this profile put at this path."""
        return self.created and value is not None and (value == self.value or value in self.owned)

    def forms(self) -> tuple[str, ...]:
        """The kinds of entry at this path that may be ours (both while a snapshot changes
        form, see ``other_kind``); () when we created nothing here."""
        if not self.created:
            return ()
        return (self.kind, self.other_kind) if self.other_kind else (self.kind,)

    def to_json(self) -> dict[str, object]:
        """A readable object (``model-repo status --json``)."""
        out: dict[str, object] = {"path": self.path, "kind": self.kind, "created": self.created}
        if self.value is not None:
            out["value"] = self.value
        if self.previous is not None:
            out["previous"] = self.previous
        return out

    def to_row(self) -> list[object]:
        """The state file's line for this record."""
        row = [self.path, self.kind, self.value, self.created, self.previous,
               list(self.owned), list(self.named_before), self.previous_held]
        if self.other_kind or self.stamp:
            row.append(self.other_kind)  # version 3; most records need no 9th field
        if self.stamp:
            row.append(self.stamp)
        return row

    @classmethod
    def from_row(cls, row: list[object], version: int = STATE_VERSION) -> Record:
        """A record from its line; ``version`` 1 kept one former value instead of a list,
        versions 1 and 2 have no ``other_kind`` and ``stamp`` (9th and 10th fields).
        Raises ValueError for a row that is not a record."""
        if not isinstance(row, list) or len(row) not in (
                (7, 8, 9, 10) if version >= 3 else (7, 8)):
            raise ValueError("not a record row")
        path, kind, value, created, previous, owned, named = row[:7]
        held = row[7] if len(row) >= 8 else False
        other = row[8] if len(row) >= 9 else None
        stamp = row[9] if len(row) == 10 else None
        if version == 1:
            owned = [] if owned is None else [owned]
        if (not isinstance(path, str) or kind not in KINDS or not isinstance(created, bool)
                or not isinstance(owned, list) or not isinstance(named, list)
                or not isinstance(held, bool) or other not in (None, *_FORMS)
                or (other is not None and (kind not in _FORMS or other == kind))
                or not (stamp is None or (isinstance(stamp, str) and kind == "ref"))
                or not all(isinstance(v, str) for v in (*owned, *named))
                or not all(v is None or isinstance(v, str) for v in (value, previous))):
            raise ValueError("malformed record")
        if not valid_record_path(path) or not all(valid_record_path(p) for p in named):
            raise ValueError(f"record path {path!r} leaves its repo folder")
        return cls(path, kind, value, created, previous, tuple(owned), tuple(named), held,
                   other, stamp)  # type: ignore[arg-type]


def valid_record_path(path: str) -> bool:
    """True when ``path`` stays inside one repo folder of the hub dir: relative, no empty,
    ``.`` or ``..`` component, and its first component a repo folder
    (``models--``/``datasets--``/``spaces--``). A tampered state cannot make us touch
    anything else."""
    parts = path.split("/")
    return (bool(path) and not path.startswith("/") and "\0" not in path
            and all(p not in ("", ".", "..") for p in parts)
            and parts[0].startswith(("models--", "datasets--", "spaces--")))


@dataclass
class State:
    """A profile's state for one hub dir.

    ``hub_dir``: the hub dir's real path (symlinks resolved: two spellings of one cache are
    one state). ``hub_id``: ``(st_dev, st_ino)`` of the hub dir when the state was saved, or
    None (written by an older version): a hub dir that no longer has it was unmounted,
    replaced or moved. ``complete``: the last run put every model in place;
    ``problems``: what blocked models in the last run. The environment of a complete run
    lives in its receipt (:mod:`activate.noop`), not here.
    """

    profile: str
    hub_dir: str
    records: list[Record] = field(default_factory=list)
    complete: bool = False
    problems: list[str] = field(default_factory=list)
    hub_id: tuple[int, int] | None = None

    def header(self) -> dict[str, object]:
        return {"version": STATE_VERSION, "profile": self.profile, "hubDir": self.hub_dir,
                "hubId": list(self.hub_id) if self.hub_id else None,
                "complete": self.complete, "problems": self.problems}


class CorruptState(Exception):
    """A state file exists but cannot be used; it was moved aside to ``kept``."""

    def __init__(self, path: str, kept: str | None, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.kept = kept
        self.reason = reason

    def message(self) -> str:
        where = f"kept as {self.kept}" if self.kept else "left in place"
        return (f"the state file {self.path} is unreadable ({self.reason}); {where}: the "
                "values it recorded to restore are in it if you need them by hand")


class StateProblem(Exception):
    """The state dir cannot be used as it is (exit 3); nothing in it was changed."""


class NewerState(StateProblem):
    """A state file written by a newer model-repo (a higher state version): what an older
    generation meets after a rollback. It is left untouched; the run stops."""

    def __init__(self, path: str, version: int) -> None:
        super().__init__(
            f"the state file {path} was written by a newer model-repo (state version "
            f"{version}; this one reads versions 1 to {STATE_VERSION}): a rollback to an "
            "older generation? It is left untouched. Activate with the newer model-repo "
            "(switch back to that generation), or remove the file if you no longer need "
            "the links and refs it records")
        self.path = path
        self.version = version


class UnreadableStateDir(StateProblem):
    """The state dir (or a state in it) exists but this user cannot read it."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(
            f"cannot read the state {path}: {reason}; run as the user who owns it (or "
            "with read access to it), or choose another with --state-dir / "
            "MODEL_REPO_STATE_DIR")
        self.path = path


def hub_identity(hub_dir: str) -> tuple[int, int] | None:
    """``(st_dev, st_ino)`` of the hub dir (following symlinks), or None if missing."""
    try:
        st = os.stat(hub_dir)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def read(path: str, *, header_only: bool = False, aside: bool = True) -> State | None:
    """The state at ``path``; None when it does not exist. Raises :class:`CorruptState`
    (after moving the file aside when ``aside``; read-only commands pass False and
    change nothing) when it exists but is not a usable state, :class:`NewerState` (file
    untouched) when a newer model-repo wrote it, :class:`UnreadableStateDir` when this
    user may not read it. ``header_only``: read the header line and at most one record
    (``records`` then holds that one, enough to tell whether there are any), not the
    whole file."""
    try:
        fh = open(path, "rb")
    except FileNotFoundError:
        return None
    except PermissionError as exc:
        raise UnreadableStateDir(path, exc.strerror or str(exc)) from None
    except OSError as exc:
        raise CorruptState(path, None, exc.strerror or str(exc)) from None
    try:
        with fh:
            head = json.loads(fh.readline(), object_pairs_hook=_no_duplicates)
            version = head.get("version") if isinstance(head, dict) else None
            if type(version) is int and version > STATE_VERSION:
                raise NewerState(path, version)
            if version not in (1, 2, STATE_VERSION):
                raise ValueError("unknown state version")
            version = int(head["version"])
            records = []
            for line in fh:
                if line.strip():
                    records.append(Record.from_row(json.loads(line), version))
                    if header_only:
                        break
            hub_id = head.get("hubId")
            state = State(
                profile=_str(head["profile"]),
                hub_dir=_str(head["hubDir"]),
                records=records,
                complete=head.get("complete") is True,
                problems=[str(p) for p in head.get("problems") or []],
                hub_id=(int(hub_id[0]), int(hub_id[1])) if hub_id else None,
            )
    except (OSError, ValueError, TypeError, KeyError, AttributeError, IndexError) as exc:
        kept = _keep_aside(path) if aside else None
        raise CorruptState(path, kept, str(exc) or type(exc).__name__) from None
    return state


def _str(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError("not a string")
    return value


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise ValueError("duplicate key")
    return out


def _keep_aside(path: str) -> str | None:
    kept = f"{path}.corrupt-{int(time.time())}"
    try:
        os.rename(path, kept)
    except OSError:
        return None
    return kept


def load(path: str, profile: str, hub_dir: str, *, aside: bool = True) -> State:
    """The state at ``path``, or an empty one when absent or not this profile's (the file
    name is a hash of hub dir and profile). Raises as :func:`read`."""
    state = read(path, aside=aside)
    if state is not None and state.profile == profile and state.hub_dir == hub_dir:
        return state
    return State(profile=profile, hub_dir=hub_dir)


def load_others(directory: str, hub_dir: str, profile: str,
                problems: list[CorruptState] | None = None, *, aside: bool = True,
                folders: set[str] | None = None, update_index: bool = False) -> list[State]:
    """States of the other profiles (same state dir) that link into ``hub_dir``;
    unusable ones are handled as by :func:`list_states` (``aside``: corrupt ones are
    moved aside; read-only commands pass False).

    ``folders``: only the states with a record in one of these repo folders (those a run
    plans: no other record can change its decisions), found through the state dir's
    index (:func:`summaries`) so that a state dir of thousands of profiles costs a run
    a ``stat`` per state, not a read. ``update_index``: write the index back when it
    changed (never for commands that must not write)."""
    if folders is None:
        return [state for _, state in list_states(directory, problems, aside=aside)
                if state.hub_dir == hub_dir and state.profile != profile]
    out = []
    own = state_file(directory, hub_dir, profile)
    for path, _, state in summaries(
            directory, problems, aside=aside, update_index=update_index, skip=own,
            relevant=lambda p, h: h == hub_dir and p != profile, folders=folders):
        if state is None:
            state = _read_noting(path, problems, aside)
            if state is None or state.hub_dir != hub_dir or state.profile == profile:
                continue
        out.append(state)
    return out


#: The state dir's index (a cache, validated by ``stat``): what each state file holds.
INDEX_NAME = "states-index"
_INDEX_VERSION = 1


@dataclass(frozen=True, slots=True)
class Summary:
    """What a run needs to know of a state file without reading it: its profile, hub
    dir, hub dir identity, and the repo folders its records are in."""

    profile: str
    hub_dir: str
    hub_id: tuple[int, int] | None
    folders: tuple[str, ...]


def summaries(directory: str, problems: list[CorruptState] | None = None, *,
              aside: bool = True, update_index: bool = False, skip: str | None = None,
              relevant: Callable[[str, str], bool] | None = None,
              folders: set[str] | None = None,
              ) -> list[tuple[str, Summary, State | None]]:
    """``(file path, summary, state or None)`` of every readable state in ``directory``.

    The summaries come from the state dir's index (``states-index``, JSON): one entry per
    state file with its ``(st_ino, st_size, st_mtime_ns, st_ctime_ns)``; a file whose
    ``stat`` differs (every save is a rename: a new inode), or has no entry, is read (then
    returned as its state, else None) and its entry renewed. The index is only a cache:
    missing, unreadable or stale, it costs reads, never a wrong answer. Corrupt states
    are moved aside (when ``aside``) and appended to ``problems``; a state dir or state
    this user cannot read raises :class:`UnreadableStateDir`, a newer model-repo's state
    :class:`NewerState` (as :func:`list_states`). ``update_index``: write the index back
    (atomically) when it changed. ``skip``: a state file left out (the running profile's
    own, saved later in the run: its entry is kept as it was, so that a run that changes
    nothing writes nothing). ``relevant(profile, hub dir)``: the states a caller needs;
    a file whose index entry names another (profile, hub dir) is passed over without even
    a ``stat`` (a state file's name is a hash of its hub dir and profile, so these never
    change under one name; only its records do). ``folders``: only the states with a
    record in one of these repo folders are returned (an up-to-date index entry says so
    without building its summary)."""
    try:
        names = sorted(n for n in os.listdir(directory)
                       if n.endswith(".json") and not n.startswith("receipt-"))
        dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise UnreadableStateDir(directory, exc.strerror or str(exc)) from None
    try:
        return _summaries(directory, dfd, names, problems, aside=aside,
                          update_index=update_index, skip=skip, relevant=relevant,
                          folders=folders)
    finally:
        os.close(dfd)


def _summaries(directory: str, dfd: int, names: list[str],
               problems: list[CorruptState] | None, *, aside: bool, update_index: bool,
               skip: str | None, relevant: Callable[[str, str], bool] | None,
               folders: set[str] | None) -> list[tuple[str, Summary, State | None]]:
    """:func:`summaries` of the state files ``names`` of ``directory`` (open as ``dfd``:
    each file is looked at with one ``fstatat``, no walk of the path)."""
    index_path = os.path.join(directory, INDEX_NAME)
    index = _read_index(index_path)
    fresh: dict[str, list[object]] = {}
    changed = False
    skip_name = os.path.basename(skip) if skip and os.path.dirname(skip) == directory else None
    out: list[tuple[str, Summary, State | None]] = []
    for name in names:
        entry = index.get(name)
        if name == skip_name:
            if entry is not None:
                fresh[name] = entry
            continue
        if relevant is not None and _passed_over(entry, relevant):
            fresh[name] = entry  # type: ignore[assignment]
            continue
        try:
            st = os.stat(name, dir_fd=dfd)
        except OSError:
            continue
        sig: list[object] = [st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]
        state = None
        summary = None
        if entry is not None and entry[:4] == sig:  # type: ignore[index]
            if folders is not None and type(entry) is list and len(entry) == 8 \
                    and type(entry[7]) is list and folders.isdisjoint(entry[7]):
                fresh[name] = entry  # up to date, and no record in the folders asked for
                continue
            summary = _summary(entry)
        path = os.path.join(directory, name)
        if summary is None:
            state = _read_noting(path, problems, aside)
            if state is None:
                changed = changed or name in index
                continue
            summary = Summary(state.profile, state.hub_dir, state.hub_id, tuple(sorted(
                {r.path.split("/", 1)[0] for r in state.records})))
            entry = [*sig, summary.profile, summary.hub_dir,
                     list(summary.hub_id) if summary.hub_id else None, list(summary.folders)]
            changed = True
        fresh[name] = entry  # type: ignore[assignment]
        if (relevant is None or relevant(summary.profile, summary.hub_dir)) and (
                folders is None or not folders.isdisjoint(summary.folders)):
            out.append((path, summary, state))
    changed = changed or len(fresh) != len(index)
    if update_index and changed:
        try:
            write_if_changed(index_path, [json.dumps(
                {"version": _INDEX_VERSION, "states": fresh}, separators=(",", ":")).encode()])
        except OSError:
            pass  # a cache: the next run reads the states again
    return out


def _passed_over(entry: object, relevant: Callable[[str, str], bool]) -> bool:
    """True when the index ``entry`` names a (profile, hub dir) that ``relevant`` does not
    want: a state file's name is a hash of those two, so they never change under one
    name, and the file needs no ``stat``."""
    try:
        profile, hub_dir = entry[4], entry[5]  # type: ignore[index]
    except (TypeError, IndexError, KeyError):
        return False
    return isinstance(profile, str) and isinstance(hub_dir, str) and not relevant(profile, hub_dir)


def drop_index_if_alone(directory: str) -> None:
    """Remove the state dir's index when no state is left in it (a deactivated state
    dir holds nothing of ours)."""
    try:
        names = os.listdir(directory)
    except OSError:
        return
    if not any(n.endswith(".json") and not n.startswith("receipt-") for n in names):
        delete(os.path.join(directory, INDEX_NAME))


def _read_index(path: str) -> dict[str, list[object]]:
    try:
        with open(path, "rb") as fh:
            data = json.load(fh)
        if data.get("version") == _INDEX_VERSION and isinstance(data.get("states"), dict):
            return data["states"]
    except (OSError, ValueError, AttributeError):
        pass
    return {}


def _summary(entry: object) -> Summary | None:
    """The summary of an index entry, None if it is not a well-formed one."""
    try:
        _, _, _, _, profile, hub_dir, hub_id, folders = entry  # type: ignore[misc]
        if not (isinstance(profile, str) and isinstance(hub_dir, str)
                and isinstance(folders, list)):
            return None
        return Summary(profile, hub_dir, (int(hub_id[0]), int(hub_id[1])) if hub_id else None,
                       tuple(folders))
    except (TypeError, ValueError, IndexError):
        return None


def _read_noting(path: str, problems: list[CorruptState] | None, aside: bool) -> State | None:
    """:func:`read` for a listing of states: a corrupt one (moved aside when ``aside``) is
    appended to ``problems`` (when given) and read as None, like a missing one; the other
    errors of :func:`read` are raised."""
    try:
        return read(path, aside=aside)
    except CorruptState as exc:
        if problems is not None:
            problems.append(exc)
        return None


def list_states(directory: str, problems: list[CorruptState] | None = None, *,
                aside: bool = True) -> list[tuple[str, State]]:
    """Every readable state in ``directory`` as ``(file path, state)``; corrupt ones are
    moved aside (when ``aside``) and appended to ``problems`` (when given). A missing
    ``directory`` holds none; one this user cannot list raises
    :class:`UnreadableStateDir`, a state of a newer model-repo :class:`NewerState`."""
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise UnreadableStateDir(directory, exc.strerror or str(exc)) from None
    out = []
    for name in names:
        if name.endswith(".json") and not name.startswith("receipt-"):
            path = os.path.join(directory, name)
            state = _read_noting(path, problems, aside)
            if state is not None:
                out.append((path, state))
    return out


def save(path: str, state: State) -> bool:
    """Write ``state`` atomically and durably, a line at a time; False (nothing
    replaced) when the file already holds exactly this."""
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    return write_if_changed(path, _lines(state), durable=True)


def _lines(state: State) -> Iterator[bytes]:
    yield _line(state.header())
    for rec in state.records:
        yield _line(rec.to_row())


def _line(row: object) -> bytes:
    return json.dumps(row, separators=(",", ":")).encode() + b"\n"


def delete(path: str) -> None:
    """Remove a state file (deactivation of a profile)."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
