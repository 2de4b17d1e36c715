#!/usr/bin/env python3
"""Benchmark the evaluation of a Hub model pinned per file, from a lock file, as the
number of files grows (issue 15): ``lib.fetchModel { lockFile; source.huggingface.repo; }``
against a linear reference built in the same run.

Not a test: it prints a markdown table with ratios. Each subject is one
``nix-instantiate --eval --strict`` of the snapshot directory's ``drvPath`` (read-only:
nothing is written to the store); its time is the child's CPU time (user + system, from
``wait4``: wall time on a shared machine measures the neighbours too), its peak memory
the child's ``ru_maxrss``. Subjects, on the same generated lock file (random file names in folders,
random hashes):

- **project**: ``mr.fetchModel`` with the suite's stub pkgs (whose ``linkFarm`` and
  ``runCommand`` are nixpkgs' code, tests/nix/stubs/pkgs.nix) and Nix's builtin
  ``<nix/fetchurl.nix>`` for ``fetchurl`` — options, lock file checks, path rule, URLs;
- **reference**: the same per-file fetches and the same ``linkFarm``, given an attribute
  set built with one ``listToAttrs`` straight from the lock file (no checks): linear;
- **list linkFarm** (for context): the reference, but ``linkFarm`` given a list, which
  nixpkgs folds with ``//`` (a copy of the set per file: quadratic) — what lib did before.

Goals: project ≤ 1.5× the reference's time and memory at 10,000 files, and the project's
10,000/1,000 ratio ≤ 15×.

    .venv/bin/python bench/nix_eval.py                 # 1,000 and 10,000 files
    .venv/bin/python bench/nix_eval.py --sizes 1000,10000,100000
    .venv/bin/python bench/nix_eval.py --check         # exit 1 when a goal is missed

Needs nix-instantiate and nixpkgs' lib (``$MODEL_REPO_TEST_NIXPKGS_LIB``, as the tests).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from nixeval import nix_string, require_input  # noqa: E402

REV = "c9745ed1d9f207416be6d2e6f8de32d1f16199bf"


def make_lock(path: Path, n: int) -> None:
    """A lock file with one model "m" (repo o/n) of ``n`` files in folders of 100."""
    files = {}
    for i in range(n):
        name = f"shard-{i // 100:05d}/file-{i:07d}-{os.urandom(3).hex()}.bin"
        files[name] = {"size": 1, "lfs": False,
                       "hash": "sha256-" + base64.b64encode(os.urandom(32)).decode()}
    entry = {"repo": "o/n", "repoType": "model", "ref": "main", "commit": REV,
             "exactFiles": [], "include": [], "exclude": [], "files": files}
    path.write_text(json.dumps({"version": 1, "models": {"m": entry}}))


def expressions(lib: Path, lock: Path) -> dict[str, str]:
    head = f"""let
      lib = import {nix_string(lib)};
      base = import ./tests/nix/stubs/pkgs.nix {{ inherit lib; }};
      fetchurl = args: import <nix/fetchurl.nix> {{ inherit (args) url name hash; }};
      pkgs = base // {{ inherit fetchurl; }};
      mr = import ./lib {{ inherit lib; }};
      lock = builtins.fromJSON (builtins.readFile {nix_string(lock)});
      entries = lib.mapAttrsToList (path: f: {{
        name = path;
        value = fetchurl {{
          name = lib.strings.sanitizeDerivationName (baseNameOf path);
          url = "https://huggingface.co/o/n/resolve/{REV}/" + path;
          inherit (f) hash;
        }};
      }}) lock.models.m.files;
    in"""
    return {
        "project": head + f""" (mr.fetchModel pkgs {{ name = "m"; lockFile = {nix_string(lock)};
                 source.huggingface.repo = "o/n"; }}).drvPath""",
        "reference": head + """ (pkgs.linkFarm "m" (builtins.listToAttrs entries)).drvPath""",
        "list linkFarm": head + """ (pkgs.linkFarm "m" (map (e: { inherit (e) name;
                 path = e.value; }) entries)).drvPath""",
    }


def measure(expr: str) -> tuple[float, int]:
    """Run ``expr`` in a child whose rusage is its own (ru_maxrss in KiB on Linux)."""
    pid = os.fork()
    if pid == 0:  # the child execs nix-instantiate, output to /dev/null
        fd = os.open(os.devnull, os.O_WRONLY)
        os.dup2(fd, 1)
        os.chdir(ROOT)
        os.execvp("nix-instantiate", ["nix-instantiate", "--eval", "--strict", "-E", expr])
    _pid, status, usage = os.wait4(pid, 0)
    # CPU time (user + system) of the child: wall time on a shared machine measures the
    # neighbours too.
    seconds = usage.ru_utime + usage.ru_stime
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"evaluation failed (exit {os.waitstatus_to_exitcode(status)})")
    return seconds, usage.ru_maxrss * 1024


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1000,10000",
                    help="numbers of files, comma-separated (default 1000,10000)")
    ap.add_argument("--runs", type=int, default=3, help="runs per subject and size (median)")
    ap.add_argument("--no-list", action="store_true",
                    help="skip the list linkFarm subject (quadratic: slow at 100,000)")
    ap.add_argument("--check", action="store_true", help="exit 1 when a goal is missed")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    lib = require_input("nixpkgs-lib") / "lib"
    results: dict[tuple[str, int], tuple[float, int]] = {}
    with tempfile.TemporaryDirectory(prefix="model-repo-bench-eval-") as d:
        for n in sizes:
            lock = Path(d) / f"lock-{n}.json"
            make_lock(lock, n)
            for subject, expr in expressions(lib, lock).items():
                if subject == "list linkFarm" and (args.no_list or n > 20000):
                    continue
                runs = [measure(expr) for _ in range(args.runs if n <= 20000 else 1)]
                results[(subject, n)] = (statistics.median(r[0] for r in runs),
                                         max(r[1] for r in runs))
                t, m = results[(subject, n)]
                print(f"  {subject} {n}: {t:.2f} s, {m / 2**20:.0f} MiB", file=sys.stderr)

    print("| files | subject | CPU time (s) | peak RSS (MiB) | time / reference | memory / reference |")
    print("|---:|---|---:|---:|---:|---:|")
    for n in sizes:
        rt, rm = results[("reference", n)]
        for subject in ("project", "reference", "list linkFarm"):
            if (subject, n) not in results:
                continue
            t, m = results[(subject, n)]
            print(f"| {n:,} | {subject} | {t:.2f} | {m / 2**20:.0f} | {t / rt:.2f}× | "
                  f"{m / rm:.2f}× |")
    ok = True
    if 10000 in sizes:
        pt, pm = results[("project", 10000)]
        rt, rm = results[("reference", 10000)]
        goal = pt <= 1.5 * rt and pm <= 1.5 * rm
        ok &= goal
        print(f"\nAt 10,000 files: project/reference {pt / rt:.2f}× time, {pm / rm:.2f}× "
              f"memory (goal ≤ 1.5×): {'met' if goal else 'MISSED'}")
        if 1000 in sizes:
            growth = pt / results[("project", 1000)][0]
            ok &= growth <= 15
            print(f"Project 10,000/1,000 files: {growth:.1f}× time (goal ≤ 15×): "
                  f"{'met' if growth <= 15 else 'MISSED'}")
    return 0 if ok or not args.check else 1


if __name__ == "__main__":
    raise SystemExit(main())
