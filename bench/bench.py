#!/usr/bin/env python3
"""Benchmark the activator against the shell script peer tools generate.

Not a test: it prints a markdown table of median wall times and their ratio to a
REFERENCE measured in the same run, on the same machine and filesystem, with the same
models. The reference is a generated POSIX shell script doing what peer tools' activation
scripts do, one model at a time::

    mkdir -p "$HUB/models--org--model-N/snapshots" "$HUB/models--org--model-N/refs"
    ln -sfn STOREPATH "$HUB/models--org--model-N/snapshots/COMMIT"
    echo COMMIT > "$HUB/models--org--model-N/refs/main"

run with ``/bin/sh``. Its "repeat" is the same script run again (it relinks everything,
as peers do); the activator's repeat is a second activation of an unchanged manifest.

The activator runs as a subprocess exactly as users run it:
``python -m activate activate --manifest FILE --cache-dir HUB --state-dir STATE
--format sh`` (from the repository root), or ``--activator CMD`` for an installed
``model-repo``. "First" runs get a fresh hub dir and a fresh state dir each.

Exit status: 0 (it is a report), unless ``--check`` is given: then 1 when any target
fails or a run errors.

    python bench/bench.py                 # 100 and 10,000 models
    python bench/bench.py --quick         # 100 models only
    python bench/bench.py --activator model-repo --check
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NIX_BASE32 = "0123456789abcdfghijklmnpqrsvwxyz"
MODEL_NAME = "bench-model"
PROFILE = "bench"

# Targets: ratio of the activator's median to the reference's median, and peak RSS.
TARGET_FIRST_SMALL = 1.0
TARGET_REPEAT_SMALL = 0.25
TARGET_FIRST_LARGE = 0.3
TARGET_REPEAT_LARGE = 0.05
TARGET_RSS_MIB = 60.0
# Many profiles: a full run with OTHER_PROFILES other profiles' states in the state dir,
# against the same run with only its own (same models, same run of the bench).
TARGET_MANY_PROFILES = 1.2
OTHER_PROFILES = 3000
OTHER_MODELS = 10  # models per other profile (each in its own repo folder)

# Runs ``argv[1:]`` as its only child and prints that child's exit status and peak RSS
# (getrusage(RUSAGE_CHILDREN) covers waited-for children only, not this wrapper).
_RSS_WRAPPER = """\
import resource, subprocess, sys
r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
sys.stderr.buffer.write(r.stderr)
print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


class BenchError(Exception):
    """A run failed or left the hub dir in a wrong state."""


@dataclass
class Row:
    scenario: str
    activator: list[float] = field(default_factory=list)  # seconds
    reference: list[float] = field(default_factory=list)
    target: float | None = None
    error: str | None = None

    @property
    def ratio(self) -> float | None:
        if not self.activator or not self.reference:
            return None
        return statistics.median(self.activator) / statistics.median(self.reference)

    @property
    def passed(self) -> bool | None:
        if self.error:
            return False
        ratio = self.ratio
        if ratio is None or self.target is None:
            return None
        return ratio <= self.target


@dataclass
class Rss:
    label: str
    kib: float | None = None
    target_mib: float | None = None
    error: str | None = None

    @property
    def mib(self) -> float | None:
        return None if self.kib is None else self.kib / 1024

    @property
    def passed(self) -> bool | None:
        if self.error:
            return False
        if self.target_mib is None or self.mib is None:
            return None
        return self.mib <= self.target_mib


# -- fixtures -----------------------------------------------------------------------


def commit_of(i: int) -> str:
    """A distinct, deterministic 40-hex commit for model ``i``."""
    return hashlib.sha1(f"model-repo-bench-{i}".encode()).hexdigest()


def make_store_path(tmp: str, fake: bool) -> tuple[str, str, str]:
    """One model directory with a config.json, in the Nix store when ``nix-store --add``
    works, else in a fake store under ``tmp``. Returns (store path, storeDir, how)."""
    content = json.dumps({"model_type": "bench", "architectures": ["Bench"]}, indent=2) + "\n"
    nix_store = None if fake else shutil.which("nix-store")
    if nix_store:
        src = os.path.join(tmp, "src", MODEL_NAME)
        os.makedirs(src)
        with open(os.path.join(src, "config.json"), "w") as fh:
            fh.write(content)
        proc = subprocess.run([nix_store, "--add", src], capture_output=True, text=True)
        path = proc.stdout.strip()
        if proc.returncode == 0 and path.startswith("/") and os.path.isdir(path):
            return path, os.path.dirname(path), "nix-store --add"
        print(f"note: nix-store --add failed ({proc.stderr.strip() or proc.returncode}); "
              "using a fake store", file=sys.stderr)
    store_dir = os.path.normpath(os.path.join(tmp, "store"))
    digest = hashlib.sha256(content.encode()).digest()
    name = "".join(NIX_BASE32[b % 32] for b in digest[:32])
    path = os.path.join(store_dir, f"{name}-{MODEL_NAME}")
    os.makedirs(path)
    with open(os.path.join(path, "config.json"), "w") as fh:
        fh.write(content)
    return path, store_dir, "fake store dir"


def write_manifest(path: str, count: int, store_path: str, store_dir: str) -> None:
    models = {
        f"m{i}": {
            "repoId": f"org/model-{i}",
            "revision": commit_of(i),
            "refs": ["main"],
            "path": store_path,
        }
        for i in range(count)
    }
    manifest = {
        "version": 1,
        "profile": PROFILE,
        "cacheDir": None,
        "offline": True,
        "storeDir": store_dir,
        "models": models,
    }
    with open(path, "w") as fh:
        json.dump(manifest, fh)


def file_by_file(store_path: str) -> bool:
    """The activator's layout rule (``activate.tree.file_by_file``): a whole model is
    linked file by file unless its store is mounted read-only."""
    sys.path.insert(0, REPO_ROOT)
    from activate.tree import file_by_file as rule

    return rule(store_path)


def write_reference(path: str, count: int, store_path: str) -> None:
    """The peers' activation script: mkdir -p, ln -sfn, echo > ref, per model; in the
    layout the activator's rule picks (:func:`file_by_file`), so the ratio compares one
    layout: one link per snapshot, or a snapshot directory with one relative link per
    file to a blob link into the store path (the bench model has one file)."""
    target = shlex.quote(store_path)
    tree = file_by_file(store_path)
    blob = shlex.quote(f"model-repo-{hashlib.sha256(store_path.encode()).hexdigest()[:16]}")
    lines = [
        "#!/bin/sh",
        "# Generated by bench/bench.py: what peer tools' activation scripts do.",
        "set -e",
        'HUB="$1"',
    ]
    for i in range(count):
        repo = f"$HUB/models--org--model-{i}"
        commit = commit_of(i)
        if tree:
            snap = f"{repo}/snapshots/{commit}"
            lines.append(f'mkdir -p "{snap}" "{repo}/blobs" "{repo}/refs"')
            lines.append(f'ln -sfn {target}/config.json "{repo}/blobs/"{blob}')
            lines.append(f'ln -sfn ../../blobs/{blob} "{snap}/config.json"')
        else:
            lines.append(f'mkdir -p "{repo}/snapshots" "{repo}/refs"')
            lines.append(f'ln -sfn {target} "{repo}/snapshots/{commit}"')
        lines.append(f'echo {commit} > "{repo}/refs/main"')
    with open(path, "w") as fh:
        fh.write("\n".join(lines) + "\n")


# -- running ------------------------------------------------------------------------


@dataclass
class Setup:
    tmp: str
    activator: list[str]
    activator_cwd: str
    store_path: str
    verbose: bool = False
    _serial: int = 0

    def fresh_dirs(self, tag: str) -> tuple[str, str, str]:
        """A new (root, hub dir, state dir); the hub and state dirs do not exist yet."""
        self._serial += 1
        root = os.path.join(self.tmp, f"{tag}-{self._serial}")
        os.makedirs(root)
        return root, os.path.join(root, "hub"), os.path.join(root, "state")

    def activator_cmd(self, manifest: str, hub: str, state: str) -> list[str]:
        return [*self.activator, "activate", "--manifest", manifest, "--cache-dir", hub,
                "--state-dir", state, "--format", "sh"]

    def run_activator(self, manifest: str, hub: str, state: str, count: int) -> float:
        cmd = self.activator_cmd(manifest, hub, state)
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=self.activator_cwd, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE)
        elapsed = time.perf_counter() - start
        if proc.returncode != 0:
            raise BenchError(f"activator exited {proc.returncode}: "
                             f"{proc.stderr.decode(errors='replace').strip()[-2000:]}")
        exports = proc.stdout.count(b"\nexport MODEL_REPO_M") + proc.stdout.startswith(
            b"export MODEL_REPO_M")
        if exports != count:
            raise BenchError(f"activator printed {exports} model variables, expected {count}")
        self._log("activator", count, elapsed)
        return elapsed

    def run_reference(self, script: str, hub: str, count: int) -> float:
        start = time.perf_counter()
        proc = subprocess.run(["/bin/sh", script, hub], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE)
        elapsed = time.perf_counter() - start
        if proc.returncode != 0:
            raise BenchError(f"reference script exited {proc.returncode}: "
                             f"{proc.stderr.decode(errors='replace').strip()[-2000:]}")
        self._log("reference", count, elapsed)
        return elapsed

    def check_hub(self, hub: str, count: int, who: str) -> None:
        """Spot-check that the first and last model are linked as the hub expects."""
        for i in {0, count // 2, count - 1}:
            folder = os.path.join(hub, f"models--org--model-{i}")
            commit = commit_of(i)
            link = os.path.join(folder, "snapshots", commit)
            try:
                # One link to the store path, or a tree whose config.json resolves into it.
                target = (os.readlink(link) if os.path.islink(link) else
                          os.path.dirname(os.path.realpath(os.path.join(link, "config.json"))))
                with open(os.path.join(folder, "refs", "main")) as fh:
                    ref = fh.read().strip()
            except OSError as exc:
                raise BenchError(f"{who}: model {i} is not linked: {exc}") from None
            if target != self.store_path or ref != commit:
                raise BenchError(f"{who}: model {i} is linked wrong ({target!r}, ref {ref!r})")

    def peak_rss_kib(self, manifest: str, hub: str, state: str) -> float:
        cmd = [sys.executable, "-c", _RSS_WRAPPER, *self.activator_cmd(manifest, hub, state)]
        proc = subprocess.run(cmd, cwd=self.activator_cwd, capture_output=True, text=True)
        try:
            status, maxrss = proc.stdout.split()
        except ValueError:
            raise BenchError(f"RSS wrapper failed: {proc.stderr.strip()[-2000:]}") from None
        if status != "0":
            raise BenchError(f"activator exited {status}: {proc.stderr.strip()[-2000:]}")
        # ru_maxrss is in KiB on Linux and the BSDs, in bytes on macOS.
        return int(maxrss) / 1024 if sys.platform == "darwin" else float(maxrss)

    def _log(self, who: str, count: int, elapsed: float) -> None:
        if self.verbose:
            print(f"  {who:9s} {count:>6} models: {elapsed * 1000:9.1f} ms", file=sys.stderr)


def remove(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)


def bench_size(setup: Setup, count: int, runs: int, targets: tuple[float, float],
               rss: bool) -> tuple[list[Row], list[Rss]]:
    """First and repeat activation of ``count`` models, ``runs`` times each."""
    label = f"{count:,}"
    first = Row(f"first activation, {label} models", target=targets[0])
    repeat = Row(f"repeat activation (no-op), {label} models", target=targets[1])
    rss_rows: list[Rss] = []
    manifest = os.path.join(setup.tmp, f"manifest-{count}.json")
    script = os.path.join(setup.tmp, f"reference-{count}.sh")
    write_manifest(manifest, count, setup.store_path,
                   os.path.dirname(setup.store_path))
    write_reference(script, count, setup.store_path)
    print(f"benchmarking {label} models ({runs} run(s) each)...", file=sys.stderr)

    kept: tuple[str, str, str] | None = None  # (root, hub, state) of the last first run
    kept_ref: tuple[str, str] | None = None  # (root, hub) of the reference's last run
    try:
        # First activation: fresh hub and state dir every run; activator and reference
        # alternate so drift in the machine's load hits both alike. The last run's dirs
        # are kept for the repeat runs.
        for i in range(runs):
            root_a, hub_a, state_a = setup.fresh_dirs(f"act{count}")
            first.activator.append(setup.run_activator(manifest, hub_a, state_a, count))
            setup.check_hub(hub_a, count, "activator")
            root_r, hub_r, _ = setup.fresh_dirs(f"ref{count}")
            first.reference.append(setup.run_reference(script, hub_r, count))
            setup.check_hub(hub_r, count, "reference")
            if i == runs - 1:
                kept = (root_a, hub_a, state_a)
                kept_ref = (root_r, hub_r)
            else:
                remove(root_a)
                remove(root_r)
        assert kept is not None and kept_ref is not None
        for _ in range(runs):
            repeat.activator.append(setup.run_activator(manifest, kept[1], kept[2], count))
            repeat.reference.append(setup.run_reference(script, kept_ref[1], count))
        setup.check_hub(kept[1], count, "activator (repeat)")
        if rss:
            # Peak RSS in separate, untimed runs: a fresh activation, then a no-op one.
            root, hub, state = setup.fresh_dirs(f"rss{count}")
            first_rss = Rss(f"first activation, {label} models", target_mib=TARGET_RSS_MIB)
            first_rss.kib = setup.peak_rss_kib(manifest, hub, state)
            setup.check_hub(hub, count, "activator (RSS run)")
            repeat_rss = Rss(f"repeat activation (no-op), {label} models")
            repeat_rss.kib = setup.peak_rss_kib(manifest, hub, state)
            rss_rows += [first_rss, repeat_rss]
            remove(root)
    except BenchError as exc:
        print(f"error ({label} models): {exc}", file=sys.stderr)
        for row in (first, repeat):
            row.error = str(exc).splitlines()[0] if str(exc) else "error"
        if rss and not rss_rows:
            rss_rows.append(Rss(f"first activation, {label} models",
                                target_mib=TARGET_RSS_MIB, error="not measured"))
    finally:
        for dirs in (kept, kept_ref):
            if dirs:
                remove(dirs[0])
    return [first, repeat], rss_rows


def write_other_states(state: str, hub: str, profiles: int, models: int) -> None:
    """``profiles`` other profiles' states for ``hub`` in the state dir ``state``, as the
    activator itself writes them (its own state module), each having linked ``models``
    models of its own repo folders (``models--other--p<j>-m<i>``)."""
    sys.path.insert(0, REPO_ROOT)
    try:
        from activate.state import Record, State, save, state_file
    finally:
        sys.path.remove(REPO_ROOT)
    key = os.path.realpath(hub)
    for j in range(profiles):
        records = []
        for i in range(models):
            folder = f"models--other--p{j}-m{i}"
            commit = commit_of(j * models + i)
            records += [Record(folder, "dir", created=True),
                        Record(f"{folder}/snapshots", "dir", created=True),
                        Record(f"{folder}/snapshots/{commit}", "snapshot", f"/nix/store/{'0' * 32}-m",
                               created=True),
                        Record(f"{folder}/refs", "dir", created=True),
                        Record(f"{folder}/refs/main", "ref", commit, created=True)]
        profile = f"devenv:/home/u/project-{j}"
        save(state_file(state, key, profile), State(profile, key, records, complete=True))


def bench_many_profiles(setup: Setup, count: int, runs: int, others: int) -> Row:
    """First activation of ``count`` models with ``others`` other profiles' states in
    the state dir (linking into the same hub dir), against the same activation with an
    empty state dir: the ratio is what the other states cost a run. The state dir with
    the other profiles is in its steady state: one untimed run first (its index of the
    states is then up to date, as after any earlier run); before each timed run the hub
    dir and this profile's own state and receipt are removed."""
    row = Row(f"first activation, {count:,} models, {others:,} other profiles "
              "(reference: no other profile)", target=TARGET_MANY_PROFILES)
    manifest = os.path.join(setup.tmp, f"manifest-many-{count}.json")
    write_manifest(manifest, count, setup.store_path, os.path.dirname(setup.store_path))
    base = os.path.join(setup.tmp, "many")
    hub = os.path.join(base, "hub")
    many = os.path.join(base, "state-many")
    print(f"benchmarking {count:,} models with {others:,} other profiles "
          f"({runs} run(s) each)...", file=sys.stderr)

    def fresh(state: str, keep: set[str]) -> None:
        remove(hub)
        for name in set(os.listdir(state)) - keep if os.path.isdir(state) else ():
            os.unlink(os.path.join(state, name))

    try:
        write_other_states(many, hub, others, OTHER_MODELS)
        theirs = set(os.listdir(many))
        setup.run_activator(manifest, hub, many, count)  # untimed: the steady state
        theirs |= {n for n in os.listdir(many) if not n.endswith(".json")
                   and not n.startswith("receipt-")}  # the index of the states
        for _ in range(runs):
            fresh(many, theirs)
            row.activator.append(setup.run_activator(manifest, hub, many, count))
            setup.check_hub(hub, count, "activator (many profiles)")
            alone = os.path.join(base, "state-alone")
            remove(alone)
            fresh(alone, set())
            row.reference.append(setup.run_activator(manifest, hub, alone, count))
            setup.check_hub(hub, count, "activator (one profile)")
    except BenchError as exc:
        print(f"error (many profiles): {exc}", file=sys.stderr)
        row.error = str(exc).splitlines()[0] if str(exc) else "error"
    finally:
        remove(base)
    return row


# -- report -------------------------------------------------------------------------


def fmt_ms(seconds: list[float]) -> str:
    if not seconds:
        return "-"
    ms = statistics.median(seconds) * 1000
    return f"{ms:,.0f}" if ms >= 100 else f"{ms:.1f}"


def verdict(passed: bool | None, error: str | None = None) -> str:
    if error:
        return "ERROR"
    return "-" if passed is None else "PASS" if passed else "FAIL"


def report(rows: list[Row], rss_rows: list[Rss], header: list[str]) -> str:
    out = [*header, ""]
    out.append("| scenario | activator ms | reference ms | ratio | target | result |")
    out.append("|---|---:|---:|---:|---:|---|")
    for row in rows:
        ratio = row.ratio
        out.append(
            f"| {row.scenario} | {fmt_ms(row.activator)} | {fmt_ms(row.reference)} | "
            f"{'-' if ratio is None else f'{ratio:.3f}×'} | "
            f"{'-' if row.target is None else f'≤ {row.target:g}×'} | "
            f"{verdict(row.passed, row.error)} |"
        )
    out.append("")
    for r in rss_rows:
        value = "not measured" if r.mib is None else f"{r.mib:.1f} MiB"
        target = "" if r.target_mib is None else f" (target ≤ {r.target_mib:g} MiB)"
        result = "" if r.passed is None and not r.error else f": {verdict(r.passed, r.error)}"
        out.append(f"Peak RSS of the activator, {r.label}: {value}{target}{result}")
    return "\n".join(out)


def _loadavg() -> str:
    try:
        return "{:.2f}".format(os.getloadavg()[0])
    except OSError:
        return "n/a"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--activator", metavar="CMD",
                        help="command to benchmark, e.g. 'model-repo' (split like a shell "
                        "would; run from the current directory). Default: this "
                        "interpreter with -m activate, from the repository root")
    parser.add_argument("--runs", type=int, default=5, metavar="N",
                        help="timed runs per scenario with 100 models (default: 5)")
    parser.add_argument("--runs-large", type=int, default=2, metavar="N",
                        help="timed runs per scenario with --models-large models (default: 2)")
    parser.add_argument("--models-small", type=int, default=100, metavar="N",
                        help=argparse.SUPPRESS)
    parser.add_argument("--models-large", type=int, default=10_000, metavar="N",
                        help="model count of the large scenarios (default: 10000)")
    parser.add_argument("--other-profiles", type=int, default=OTHER_PROFILES, metavar="N",
                        help="other profiles' states in the many-profiles scenario "
                        f"(default: {OTHER_PROFILES})")
    parser.add_argument("--quick", action="store_true",
                        help="skip the large scenarios (and the RSS measurement)")
    parser.add_argument("--fake-store", action="store_true",
                        help="use a fake store dir even when nix-store is available")
    parser.add_argument("--tmpdir", metavar="DIR",
                        help="where the hub and state dirs are made (default: the system "
                        "temp dir); the filesystem matters")
    parser.add_argument("--check", action="store_true",
                        help="exit 1 when any target fails or a run errors")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="print every run's time on stderr")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.runs_large < 1 or args.models_small < 1 or args.models_large < 1:
        parser.error("run and model counts must be at least 1")

    if args.activator:
        activator, cwd = shlex.split(args.activator), os.getcwd()
        shown = args.activator
    else:
        activator, cwd = [sys.executable, "-m", "activate"], REPO_ROOT
        shown = "python -m activate (this checkout)"

    load_start = _loadavg()
    tmp = tempfile.mkdtemp(prefix="model-repo-bench-", dir=args.tmpdir)
    rows: list[Row] = []
    rss_rows: list[Rss] = []
    try:
        store_path, _, how = make_store_path(tmp, args.fake_store)
        setup = Setup(tmp, activator, cwd, store_path, verbose=args.verbose)

        # Warm-up (untimed): byte-compile the activator, fill the page cache.
        manifest = os.path.join(tmp, "manifest-warmup.json")
        write_manifest(manifest, 10, store_path, os.path.dirname(store_path))
        root, hub, state = setup.fresh_dirs("warmup")
        try:
            setup.run_activator(manifest, hub, state, 10)
            setup.run_activator(manifest, hub, state, 10)
        except BenchError as exc:
            print(f"warning: warm-up run failed: {exc}", file=sys.stderr)
        remove(root)

        small, small_rss = bench_size(setup, args.models_small, args.runs,
                                      (TARGET_FIRST_SMALL, TARGET_REPEAT_SMALL), rss=False)
        rows += small
        rss_rows += small_rss
        rows.append(bench_many_profiles(setup, args.models_small, args.runs, args.other_profiles))
        if not args.quick:
            large, large_rss = bench_size(setup, args.models_large, args.runs_large,
                                          (TARGET_FIRST_LARGE, TARGET_REPEAT_LARGE), rss=True)
            rows += large
            rss_rows += large_rss
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    header = [
        f"model-repo activator benchmark, {datetime.date.today().isoformat()}",
        "",
        f"- activator: {shown}",
        f"- machine: {platform.system()} {platform.machine()}, {os.cpu_count()} CPUs, "
        f"bench under python {platform.python_version()}; load average {load_start} at start, {_loadavg()} at end "
        "(other work on the machine slows both columns, not always alike)",
        f"- store path: {how}; every model links the same store path; layout (both "
        f"sides): {'file by file' if file_by_file(store_path) else 'whole links'}",
        f"- runs: {args.runs} (× {args.models_small} models)"
        + ("" if args.quick else f", {args.runs_large} (× {args.models_large:,} models)")
        + "; medians; reference = generated /bin/sh script (mkdir -p, ln -sfn, echo > ref)",
    ]
    print(report(rows, rss_rows, header))
    failed = any(r.passed is False for r in rows) or any(r.passed is False for r in rss_rows)
    return 1 if args.check and failed else 0


if __name__ == "__main__":
    sys.exit(main())
