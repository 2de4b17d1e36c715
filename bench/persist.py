"""Export and import times of the persist folder, per NAR compression (a report, not a test).

Makes a model-like store path (a ``model.safetensors`` of float32 weights drawn from a
normal distribution, as trained weights look to a compressor, plus a ``config.json``),
then for each compression runs the real CLI the way users do::

    python -m activate export <store path> --persist-dir DIR --compression C
    nix-store --delete <store path>
    python -m activate import <store path> --persist-dir DIR

and prints the wall times (interpreter start-up included) and the NAR's size on disk.
The store path and the folders are removed at the end; nothing else in the store is
touched (no garbage collection).

    .venv/bin/python bench/persist.py                 # 87 MB, none and zstd
    .venv/bin/python bench/persist.py --size-mb 500 --xz   # also xz (slow: ~1 s per MB)

This is where the default ``--compression none`` comes from: on the project's two-core
machines with Nix 2.8, 87 MB exported in 0.6 s uncompressed, 0.84 s with zstd (7 % smaller)
and 81 s with Nix's default, xz.
"""

from __future__ import annotations

import argparse
import array
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def weights(path: Path, size_mb: int, seed: int) -> None:
    """``size_mb`` MiB of float32 values ~ N(0, 0.02), written in 1 MiB chunks."""
    rng = random.Random(seed)
    per_chunk = (1 << 20) // 4
    with open(path, "wb") as fh:
        for _ in range(size_mb):
            fh.write(array.array("f", (rng.gauss(0.0, 0.02) for _ in range(per_chunk)))
                     .tobytes())


def run(*argv: str) -> float:
    start = time.perf_counter()
    proc = subprocess.run(list(argv), cwd=ROOT, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed (exit {proc.returncode}):\n{proc.stderr}")
    return elapsed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mb", type=int, default=87, help="weights size in MiB (default 87)")
    ap.add_argument("--xz", action="store_true", help="also measure xz (slow)")
    ap.add_argument("--tmpdir", help="where the model and the persist folders go")
    args = ap.parse_args()
    nix_store = shutil.which("nix-store")
    if nix_store is None or shutil.which("nix") is None:
        sys.exit("needs Nix (nix and nix-store on PATH; on Debian: apt-get install nix-bin)")
    work = Path(tempfile.mkdtemp(prefix="model-repo-bench-persist-", dir=args.tmpdir))
    seed = int.from_bytes(os.urandom(4), "little")
    model = work / f"hf-bench--persist-{seed:012x}"[:64]
    model.mkdir()
    weights(model / "model.safetensors", args.size_mb, seed)
    (model / "config.json").write_text('{"model_type": "bert"}\n')
    store_path = subprocess.run([nix_store, "--add-fixed", "--recursive", "sha256",
                                 str(model)], check=True, capture_output=True,
                                text=True).stdout.strip()
    shutil.rmtree(model)
    cli = [sys.executable, "-m", "activate"]
    rows = []
    try:
        for comp in ("none", "zstd") + (("xz",) if args.xz else ()):
            folder = work / f"persist-{comp}"
            t_export = run(*cli, "export", store_path, "--persist-dir", str(folder),
                           "--compression", comp, "-q")
            nar_bytes = sum(f.stat().st_size for f in (folder / "nar").iterdir())
            subprocess.run([nix_store, "--delete", store_path], check=True,
                           capture_output=True)
            t_import = run(*cli, "import", store_path, "--persist-dir", str(folder), "-q")
            rows.append((comp, t_export, t_import, nar_bytes))
            shutil.rmtree(folder)
    finally:
        subprocess.run([nix_store, "--delete", store_path], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
    print(f"persist folder, {args.size_mb} MiB of float32 weights, nix copy via model-repo")
    print(f"{'compression':<12} {'export s':>9} {'import s':>9} {'NAR MiB':>9} {'of none':>8}")
    base = rows[0][3]
    for comp, te, ti, size in rows:
        print(f"{comp:<12} {te:>9.2f} {ti:>9.2f} {size / 2**20:>9.1f} {size / base:>8.0%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
