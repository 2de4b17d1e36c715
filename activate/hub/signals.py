"""SIGINT and SIGTERM during a Hub command: a one-line message, temporary folders removed,
an immediate exit.

huggingface_hub downloads files in worker threads; a ``KeyboardInterrupt`` in the main
thread does not stop them, and the interpreter waits for every one of them before it
exits (measured: 19.5 s after Ctrl-C at 1 MB/s, the whole model in practice), while a
SIGTERM kills the process with its temporary files left behind. :data:`on_interrupt`
replaces both handlers: it removes the registered folders, writes one line to stderr
and ends the process with ``os._exit(128 + signal)`` (130 for SIGINT, 143 for SIGTERM,
the shells' convention), without waiting for the worker threads.
"""

from __future__ import annotations

import os
import shutil
import signal
import threading


class _Interrupt:
    """Folders to remove and a note to print when the process is interrupted."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        self.message = ""
        self.installed = False
        self.previous: dict[int, object] = {}

    def install(self) -> None:
        """Handle SIGINT and SIGTERM from now on (main thread only; idempotent); the
        previous handlers come back with :meth:`uninstall`."""
        if self.installed or threading.current_thread() is not threading.main_thread():
            return
        self.previous = {sig: signal.signal(sig, self._handle)
                         for sig in (signal.SIGINT, signal.SIGTERM)}
        self.installed = True

    def uninstall(self) -> None:
        """Restore the handlers :meth:`install` replaced and forget every path and note
        (a command run in-process, e.g. by tests, leaves its caller's handlers as they
        were)."""
        if self.installed:
            for sig, handler in self.previous.items():
                signal.signal(sig, handler)
            self.installed = False
        self.paths.clear()
        self.message = ""

    def remove_on_signal(self, path: str) -> None:
        """Remove ``path`` (a folder) if a signal ends the process."""
        self.install()
        self.paths.append(path)

    def forget(self, path: str) -> None:
        """``path`` was removed (or kept) by the normal course of the command."""
        if path in self.paths:
            self.paths.remove(path)

    def set_message(self, message: str) -> None:
        """What to add to the one-line message (e.g. where resumable files are)."""
        self.message = message

    def _handle(self, signum: int, frame: object) -> None:
        name = signal.Signals(signum).name
        for path in list(self.paths):
            shutil.rmtree(path, ignore_errors=True)
        # A worker thread may have created a folder again in between: once more.
        for path in list(self.paths):
            shutil.rmtree(path, ignore_errors=True)
        line = f"model-repo: interrupted by {name}"
        if self.message:
            line += f"; {self.message}"
        try:
            os.write(2, (line + "\n").encode("utf-8", "replace"))
        finally:
            os._exit(128 + signum)


#: The process-wide handler used by the Hub commands.
on_interrupt = _Interrupt()
