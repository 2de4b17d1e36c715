"""Logs to stderr through structlog, imported only when something is logged.

structlog costs ~100 ms to import; a quiet, successful run logs nothing, so it never
pays for it. No global configuration: each :class:`Log` wraps its own logger.
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}


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
    (``[level] event key=value``, coloured on a terminal, no timestamp) or ``json`` (one
    object per line with ``event``, ``level`` and an ISO 8601 UTC ``timestamp``)."""

    def __init__(self, level: str = "warning", fmt: str = "console", stream: TextIO | None = None):
        self.threshold = LEVELS[level]
        self.fmt = fmt
        self.stream = stream if stream is not None else sys.stderr
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
                processors.append(renderer(colors=self.stream.isatty(),
                                           **_no_event_padding(renderer)))
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
