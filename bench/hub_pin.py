#!/usr/bin/env python3
"""Benchmark pinning a Hub repo with a large LFS file: per file (``model-repo prefetch
--per-file``, the Hub's own hashes) against the full download (``model-repo prefetch``,
the snapshot's NAR hash), in the same run, against the loopback mock Hub of the test
suite (tests/mockhub.py). Then, optionally, the per-file snapshot directory built for
real: links (what ``lib/fetchers/hub-files.nix`` builds) against copies.

Not a test: it prints markdown tables. The repo holds a config, a tokenizer file and a
``model.safetensors`` of ``--size-mib`` MiB: a sparse file on disk (zeros, with a random
first block so its hash is new every run), which the mock serves and hashes like any
other. Mind the disk: the full download writes the file once into the download folder
(``--tmpdir``); the build part adds ``--build-mib`` MiB to the Nix store twice (the file,
then its copy), removed by the next ``nix-collect-garbage``.

    .venv/bin/python bench/hub_pin.py                      # 1 GiB file, 256 MiB build
    .venv/bin/python bench/hub_pin.py --size-mib 64 --build-mib 0
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from mockhub import MockHub  # noqa: E402


def env_for(hub: MockHub, tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("HF_", "HUGGING_FACE_", "TRANSFORMERS_", "MODEL_REPO_"))}
    env.update(HF_ENDPOINT=hub.url, HF_HOME=str(tmp / "hf-home"), TMPDIR=str(tmp),
               XDG_CACHE_HOME=str(tmp / "cache"), HF_HUB_DISABLE_TELEMETRY="1",
               PYTHONPATH=str(ROOT))
    return env


def sparse_file(path: Path, mib: int) -> Path:
    """``mib`` MiB, sparse, with 4 KiB of random bytes first (a new hash every run)."""
    with open(path, "wb") as fh:
        fh.write(os.urandom(4096))
        fh.truncate(mib << 20)
    return path


def run_cli(hub: MockHub, tmp: Path, *args: str) -> tuple[float, int, dict]:
    """(seconds, bytes the mock served, --json output) of one CLI run."""
    hub.requests.clear()
    sent = hub.bytes_sent
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "activate", *args, "--json", "-q"],
                          cwd=ROOT, env=env_for(hub, tmp), capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"{' '.join(args)} failed (exit {proc.returncode}): {proc.stderr}")
    return dt, hub.bytes_sent - sent, json.loads(proc.stdout)


def mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"


def store_size(path: str) -> int:
    return int(subprocess.run(["nix-store", "-q", "--size", path], check=True,
                              capture_output=True, text=True).stdout)


def nixpkgs_lib() -> Path:
    raw = os.environ.get("MODEL_REPO_TEST_NIXPKGS_LIB")
    path = Path(raw) if raw else Path.home() / ".cache" / "model-repo-tests" / "nixpkgs-lib"
    if not (path / "lib" / "default.nix").is_file():
        sys.exit(f"no nixpkgs lib at {path}: set MODEL_REPO_TEST_NIXPKGS_LIB (see tests/nixeval.py)")
    return path / "lib"


def build(hub: MockHub, doc: dict, copy: bool) -> tuple[float, str]:
    """nix-build the per-file model (builtin fetcher for fetchurl, the suite's linkFarm
    over /bin/sh); ``copy``: a directory of copies (cp -L) of that linkFarm instead."""
    hf = {"repo": doc["repo"], "revision": doc["revision"], "endpoint": hub.url,
          "fileHashes": {f["path"]: f["hash"] for f in doc["files"]}}
    model = (f"mr.fetchModel pkgs {{ name = \"bench\"; source.huggingface = "
             f"builtins.fromJSON {json.dumps(json.dumps(hf))}; }}")
    body = model if not copy else (
        f"derivation {{ name = \"bench-copy\"; system = builtins.currentSystem; "
        f"builder = \"/bin/sh\"; PATH = \"/bin:/usr/bin\"; src = {model}; "
        f"args = [ \"-c\" \"cp -RL $src $out\" ]; }}")
    expr = (f"let lib = import {json.dumps(str(nixpkgs_lib()))}; mr = import ./lib "
            f"{{ inherit lib; }}; base = import ./tests/nix/stubs/pkgs.nix {{ inherit lib; }}; "
            f"pkgs = base // {{ fetchurl = a: import <nix/fetchurl.nix> "
            f"{{ inherit (a) url name hash; }}; }}; in {body}")
    t0 = time.perf_counter()
    proc = subprocess.run(["nix-build", "--no-out-link", "--option", "substituters", "",
                           "-E", expr], cwd=ROOT, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"nix-build failed: {proc.stderr[-2000:]}")
    return dt, proc.stdout.strip()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mib", type=int, default=1024, help="the LFS file (default 1024)")
    ap.add_argument("--build-mib", type=int, default=256,
                    help="LFS file of the build comparison; 0 skips it (default 256)")
    ap.add_argument("--tmpdir", default=None, help="where the files and downloads go")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="model-repo-bench-pin-", dir=args.tmpdir))
    need = (args.size_mib * 2 + 256) << 20
    if shutil.disk_usage(tmp).free < need:
        sys.exit(f"not enough space in {tmp}: {mib(need)} needed")
    small = {"config.json": b'{"model_type": "bert", "hidden_size": 8}\n',
             "tokenizer.json": b'{"version": "1.0", "model": {"vocab": {}}}\n' * 2000}
    try:
        with MockHub(page_size=100) as hub:
            big = sparse_file(tmp / "big.safetensors", args.size_mib)
            hub.add_repo("bench/pin", {**small, "model.safetensors": big})  # hashed here
            rows = []
            t, sent, doc = run_cli(hub, tmp, "prefetch", "bench/pin", "--per-file")
            cdn = len(hub.seen("cdn"))
            rows.append(("per file (`--per-file`)", t, sent, cdn, len(doc["files"])))
            t2, sent2, doc2 = run_cli(hub, tmp, "prefetch", "bench/pin")
            rows.append(("full download (NAR hash)", t2, sent2, len(hub.seen("cdn")),
                         len(doc2["files"])))
            total = args.size_mib * (1 << 20) + sum(len(v) for v in small.values())
            print(f"## Pinning a repo of {mib(total)} (one {args.size_mib} MiB LFS file)\n")
            print("| mode | seconds | bytes downloaded | CDN requests | files |")
            print("|---|---:|---:|---:|---:|")
            for name, secs, b, c, n in rows:
                print(f"| {name} | {secs:.2f} | {b} ({mib(b)}) | {c} | {n} |")
            print(f"\nper file / full: {rows[0][1] / rows[1][1]:.3f}× the time, "
                  f"{rows[0][2] / max(rows[1][2], 1):.6f}× the bytes "
                  f"(non-LFS total: {sum(len(v) for v in small.values())} bytes)\n")

            if args.build_mib and shutil.which("nix-build"):
                bbig = sparse_file(tmp / "build.safetensors", args.build_mib)
                hub.add_repo("bench/build", {**small, "model.safetensors": bbig})
                _, _, bdoc = run_cli(hub, tmp, "prefetch", "bench/build", "--per-file")
                tl, out_links = build(hub, bdoc, copy=False)
                tc, out_copy = build(hub, bdoc, copy=True)
                print(f"## Snapshot directory of a {args.build_mib} MiB model: links or "
                      "copies\n")
                print("| layout | build seconds | the directory's own store size |")
                print("|---|---:|---:|")
                print(f"| links (linkFarm; files fetched) | {tl:.2f} | "
                      f"{store_size(out_links)} bytes |")
                print(f"| copies (cp -L of the links; files already fetched) | {tc:.2f} | "
                      f"{store_size(out_copy)} bytes ({mib(store_size(out_copy))}) |")
                print("\nThe files themselves are in the store once either way; copies "
                      "add the whole model again.")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
