#!/usr/bin/env python3
"""Benchmark ``model-repo prefetch`` interrupted mid-download, against the loopback mock
Hub of the test suite (tests/mockhub.py), throttled per response.

Not a test: it prints a markdown table. One run:

1. an uninterrupted prefetch of the repo (the reference hash, bytes served);
2. the same, throttled, with SIGINT (or SIGTERM) sent ``--after`` seconds into the
   download: the time from the signal to the exit, next to the time the download still
   needed (what waiting for the worker threads cost before: the remaining bytes of the
   files in flight at the throttle), the exit status, temporary folders left, and the
   bytes of complete files kept in the download folder;
3. a rerun at full speed: the bytes it downloads (the total less the complete files
   kept: huggingface_hub 2.x names partial files per process, so they restart), next
   to the bytes a download from scratch takes (step 1), and whether it prints the same
   hash.

    .venv/bin/python bench/hub_interrupt.py                   # 6 files of 4 MiB, 2 MiB/s
    .venv/bin/python bench/hub_interrupt.py --files 8 --size-mib 16 --rate-mib 4 --signal TERM
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from mockhub import MockHub  # noqa: E402

REPO = "bench/interrupt"


def env_for(hub: MockHub, tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("HF_", "HUGGING_FACE_", "TRANSFORMERS_", "MODEL_REPO_"))}
    env.update(HF_ENDPOINT=hub.url, HF_HOME=str(tmp / "hf-home"), TMPDIR=str(tmp),
               XDG_CACHE_HOME=str(tmp / "cache"), HF_HUB_DISABLE_TELEMETRY="1",
               PYTHONPATH=str(ROOT))
    return env


def prefetch(hub: MockHub, tmp: Path) -> tuple[dict, int, float]:
    before = hub.bytes_sent
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "activate", "prefetch", REPO, "--json", "-q"],
                          cwd=ROOT, env=env_for(hub, tmp), capture_output=True, text=True)
    took = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"prefetch failed ({proc.returncode}): {proc.stderr}")
    return json.loads(proc.stdout), hub.bytes_sent - before, took


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=6, help="LFS files in the repo (default 6)")
    ap.add_argument("--size-mib", type=float, default=4, help="size of each (default 4 MiB)")
    ap.add_argument("--rate-mib", type=float, default=2,
                    help="throttle per response, MiB/s (default 2)")
    ap.add_argument("--after", type=float, default=1.0,
                    help="seconds into the download to send the signal (default 1)")
    ap.add_argument("--signal", choices=("INT", "TERM"), default="INT")
    args = ap.parse_args()
    size = int(args.size_mib * (1 << 20))
    rate = int(args.rate_mib * (1 << 20))
    sig = signal.Signals[f"SIG{args.signal}"]
    with tempfile.TemporaryDirectory(prefix="bench-hub-") as d, MockHub() as hub:
        tmp = Path(d)
        # Files of different sizes, so some complete before the signal and some do not.
        files = {f"w{i}.safetensors": bytes([i]) * (size * (i + 1) // args.files)
                 for i in range(args.files)}
        files["config.json"] = b'{"model_type": "bench"}\n'
        hub.add_repo(REPO, files)
        total = sum(len(v) for v in files.values())
        ref, ref_bytes, ref_time = prefetch(hub, tmp / "ref")

        run = tmp / "run"
        run.mkdir()
        hub.throttle = rate
        before = hub.bytes_sent
        proc = subprocess.Popen([sys.executable, "-m", "activate", "prefetch", REPO, "-q"],
                                cwd=ROOT, env=env_for(hub, run), stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while hub.bytes_sent - before == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        first_byte = time.perf_counter()
        time.sleep(args.after)
        sent_at_signal = hub.bytes_sent - before
        t0 = time.perf_counter()
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
        exit_s = time.perf_counter() - t0
        hub.throttle = None
        # The files download in parallel (huggingface_hub: 8 workers), each at `rate`:
        # the largest decides when the old behaviour (wait for the workers) would have
        # exited.
        biggest = max(len(v) for v in files.values())
        wait_s = max(0.0, biggest / rate - (t0 - first_byte))
        leftovers = list(run.glob("model-repo-prefetch-*")) + list(
            (run / "cache" / "model-repo" / "prefetch").glob("model-repo-prefetch-*"))
        kept = sum(p.stat().st_size for p in (run / "cache" / "model-repo" / "prefetch")
                   .glob("*--*/*") if p.is_file())

        again, again_bytes, again_time = prefetch(hub, run)

    mib = 1 << 20
    print(f"# prefetch interrupted by SIG{args.signal}: {args.files} LFS files, "
          f"{total / mib:.1f} MiB, throttle {args.rate_mib} MiB/s per response\n")
    print("| measure | value | reference |")
    print("|---|---|---|")
    print(f"| signal -> exit | {exit_s:.3f} s | ≥ {wait_s:.1f} s: the download still needed "
          f"(old behaviour: wait for the workers) |")
    print(f"| exit status | {proc.returncode} | {128 + sig} |")
    print(f"| stderr lines | {len(err.strip().splitlines())} | 1 |")
    print(f"| temporary folders left | {len(leftovers)} | 0 |")
    print(f"| bytes served before the signal | {sent_at_signal / mib:.1f} MiB | "
          f"{total / mib:.1f} MiB in all |")
    print(f"| complete files kept | {kept / mib:.1f} MiB | partial files are not kept |")
    print(f"| rerun: bytes downloaded | {again_bytes / mib:.1f} MiB | {ref_bytes / mib:.1f} MiB "
          f"from scratch ({again_bytes / max(ref_bytes, 1):.0%}) |")
    print(f"| rerun: wall time | {again_time:.2f} s | {ref_time:.2f} s from scratch |")
    print(f"| rerun: same hash | {again['hash'] == ref['hash']} | {ref['hash']} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
