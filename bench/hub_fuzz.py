#!/usr/bin/env python3
"""The hostile-Hub fuzz campaign at size (tests/hubfuzz.py; the suite runs it small and
derandomized in tests/test_hub_fuzz.py).

Not a test: it draws ``--examples`` scenarios with hypothesis (random seed unless
``--seed``), runs each against the loopback mock Hub of the test suite, checks the
property (a correct pin, or exit 2/3 with one clear line; never exit 70, a hang past the
deadline, a write outside the target, a token to another host) and prints a markdown
table: runs, exit codes and wall times per command, and the slowest run against the
deadline. Exit 1 when the property broke (the failing scenario is printed, shrunk).

    .venv/bin/python bench/hub_fuzz.py                     # 1,000 scenarios
    .venv/bin/python bench/hub_fuzz.py --examples 200 --seed 1
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from hypothesis import HealthCheck, given, seed, settings  # noqa: E402
from hubfuzz import DEADLINE, FILE_DEADLINE, run_scenario, scenarios  # noqa: E402
from mockhub import MockHub  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--examples", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=None)
    opts = ap.parse_args()
    codes: dict[str, Counter[int]] = defaultdict(Counter)
    times: dict[str, list[float]] = defaultdict(list)
    failures: list[str] = []
    start = time.monotonic()
    with MockHub() as hub:
        @settings(max_examples=opts.examples, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(sc=scenarios())
        def campaign(sc) -> None:  # type: ignore[no-untyped-def]
            tmp = Path(tempfile.mkdtemp(prefix="hubfuzz-"))
            try:
                out = run_scenario(hub, sc, tmp)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            codes[sc.command][out.code] += 1
            times[sc.command].append(out.seconds)

        if opts.seed is not None:
            campaign = seed(opts.seed)(campaign)
        try:
            campaign()
        except AssertionError as exc:  # hypothesis re-raises the shrunk failure
            failures.append(str(exc)[:3000])
    total = time.monotonic() - start
    runs = sum(len(v) for v in times.values())
    print(f"# Hostile-Hub fuzz campaign: {runs} runs in {total:.0f} s "
          f"(seed {opts.seed if opts.seed is not None else 'random'}; deadlines "
          f"{DEADLINE:g} s per command, {FILE_DEADLINE:g} s per file)\n")
    print("| command | runs | exit 0 | exit 2 | exit 3 | other | median s | max s | "
          "max / deadline |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for cmd in sorted(times):
        c, t = codes[cmd], times[cmd]
        other = sum(n for k, n in c.items() if k not in (0, 2, 3))
        print(f"| {cmd} | {len(t)} | {c[0]} | {c[2]} | {c[3]} | {other} | "
              f"{statistics.median(t):.2f} | {max(t):.2f} | {max(t) / DEADLINE:.2f} |")
    if failures:
        print("\n## Property broken\n")
        print("```\n" + failures[0] + "\n```")
        return 1
    print("\nProperty held in every run.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
