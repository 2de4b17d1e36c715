"""The activator against other users and other versions (issue 13): a member of a
group-shared cache racing and replacing what it can write, a state dir another user
cannot read, a state written by a newer model-repo (a rollback), and read-only commands
that must change nothing.

The other user is real: ``model-repo-test`` (``MODEL_REPO_TEST_USER``), created as
tests/test_activate_e2e.py does, started through runuser; its group is
``model-repo-share``. Tests needing it skip (with how to run them) when pytest is not
root.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Member, Workspace, cache_group_member, manifest, model, nix_store_add, tree

from activate.statefile import STATE_VERSION

@pytest.fixture(scope="module")
def member() -> Member:
    """The unprivileged member of the cache group (created if missing, as the e2e tests
    do)."""
    found, reason = cache_group_member()
    if found is None:
        pytest.skip(reason=reason)
    return found


@pytest.fixture
def shared(member: Member) -> Iterator[Path]:
    """A folder other users can traverse (pytest's base temp is 0700), removed after."""
    root = Path(tempfile.mkdtemp(prefix="model-repo-users-"))
    root.chmod(0o755)
    yield root
    shutil.rmtree(root)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    d = tmp_path_factory.mktemp("users") / "users-model"
    d.mkdir()
    (d / "config.json").write_text('{"model_type": "bert", "note": "users"}\n')
    return nix_store_add(d)


# ------------------------------------------------- read-only commands, rollbacks


def test_status_on_a_state_dir_it_cannot_read_exits_3(shared: Path, member: Member,
                                                      store: str) -> None:
    """Finding 13: status as a user who may not read the (root-owned, 0700) state dir
    says so and exits 3 instead of "no profile has linked anything"."""
    ws = Workspace(shared)
    assert ws.activate(manifest({"x": model(store, repo_id="org/x")})).code == 0
    ws.state.chmod(0o700)
    res = member.run("status", "--state-dir", str(ws.state), home=shared)
    assert res.returncode == 3, (res.stdout, res.stderr)
    assert "cannot read" in res.stderr and str(ws.state) in res.stderr
    assert "no profile" not in res.stdout


def _newer(ws: Workspace, store: str) -> Path:
    """A state as a newer model-repo would leave it (a state version above ours)."""
    assert ws.activate(manifest({"x": model(store, repo_id="org/x")})).code == 0
    (state_file,) = [p for p in ws.state.iterdir() if p.suffix == ".json"]
    head, _, rest = state_file.read_text().partition("\n")
    data = json.loads(head)
    data["version"] = STATE_VERSION + 1
    data["somethingNew"] = {"a": 1}
    state_file.write_text(json.dumps(data) + "\n" + rest)
    return state_file


def test_a_state_of_a_newer_version_is_refused_and_left_untouched(tmp_path: Path,
                                                                  store: str) -> None:
    """Finding 8: what a rollback to an older generation meets. activate, env, status
    and deactivate exit 3 naming the versions and the fix; nothing is renamed or
    written, in the state dir or the cache."""
    ws = Workspace(tmp_path)
    state_file = _newer(ws, store)
    before = (tree(ws.state), tree(ws.hub))
    other = manifest({"x": model(store, repo_id="org/x"), "y": model(store, repo_id="org/y")})
    for res in (
        ws.activate(other),
        ws.activate(other, "--dry-run"),
        ws.run("env", "--manifest", str(ws.write_manifest(other)), "--cache-dir", str(ws.hub),
               "--state-dir", str(ws.state)),
        ws.run("status", "--state-dir", str(ws.state)),
        ws.run("deactivate", "--profile", "test", "--state-dir", str(ws.state)),
    ):
        assert res.code == 3, res.stderr
        assert "newer model-repo" in res.stderr
        assert f"state version {STATE_VERSION + 1}" in res.stderr
        assert str(state_file) in res.stderr and "remove the file" in res.stderr
        assert (tree(ws.state), tree(ws.hub)) == before


def test_status_and_env_never_write(tmp_path: Path, store: str) -> None:
    """status and env change nothing, not even a corrupt state (kept where it is: only a
    writing run moves it aside), and exit 3 for status, which cannot report it."""
    ws = Workspace(tmp_path)
    data = manifest({"x": model(store, repo_id="org/x")})
    assert ws.activate(data).code == 0
    (ws.state / ("f" * 32 + ".json")).write_text('{"version": 2, "profile": "other"')
    before = (tree(ws.state), tree(ws.hub))
    status = ws.run("status", "--state-dir", str(ws.state))
    assert status.code == 3 and "unreadable" in status.stderr and "left in place" in status.stderr
    env = ws.run("env", "--manifest", str(ws.root / "manifest.json"), "--cache-dir",
                 str(ws.hub), "--state-dir", str(ws.state), "--format", "json")
    assert env.code == 0 and env.env()["MODEL_REPO_X"] == store
    assert (tree(ws.state), tree(ws.hub)) == before


# ------------------------------------------------- a member of a group-shared cache


def _group_cache(shared: Path, member: Member) -> Path:
    """``shared/hf/hub`` as the NixOS module makes it: both root-owned, the cache group,
    mode 2775. Returns the hub dir."""
    hf = shared / "hf"
    hub = hf / "hub"
    for d in (hf, hub):
        d.mkdir()
        os.chown(d, 0, member.group)
        d.chmod(0o2775)
    return hub


SWAPPER = r"""
import os, sys, time
hub, target, stop, ready = sys.argv[1:5]
locks = os.path.join(hub, ".locks")
away, link = os.path.join(hub, ".locks-away"), os.path.join(hub, ".locks-link")
os.symlink(target, link)  # made once, then renamed in and out: each swap is two renames
swaps = 0
open(ready, "w").close()
deadline = time.monotonic() + 120
while not os.path.exists(stop) and time.monotonic() < deadline:
    try:
        os.rename(locks, away)
        os.rename(link, locks)
        swaps += 1
    except OSError:
        pass
    try:
        if os.path.islink(locks):
            os.rename(locks, link)
        os.rename(away, locks)
    except OSError:
        pass
if os.path.islink(link):
    os.unlink(link)
print(swaps)
"""


def test_a_member_swapping_locks_for_a_symlink_never_makes_root_write_outside(
        shared: Path, member: Member, store: str) -> None:
    """Finding 3: a member of the cache group swaps ``<hub>/.locks`` for a symlink into a
    root-only folder in a loop while root activates again and again. The lock is opened
    relative to the hub dir's descriptor, never following a link: nothing appears
    outside the cache, and each run either works or stops (exit 3) naming the symlink."""
    hub = _group_cache(shared, member)
    secret = shared / "secret"
    secret.mkdir(mode=0o700)
    ws = Workspace(hub.parent)
    old = os.umask(0o002)
    try:
        assert ws.activate(manifest({"x": model(store, repo_id="org/x")})).code == 0
        stop = shared / "stop"
        ready = hub.parent / "swapper-ready"  # the group may write there (2775)
        swapper = member.spawn(SWAPPER, str(hub), str(secret / "made" / "deeper"), str(stop),
                               str(ready))
        for _ in range(600):  # the member races from the first root run on
            if ready.exists() or swapper.poll() is not None:
                break
            time.sleep(0.05)
        codes = []
        try:
            start = time.monotonic()
            longest = 0.0
            for i in range(150):  # at least 40 runs and 3 s of racing
                if i >= 40 and time.monotonic() - start > 3:
                    break
                models = {"x": model(store, repo_id="org/x"),
                          f"m{i}": model(store, repo_id=f"org/m{i}")}
                t0 = time.monotonic()
                res = ws.activate(manifest(models))  # a new manifest: never the no-op path
                codes.append((res.code, res.stderr))
                longest = max(longest, time.monotonic() - t0)
        finally:
            stop.touch()
            out, err = swapper.communicate(timeout=60)
    finally:
        os.umask(old)
    swaps = int(out.strip() or 0)
    exits = [c for c, _ in codes]
    print(f"\n[users] {len(codes)} root runs during {swaps} swaps of .locks: "
          f"{exits.count(0)} exit 0, {exits.count(3)} exit 3; longest run {longest:.2f} s")
    assert swaps > 10, (out, err)  # the member did race
    assert os.listdir(secret) == [], os.listdir(secret)
    outside = sorted(p.name for p in shared.iterdir())
    assert outside == ["hf", "secret", "stop"], outside
    for code, stderr in codes:
        assert code in (0, 3), stderr
        if code == 3:
            assert "not a plain directory" in stderr or "not a plain file" in stderr, stderr
    # The member stopped: the cache works again.
    assert ws.activate(manifest({"x": model(store, repo_id="org/x")})).code == 0


VICTIM_FILES = ["keep.txt"]


def _swap_hub(member: Member, hub: Path, victim: Path, kind: str) -> None:
    """What a member can do in a 2775 parent: move the hub dir away, a symlink to
    ``victim`` (or a folder of its own) in its place."""
    make = "os.symlink(victim, hub)" if kind == "symlink" else "os.mkdir(hub)"
    source = ("import os, sys; hub, victim = sys.argv[1:3]; "
              f"os.rename(hub, hub + '-away'); {make}")
    proc = member.spawn(source, str(hub), str(victim))
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert hub.is_symlink() == (kind == "symlink") and os.lstat(hub).st_uid == member.uid


@pytest.mark.parametrize("kind", ["symlink", "folder"])
@pytest.mark.parametrize("first_run", [False, True], ids=["with-state", "first-run"])
def test_a_member_replacing_the_hub_dir_stops_root(
        shared: Path, member: Member, store: str, first_run: bool, kind: str) -> None:
    """Finding 4: the member renames the 2775 hub dir away and puts a symlink to a
    folder of its choice (here a root-owned one), or a folder of its own, in its place.
    Root's next activation and deactivation stop with exit 3 naming it and its owner;
    nothing is written in the chosen folder, the moved cache or the state dir."""
    hub = _group_cache(shared, member)
    victim = shared / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("root's")
    ws = Workspace(hub.parent)
    data = manifest({"x": model(store, repo_id="org/x")})
    if not first_run:
        assert ws.activate(data).code == 0
    _swap_hub(member, hub, victim, kind)
    away = shared / "hf" / "hub-away"

    def snapshot() -> tuple:
        return (tree(victim), tree(away), tree(hub) if kind == "folder" else os.readlink(hub),
                tree(ws.state))

    before = snapshot()
    more = manifest({"x": model(store, repo_id="org/x"), "y": model(store, repo_id="org/y")})
    runs = [ws.activate(more)]
    if not first_run:
        runs.append(ws.run("deactivate", "--profile", "test", "--state-dir", str(ws.state)))
    for res in runs:
        assert res.code == 3, res.stderr
        assert str(hub) in res.stderr and member.name in res.stderr, res.stderr
        assert "Nothing was written" in res.stderr
    assert snapshot() == before
    assert sorted(os.listdir(victim)) == VICTIM_FILES


# ------------------------------------------------- open_hub, the one root handle


def test_open_hub_resolves_as_realpath_and_opens_that_folder(tmp_path: Path) -> None:
    """The walk from / spells the real path as os.path.realpath does (states are filed
    under it) through relative, absolute and ``..`` link targets, and opens that folder;
    a missing hub dir gives no descriptor, a file on the way (when creating) an error."""
    from activate.hubfs import open_hub

    (tmp_path / "a" / "b" / "hub").mkdir(parents=True)
    (tmp_path / "rel").symlink_to("a/../a/b")
    (tmp_path / "abs").symlink_to(tmp_path / "rel")
    (tmp_path / "up").symlink_to("abs/hub/..")  # ".." after a link: the link's real parent
    for given in (tmp_path / "a/b/hub", tmp_path / "rel/hub", tmp_path / "abs/hub",
                  tmp_path / "up/hub"):
        with open_hub(str(given)) as root:
            assert root.real == os.path.realpath(given)
            st = os.stat(given)
            assert root.identity == (st.st_dev, st.st_ino)
            assert root.fd is not None and os.fstat(root.fd).st_ino == st.st_ino
    missing = open_hub(str(tmp_path / "abs" / "nothing" / "hub"))
    assert missing.fd is None and missing.real == os.path.realpath(tmp_path / "a/b/nothing/hub")
    with open_hub(str(tmp_path / "abs" / "new" / "hub"), create=True) as made:
        assert made.fd is not None and (tmp_path / "a/b/new/hub").is_dir()
    (tmp_path / "file").write_text("")
    with pytest.raises(NotADirectoryError):
        open_hub(str(tmp_path / "file" / "hub"), create=True)
    assert open_hub(str(tmp_path / "file" / "hub")).fd is None


def test_unsafe_steps() -> None:
    """The rule of each step: as root only root's entries; another user's run steps
    anywhere (it writes only where it may anyway; group caches hold folders of several
    users)."""
    from activate.hubfs import _unsafe_step

    def owned(uid: int) -> os.stat_result:
        return os.stat_result((0o40755, 1, 1, 1, uid, 0, 0, 0, 0, 0))

    root, alice, bob = 0, 1000, 1001
    assert not _unsafe_step(owned(root), owned(root), root)
    assert _unsafe_step(owned(root), owned(alice), root)  # a member's symlink in a 2775 dir
    assert _unsafe_step(owned(alice), owned(alice), root)  # root into a user's home
    for parent in (root, alice, bob):
        for child in (root, alice, bob):
            assert not _unsafe_step(owned(parent), owned(child), alice)
