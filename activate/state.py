"""The profile's own state: which cache entries it created, outside the hub dir.

Where state files live is decided in :mod:`activate.statefile`. A state file is JSON
lines: a header object (version, profile, hub dir, whether the last run was complete,
its problems), then one array per record, so 10,000 models are written and read one line at
a time instead of as one large document.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field

from .statefile import STATE_VERSION, state_dir, state_file, write_if_changed

__all__ = ["Record", "State", "load", "load_others", "list_states", "save", "delete",
           "state_dir", "state_file"]


@dataclass(slots=True)
class Record:
    """One cache entry a profile wants or created, relative to the hub dir.

    ``kind``: ``dir`` (a folder we may remove when empty), ``snapshot`` (link to
    ``value``, a store path), ``ref`` (file holding ``value``, a commit).
    ``created``: we made it (or replaced it), so we may undo it. ``previous``: for a
    ref we replaced, what it held before (byte-exact, restored when we let go).
    ``former``: only while a change is under way (the state saved before applying it),
    the value we had put there before, so a run stopped half-way still recognises either
    value as ours. ``named_before``: for a snapshot we linked, the refs that already
    named its commit (pointing at nothing); they do not keep the link once we drop it.
    """

    path: str
    kind: str
    value: str | None = None
    created: bool = False
    previous: str | None = None
    former: str | None = None
    named_before: tuple[str, ...] = ()

    def owns(self, value: str | None) -> bool:
        """True when ``value`` on disk is one this profile put at this path."""
        return self.created and value is not None and value in (self.value, self.former)

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
        return [self.path, self.kind, self.value, self.created, self.previous, self.former,
                list(self.named_before)]

    @classmethod
    def from_row(cls, row: list[object]) -> Record:
        path, kind, value, created, previous, former, named = row
        return cls(str(path), str(kind), _opt_str(value), bool(created), _opt_str(previous),
                   _opt_str(former), tuple(str(p) for p in named))  # type: ignore[attr-defined]


@dataclass
class State:
    """A profile's state for one hub dir.

    ``complete``: the last run put every model in place (``status`` shows it as up to
    date); ``problems``: what blocked models in the last run. The environment of a
    complete run lives in its receipt (:mod:`activate.noop`), not here.
    """

    profile: str
    hub_dir: str
    records: list[Record] = field(default_factory=list)
    complete: bool = False
    problems: list[str] = field(default_factory=list)

    def header(self) -> dict[str, object]:
        return {"version": STATE_VERSION, "profile": self.profile, "hubDir": self.hub_dir,
                "complete": self.complete, "problems": self.problems}


def read(path: str) -> State | None:
    """The state at ``path``; None when it does not exist or is not a state file."""
    try:
        with open(path, "rb") as fh:
            head = json.loads(fh.readline())
            if not isinstance(head, dict) or head.get("version") != STATE_VERSION:
                return None
            records = [Record.from_row(json.loads(line)) for line in fh if line.strip()]
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None
    try:
        return State(
            profile=str(head["profile"]),
            hub_dir=str(head["hubDir"]),
            records=records,
            complete=head.get("complete") is True,
            problems=[str(p) for p in head.get("problems") or []],
        )
    except (KeyError, TypeError, AttributeError):
        return None


def load(path: str, profile: str, hub_dir: str) -> State:
    """The state at ``path``, or an empty one when absent, unusable or not this
    profile's (the file name is a hash of hub dir and profile)."""
    state = read(path)
    if state is not None and state.profile == profile and state.hub_dir == hub_dir:
        return state
    return State(profile=profile, hub_dir=hub_dir)


def load_others(directory: str, hub_dir: str, profile: str) -> list[State]:
    """States of the other profiles (same state dir) that link into ``hub_dir``."""
    return [
        state
        for _, state in list_states(directory)
        if state.hub_dir == hub_dir and state.profile != profile
    ]


def list_states(directory: str) -> list[tuple[str, State]]:
    """Every readable state in ``directory`` as ``(file path, state)``."""
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return []
    out = []
    for name in names:
        if name.endswith(".json"):
            path = os.path.join(directory, name)
            state = read(path)
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


def _opt_str(value: object) -> str | None:
    return None if value is None else str(value)
