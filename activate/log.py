"""Logs to stderr through structlog, imported only when something is logged.

structlog costs ~100 ms to import; a quiet, successful run logs nothing, so it never
pays for it. No global configuration: each :class:`Log` wraps its own logger.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import Any, TextIO

LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}
#: The values of ``--color`` (GNU ls's ``--color=WHEN`` words).
COLOR_CHOICES = ("auto", "always", "never")


def add_color_argument(p: Any) -> None:
    """``--color auto|always|never`` on the argparse parser ``p`` (sets ``color``)."""
    p.add_argument("--color", choices=COLOR_CHOICES, default="auto", metavar="WHEN",
                   help="colour the console logs: auto (default: on a terminal, unless "
                   "NO_COLOR is set), always, never")


def use_colors(when: str, stream: TextIO, environ: Mapping[str, str]) -> bool:
    """Whether console logs on ``stream`` are coloured: ``when`` is a value of
    :data:`COLOR_CHOICES`; ``auto`` colours only a terminal, and not when ``NO_COLOR``
    is set to a non-empty value (https://no-color.org: "when present and not an empty
    string ... prevents the addition of ANSI color"). Raises ValueError for another
    ``when``."""
    if when == "always":
        return True
    if when == "never":
        return False
    if when != "auto":
        raise ValueError(f"--color {when!r}: give one of {', '.join(COLOR_CHOICES)}")
    if environ.get("NO_COLOR"):
        return False
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def _no_event_padding(renderer: Any) -> dict[str, int]:
    """The keyword that turns off :class:`structlog.dev.ConsoleRenderer`'s padding of the
    event (default 30 columns): ``pad_event_to`` from structlog 25.5 on (where
    ``pad_event`` is deprecated and warns), ``pad_event`` before (structlog 24.1 to 25.4,
    which reject ``pad_event_to`` with a ``TypeError``). Feature-detected from the
    constructor's signature, so every structlog in pyproject.toml's range works."""
    import inspect

    params = inspect.signature(renderer.__init__).parameters
    return {"pad_event_to": 0} if "pad_event_to" in params else {"pad_event": 0}


class Log:
    """A leveled logger. ``level``: a key of :data:`LEVELS`; ``fmt``: ``console``
    (``[level] event key=value``, no timestamp; coloured as ``color`` says,
    :func:`use_colors`, reading ``NO_COLOR`` from ``environ``, default ``os.environ``) or
    ``json`` (one object per line with ``event``, ``level`` and an ISO 8601 UTC
    ``timestamp``)."""

    def __init__(self, level: str = "warning", fmt: str = "console", stream: TextIO | None = None,
                 color: str = "auto", environ: Mapping[str, str] | None = None):
        self.threshold = LEVELS[level]
        self.fmt = fmt
        self.stream = stream if stream is not None else sys.stderr
        self.colors = use_colors(color, self.stream, os.environ if environ is None else environ)
        self._logger: Any = None

    def enabled(self, level: str) -> bool:
        return LEVELS[level] >= self.threshold

    def _get(self) -> Any:
        if self._logger is None:
            import structlog

            processors: list[Any] = [structlog.processors.add_log_level]
            if self.fmt == "json":
                # Records for tools keep the time (ISO 8601, UTC, key "timestamp").
                processors.append(structlog.processors.TimeStamper(fmt="iso", utc=True))
                processors.append(structlog.processors.JSONRenderer())
            else:
                # A terminal, journald and Home Manager's activation output add their own
                # times; the console line is "[level] event key=value ...".
                renderer = structlog.dev.ConsoleRenderer
                processors.append(renderer(colors=self.colors, **_no_event_padding(renderer)))
            self._logger = structlog.wrap_logger(
                structlog.PrintLogger(file=self.stream),
                processors=processors,
                wrapper_class=structlog.make_filtering_bound_logger(self.threshold),
            )
        return self._logger

    def log(self, level: str, event: str, **fields: Any) -> None:
        if self.enabled(level):
            getattr(self._get(), level)(event, **fields)

    def debug(self, event: str, **fields: Any) -> None:
        self.log("debug", event, **fields)

    def info(self, event: str, **fields: Any) -> None:
        self.log("info", event, **fields)

    def warning(self, event: str, **fields: Any) -> None:
        self.log("warning", event, **fields)

    def error(self, event: str, **fields: Any) -> None:
        self.log("error", event, **fields)
