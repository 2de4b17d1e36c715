"""SIGINT and SIGTERM during a Hub command: a one-line message, temporary folders removed,
an immediate exit.

huggingface_hub downloads files in worker threads; a ``KeyboardInterrupt`` in the main
thread does not stop them, and the interpreter waits for every one of them before it
exits (measured: 19.5 s after Ctrl-C at 1 MB/s, the whole model in practice), while a
SIGTERM kills the process with its temporary files left behind. :data:`on_interrupt`
replaces both handlers, so SIGTERM is handled exactly as SIGINT: it passes the signal on
to the registered child processes (``nix copy``, ``nix-store --import``/``--dump``: a
SIGTERM sent to this process alone reaches them too) and waits for them (10 s, then
SIGKILL), runs the registered clean-ups (e.g. removing a store path Nix left
unregistered), removes the registered folders and files and every temporary file of
:func:`activate.statefile.create_temp` still open (the lock file's, the persist
manifest's), writes one line to stderr and ends the process with ``os._exit(128 +
signal)`` (130 for SIGINT, 143 for SIGTERM, the shells' convention), without waiting
for the worker threads.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import threading
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    import subprocess
    from collections.abc import Callable, Iterator

#: Seconds a child process is given to end after the signal is passed on.
CHILD_GRACE = 10.0


class _Interrupt:
    """Folders to remove and a note to print when the process is interrupted."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        self.message = ""
        self.installed = False
        self.handling = False
        self.previous: dict[int, object] = {}
        self.children: list[subprocess.Popen] = []  # type: ignore[type-arg]
        self.cleanups: list[Callable[[], object]] = []

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
        self.children.clear()
        self.cleanups.clear()
        self.message = ""

    @contextlib.contextmanager
    def child(self, proc: subprocess.Popen) -> Iterator[None]:  # type: ignore[type-arg]
        """While in the block, a signal is passed on to ``proc`` and waited for before
        the clean-ups run (no-op when no handler is installed)."""
        self.children.append(proc)
        try:
            yield
        finally:
            if proc in self.children:
                self.children.remove(proc)

    @contextlib.contextmanager
    def cleanup(self, func: Callable[[], object]) -> Iterator[None]:
        """While in the block, a signal runs ``func`` (after the children ended; its
        errors are ignored)."""
        self.cleanups.append(func)
        try:
            yield
        finally:
            if func in self.cleanups:
                self.cleanups.remove(func)

    def remove_on_signal(self, path: str) -> None:
        """Remove ``path`` (a folder or a file) if a signal ends the process."""
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
        if self.handling:  # a second signal while cleaning up: the first one finishes
            return
        self.handling = True
        name = signal.Signals(signum).name
        try:
            self._stop_children(signum)
            for func in list(self.cleanups):
                try:
                    func()
                except Exception:  # noqa: BLE001 - best effort, the process is ending
                    pass
            # A worker thread may have created a folder again in between: twice.
            for _ in range(2):
                for path in list(self.paths):
                    if os.path.isdir(path) and not os.path.islink(path):
                        shutil.rmtree(path, ignore_errors=True)
                    else:
                        with contextlib.suppress(OSError):
                            os.unlink(path)
            from ..statefile import remove_temps

            remove_temps()
        finally:
            line = f"model-repo: interrupted by {name}"
            if self.message:
                line += f"; {self.message}"
            try:
                os.write(2, (line + "\n").encode("utf-8", "replace"))
            finally:
                os._exit(128 + signum)

    def _stop_children(self, signum: int) -> None:
        """Pass ``signum`` on to the registered children and reap them (SIGKILL after
        :data:`CHILD_GRACE` seconds). ``os.waitpid`` directly: the interrupted main
        thread may hold the ``Popen`` object's own wait lock."""
        live = [p.pid for p in self.children if p.returncode is None]
        for pid in live:
            with contextlib.suppress(OSError):
                os.kill(pid, signum)
        deadline = time.monotonic() + CHILD_GRACE
        while live:
            for pid in list(live):
                try:
                    done, _ = os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    done = pid
                if done:
                    live.remove(pid)
            if live and time.monotonic() > deadline:
                for pid in live:
                    with contextlib.suppress(OSError):
                        os.kill(pid, signal.SIGKILL)
                deadline = float("inf")
            if live:
                time.sleep(0.02)


#: The process-wide handler used by the Hub commands.
on_interrupt = _Interrupt()
