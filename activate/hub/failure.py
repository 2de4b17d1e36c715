"""The Hub commands' exit codes, :class:`Failure` and :class:`Deadline`: what both
``api`` (Hub access) and ``transport`` (its HTTP reads) need, in a module that imports
neither, so activate/hub/ has no import cycle (tests/test_hub_structure.py). ``api``
re-exports them.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_BAD_INPUT = 2
EXIT_ENVIRONMENT = 3
EXIT_INTERNAL = 70


class Failure(Exception):
    """Ends the command with ``code`` after logging ``message``."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


class Deadline:
    """A point in time (``time.monotonic``) a piece of work must end by, ``seconds``
    from now; ``what`` names it in the error (e.g. ``"MODEL_REPO_HUB_TIMEOUT (3600 s)"``)."""

    def __init__(self, seconds: float, what: str):
        import time

        self.seconds = seconds
        self.end = time.monotonic() + seconds
        self.what = what

    def left(self) -> float:
        """Seconds left (negative once passed)."""
        import time

        return self.end - time.monotonic()

    def check(self, doing: str) -> None:
        """Raise :class:`Failure` (exit 3) when the deadline has passed, saying what was
        being done and how to allow more time."""
        if self.left() < 0:
            raise Failure(EXIT_ENVIRONMENT, f"{doing} did not finish within "
                          f"{self.seconds:g} s: the Hub is too slow or never ends the "
                          f"answer; retry later, check HF_ENDPOINT, or allow more time with "
                          f"{self.what}")
