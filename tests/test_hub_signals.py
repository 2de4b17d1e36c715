"""Downloads under signals (issue 9 §3): real SIGINT/SIGTERM sent to a real
``model-repo prefetch`` subprocess while it downloads from the throttled loopback mock
Hub. It must exit within 2 s with one line and no traceback, leave no temporary folder,
and a rerun must not request the files already complete and print the same hash."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mockhub import MockHub
from test_prefetch import ROOT, cli, cli_env, ok

REPO = "org/big"
SMALL = b"s" * (256 << 10)
BIG = bytes(range(256)) * (24 << 10)  # 6 MiB: 6 s at the throttle below
RATE = 1 << 20  # bytes per second per response


@pytest.fixture()
def hub():
    with MockHub() as h:
        h.add_repo(REPO, {"config.json": b'{"model_type": "bert"}\n',
                          "small.safetensors": SMALL, "big.safetensors": BIG})
        yield h


def _download_folder(tmp: Path, hub: MockHub) -> Path:
    commit = hub.repos[("model", REPO)].refs["main"]
    return tmp / "cache" / "model-repo" / "prefetch" / f"models--org--big--{commit}"


def _temp_folders(tmp: Path) -> list[Path]:
    return (list((tmp / "cache" / "model-repo" / "prefetch").glob("model-repo-prefetch-*"))
            + list(tmp.glob("model-repo-prefetch-*")))


def _interrupt(hub: MockHub, tmp: Path, sig: signal.Signals) -> tuple[float, int, str]:
    """Start prefetch with the Hub throttled, wait until small.safetensors is complete
    (its download metadata written), send ``sig``; returns (seconds from the signal to
    the exit, exit status, stderr)."""
    hub.throttle = RATE
    dl = _download_folder(tmp, hub)
    meta = dl / ".cache" / "huggingface" / "download" / "small.safetensors.metadata"
    proc = subprocess.Popen([sys.executable, "-m", "activate", "prefetch", REPO, "--json"],
                            cwd=ROOT, env=cli_env(hub, tmp), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not meta.exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "small.safetensors never completed"
            time.sleep(0.02)
        assert not (dl / "big.safetensors").exists()  # still downloading
        t0 = time.monotonic()
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=10)
        return time.monotonic() - t0, proc.returncode, err
    finally:
        hub.throttle = None
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _requests_for(hub: MockHub, start: int, name: str, sha256: str | None = None) -> list:
    return [r for r in hub.requests[start:] if r["method"] == "GET" and (
        r["path"].split("?")[0].endswith("/" + name)
        or (sha256 is not None and r["server"] == "cdn" and sha256 in r["path"]))]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupted_prefetch_exits_at_once_and_resumes(hub: MockHub, tmp_path: Path,
                                                         sig: signal.Signals):
    import hashlib

    (tmp_path / "ref").mkdir()
    reference = json.loads(ok(cli(hub, tmp_path / "ref", "prefetch", REPO, "--json")).stdout)

    seconds, code, err = _interrupt(hub, tmp_path, sig)
    assert seconds < 2.0, f"{seconds:.2f} s after {sig.name}"
    assert code == 128 + sig
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"model-repo: interrupted by {sig.name}; downloaded files are "
                           "kept in "), err
    assert [ln for ln in err.splitlines() if ln.startswith("model-repo:")] == [last]
    assert _temp_folders(tmp_path) == []
    dl = _download_folder(tmp_path, hub)
    assert (dl / "small.safetensors").read_bytes() == SMALL

    start = len(hub.requests)
    again = json.loads(ok(cli(hub, tmp_path, "prefetch", REPO, "--json")).stdout)
    assert again["hash"] == reference["hash"]
    # Complete files are not fetched again; the interrupted one is.
    small_sha = hashlib.sha256(SMALL).hexdigest()
    assert _requests_for(hub, start, "small.safetensors", small_sha) == []
    assert _requests_for(hub, start, "config.json") == []
    assert _requests_for(hub, start, "big.safetensors", hashlib.sha256(BIG).hexdigest())
    # After a success nothing is left behind.
    assert not dl.exists() and _temp_folders(tmp_path) == []


def test_interrupt_before_downloading_is_one_line_too(hub: MockHub, tmp_path: Path):
    """SIGINT while the process waits on the Hub (a hung listing) is as quick."""
    import threading

    gate = threading.Event()
    original = hub._hub.RequestHandlerClass.api

    def slow_api(self, *a, **kw):  # hold the tree listing until released
        if "/tree/" in self.path:
            gate.wait(20)
        try:
            return original(self, *a, **kw)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client is gone

    hub._hub.RequestHandlerClass.api = slow_api
    try:
        proc = subprocess.Popen([sys.executable, "-m", "activate", "prefetch", REPO],
                                cwd=ROOT, env=cli_env(hub, tmp_path), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 20
        while not any("/tree/" in r["path"] for r in hub.requests):
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.02)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
        assert time.monotonic() - t0 < 2.0
    finally:
        gate.set()
        hub._hub.RequestHandlerClass.api = original
    assert proc.returncode == 130 and out == "" and "Traceback" not in err
    assert err.strip().splitlines()[-1] == "model-repo: interrupted by SIGINT"
    assert not os.path.exists(tmp_path / "cache" / "model-repo" / "prefetch") or \
        _temp_folders(tmp_path) == []


def test_in_process_command_gives_the_handlers_back(hub: MockHub, tmp_path: Path):
    """Run in-process (as tests and embedding tools do), a Hub command restores the
    caller's SIGINT/SIGTERM handlers when it returns, whatever its outcome."""
    from activate.cli import main

    before = (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM))
    env = {"HF_ENDPOINT": hub.url, "HOME": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path)}
    assert main(["ls", REPO, "-q"], environ=env) == 0
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
    assert main(["ls", "hf:nobody/nothing", "-q"], environ=env) == 2
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def test_two_prefetches_of_one_commit_take_turns(hub: MockHub, tmp_path: Path):
    """A second prefetch of the same repo and commit waits for the first (which removes
    the shared download folder when it is done) instead of losing its files; both print
    the same hash."""
    hub.throttle = 4 * RATE
    try:
        procs = []
        for _ in range(2):
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "activate", "prefetch", REPO, "--json"], cwd=ROOT,
                env=cli_env(hub, tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                text=True))
            time.sleep(0.5)
        outs = [p.communicate(timeout=120) for p in procs]
    finally:
        hub.throttle = None
    assert [p.returncode for p in procs] == [0, 0], [e for _, e in outs]
    hashes = {json.loads(o)["hash"] for o, _ in outs}
    assert len(hashes) == 1
    assert "another prefetch of this repo and commit is running" in outs[1][1]
    assert not _download_folder(tmp_path, hub).exists() and _temp_folders(tmp_path) == []
    # The lock the two took turns on is gone too: nothing is left in the folder.
    assert os.listdir(tmp_path / "cache" / "model-repo" / "prefetch") == []
