"""The persist-folder fuzz campaign of tests/test_persist_fuzz.py at size, with figures
(a report, not a test; the property and what is built: tests/persist_fuzz.py).

Each example writes a persist folder another user could have written (manifests, ours
and nix-hug's; narinfos; NARs; links leading out), runs ``store ls``, ``import --all``,
``import PATH``, ``import --all --yes``, ``export`` and ``store ls`` on it in-process
against the real Nix store, and checks: exit 0-3 with a clear line (never 70), nothing
but a verified content-addressed path imported without ``--yes``, nothing written
outside the folder. Prints how often each command ended how, and the time per example.
Needs Nix (``nix-store``, ``nix``) like the tests; run as the store's owner.

    .venv/bin/python bench/persist_fuzz.py                  # 200 examples
    .venv/bin/python bench/persist_fuzz.py --examples 1000 --seed 7
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from hypothesis import HealthCheck, given, seed, settings  # noqa: E402

from persist_fuzz import Materials, folders, run_example  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--examples", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tmpdir", help="where the persist folders go")
    args = ap.parse_args()
    nix_store = shutil.which("nix-store")
    if nix_store is None or shutil.which("nix") is None:
        sys.exit("needs Nix: nix-store and nix on PATH")
    work = Path(tempfile.mkdtemp(prefix="model-repo-bench-persist-fuzz-", dir=args.tmpdir))
    counts: Counter[str] = Counter()
    materials = Materials.make(nix_store, work)

    @seed(args.seed)
    @settings(max_examples=args.examples, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(folders())
    def campaign(plan: dict) -> None:
        run_example(plan, materials, counts)

    start = time.monotonic()
    failed = None
    try:
        campaign()
    except Exception as exc:  # noqa: BLE001 - reported below, with the figures so far
        failed = exc
    finally:
        seconds = time.monotonic() - start
        subprocess_cleanup(nix_store, materials)
        shutil.rmtree(work, ignore_errors=True)
    n = counts["examples"]
    print(f"persist fuzz campaign: {n} examples, seed {args.seed}, {seconds:.1f} s "
          f"({seconds / max(n, 1) * 1000:.0f} ms per example)")
    print(f"{'outcome':<48} {'count':>7} {'share':>7}")
    for key, value in sorted(counts.items()):
        if key != "examples":
            print(f"{key:<48} {value:>7} {value / max(n, 1):>7.2f}")
    if failed is not None:
        print(f"PROPERTY VIOLATED: {failed!r}")
        return 1
    return 0


def subprocess_cleanup(nix_store: str, materials: Materials) -> None:
    import subprocess

    subprocess.run([nix_store, "--delete", materials.good], capture_output=True)


if __name__ == "__main__":
    sys.exit(main())
