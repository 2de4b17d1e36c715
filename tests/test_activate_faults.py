"""Faults in a row, shared refs, remounts and races (issue: nothing lost, the store never
written). Each test here reproduced a way to lose a user's data before its fix.

Kills are real: the activator runs in a forked child that ``os._exit``s before a chosen
write (no ``finally``, no cleanup: what ``kill -9`` leaves). The campaign at the end is
a hypothesis state machine; ``bench/fault_campaign.py`` runs it at a larger size.
"""

from __future__ import annotations

import errno
import json
import contextlib
import os
import shutil
import subprocess
import sys
import stat
from pathlib import Path

import pytest
from conftest import (COMMIT_A, COMMIT_B, WholeStore, Workspace, manifest, model,
                      needs_safe_cache_tools, nix_store_add, shape, tree)

from activate import activation, hubfs
from activate.activation import request_of, run_activate
from activate.log import Log
from activate.manifest import validate_manifest
from activate.state import StateProblem

USER = "c" * 40
COMMIT_D = "d" * 40
COMMIT_E = "e" * 40
KILLED = 137


# --------------------------------------------------------------------------- helpers

def user_download(hub: Path, folder: str = "models--org--x", commit: str = USER,
                  ref: str = "main") -> None:
    """What huggingface_hub leaves after a user's own download: a real snapshot dir with
    a file, and ``refs/<ref>`` naming its commit."""
    snap = hub / folder / "snapshots" / commit
    snap.mkdir(parents=True, exist_ok=True)
    (snap / "config.json").write_text('{"user": true}')
    refs = hub / folder / "refs"
    refs.mkdir(parents=True, exist_ok=True)
    (refs / ref).write_text(commit)


def run(root: Path, data: dict, *, kill_at: int | None = None, profile_state: str = "state",
        during: tuple[int, object] | None = None) -> int:
    """Activate ``data`` into ``root/hub``. ``kill_at``: the process dies (``os._exit``)
    before write number ``kill_at`` (state saves count as writes). ``during``: ``(n, f)``
    calls ``f()`` before write ``n`` (another program writing meanwhile). Returns the exit
    status: 0 done, 1 partial, KILLED killed, 3 environment."""
    pid = os.fork()
    if pid == 0:  # the child: never returns
        code = 70
        try:
            count = [0]

            def before(_what: str) -> None:
                if during is not None and count[0] == during[0]:
                    during[1]()  # type: ignore[operator]
                if kill_at is not None and count[0] == kill_at:
                    os._exit(KILLED)
                count[0] += 1

            original = activation._save_state

            def save(p: str, st: object) -> None:
                before("state")
                original(p, st)  # type: ignore[arg-type]

            activation._save_state = save  # type: ignore[assignment]
            try:
                out = run_activate(
                    request_of(validate_manifest(data)), hub_dir=str(root / "hub"),
                    explicit_hub=True, state_dir=str(root / profile_state), log=Log("error"),
                    before_write=before)
                code = 1 if out.plan.problems else 0
            except (activation.EnvironmentProblem, StateProblem):  # exit 3, as cli.main
                code = 3
        except BaseException:  # a bug: show it, exit 70
            import traceback

            traceback.print_exc()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def invariants(hub: Path) -> None:
    """At every instant: each ref names an existing snapshot; no temporary name where
    huggingface_hub reads; every link in a snapshot resolves."""
    if not hub.is_dir():
        return
    for repo in hub.iterdir():
        if repo.name == ".locks":
            continue
        for dirpath, _dirs, files in os.walk(repo / "refs"):
            for f in files:
                assert not f.startswith(hubfs.TEMP_PREFIX), f"temporary name in refs: {f}"
                commit = (Path(dirpath) / f).read_text()
                assert os.path.lexists(repo / "snapshots" / commit), \
                    f"{repo.name}: ref {f} names missing snapshot {commit}"
        snaps = repo / "snapshots"
        if snaps.is_dir():
            for s in snaps.iterdir():
                assert not s.name.startswith(hubfs.TEMP_PREFIX)


@pytest.fixture(scope="module")
def paths(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Four real store paths: two whole models, two partial ones (a subset of files,
    one in a sub-folder)."""
    out = {}
    for name, files in {
        "p1": {"config.json": '{"model_type": "bert", "n": 1}', "vocab.txt": "[PAD]\n"},
        "p2": {"config.json": '{"model_type": "bert", "n": 2}'},
        "q1": {"config.json": '{"n": 3}', "sub/tokenizer.json": "{}"},
        "q2": {"config.json": '{"n": 4}', "extra.txt": "x"},
    }.items():
        d = tmp_path_factory.mktemp(name) / f"model-{name}"
        for rel, text in files.items():
            (d / rel).parent.mkdir(parents=True, exist_ok=True)
            (d / rel).write_text(text)
        out[name] = nix_store_add(d)
    return out


# --------------------------------------------------------- 1. faults in a row

def test_two_stopped_runs_in_a_row_keep_the_users_ref(tmp_path: Path, paths: dict) -> None:
    user_download(tmp_path / "hub")
    original = shape(tmp_path / "hub")
    m = lambda rev: manifest({"x": model(paths["p1"], repo_id="org/x", revision=rev)})  # noqa: E731
    assert run(tmp_path, m(COMMIT_A)) == 0
    # Killed after saving the intent (write 0), before touching the cache.
    assert run(tmp_path, m(COMMIT_B), kill_at=1) == KILLED
    assert run(tmp_path, m(COMMIT_D), kill_at=1) == KILLED
    assert run(tmp_path, m(COMMIT_D)) == 0
    assert (tmp_path / "hub/models--org--x/refs/main").read_text() == COMMIT_D
    assert run(tmp_path, manifest({})) == 0
    assert shape(tmp_path / "hub") == original  # the user's refs/main=c... is back


def test_two_stopped_runs_in_a_row_keep_our_snapshot_link_ours(tmp_path: Path, paths: dict,
                                                               whole_store: WholeStore) -> None:
    paths = {k: whole_store.path(v) for k, v in paths.items()}  # whole links (the layout rule)
    manifest = whole_store.manifest
    user_download(tmp_path / "hub")
    original = shape(tmp_path / "hub")
    m = lambda p: manifest({"x": model(paths[p], repo_id="org/x", revision=COMMIT_A)})  # noqa: E731
    assert run(tmp_path, m("p1")) == 0
    assert run(tmp_path, m("p2"), kill_at=1) == KILLED  # the link still names p1
    assert run(tmp_path, m("q2"), kill_at=1) == KILLED
    assert run(tmp_path, m("q1"), kill_at=1) == KILLED
    assert run(tmp_path, m("q1")) == 0  # not "a symlink model-repo did not create"
    assert os.readlink(tmp_path / f"hub/models--org--x/snapshots/{COMMIT_A}") == paths["q1"]
    assert run(tmp_path, manifest({})) == 0
    assert shape(tmp_path / "hub") == original


def test_kill_at_every_write_of_three_runs_in_a_row(tmp_path: Path, paths: dict) -> None:
    """Every combination of kill points in two consecutive runs, then a clean one."""
    seq = [
        manifest({"x": model(paths["p1"], repo_id="org/x", revision=COMMIT_A, refs=["main", "v1"])}),
        manifest({"x": model(paths["p2"], repo_id="org/x", revision=COMMIT_B),
                  "q": model(paths["q1"], repo_id="org/x", revision=COMMIT_E, refs=["v2"], partial=True)}),
        manifest({"x": model(paths["p1"], repo_id="org/x", revision=COMMIT_D, refs=["main", "v1"]),
                  "q": model(paths["q2"], repo_id="org/x", revision=COMMIT_E, refs=["v2"], partial=True)}),
    ]
    ref_root = tmp_path / "ref"
    user_download(ref_root / "hub")
    original = shape(ref_root / "hub")
    assert run(ref_root, seq[0]) == 0
    expected = {}
    for i in (1, 2):
        assert run(ref_root, seq[i]) == 0
        expected[i] = shape(ref_root / "hub")
    steps = 12
    n = 0
    for k1 in range(0, steps, 3):
        for k2 in range(0, steps, 4):
            root = tmp_path / f"k{k1}-{k2}"
            user_download(root / "hub")
            assert run(root, seq[0]) == 0
            run(root, seq[1], kill_at=k1)
            invariants(root / "hub")
            run(root, seq[2], kill_at=k2)
            invariants(root / "hub")
            assert run(root, seq[2]) == 0
            assert shape(root / "hub") == expected[2], (k1, k2)
            assert run(root, manifest({})) == 0
            assert shape(root / "hub") == original, (k1, k2)
            n += 1
    assert n == 12


# ------------------------------------------------- 2. the store is never written

def test_partial_snapshot_keeps_downloads_out_of_the_store(tmp_path: Path, paths: dict) -> None:
    """huggingface_hub, online, fetching a file the partial store path lacks: the file
    lands in the cache (blobs/ + the snapshot dir), the store path is unchanged (and
    nix-store --verify-path agrees), loading by repo id works, and dropping the model
    leaves the user's download."""
    from mockhub import MockHub

    store = Path(paths["q1"])
    before = tree(store)
    with MockHub() as hub:
        commit = hub.add_repo("org/part", {"config.json": b'{"n": 3}', "sub/tokenizer.json": b"{}",
                                           "missing.txt": b"fetched from the hub"})
        data = manifest({"q": model(str(store), repo_id="org/part", revision=commit,
                                    partial=True)}, offline=False)
        assert run(tmp_path, data) == 0
        repo = tmp_path / "hub/models--org--part"
        snap = repo / "snapshots" / commit
        assert snap.is_dir() and not snap.is_symlink()
        assert os.readlink(snap / "config.json").startswith("../../blobs/model-repo-")
        assert os.readlink(snap / "sub/tokenizer.json").startswith("../../../blobs/model-repo-")
        code = (
            "import os, sys\n"
            "from huggingface_hub import hf_hub_download, scan_cache_dir\n"
            "cache = sys.argv[1]\n"
            "p = hf_hub_download('org/part', 'missing.txt', revision=sys.argv[2], cache_dir=cache)\n"
            "print(open(p).read())\n"
            "q = hf_hub_download('org/part', 'config.json', cache_dir=cache)\n"
            "print(open(q).read())\n"
            "info = scan_cache_dir(cache)\n"
            "print(len(info.warnings), sorted(r.commit_hash for r in next(iter(info.repos)).revisions))\n"
        )
        env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0",
               "HF_HUB_DISABLE_TELEMETRY": "1"}
        env.pop("HF_TOKEN", None)
        out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "hub"), commit],
                             env=env, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert out.stdout.splitlines() == ["fetched from the hub", '{"n": 3}', f"0 ['{commit}']"]
    assert tree(store) == before
    verify = subprocess.run(["nix-store", "--verify-path", str(store)], capture_output=True, text=True)
    assert verify.returncode == 0, verify.stderr
    # The download went beside our links: a real file in blobs/, a link in the snapshot.
    assert (snap / "missing.txt").is_symlink()
    blob = (snap / "missing.txt").resolve()
    assert blob.parent == (repo / "blobs").resolve() and blob.read_text() == "fetched from the hub"
    # Dropping the model removes only our links; the user's download stays.
    assert run(tmp_path, manifest({})) == 0
    assert (snap / "missing.txt").read_text() == "fetched from the hub"
    assert not (snap / "config.json").exists()
    assert sorted(p.name for p in (repo / "blobs").iterdir()) == [blob.name]
    assert tree(store) == before


@needs_safe_cache_tools
def test_partial_snapshot_delete_revisions_leaves_the_store(tmp_path: Path, paths: dict) -> None:
    """huggingface_hub's delete_revisions on a partial snapshot beside a user's own
    revision (two revisions: it unlinks the blobs it thinks unreferenced) removes our
    links, never a store file, even as root on a writable store."""
    store = Path(paths["q1"])
    before = tree(store)
    user_download(tmp_path / "hub", "models--org--x")
    data = manifest({"q": model(str(store), repo_id="org/x", revision=COMMIT_E, refs=["v2"],
                                partial=True)})
    assert run(tmp_path, data) == 0
    code = (
        "import sys\nfrom huggingface_hub import scan_cache_dir\n"
        "info = scan_cache_dir(sys.argv[1])\n"
        "assert not info.warnings, info.warnings\n"
        "info.delete_revisions(sys.argv[2]).execute()\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "hub"), COMMIT_E],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert tree(store) == before
    assert (tmp_path / f"hub/models--org--x/snapshots/{USER}/config.json").exists()


def test_partial_and_whole_of_one_commit_change_form(tmp_path: Path, paths: dict,
                                                     whole_store: WholeStore) -> None:
    paths = {k: whole_store.path(v) for k, v in paths.items()}  # whole links (the layout rule)
    manifest = whole_store.manifest
    whole = manifest({"x": model(paths["p1"], repo_id="org/x", revision=COMMIT_A)})
    part = manifest({"x": model(paths["q1"], repo_id="org/x", revision=COMMIT_A, partial=True)})
    snap = tmp_path / f"hub/models--org--x/snapshots/{COMMIT_A}"
    assert run(tmp_path, whole) == 0 and snap.is_symlink()
    assert run(tmp_path, part) == 0 and snap.is_dir() and not snap.is_symlink()
    assert json.loads((snap / "config.json").read_text()) == {"n": 3}
    assert run(tmp_path, whole) == 0 and os.readlink(snap) == paths["p1"]
    assert run(tmp_path, part) == 0
    assert run(tmp_path, manifest({})) == 0
    assert shape(tmp_path / "hub") == {}


def _served(hub: Path, commit: str, store_path: str) -> list[str]:
    """Files of ``store_path`` that ``models--org--x/snapshots/<commit>`` does not serve."""
    from activate.tree import store_files

    snap = hub / "models--org--x" / "snapshots" / commit
    return [f for f in store_files(store_path) if not (snap / f).is_file()]


@pytest.mark.parametrize("second", ["q2", "p1"])
def test_two_profiles_one_commit_two_file_sets_each_served(ws: Workspace, paths: dict,
                                                           second: str) -> None:
    """Two profiles of one state dir want one commit with different store paths (two
    partial file sets, or partial and whole): the later one gets what it lacks linked
    into the shared partial snapshot, whichever drops first leaves the other's files
    served, and the last drop leaves nothing (issue 13, finding 7: the second silently
    got the first one's files)."""
    user_download(ws.hub)
    original = shape(ws.hub)
    a = manifest({"x": model(paths["q1"], repo_id="org/x", revision=COMMIT_E, refs=["v2"],
                             partial=True)}, profile="hm")
    b = manifest({"x": model(paths[second], repo_id="org/x", revision=COMMIT_E, refs=["v2"],
                             partial=second.startswith("q"))}, profile="devenv:/p")
    for first_drop in ("hm", "devenv:/p"):
        assert ws.activate(a, name="a.json").code == 0
        res = ws.activate(b, name="b.json")
        assert res.code == 0, res.stderr
        assert res.env()["HF_HUB_OFFLINE"] == "1"
        assert _served(ws.hub, COMMIT_E, paths["q1"]) == []
        assert _served(ws.hub, COMMIT_E, paths[second]) == []
        keep, keep_data, keep_name = (("devenv:/p", b, "b.json") if first_drop == "hm"
                                      else ("hm", a, "a.json"))
        assert ws.activate(manifest({}, profile=first_drop), name="drop.json").code == 0
        assert _served(ws.hub, COMMIT_E, paths["q1" if keep == "hm" else second]) == []
        invariants(ws.hub)
        res = ws.activate(keep_data, name=keep_name)  # nothing left to do for it
        assert res.code == 0 and res.env()["HF_HUB_OFFLINE"] == "1", (res.stderr, shape(ws.hub))
        assert ws.activate(manifest({}, profile=keep), name="drop.json").code == 0
        assert shape(ws.hub) == original, first_drop


# ------------------------------------------------------ 3. unmounted caches

def _mount_tmpfs(where: Path) -> None:
    where.mkdir(parents=True, exist_ok=True)
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(where)],
                         capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(reason=f"needs root and mount(8) to mount a tmpfs: {res.stderr.strip()}")


def test_unmounted_cache_keeps_the_state_and_exits_3(ws: Workspace, paths: dict) -> None:
    mnt = ws.root / "mnt"
    _mount_tmpfs(mnt)
    try:
        hub = mnt / "hub"
        user_download(hub)
        original = shape(hub)
        data = manifest({"x": model(paths["p1"], repo_id="org/x")})
        path = ws.write_manifest(data)
        args = ("activate", "--manifest", str(path), "--cache-dir", str(hub), "--state-dir",
                str(ws.state), "--format", "json")
        assert ws.run(*args).code == 0
        subprocess.run(["umount", str(mnt)], check=True)
        # The cache is not mounted: nothing is made on the mount point, the state stays.
        res = ws.run(*args)
        assert res.code == 3 and "is missing" in res.stderr and "mounted" in res.stderr
        assert not hub.exists()
        res = ws.run("deactivate", "--profile", "test", "--state-dir", str(ws.state))
        assert res.code == 3 and not hub.exists()
        # The mount point itself made into a cache: another identity, refused too.
        hub.mkdir()
        res = ws.run(*args)
        assert res.code == 3 and "device:inode" in res.stderr
        hub.rmdir()
        subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(mnt)], check=True)  # fresh fs
        # A fresh filesystem: the hub folder does not exist there; the state is still kept.
        assert ws.run(*args).code == 3
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)
    # Remount a tmpfs holding the original cache again is impossible (tmpfs is gone), so
    # check the other half on a cache that comes back: move it away and back.
    hub = ws.root / "hub2"
    user_download(hub)
    original = shape(hub)
    path = ws.write_manifest(data)
    args = ("activate", "--manifest", str(path), "--cache-dir", str(hub), "--state-dir",
            str(ws.state), "--format", "json")
    assert ws.run(*args).code == 0
    hub.rename(ws.root / "away")
    assert ws.run(*args).code == 3 and not hub.exists()
    (ws.root / "away").rename(hub)  # remounted
    assert ws.run("deactivate", "--profile", "test", "--cache-dir", str(hub),
                  "--state-dir", str(ws.state)).code == 0
    assert shape(hub) == original  # the user's refs/main is back


def test_forget_drops_the_state_of_a_removed_cache(ws: Workspace, paths: dict) -> None:
    data = manifest({"x": model(paths["p1"], repo_id="org/x")})
    assert ws.activate(data).code == 0
    res = ws.run("deactivate", "--profile", "test", "--forget", "--state-dir", str(ws.state))
    assert res.code == 3 and "is there" in res.stderr  # refused while the cache is there
    shutil.rmtree(ws.hub)
    assert ws.activate(data).code == 3
    assert ws.run("deactivate", "--profile", "test", "--forget", "--state-dir",
                  str(ws.state)).code == 0
    assert ws.activate(data).code == 0  # a new cache, a new state


def test_renamed_cache_is_recognised(ws: Workspace, paths: dict) -> None:
    user_download(ws.hub)
    original = shape(ws.hub)
    data = manifest({"x": model(paths["p1"], repo_id="org/x")})
    assert ws.activate(data).code == 0
    moved = ws.root / "moved-hub"
    ws.hub.rename(moved)
    path = ws.write_manifest(data)
    res = ws.run("activate", "--manifest", str(path), "--cache-dir", str(moved),
                 "--state-dir", str(ws.state), "--format", "json")
    assert res.code == 0, res.stderr
    res = ws.run("activate", "--manifest", str(ws.write_manifest(manifest({}))), "--cache-dir",
                 str(moved), "--state-dir", str(ws.state), "--format", "json")
    assert res.code == 0, res.stderr
    assert shape(moved) == original


# ----------------------------------------- 4. two profiles, one ref, two commits

def test_two_profiles_one_ref_two_commits(ws: Workspace, paths: dict) -> None:
    user_download(ws.hub)
    original = shape(ws.hub)
    first = manifest({"x": model(paths["p1"], repo_id="org/x", revision=COMMIT_A)}, profile="hm")
    second = manifest({"y": model(paths["p2"], repo_id="org/x", revision=COMMIT_B)},
                      profile="devenv:/p")
    assert ws.activate(first, name="hm.json").code == 0
    res = ws.activate(second, name="dv.json")
    assert res.code == 1 and "holds this ref" in res.stderr
    env = res.env()
    assert env["MODEL_REPO_Y"] == paths["p2"] and "HF_HUB_OFFLINE" not in env
    assert (ws.hub / "models--org--x/refs/main").read_text() == COMMIT_A  # the first keeps it
    # Any order of drops leaves no ref naming a missing snapshot.
    assert ws.activate(manifest({}, profile="hm"), name="hm.json").code == 0
    invariants(ws.hub)
    assert ws.activate(second, name="dv.json").code == 0  # now it may take it
    assert (ws.hub / "models--org--x/refs/main").read_text() == COMMIT_B
    assert ws.activate(manifest({}, profile="devenv:/p"), name="dv.json").code == 0
    invariants(ws.hub)
    assert shape(ws.hub) == original
    code = ("import sys\nfrom huggingface_hub import scan_cache_dir\n"
            "print(len(scan_cache_dir(sys.argv[1]).warnings))")
    out = subprocess.run([sys.executable, "-c", code, str(ws.hub)], capture_output=True, text=True)
    assert out.stdout.strip() == "0", out.stderr


def test_a_drop_leaves_every_file_served_for_a_profile_wanting_our_store_path_too(
        tmp_path: Path, paths: dict) -> None:
    """(Found by the fault campaign, seed 11 sequence 66.) One commit: devenv links a
    store path (p2) file by file, home-manager the partial q2, whose config.json p2's
    link already serves; devenv then moves to q2 too, stopped at every write in turn (its
    record names q2 and still owns p2), and drops. Its p2 links go; every file of q2 must
    still open through the snapshot for home-manager, and after home-manager drops the
    cache is the user's."""
    from conftest import assert_serves

    dv = lambda p, part: manifest({"x": model(paths[p], repo_id="org/x", revision=COMMIT_E,  # noqa: E731
                                              partial=part)}, profile="devenv:/p")
    hm = manifest({"x": model(paths["q2"], repo_id="org/x", revision=COMMIT_E, partial=True)},
                  profile="hm")
    stopped = 0
    for kill_at in range(8):
        root = tmp_path / f"k{kill_at}"
        user_download(root / "hub")
        original = shape(root / "hub")
        assert run(root, dv("p2", False)) == 0
        assert run(root, hm) == 0
        stopped += run(root, dv("q2", True), kill_at=kill_at) == KILLED
        assert run(root, manifest({}, profile="devenv:/p")) in (0, 1)
        assert_serves(root / f"hub/models--org--x/snapshots/{COMMIT_E}", paths["q2"])
        assert run(root, manifest({}, profile="hm")) == 0
        assert run(root, manifest({}, profile="devenv:/p")) == 0
        assert shape(root / "hub") == original, kill_at
    assert stopped >= 2, stopped


def test_a_partial_snapshot_a_profile_of_another_state_dir_relies_on_stays_while_its_ref_names_it(
        tmp_path: Path, paths: dict) -> None:
    """(Found by the fault campaign, seed 14 sequence 125.) devenv makes the partial
    snapshot of one commit; root's profile (another state dir) finds its one file served
    there and takes refs/main; home-manager joins the snapshot with another file set. When
    devenv and home-manager drop, the snapshot stays while root's ref names it (the refs
    written after this state dir made the folder hold it): root's model still opens. Once
    root drops too, the cache is the user's again."""
    x = lambda p, part, refs, who: manifest(  # noqa: E731
        {"x": model(paths[p], repo_id="org/x", revision=COMMIT_E, partial=part, refs=refs)},
        profile=who)
    user_download(tmp_path / "hub")
    original = shape(tmp_path / "hub")
    snap = tmp_path / f"hub/models--org--x/snapshots/{COMMIT_E}"
    assert run(tmp_path, x("q1", True, ["v1"], "devenv:/p")) == 0
    assert run(tmp_path, x("p2", False, ["main"], "root"), profile_state="state-root") == 0
    assert run(tmp_path, x("p1", False, ["pr/1"], "hm")) == 0
    for who in ("devenv:/p", "hm"):
        assert run(tmp_path, manifest({}, profile=who)) == 0
        assert (tmp_path / "hub/models--org--x/refs/main").read_text() == COMMIT_E
        assert (snap / "config.json").is_file(), who  # root's one file
    invariants(tmp_path / "hub")
    assert run(tmp_path, manifest({}, profile="root"), profile_state="state-root") == 0
    for who in ("devenv:/p", "hm"):
        assert run(tmp_path, manifest({}, profile=who)) == 0
    assert shape(tmp_path / "hub") == original


def test_a_file_set_change_keeps_the_files_a_profile_of_another_state_dir_relies_on(
        tmp_path: Path, paths: dict) -> None:
    """devenv makes the partial snapshot of one commit (q1); root's profile (another state
    dir, whose wants devenv cannot see) finds all its files served there and takes
    refs/main. devenv then changes its file set (q2): its links into q1 stay while a ref
    it did not write names the commit (root's model still opens), and go on the first run
    after that ref is gone. Once both drop, the cache is the user's."""
    from conftest import assert_serves

    from activate.tree import store_files

    dv = lambda p: manifest({"x": model(paths[p], repo_id="org/x", revision=COMMIT_E,  # noqa: E731
                                        partial=True, refs=["v1"])}, profile="devenv:/p")
    root = manifest({"x": model(paths["q1"], repo_id="org/x", revision=COMMIT_E, partial=True)},
                    profile="root")
    user_download(tmp_path / "hub")
    original = shape(tmp_path / "hub")
    snap = tmp_path / f"hub/models--org--x/snapshots/{COMMIT_E}"
    assert run(tmp_path, dv("q1")) == 0
    assert run(tmp_path, root, profile_state="state-root") == 0
    assert (tmp_path / "hub/models--org--x/refs/main").read_text() == COMMIT_E
    assert run(tmp_path, dv("q2")) == 0
    for f in ("config.json", "sub/tokenizer.json"):  # root's model: every file opens
        assert (snap / f).is_file(), f
    assert (snap / "extra.txt").is_file()  # devenv's new file
    invariants(tmp_path / "hub")
    assert run(tmp_path, manifest({}, profile="root"), profile_state="state-root") == 0
    assert (snap / "sub/tokenizer.json").is_file()  # devenv has not run since
    assert run(tmp_path, dv("q2")) == 0
    assert not os.path.lexists(snap / "sub")  # no ref relies on q1 now: its links went
    assert_serves(snap, paths["q2"])
    assert sorted(store_files(str(snap))) == ["config.json", "extra.txt"]
    assert run(tmp_path, manifest({}, profile="devenv:/p")) == 0
    assert shape(tmp_path / "hub") == original


@pytest.mark.parametrize("hm_too", [False, True], ids=["last-drop", "shared-drop"])
def test_a_drop_keeps_the_files_a_profile_of_another_state_dir_relies_on(
        tmp_path: Path, paths: dict, hm_too: bool) -> None:
    """As above, when devenv drops the model: alone, or while home-manager (same state
    dir) still wants the snapshot with another file set. devenv's links stay while root's
    ref names the commit, and go on devenv's first run after it is gone."""
    x = lambda p, refs, who: manifest(  # noqa: E731
        {"x": model(paths[p], repo_id="org/x", revision=COMMIT_E, partial=True, refs=refs)},
        profile=who)
    user_download(tmp_path / "hub")
    original = shape(tmp_path / "hub")
    snap = tmp_path / f"hub/models--org--x/snapshots/{COMMIT_E}"
    assert run(tmp_path, x("q1", ["v1"], "devenv:/p")) == 0
    if hm_too:
        assert run(tmp_path, x("q2", ["pr/1"], "hm")) == 0
    assert run(tmp_path, x("q1", ["main"], "root"), profile_state="state-root") == 0
    assert run(tmp_path, manifest({}, profile="devenv:/p")) == 0
    for f in ("config.json", "sub/tokenizer.json"):  # root's model: every file opens
        assert (snap / f).is_file(), f
    invariants(tmp_path / "hub")
    assert run(tmp_path, manifest({}, profile="root"), profile_state="state-root") == 0
    assert run(tmp_path, manifest({}, profile="devenv:/p")) == 0
    assert not os.path.lexists(snap / "sub")
    if hm_too:
        assert (snap / "extra.txt").is_file()
        assert run(tmp_path, manifest({}, profile="hm")) == 0
    assert shape(tmp_path / "hub") == original


def test_two_profiles_sharing_a_ref_give_it_back_whoever_drops_last(ws: Workspace, paths: dict) -> None:
    user_download(ws.hub)
    original = shape(ws.hub)
    a = manifest({"x": model(paths["p1"], repo_id="org/x")}, profile="hm")
    b = manifest({"x": model(paths["p1"], repo_id="org/x")}, profile="devenv:/p")
    for first, second in ((a, b), (b, a)):
        assert ws.activate(first, name="1.json").code == 0
        assert ws.activate(second, name="2.json").code == 0
        assert ws.activate(manifest({}, profile=first["profile"]), name="1.json").code == 0
        assert (ws.hub / "models--org--x/refs/main").read_text() == COMMIT_A
        assert ws.activate(manifest({}, profile=second["profile"]), name="2.json").code == 0
        assert shape(ws.hub) == original


def test_profiles_of_two_state_dirs_do_not_take_each_others_ref(tmp_path: Path, paths: dict) -> None:
    first = manifest({"x": model(paths["p1"], repo_id="org/x", revision=COMMIT_A)}, profile="root")
    second = manifest({"x": model(paths["p2"], repo_id="org/x", revision=COMMIT_B)}, profile="user")
    assert run(tmp_path, first, profile_state="state-root") == 0
    assert run(tmp_path, second, profile_state="state-user") == 1
    assert (tmp_path / "hub/models--org--x/refs/main").read_text() == COMMIT_A
    assert run(tmp_path, manifest({}, profile="root"), profile_state="state-root") == 0
    invariants(tmp_path / "hub")
    assert run(tmp_path, second, profile_state="state-user") == 0
    assert run(tmp_path, manifest({}, profile="user"), profile_state="state-user") == 0
    # Profiles of different state dirs do not know who made the repo folders: empty ones
    # may stay; no link or ref does.
    assert {k: v for k, v in shape(tmp_path / "hub").items() if v != "dir"} == {}


@pytest.mark.parametrize(("first", "second"), [("q1", "p2"), ("q1", "q2"), ("p1", "q2")])
def test_profiles_of_two_state_dirs_do_not_take_each_others_ref_whatever_the_kind(
        tmp_path: Path, paths: dict, first: str, second: str) -> None:
    """Root's profile (state dir A) holds refs/main for a partial model: a profile of
    state dir B wanting refs/main at another commit is blocked, as for whole links, and
    when both drop everything no link or ref stays (issue 13, finding 2: it took the ref
    with exit 0, and root's tree and ref stayed forever)."""
    a = manifest({"x": model(paths[first], repo_id="org/x", revision=COMMIT_A,
                             partial=first.startswith("q"))}, profile="root")
    b = manifest({"x": model(paths[second], repo_id="org/x", revision=COMMIT_B,
                             partial=second.startswith("q"))}, profile="user")
    assert run(tmp_path, a, profile_state="state-root") == 0
    assert run(tmp_path, b, profile_state="state-user") == 1
    assert (tmp_path / "hub/models--org--x/refs/main").read_text() == COMMIT_A
    assert run(tmp_path, a, profile_state="state-root") == 0  # root is not the one blocked
    for state, profile in (("state-user", "user"), ("state-root", "root")):
        assert run(tmp_path, manifest({}, profile=profile), profile_state=state) == 0
        invariants(tmp_path / "hub")
    assert {k: v for k, v in shape(tmp_path / "hub").items() if v != "dir"} == {}


def test_a_ref_rewritten_with_our_value_by_someone_else_is_not_ours(tmp_path: Path,
                                                                   paths: dict) -> None:
    """Our refs/main is moved by the user's download, then a profile of another state
    dir sets it to the very value we had written: it is that profile's, not ours to
    "give back" (found by the widened campaign: the value alone could not tell)."""
    user_download(tmp_path / "hub")
    hm = manifest({"x": model(paths["p1"], repo_id="org/x", revision=COMMIT_D)}, profile="hm")
    root = manifest({"x": model(paths["p1"], repo_id="org/x", revision=COMMIT_D)},
                    profile="root")
    assert run(tmp_path, hm) == 0
    user_download(tmp_path / "hub", commit="1" * 40)  # the user's download moves main
    assert run(tmp_path, root, profile_state="state-root") == 0
    main = tmp_path / "hub/models--org--x/refs/main"
    assert main.read_text() == COMMIT_D  # root's write, hm's old value
    assert run(tmp_path, manifest({}, profile="hm")) == 0
    assert main.read_text() == COMMIT_D  # not hm's to give back
    assert run(tmp_path, manifest({}, profile="root"), profile_state="state-root") == 0
    assert main.read_text() == "1" * 40  # the user's last download
    invariants(tmp_path / "hub")


def test_a_version_2_state_is_read_and_rewritten_as_version_3(tmp_path: Path, paths: dict) -> None:
    """States written before records could carry ``other_kind`` and ``stamp`` (version
    2: rows of 8 fields) are read as they are; the next write is version 3."""
    user_download(tmp_path / "hub")
    original = shape(tmp_path / "hub")
    data = manifest({"x": model(paths["p1"], repo_id="org/x")})
    assert run(tmp_path, data) == 0
    (state,) = (tmp_path / "state").glob("*.json")
    lines = state.read_text().splitlines()
    head = json.loads(lines[0])
    assert head["version"] == 3
    rows = [json.loads(line)[:8] for line in lines[1:]]
    state.write_text("\n".join(json.dumps(x) for x in [{**head, "version": 2}, *rows]) + "\n")
    assert run(tmp_path, manifest({"x": model(paths["p2"], repo_id="org/x",
                                              revision=COMMIT_B)})) == 0
    assert json.loads(state.read_text().splitlines()[0])["version"] == 3
    assert run(tmp_path, manifest({})) == 0
    assert shape(tmp_path / "hub") == original  # the user's refs/main given back


def test_a_shared_link_is_not_moved_to_another_store_path(ws: Workspace, paths: dict,
                                                          whole_store: WholeStore) -> None:
    """Two profiles of one state dir share a snapshot link; one then wants that commit
    from another store path: it is blocked, the other's model keeps loading (found by
    the widened campaign, seed 21: the link was moved, exit 0 for both). Whole links: a
    store mounted read-only (file by file, one commit's files are shared as for partial
    models)."""
    paths = {k: whole_store.path(v) for k, v in paths.items()}  # whole links (the layout rule)
    manifest = whole_store.manifest
    a = manifest({"x": model(paths["p1"], repo_id="org/x", refs=["v1"])}, profile="hm")
    b = manifest({"x": model(paths["p1"], repo_id="org/x", refs=["v2"])}, profile="devenv:/p")
    assert ws.activate(a, name="a.json").code == 0
    assert ws.activate(b, name="b.json").code == 0
    b2 = manifest({"x": model(paths["p2"], repo_id="org/x", refs=["v2"])}, profile="devenv:/p")
    res = ws.activate(b2, name="b.json")
    assert res.code == 1 and "profile 'hm'" in res.stderr, res.stderr
    assert os.readlink(ws.hub / f"models--org--x/snapshots/{COMMIT_A}") == paths["p1"]
    assert ws.activate(manifest({}, profile="hm"), name="a.json").code == 0
    assert ws.activate(b2, name="b.json").code == 0  # now it may
    assert os.readlink(ws.hub / f"models--org--x/snapshots/{COMMIT_A}") == paths["p2"]
    assert ws.activate(manifest({}, profile="devenv:/p"), name="b.json").code == 0
    assert {k: v for k, v in shape(ws.hub).items() if v != "dir"} == {}


# ------------------------------------------------------------ 5. nested refs

@pytest.mark.parametrize("models", [
    {"x": {"refs": ["main", "main/x"]}},
    {"x": {"refs": ["v1"]}, "y": {"refs": ["v1/rc"], "revision": COMMIT_B}},
])
def test_a_ref_inside_another_is_refused(ws: Workspace, paths: dict, models: dict) -> None:
    data = manifest({name: model(paths["p1"] if name == "x" else paths["p2"], repo_id="org/x",
                                 **spec) for name, spec in models.items()})
    res = ws.activate(data)
    assert res.code == 2 and "cannot both exist" in res.stderr and ".refs" in res.stderr
    assert not ws.hub.exists()


@pytest.mark.parametrize("order", [("main", "main/x"), ("main/x", "main")])
@pytest.mark.parametrize("state_dirs", ["one", "two"])
def test_nested_refs_of_two_profiles_name_the_other_profile(
        tmp_path: Path, paths: dict, order: tuple[str, str], state_dirs: str) -> None:
    """One profile holds refs/main, another wants refs/main/x (or the other way round):
    the later one is blocked with a message naming the other profile, not telling the
    user to move that ref away as if it were theirs (issue 13, finding 14)."""
    a = manifest({"x": model(paths["p1"], repo_id="org/x", refs=[order[0]])}, profile="hm")
    b = manifest({"y": model(paths["p2"], repo_id="org/x", revision=COMMIT_B,
                             refs=[order[1]])}, profile="devenv:/p")
    assert run(tmp_path, a) == 0
    ws = Workspace(tmp_path)
    out = ws.run("activate", "--manifest", str(ws.write_manifest(b, "b.json")), "--cache-dir",
                 str(ws.hub), "--state-dir",
                 str(tmp_path / ("state" if state_dirs == "one" else "state-b")))
    assert out.code == 1, out.stderr
    holder = "profile 'hm'" if state_dirs == "one" else "another model-repo profile"
    assert holder in out.stderr and "mv " not in out.stderr, out.stderr
    assert (tmp_path / "hub/models--org--x/refs" / order[0]).read_text() == COMMIT_A


# ------------------------------------------------------------ 6. planted symlinks

def test_env_file_never_follows_a_planted_symlink(ws: Workspace, paths: dict) -> None:
    victim = ws.root / "victim"
    victim.write_text("precious")
    out = ws.root / "env"
    out.mkdir()
    # Every name the old scheme used (pid-based) and a spread of others.
    for pid in {os.getpid(), *range(1, 200)}:
        (out / f".model-repo.env.tmp-{pid}").symlink_to(victim)
    data = manifest({"x": model(paths["p1"], repo_id="org/x")})
    for _ in range(2):  # the full path, then the no-op path
        res = ws.activate(data, "--env-file", str(out / "model-repo.env"), fmt="sh")
        assert res.code == 0, res.stderr
    assert victim.read_text() == "precious"
    assert "MODEL_REPO_X" in (out / "model-repo.env").read_text()
    assert not [p for p in out.iterdir() if ".tmp-" in p.name and not p.is_symlink()]


def test_state_files_never_follow_a_planted_symlink(ws: Workspace, paths: dict) -> None:
    from activate import statefile

    victim = ws.root / "victim"
    victim.write_text("precious")
    target = ws.root / "f"
    for pid in {os.getpid(), *range(1, 100)}:
        (ws.root / f"f.tmp-{pid}").symlink_to(victim)
    statefile.write_if_changed(str(target), [b"x"])
    assert victim.read_text() == "precious" and target.read_bytes() == b"x"


# -------------------------------------------- 7. the no-op path and the cwd

def test_noop_receipt_follows_the_resolved_cache_dir(ws: Workspace, paths: dict,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    data = manifest({"x": model(paths["p1"], repo_id="org/x")})
    path = ws.write_manifest(data)
    (ws.root / "one").mkdir()
    (ws.root / "two").mkdir()
    args = ("activate", "--manifest", str(path), "--cache-dir", "hub", "--state-dir",
            str(ws.state), "--format", "json")
    monkeypatch.chdir(ws.root / "one")
    assert ws.run(*args).env()["HF_HUB_CACHE"] == str(ws.root / "one/hub")
    monkeypatch.chdir(ws.root / "two")
    res = ws.run(*args)
    assert res.env()["HF_HUB_CACHE"] == str(ws.root / "two/hub")
    assert (ws.root / "two/hub/models--org--x/refs/main").read_text() == COMMIT_A
    # The same through a relative HF_HUB_CACHE.
    env = {"HOME": str(ws.root / "home"), "HF_HUB_CACHE": "rel"}
    noflag = ("activate", "--manifest", str(path), "--state-dir", str(ws.state), "--format", "json")
    monkeypatch.chdir(ws.root / "one")
    assert ws.run(*noflag, environ=env).code == 0
    monkeypatch.chdir(ws.root / "two")
    assert ws.run(*noflag, environ=env).code == 0
    assert (ws.root / "two/rel/models--org--x/refs/main").read_text() == COMMIT_A


# -------------------------------------------------- 8. a concurrent writer

def test_a_ref_moved_during_activation_is_left_alone(tmp_path: Path, paths: dict) -> None:
    hub = tmp_path / "hub"
    user_download(hub)
    main = hub / "models--org--x/refs/main"
    data = manifest({"x": model(paths["p1"], repo_id="org/x")})

    def download() -> None:  # the user's huggingface_hub moves refs/main C -> D meanwhile
        user_download(hub, commit=COMMIT_D)

    # Writes: 0 intent, 1 symlink snapshot, 2 create temp ref, 3 rename onto refs/main.
    assert run(tmp_path, data, during=(3, download)) == 1
    assert main.read_text() == COMMIT_D  # not overwritten
    invariants(hub)
    assert run(tmp_path, data) == 0  # taken over now, with D to give back
    assert main.read_text() == COMMIT_A
    assert run(tmp_path, manifest({})) == 0
    assert main.read_text() == COMMIT_D  # not the stale C
    # And a restore racing a new download: the download wins.
    assert run(tmp_path, data) == 0

    def download_e() -> None:
        user_download(hub, commit=COMMIT_E)

    assert run(tmp_path, manifest({}), during=(2, download_e)) == 1
    assert main.read_text() == COMMIT_E
    invariants(hub)


# ---------------------------------------------------- 9. one hub, two spellings

def test_one_hub_two_spellings_is_one_cache(tmp_path: Path, paths: dict,
                                            whole_store: WholeStore) -> None:
    paths = {k: whole_store.path(v) for k, v in paths.items()}  # whole links (the layout rule)
    manifest = whole_store.manifest
    real = tmp_path / "data/hf"
    (real / "hub").mkdir(parents=True)
    home_cache = tmp_path / "home/.cache"
    home_cache.mkdir(parents=True)
    (home_cache / "huggingface").symlink_to(real)
    data = manifest({"x": model(paths["p1"], repo_id="org/x")})
    log = Log("error")
    for profile, hub in (("home-manager", home_cache / "huggingface/hub"), ("devenv:/p", real / "hub")):
        run_activate(request_of(validate_manifest({**data, "profile": profile})),
                     hub_dir=str(hub), explicit_hub=True, state_dir=str(tmp_path / "state"), log=log)
    # Home Manager drops it; devenv still wants it: the link stays.
    run_activate(request_of(validate_manifest(manifest({}, profile="home-manager"))),
                 hub_dir=str(home_cache / "huggingface/hub"), explicit_hub=True,
                 state_dir=str(tmp_path / "state"), log=log)
    assert os.readlink(real / f"hub/models--org--x/snapshots/{COMMIT_A}") == paths["p1"]
    assert (real / "hub/models--org--x/refs/main").read_text() == COMMIT_A


# ------------------------------------------- 10. exit codes, never a traceback

def test_env_file_problems_exit_3_in_one_line(ws: Workspace, paths: dict) -> None:
    data = manifest({"x": model(paths["p1"], repo_id="org/x")})
    for _ in range(2):  # full path, then the no-op path
        res = ws.activate(data, "--env-file", str(ws.root / "no/such/dir/env"))
        assert res.code == 3 and "Traceback" not in res.stderr
        assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    (ws.root / "adir").mkdir()
    res = ws.activate(data, "--env-file", str(ws.root / "adir"))
    assert res.code == 3 and "is a directory" in res.stderr
    assert list((ws.root / "adir").iterdir()) == []


def test_non_utf8_cache_path(ws: Workspace, paths: dict) -> None:
    hub = os.fsencode(str(ws.root)) + b"/caf\xe9/hub"
    data = manifest({"x": model(paths["p1"], repo_id="org/x")})
    path = ws.write_manifest(data)
    args = [sys.executable, "-m", "activate", "activate", "--manifest", str(path),
            "--cache-dir", os.fsdecode(hub), "--state-dir", str(ws.state)]
    for _ in range(2):  # the full path, then the no-op path
        res = subprocess.run([*args, "--format", "json"], capture_output=True)
        assert res.returncode == 3 and b"not UTF-8" in res.stderr
        assert b"Traceback" not in res.stderr and res.stdout == b""
        out = subprocess.run([*args, "--format", "sh"], capture_output=True)
        assert out.returncode == 0, out.stderr
    assert os.path.isdir(hub + b"/models--org--x/snapshots")
    # sh output carries the bytes exactly: a real shell reads them back.
    got = subprocess.run(["bash", "-c", 'eval "$1"; printf %s "$HF_HUB_CACHE"', "_",
                          out.stdout], capture_output=True).stdout
    assert got == hub


# ------------------------------------------------------------- 11. hardening

def test_tampered_state_never_reaches_outside_the_cache(ws: Workspace, paths: dict) -> None:
    data = manifest({"x": model(paths["p1"], repo_id="org/x")})
    assert ws.activate(data).code == 0
    victim = ws.root / "victim"
    victim.write_text("precious")
    (state_file,) = [p for p in ws.state.iterdir() if p.suffix == ".json"]
    lines = state_file.read_text().splitlines()
    lines.append(json.dumps(["models--org--x/../../victim", "ref", "x", True, None, [], []]))
    state_file.write_text("\n".join(lines) + "\n")
    res = ws.run("deactivate", "--profile", "test", "--state-dir", str(ws.state))
    assert victim.read_text() == "precious"
    assert "unreadable" in res.stderr and "kept as" in res.stderr
    kept = [p for p in ws.state.iterdir() if ".corrupt-" in p.name]
    assert len(kept) == 1 and "victim" in kept[0].read_text()


def test_corrupt_state_is_kept_aside_and_reported(ws: Workspace, paths: dict) -> None:
    data = manifest({"x": model(paths["p1"], repo_id="org/x")})
    assert ws.activate(data).code == 0
    (state_file,) = [p for p in ws.state.iterdir() if p.suffix == ".json"]
    state_file.write_text('{"version": 2, "profile": "test"')  # truncated
    res = ws.activate(manifest({"x": model(paths["p2"], repo_id="org/x")}))
    assert "unreadable" in res.stderr
    assert len([p for p in ws.state.iterdir() if ".corrupt-" in p.name]) == 1


def test_duplicate_json_keys_are_refused(ws: Workspace) -> None:
    path = ws.root / "m.json"
    path.write_text('{"version": 1, "profile": "a", "profile": "b", "models": {}}')
    res = ws.run("activate", "--manifest", str(path), "--cache-dir", str(ws.hub),
                 "--state-dir", str(ws.state))
    assert res.code == 2 and "profile" in res.stderr and "twice" in res.stderr


def test_no_space_for_the_final_state_still_prints_the_environment(
        ws: Workspace, paths: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    from activate import state as statemod

    original = statemod.save
    calls = []

    def save(path: str, st: object) -> bool:
        calls.append(path)
        if len(calls) == 2:  # the intent is saved; the final save hits a full disk
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(path, st)  # type: ignore[arg-type]

    monkeypatch.setattr(statemod, "save", save)
    res = ws.activate(manifest({"x": model(paths["p1"], repo_id="org/x")}))
    assert res.code == 3 and "No space left" in res.stderr
    assert res.env()["MODEL_REPO_X"] == paths["p1"]
    monkeypatch.setattr(statemod, "save", original)
    # The intent still owns everything: dropping the model cleans up.
    assert ws.activate(manifest({})).code == 0
    assert shape(ws.hub) == {}


def test_store_path_that_is_a_file(ws: Workspace, tmp_path: Path) -> None:
    f = tmp_path / "single-file"
    f.write_text("not a directory")
    store = nix_store_add(f)
    res = ws.activate(manifest({"x": model(store, repo_id="org/x")}))
    assert res.code == 1 and "is not a directory" in res.stderr
    assert "garbage-collected" not in res.stderr


def test_locks_folder_is_group_writable_in_a_shared_cache(ws: Workspace, paths: dict) -> None:
    ws.hub.mkdir()
    os.chmod(ws.hub, 0o2775)
    old = os.umask(0o022)
    try:
        assert ws.activate(manifest({"x": model(paths["p1"], repo_id="org/x")})).code == 0
    finally:
        os.umask(old)
    mode = (ws.hub / ".locks").stat().st_mode
    assert mode & 0o070 == 0o070 and mode & 0o2000


@contextlib.contextmanager
def _hub_lock_of(hub: Path, timeout: float):
    """The activator's hub lock on ``hub``, through the hub dir's one opened root (as
    every run takes it)."""
    from activate.activation import _hub_lock, _open_hub
    from activate.log import Log

    root = _open_hub(str(hub), create=False)
    try:
        with _hub_lock(root, timeout, True, Log()) as held:
            yield held
    finally:
        root.close()


@pytest.mark.parametrize("planted", ["before", "after the check"])
def test_hub_lock_refuses_a_symlink_planted_at_it(
        planted: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A symlink at ``.locks/model-repo.lock`` (planted before the run, or between any
    check and the open: a race) is refused with the cache error, and what it points to
    is neither truncated nor locked: the activator opens the lock O_NOFOLLOW itself, so
    this holds with every filelock in pyproject.toml's range (before 3.20.1 filelock
    followed the symlink and truncated its target)."""
    from activate.activation import LOCK_NAME, EnvironmentProblem

    hub = tmp_path / "hub"
    (hub / ".locks").mkdir(parents=True)
    lock = hub / ".locks" / LOCK_NAME
    victim = tmp_path / "victim"
    victim.write_text("precious")
    if planted == "before":
        lock.symlink_to(victim)
    else:
        real_lstat, real_open = os.lstat, os.open
        done: list[bool] = []

        def plant() -> None:
            if not done:
                done.append(True)
                lock.symlink_to(victim)

        def lstat(path: object, *a: object, **kw: object) -> os.stat_result:
            st = real_lstat(path, *a, **kw)  # type: ignore[arg-type]
            if os.fsdecode(path) == str(lock):  # type: ignore[arg-type]
                plant()
            return st

        def open_(path: object, *a: object, **kw: object) -> int:
            if os.path.basename(os.fsdecode(path)) == LOCK_NAME:  # type: ignore[arg-type]
                plant()
            return real_open(path, *a, **kw)  # type: ignore[arg-type]

        monkeypatch.setattr(os, "lstat", lstat)
        monkeypatch.setattr(os, "open", open_)
    with pytest.raises(EnvironmentProblem, match="not a plain file"):
        with _hub_lock_of(hub, 1.0):
            pass
    monkeypatch.undo()
    assert lock.is_symlink() and victim.read_text() == "precious"


def test_hub_lock_excludes_filelock_and_is_created_group_writable(tmp_path: Path) -> None:
    """The hub lock is the flock filelock takes on the same file (activators of older
    versions used filelock: each excludes the other), created mode 0664 whatever the
    umask, and kept after release."""
    import filelock

    from activate.activation import LOCK_NAME, EnvironmentProblem

    hub = tmp_path / "hub"
    hub.mkdir()
    old = os.umask(0o077)
    try:
        with _hub_lock_of(hub, 1.0):
            lock = hub / ".locks" / LOCK_NAME
            assert stat.S_IMODE(lock.stat().st_mode) == 0o664
            # mode=0o664 as the activators that used filelock passed (filelock 3.x chmods
            # the lock to its mode on every open).
            with pytest.raises(filelock.Timeout):
                filelock.FileLock(str(lock), timeout=0.1, mode=0o664).acquire()
    finally:
        os.umask(old)
    with filelock.FileLock(str(lock), timeout=1, mode=0o664):
        with pytest.raises(EnvironmentProblem, match="held"):
            with _hub_lock_of(hub, 0.2):
                pass
    with _hub_lock_of(hub, 0):  # free again: one try is enough
        pass
    assert lock.is_file()


# ------------------------------------------------------- GC roots (issue 9)

def test_gc_roots_keep_a_linked_model_alive_and_let_it_go(ws: Workspace, tmp_path: Path) -> None:
    """With --gc-roots a linked store path is rooted (nix-store --delete refuses it, the
    collector's dead list lacks it); once the model is dropped it is dead again and can be
    deleted. No real garbage collection runs: --print-dead only lists."""
    d = tmp_path / "gc-model"
    d.mkdir()
    (d / "config.json").write_text('{"gc": "%s"}' % os.urandom(8).hex())  # a fresh path
    store = nix_store_add(d)

    def dead() -> set[str]:
        out = subprocess.run(["nix-store", "--gc", "--print-dead"], capture_output=True,
                             text=True, check=True).stdout
        return set(out.split())

    assert store in dead()
    data = manifest({"x": model(store, repo_id="org/x")})
    res = ws.activate(data, "--gc-roots")
    assert res.code == 0, res.stderr
    (root,) = (ws.state / "gcroots").iterdir()
    assert os.readlink(root / os.path.basename(store)) == store
    roots = subprocess.run(["nix-store", "--query", "--roots", store], capture_output=True,
                           text=True, check=True).stdout
    assert str(root / os.path.basename(store)) in roots
    assert store not in dead()
    refused = subprocess.run(["nix-store", "--delete", store], capture_output=True, text=True)
    assert refused.returncode != 0 and "alive" in refused.stderr
    # Dropped: the root goes with the link.
    assert ws.activate(manifest({}), "--gc-roots").code == 0
    assert list(root.iterdir()) == [] and store in dead()
    # Deactivate removes the roots too.
    assert ws.activate(data, "--gc-roots").code == 0
    assert store not in dead()
    assert ws.run("deactivate", "--profile", "test", "--state-dir", str(ws.state)).code == 0
    assert store in dead() and not root.exists()
    subprocess.run(["nix-store", "--delete", store], check=True, capture_output=True)
    _added_forget(d)


def _added_forget(directory: Path) -> None:
    import conftest

    conftest._added.pop(str(directory), None)


def test_a_version_1_state_under_a_symlinked_spelling_is_taken_over(tmp_path: Path, paths: dict) -> None:
    """States written before this version were filed under the hub dir as spelled
    (through ~/.cache/huggingface -> /data/hf, say) and kept one former value; the new
    activator files them under the real path and must still know its links and the
    user's ref to give back."""
    real = tmp_path / "data/hf/hub"
    user_download(real)
    original = shape(real)
    (tmp_path / "home").mkdir()
    (tmp_path / "home/hf").symlink_to(tmp_path / "data/hf")
    spelled = tmp_path / "home/hf/hub"
    store = paths["p1"]
    snap = real / f"models--org--x/snapshots/{COMMIT_A}"
    snap.symlink_to(store)
    (real / "models--org--x/refs/main").write_text(COMMIT_A)
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    import hashlib
    name = hashlib.sha256(f"{spelled}\0test".encode()).hexdigest()[:32]
    rows = [{"version": 1, "profile": "test", "hubDir": str(spelled), "complete": True,
             "problems": []},
            ["models--org--x", "dir", None, False, None, None, []],
            ["models--org--x/snapshots", "dir", None, False, None, None, []],
            [f"models--org--x/snapshots/{COMMIT_A}", "snapshot", store, True, None, None, []],
            ["models--org--x/refs", "dir", None, False, None, None, []],
            ["models--org--x/refs/main", "ref", COMMIT_A, True, USER, None, []]]
    (state_dir / f"{name}.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
    log = Log("error")
    out = run_activate(request_of(validate_manifest(manifest({"x": model(store, repo_id="org/x")}))),
                       hub_dir=str(spelled), explicit_hub=True, state_dir=str(state_dir), log=log)
    assert not out.plan.problems
    run_activate(request_of(validate_manifest(manifest({}))), hub_dir=str(spelled),
                 explicit_hub=True, state_dir=str(state_dir), log=log)
    assert shape(real) == original


def test_no_space_for_the_receipt_warns_and_goes_on(
        ws: Workspace, paths: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 13, finding 11: the receipt (written after the final save) is a cache of the
    run for the next one's quick exit; a full disk there is a warning, not exit 70."""
    from activate import statefile

    original = statefile.write_if_changed

    def full(path: str, chunks: object, **kw: object) -> bool:
        if os.path.basename(path).startswith("receipt-"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(path, chunks, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr("activate.noop.write_if_changed", full)
    res = ws.activate(manifest({"x": model(paths["p1"], repo_id="org/x")}))
    assert res.code == 0, res.stderr
    assert "receipt" in res.stderr and "No space left" in res.stderr
    assert "internal error" not in res.stderr
    assert res.env()["MODEL_REPO_X"] == paths["p1"] and res.env()["HF_HUB_OFFLINE"] == "1"
    assert not [p for p in ws.state.iterdir() if p.name.startswith("receipt-")]
    monkeypatch.setattr("activate.noop.write_if_changed", original)
    again = ws.activate(manifest({"x": model(paths["p1"], repo_id="org/x")}))
    assert again.code == 0 and again.env() == res.env()
    assert [p for p in ws.state.iterdir() if p.name.startswith("receipt-")]


def test_a_hub_dir_replaced_by_a_symlink_is_refused(tmp_path: Path, paths: dict) -> None:
    """Issue 13, finding 4 without another user: the hub dir moved away and a symlink
    to another folder put in its place. States are filed under the real path, so the
    new target has none; the state filed under the path as given still has the old
    folder's identity: exit 3, nothing written there; --forget drops that state."""
    ws = Workspace(tmp_path)
    assert ws.activate(manifest({"x": model(paths["p1"], repo_id="org/x")})).code == 0
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    ws.hub.rename(tmp_path / "hub-away")
    ws.hub.symlink_to(elsewhere)
    before = (tree(elsewhere), tree(tmp_path / "hub-away"), tree(ws.state))
    res = ws.activate(manifest({"x": model(paths["p1"], repo_id="org/x"),
                                "y": model(paths["p2"], repo_id="org/y")}))
    assert res.code == 3, res.stderr
    assert "replaced by a symlink" in res.stderr and "Nothing was written" in res.stderr
    assert (tree(elsewhere), tree(tmp_path / "hub-away"), tree(ws.state)) == before
    forget = ws.run("deactivate", "--profile", "test", "--cache-dir", str(ws.hub),
                    "--state-dir", str(ws.state), "--forget")
    assert forget.code == 0, forget.stderr
    assert not [p for p in ws.state.iterdir() if p.suffix == ".json"]
    assert tree(elsewhere) == before[0]


def _long_tree(parent: str, parts: list[str], content: bytes) -> None:
    """Make ``parent/<parts...>`` (a file) through directory descriptors: its full path
    may be longer than PATH_MAX."""
    fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for name in parts[:-1]:
            os.mkdir(name, dir_fd=fd)
            sub = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = sub
        f = os.open(parts[-1], os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644, dir_fd=fd)
        os.write(f, content)
        os.close(f)
    finally:
        os.close(fd)


def test_a_partial_model_with_a_4006_byte_file_path(ws: Workspace) -> None:
    """Issue 13, finding 12: a file path of 4,006 bytes inside a partial model. The tree
    is made through descriptors; status must say ok (not "changed") and a repeat run
    takes the no-op path, as for any model."""
    import tempfile

    parts = ["d" * 199] * 19 + ["f" * 201 + ".json"]
    assert len("/".join(parts)) == 4006
    src = tempfile.mkdtemp(prefix="mr12-", dir="/tmp")  # short: the store copy fits PATH_MAX
    try:
        name = os.path.join(src, "long-model")
        os.mkdir(name)
        with open(os.path.join(name, "config.json"), "w") as fh:
            fh.write('{"long": "%s"}' % os.urandom(4).hex())
        _long_tree(name, parts, b"deep")
        store = nix_store_add(Path(name))
    finally:
        shutil.rmtree(src)
    data = manifest({"x": model(store, repo_id="org/x", partial=True)})
    first = ws.activate(data)
    assert first.code == 0, first.stderr
    status = ws.run("status", "--state-dir", str(ws.state), "--json")
    assert status.code == 0, (status.stdout, status.stderr)
    (prof,) = json.loads(status.stdout)
    assert [e["status"] for e in prof["entries"]] == ["ok"] * len(prof["entries"])
    from activate.noop import try_noop

    path = ws.root / "manifest.json"
    env = try_noop(str(path), cache_flag=str(ws.hub), state_flag=str(ws.state),
                   environ={"HOME": str(ws.root / "home")})
    assert env is not None and env["MODEL_REPO_X"] == store


def test_lock_file_mode_and_a_planted_lock_file(ws: Workspace, paths: dict) -> None:
    """The lock file we create is 0664 whatever the umask (a group shares it); one that
    is already there (say a hard link someone planted to a file of ours) is only opened
    and locked: never truncated, never chmod-ed. A symlink there is refused (exit 3)."""
    old = os.umask(0o022)
    try:
        assert ws.activate(manifest({"x": model(paths["p1"], repo_id="org/x")})).code == 0
    finally:
        os.umask(old)
    lock = ws.hub / ".locks" / activation.LOCK_NAME
    assert oct(lock.stat().st_mode & 0o7777) == oct(0o664)
    victim = ws.hub / ".locks" / "victim"
    victim.write_text("precious")
    victim.chmod(0o600)
    lock.unlink()
    os.link(victim, lock)
    assert ws.activate(manifest({"y": model(paths["p1"], repo_id="org/y")})).code == 0
    assert victim.read_text() == "precious" and victim.stat().st_mode & 0o7777 == 0o600
    lock.unlink()
    lock.symlink_to(victim)
    res = ws.activate(manifest({"z": model(paths["p1"], repo_id="org/z")}))
    assert res.code == 3 and "not a plain file" in res.stderr
    assert victim.read_text() == "precious" and victim.stat().st_mode & 0o7777 == 0o600
