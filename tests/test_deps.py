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
