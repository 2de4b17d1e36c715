"""Progress bars of the long Hub-side work (downloads of ``prefetch``, ``lock`` and
``update``; ``export`` and ``import``): huggingface_hub's own tqdm bars, on stderr, only
on a terminal and never with ``-q``.

:func:`configure` is called once per command with ``-q`` and the stream; the bars then
follow it: :func:`byte_bar` for our own work, :data:`RateBar` for huggingface_hub's
``snapshot_download`` (its ``tqdm_class``). ``HF_HUB_DISABLE_PROGRESS_BARS=1`` also
turns them off (huggingface_hub reads it). tqdm and huggingface_hub are imported only
when a bar is made.
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

_enabled = False


def configure(*, quiet: bool, stream: TextIO | None = None) -> bool:
    """Show bars from now on iff ``stream`` (default stderr) is a terminal and not
    ``quiet``; when not, huggingface_hub's own bars are switched off too
    (``disable_progress_bars``). Returns whether bars are shown."""
    global _enabled
    stream = sys.stderr if stream is None else stream
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):
        tty = False
    _enabled = tty and not quiet
    if not _enabled and sys.modules.get("huggingface_hub") is not None:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    return _enabled


def enabled() -> bool:
    """Whether bars are shown (:func:`configure`)."""
    return _enabled


#: Bytes bars: tqdm's own layout, with the size done and total and the rate
#: (``21.0M/31.5M [00:01<00:00, 20.0MB/s]``).
_BYTES_FORMAT = ("{l_bar}{bar}| {n_fmt}B/{total_fmt}B [{elapsed}<{remaining}, "
                 "{rate_fmt}]")


def rate_bar_class() -> type:
    """A subclass of huggingface_hub's tqdm for ``snapshot_download(tqdm_class=…)``:
    its bytes bars show the rate (huggingface_hub 1.x/2.x give them a layout with the
    rate only for Xet transfers, as a postfix; that postfix is dropped here, the rate
    is in the layout). Other bars (``Fetching N files``) are left as they are. Off
    unless :func:`configure` enabled bars."""
    from huggingface_hub.utils import tqdm as hf_tqdm

    class RateBar(hf_tqdm):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any):
            if kwargs.get("unit") == "B":
                kwargs["bar_format"] = _BYTES_FORMAT
            if not _enabled:
                kwargs["disable"] = True
            super().__init__(*args, **kwargs)

        def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
            if getattr(self, "unit", None) != "B":  # a disabled bar has no unit
                super().set_postfix_str(s, refresh)

    return RateBar


def byte_bar(total: int, desc: str) -> Any:
    """A bytes bar (``desc``, ``total`` bytes, 0: unknown; size and rate; use as a
    context manager, ``.update(n)``), or a silent stand-in when bars are off."""
    if not _enabled:
        return _Silent()
    from huggingface_hub.utils import tqdm as hf_tqdm

    return hf_tqdm(total=total if total > 0 else None, desc=desc, unit="B", unit_scale=True,
                   bar_format=_BYTES_FORMAT, file=sys.stderr, leave=True)


class _Silent:
    """What :func:`byte_bar` gives when bars are off: does nothing."""

    def __enter__(self) -> _Silent:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, n: float = 1) -> None:
        return None

    def close(self) -> None:
        return None


def run_measured(argv: list[str], *, total: int, desc: str) -> Any:
    """``subprocess.run(argv)`` (stdout and stderr captured as text, stdin /dev/null)
    with a bytes bar of ``total`` bytes (:func:`communicate_measured`). Returns the
    :class:`subprocess.CompletedProcess`."""
    import subprocess

    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          stdin=subprocess.DEVNULL) as proc:
        out, err = communicate_measured(proc, total=total, desc=desc)
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def communicate_measured(proc: Any, *, total: int, desc: str) -> tuple[str, str]:
    """``proc.communicate()`` for a started :class:`subprocess.Popen` with piped output,
    showing a bytes bar of ``total`` bytes driven by what the child has read so far
    (Linux ``/proc/<pid>/io`` ``rchar``, polled every 0.2 s, capped at ``total``; filled
    on success). For Nix commands that report no byte progress of their own (``nix copy``
    to and from a file:// binary cache). Without bars, or without ``/proc``, a plain
    ``communicate``. Returns (stdout, stderr)."""
    import os
    import threading

    if not _enabled or total <= 0 or not os.path.exists("/proc/self/io"):
        return proc.communicate()
    outputs: list[tuple[str, str]] = []
    reader = threading.Thread(target=lambda: outputs.append(proc.communicate()), daemon=True)
    reader.start()
    shown = 0
    with byte_bar(total, desc) as bar:
        try:
            while reader.is_alive():
                reader.join(0.2)
                try:
                    with open(f"/proc/{proc.pid}/io", encoding="ascii") as fh:
                        fields = dict(line.split(": ", 1) for line in fh.read().splitlines())
                    done = min(int(fields["rchar"]), total)
                except (OSError, KeyError, ValueError):  # gone, or not readable
                    continue
                if done > shown:
                    bar.update(done - shown)
                    shown = done
        except BaseException:
            proc.kill()
            raise
        if proc.wait() == 0 and shown < total:
            bar.update(total - shown)
    reader.join()
    return outputs[0] if outputs else ("", "")
