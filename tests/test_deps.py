"""The dependency range in pyproject.toml holds: the code works with every version from the
declared floors (installed by scripts/test-oldest.sh, .ci/oldest-constraints.txt) to the
newest, and the floors, the constraints file and README's table say the same."""

from __future__ import annotations

import inspect
import io
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _old_console_renderer() -> type:
    """structlog's real ConsoleRenderer behind the constructor of structlog 24.1-25.4:
    ``pad_event`` is accepted, ``pad_event_to`` (25.5+) is a TypeError, as there."""
    import structlog

    real = structlog.dev.ConsoleRenderer
    takes_new = "pad_event_to" in inspect.signature(real.__init__).parameters

    class ConsoleRenderer(real):  # type: ignore[misc, valid-type]
        def __init__(self, pad_event: int = 30, colors: bool = True, **kw: Any) -> None:
            if "pad_event_to" in kw:
                raise TypeError("__init__() got an unexpected keyword argument 'pad_event_to'")
            kw["pad_event_to" if takes_new else "pad_event"] = pad_event
            super().__init__(colors=colors, **kw)

    return ConsoleRenderer


@pytest.mark.parametrize("signature", ["installed", "structlog<25.5"])
def test_console_log_line_with_either_structlog_renderer(
        signature: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A console log line is ``[level] event key=value`` (event not padded) whether
    ConsoleRenderer takes ``pad_event_to`` (structlog >= 25.5) or ``pad_event`` (older):
    with structlog 25.4 passing ``pad_event_to`` raised TypeError on every line."""
    import structlog

    from activate.log import Log

    if signature != "installed":
        monkeypatch.setattr(structlog.dev, "ConsoleRenderer", _old_console_renderer())
    out = io.StringIO()
    log = Log("info", stream=out)
    log.warning("disk full", path="/x")
    log.debug("not shown")
    assert re.fullmatch(r"\[warning\s*\] disk full path=/x\n", out.getvalue()), out.getvalue()


def _floors() -> dict[str, str]:
    """``{name: floor}`` of every runtime dependency and the ``hub`` extra in pyproject.toml."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    floors = {}
    for spec in project["dependencies"] + project["optional-dependencies"]["hub"]:
        m = re.fullmatch(r"([A-Za-z0-9_.-]+)>=([0-9.]+)", spec)
        assert m, f"{spec}: every runtime dependency is declared as name>=floor"
        floors[m[1].lower().replace("_", "-")] = m[2]
    return floors


def _release(version: str) -> tuple[int, ...]:
    parts = tuple(int(x) for x in version.split("."))
    return parts + (0,) * (3 - len(parts))


def test_oldest_constraints_pin_exactly_the_declared_floors() -> None:
    """CI's second pass (scripts/test-oldest.sh) installs .ci/oldest-constraints.txt: it
    must pin each runtime dependency at its floor in pyproject.toml, or the floor is
    untested."""
    pins = {}
    for line in (ROOT / ".ci" / "oldest-constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, version = line.split("==")
            pins[name.lower().replace("_", "-")] = version
    floors = _floors()
    assert set(floors) == {"pydantic", "platformdirs", "filelock", "structlog", "huggingface-hub"}
    for name, floor in floors.items():
        assert name in pins, f"{name} is not pinned in .ci/oldest-constraints.txt"
        assert _release(pins[name]) == _release(floor), (name, pins[name], floor)


def test_installed_dependencies_are_inside_the_declared_range() -> None:
    """The venv this suite runs in (newest or oldest) satisfies the floors, so a pass is
    evidence for the range README states."""
    from importlib.metadata import version

    for name, floor in _floors().items():
        got = tuple(int(x) for x in re.findall(r"\d+", version(name))[:3])
        assert got >= _release(floor), (name, version(name), floor)
