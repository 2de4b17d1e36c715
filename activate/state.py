"""The profile's own state: which cache entries it created, outside the hub dir.

Where state files live and how they are read raw is in :mod:`activate.statefile` (the
no-op path needs only that); this module gives them their typed form.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from .statefile import STATE_VERSION, load_raw, state_dir, state_file

__all__ = ["Record", "State", "load", "load_others", "list_states", "save", "delete",
           "load_raw", "state_dir", "state_file"]


@dataclass
class Record:
    """One cache entry a profile wants or created, relative to the hub dir.

    ``kind``: ``dir`` (a folder we may remove when empty), ``snapshot`` (link to
    ``value``, a store path), ``ref`` (file holding ``value``, a commit).
    ``created``: we made it (or replaced it), so we may undo it. ``previous``: for a
    ref we replaced, the commit it held before. ``former``: only while a change is under
    way (the state saved before applying it), the value we had put there before, so a
    run stopped half-way still recognises either value as ours. ``named_before``: for a
    snapshot we linked, the refs that already named its commit (pointing at nothing);
    they do not keep the link once we drop it.
    """

    path: str
    kind: str
    value: str | None = None
    created: bool = False
    previous: str | None = None
    former: str | None = None
    named_before: list[str] = field(default_factory=list)

    def owns(self, value: str | None) -> bool:
        """True when ``value`` on disk is one this profile put at this path."""
        return self.created and value is not None and value in (self.value, self.former)

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {"path": self.path, "kind": self.kind, "created": self.created}
        if self.value is not None:
            out["value"] = self.value
        if self.previous is not None:
            out["previous"] = self.previous
        if self.former is not None:
            out["former"] = self.former
        if self.named_before:
            out["namedBefore"] = list(self.named_before)
        return out

    @classmethod
    def from_json(cls, raw: Mapping[str, object]) -> Record:
        return cls(
            path=str(raw["path"]),
            kind=str(raw["kind"]),
            value=_opt_str(raw.get("value")),
            created=bool(raw.get("created", False)),
            previous=_opt_str(raw.get("previous")),
            former=_opt_str(raw.get("former")),
            named_before=[str(p) for p in raw.get("namedBefore") or []],  # type: ignore[attr-defined]
        )


@dataclass
class State:
    """A profile's state for one hub dir.

    ``manifest`` fingerprints the manifest of the last run that completed with every
    model in place (None otherwise): the no-op path compares it. ``env`` is that run's
    environment.
    """

    profile: str
    hub_dir: str
    records: list[Record] = field(default_factory=list)
    manifest: dict[str, object] | None = None
    env: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        return {
            "version": STATE_VERSION,
            "profile": self.profile,
            "hubDir": self.hub_dir,
            "manifest": self.manifest,
            "env": self.env,
            "problems": self.problems,
            "records": [r.to_json() for r in self.records],
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, object]) -> State:
        if raw.get("version") != STATE_VERSION:
            raise ValueError(f"state version {raw.get('version')!r} is not {STATE_VERSION}")
        records = raw.get("records") or []
        env = raw.get("env") or {}
        manifest = raw.get("manifest")
        problems = raw.get("problems") or []
        return cls(
            profile=str(raw["profile"]),
            hub_dir=str(raw["hubDir"]),
            records=[Record.from_json(r) for r in records],  # type: ignore[union-attr]
            manifest=manifest if isinstance(manifest, dict) else None,
            env={str(k): str(v) for k, v in env.items()},  # type: ignore[union-attr]
            problems=[str(p) for p in problems],  # type: ignore[union-attr]
        )


def load(path: str, profile: str, hub_dir: str) -> State:
    """The state at ``path``, or an empty one when absent or unusable."""
    raw = load_raw(path)
    if raw is not None:
        try:
            state = State.from_json(raw)
        except (KeyError, TypeError, ValueError, AttributeError):
            state = None
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
        if not name.endswith(".json"):
            continue
        path = os.path.join(directory, name)
        raw = load_raw(path)
        if raw is None:
            continue
        try:
            out.append((path, State.from_json(raw)))
        except (KeyError, TypeError, ValueError, AttributeError):
            continue
    return out


def save(path: str, state: State) -> bool:
    """Write ``state`` atomically (temp file, fsync, rename); False if unchanged."""
    data = json.dumps(state.to_json(), indent=1, sort_keys=True).encode() + b"\n"
    try:
        with open(path, "rb") as fh:
            if fh.read() == data:
                return False
    except OSError:
        pass
    directory = os.path.dirname(path)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return True


def delete(path: str) -> None:
    """Remove a state file (deactivation of a profile)."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _opt_str(value: object) -> str | None:
    return None if value is None else str(value)
