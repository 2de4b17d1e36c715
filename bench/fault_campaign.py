"""The fault campaign of tests/test_activate_campaign.py at a larger size, with figures.

Random sequences (seeded, reproducible) of activations by three profiles (two sharing a
state dir, one in its own), with one commit wanted whole or partial with two file sets
(snapshots change form and file set in place), each run possibly killed before a random
write (a forked child that ``os._exit``s) and possibly raced by a user's download moving
``refs/main``, or (as root, with runuser) preceded or interrupted by the trick of
another user of the group cache (test_activate_campaign.member_trick); after every run
the cache must be valid and every model a profile's last
complete run exported must load (each store file opens through its snapshot), and after
every profile drops everything the cache must be exactly the user's. Prints a table of
what happened. Needs root-free Nix (``nix-store --add``) like the tests.

    .venv/bin/python bench/fault_campaign.py                 # 200 sequences of 15 runs
    .venv/bin/python bench/fault_campaign.py --sequences 1000 --seed 7
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from conftest import manifest, model, shape  # noqa: E402
from test_activate_campaign import (  # noqa: E402
    MEMBER,
    TRICKS,
    COMMIT_A,
    COMMIT_B,
    COMMIT_D,
    COMMIT_E,
    PROFILES,
    CACHE_TOOLS_SAFE,
    USER_COMMITS,
    cache_is_valid,
    cache_tool,
    drop_everything,
    exported_models_load,
    group_cache,
    member_trick,
    redownloaded,
    rollback,
    store_paths,
    update_claims,
)
from test_activate_faults import KILLED, run, user_download  # noqa: E402

from activate.manifest import ManifestError, validate_manifest  # noqa: E402


def random_manifest(rng: random.Random, profile: str, paths: dict[str, str]) -> dict:
    while True:
        models = {}
        for name in rng.sample(["a", "b", "c"], rng.randint(0, 3)):
            repo = rng.choice(["org/x", "org/y"])
            if rng.random() < 0.3:
                commit, path, partial = COMMIT_E, rng.choice(["q1", "q2"]), True
            else:
                commit, path, partial = (rng.choice([COMMIT_A, COMMIT_B, COMMIT_D, COMMIT_E]),
                                         rng.choice(["p1", "p2"]), False)
            refs = rng.sample(["main", "v1", "pr/1"], rng.randint(1, 2))
            models[name] = model(paths[path], repo_id=repo, revision=commit, refs=refs, partial=partial)
        data = manifest(models, profile=profile)
        try:
            validate_manifest(data)
            return data
        except ManifestError:
            continue


def _models(data: dict) -> list:
    """A manifest's models in short: (repo id, commit's first letter, store path, refs)."""
    return sorted((m["repoId"], m["revision"][:1], m["path"][-2:], m["refs"])
                  for m in data["models"].values())


def sequence(rng: random.Random, runs: int, paths: dict[str, str], counts: dict[str, int]) -> None:
    root = Path(tempfile.mkdtemp(prefix="model-repo-campaign-"))
    hub = root / "hub"
    try:
        victims = group_cache(root, MEMBER) if MEMBER is not None else {}
        user_download(hub)
        original = shape(hub)
        writes: list[str] = []
        log: list[str] = []
        claims: dict[str, dict] = {}
        removed: set[str] = set()
        meddled = False
        for _ in range(runs):
            profile, state = rng.choice(PROFILES)
            data = random_manifest(rng, profile, paths)
            step = rng.random()
            try:
                if CACHE_TOOLS_SAFE and step < 0.2:  # the user's own cache tool
                    tool = rng.choice(["delete_revisions", "prune", "rm file"])
                    log.append(f"user's {tool}")
                    removed |= cache_tool(hub, tool, rng.randrange(10 ** 6), writes)
                    claims.clear()
                    counts["tool steps"] += 1
                    cache_is_valid(root)
                    continue
                if MEMBER is not None and 0.2 <= step < 0.35:  # another user of the group
                    at, pick, kind = rng.randint(-1, 30), rng.randrange(10 ** 6), rng.choice(TRICKS)
                    code, done = member_trick(root, victims, data, state, at, pick, kind)
                    log.append(f"member {kind} at {at} (pick {pick}) in {profile}'s run of "
                               f"{_models(data)} -> {code}{'' if done else ' (no trick)'}")
                    counts["member tricks"] += done
                    meddled = meddled or done
                    update_claims(claims, profile, state, data, code)
                    cache_is_valid(root)
                    exported_models_load(hub, claims)
                    continue
                if step > 0.9:  # a rollback: an older activator meets a newer state
                    log.append(f"{profile} rolled back")
                    rollback(root, profile, state, data)
                    counts["rollbacks"] += 1
                    cache_is_valid(root)
                    exported_models_load(hub, claims)
                    continue
            except AssertionError as exc:
                raise AssertionError(f"{exc}\n" + "\n".join(log)) from None
            kill = rng.randint(0, 30) if rng.random() < 0.5 else None
            during = None
            marker = root / "raced"
            if rng.random() < 0.3:
                commit = rng.choice(USER_COMMITS)

                def download(commit: str = commit) -> None:
                    user_download(hub, commit=commit)
                    marker.write_text(commit)

                during = (rng.randint(0, 30), download)
            code = run(root, data, kill_at=kill, during=during, profile_state=state)
            log.append(f"{data['profile']} {_models(data)} kill={kill} "
                       f"race={during and during[0]} -> {code}")
            assert code in (0, 1, KILLED), f"exit {code}\n" + "\n".join(log)
            counts["runs"] += 1
            counts["killed"] += code == KILLED
            counts["partial (exit 1)"] += code == 1
            if marker.exists():
                writes.append(marker.read_text())
                removed = redownloaded(removed, writes[-1])
                marker.unlink()
                counts["raced by a download"] += 1
            update_claims(claims, profile, state, data, code)
            try:
                cache_is_valid(root)
                exported_models_load(hub, claims)
            except AssertionError as exc:
                raise AssertionError(f"{exc}\n" + "\n".join(log)) from None
        try:
            drop_everything(root, original, writes, removed, meddled=meddled)
        except AssertionError as exc:
            raise AssertionError(f"after dropping everything: {exc!r}\n" + "\n".join(log)) from None
        counts["sequences"] += 1
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sequences", type=int, default=200)
    ap.add_argument("--runs", type=int, default=15, help="activations per sequence")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--only", type=int, metavar="I", help="run sequence I alone (each "
                    "sequence has its own generator: seed and index reproduce it)")
    args = ap.parse_args()
    paths = store_paths()
    counts = dict.fromkeys(["sequences", "runs", "killed", "raced by a download",
                            "partial (exit 1)", "tool steps", "rollbacks", "member tricks"], 0)
    start = time.perf_counter()
    failed = None
    for i in [args.only] if args.only is not None else range(args.sequences):
        try:
            sequence(random.Random(f"{args.seed}-{i}"), args.runs, paths, counts)
        except AssertionError as exc:
            failed = f"sequence {i} (seed {args.seed}): {exc}"
            break
    seconds = time.perf_counter() - start
    print(f"| {'what':<28} | {'count':>8} |")
    print(f"|{'-' * 30}|{'-' * 10}|")
    for k, v in counts.items():
        print(f"| {k:<28} | {v:>8} |")
    print(f"| {'seconds':<28} | {seconds:>8.1f} |")
    print(f"| {'runs per second':<28} | {counts['runs'] / seconds:>8.1f} |")
    print(f"\nresult: {'FAILED ' + failed if failed else 'every sequence ended in the user cache'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
