"""The user's own cache tools against what the activator linked (issue 13, findings 5, 6).

huggingface_hub's ``hf cache rm`` (a repo, a revision or one file), ``hf cache prune`` and
``scan_cache_dir().delete_revisions(...).execute()`` run for real, as root, against real
store paths: they may remove what the activator linked (it is linked again on the next
run), but never change a store path, never delete the user's own download while the
activator holds its ref, and never make the activator forget the ref it must give back.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import COMMIT_A, COMMIT_B, TINY_BERT_REPO, Workspace, manifest, model, needs_safe_cache_tools

# Every test here runs `hf cache` or delete_revisions as root on real store paths: with an
# older huggingface_hub that would delete store files (shared by other tests) or fail.
pytestmark = needs_safe_cache_tools

REPO = "models--model-repo-example--tiny-bert"
USER_COMMIT = "c" * 40


def hf(*args: str, hub: Path) -> subprocess.CompletedProcess:
    """Run huggingface_hub's own ``hf`` command line (the installed one) on ``hub``."""
    exe = Path(sys.executable).parent / "hf"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-c",
                                          "import sys; from huggingface_hub.cli.hf import main; "
                                          "sys.argv[0] = 'hf'; sys.exit(main())"]
    env = {**os.environ, "HF_HUB_CACHE": str(hub), "HF_HUB_OFFLINE": "1",
           "HF_HUB_DISABLE_TELEMETRY": "1"}
    res = subprocess.run([*cmd, "cache", *args, "--cache-dir", str(hub), "--yes"],
                         capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    return res


def user_download(hub: Path, commit: str = USER_COMMIT) -> Path:
    """What huggingface_hub leaves after the user's own download of ``commit``: a blob,
    a snapshot dir whose file links to it, and ``refs/main`` naming the commit."""
    repo = hub / REPO
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    blob = repo / "blobs" / ("e" * 40)
    blob.write_text('{"user": true}')
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True)
    (snap / "config.json").symlink_to(f"../../blobs/{blob.name}")
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return snap


def refs_left(hub: Path) -> tuple[list[str], str | None]:
    """The ref files of the tiny-bert repo folder (relative to ``refs/``) and what
    ``refs/main`` holds (None when it is missing)."""
    refs = hub / REPO / "refs"
    names = sorted(str(p.relative_to(refs)) for p in refs.rglob("*") if p.is_file())
    main = refs / "main"
    return names, main.read_text() if main.is_file() else None


def activate_in(ws: Workspace, state: Path, data: dict):
    """``ws.activate`` with the state dir ``state`` (a profile of another state dir)."""
    path = ws.write_manifest(data, f"{state.name}.json")
    return ws.run("activate", "--manifest", str(path), "--cache-dir", str(ws.hub),
                  "--state-dir", str(state), "--format", "json")


def test_prune_keeps_the_users_revision_while_we_hold_their_ref(ws: Workspace,
                                                                 tiny_bert_store_path: str) -> None:
    """While the activator holds the user's refs/main, the user's revision is still named
    by a ref huggingface_hub counts: `hf cache prune` leaves their download alone, and the
    drop gives their ref back."""
    snap = user_download(ws.hub)
    data = manifest({"m": model(tiny_bert_store_path)})
    assert ws.activate(data).code == 0
    assert (ws.hub / REPO / "refs" / "main").read_text() == COMMIT_A
    hf("prune", hub=ws.hub)
    assert (snap / "config.json").read_text() == '{"user": true}'
    assert ws.activate(data).code == 0
    assert ws.activate(manifest({})).code == 0
    assert refs_left(ws.hub) == (["main"], USER_COMMIT)
    assert not (ws.hub / REPO / "refs" / "model-repo-kept").exists()
    assert (snap / "config.json").read_text() == '{"user": true}'


def delete_revisions(hub: Path, *commits: str) -> None:
    """huggingface_hub's API: ``scan_cache_dir(hub).delete_revisions(...).execute()``, in a
    process of its own (as a user's script would run it)."""
    code = ("import sys; from huggingface_hub import scan_cache_dir; "
            "scan_cache_dir(sys.argv[1]).delete_revisions(*sys.argv[2:]).execute()")
    res = subprocess.run([sys.executable, "-c", code, str(hub), *commits],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


@pytest.mark.parametrize("how", ["hf cache rm", "delete_revisions"])
def test_the_users_ref_survives_rm_of_our_revision(ws: Workspace, tiny_bert_store_path: str,
                                                   how: str) -> None:
    """`hf cache rm <our commit>` (or delete_revisions) removes our snapshot link and
    refs/main; the next run links them again and still gives the user's ref back when
    the model is dropped."""
    snap = user_download(ws.hub)
    data = manifest({"m": model(tiny_bert_store_path)})
    assert ws.activate(data).code == 0
    if how == "hf cache rm":
        hf("rm", COMMIT_A, hub=ws.hub)
    else:
        delete_revisions(ws.hub, COMMIT_A)
    assert not (ws.hub / REPO / "snapshots" / COMMIT_A).exists()
    assert not (ws.hub / REPO / "refs" / "main").exists()
    res = ws.activate(data)
    assert res.code == 0, res.stderr
    assert (ws.hub / REPO / "refs" / "main").read_text() == COMMIT_A
    assert ws.activate(manifest({})).code == 0
    assert (ws.hub / REPO / "refs" / "main").read_text() == USER_COMMIT
    assert (snap / "config.json").read_text() == '{"user": true}'
    assert sorted(p.name for p in (ws.hub / REPO / "snapshots").iterdir()) == [USER_COMMIT]


@pytest.mark.parametrize("how", ["hf cache rm", "delete_revisions"])
def test_the_users_ref_is_given_back_when_our_revision_was_removed_and_the_model_dropped(
        ws: Workspace, tiny_bert_store_path: str, how: str) -> None:
    """`hf cache rm <our commit>` removes refs/main with our revision; a drop right after
    (no run links it again) still gives the user's ref back, exactly, and removes the
    kept ref; their download is untouched."""
    snap = user_download(ws.hub)
    assert ws.activate(manifest({"m": model(tiny_bert_store_path)})).code == 0
    if how == "hf cache rm":
        hf("rm", COMMIT_A, hub=ws.hub)
    else:
        delete_revisions(ws.hub, COMMIT_A)
    assert not (ws.hub / REPO / "refs" / "main").exists()
    res = ws.activate(manifest({}))
    assert res.code == 0, res.stderr
    assert refs_left(ws.hub) == (["main"], USER_COMMIT)
    assert (snap / "config.json").read_text() == '{"user": true}'
    assert sorted(p.name for p in (ws.hub / REPO / "snapshots").iterdir()) == [USER_COMMIT]


def test_no_ref_is_given_back_to_a_revision_the_user_deleted_too(
        ws: Workspace, tiny_bert_store_path: str) -> None:
    """The user deletes our revision and their own at once (delete_revisions removes the
    refs naming what it deletes): the drop gives nothing back, as huggingface_hub itself
    would have removed their ref with their revision; nothing of ours is left."""
    user_download(ws.hub)
    assert ws.activate(manifest({"m": model(tiny_bert_store_path)})).code == 0
    delete_revisions(ws.hub, COMMIT_A, USER_COMMIT)
    res = ws.activate(manifest({}))
    assert res.code == 0, res.stderr
    assert not (ws.hub / REPO).exists() or not any(
        p.is_file() or p.is_symlink() for p in (ws.hub / REPO).rglob("*")), \
        sorted(str(p) for p in (ws.hub / REPO).rglob("*"))


def test_prune_keeps_the_users_new_download_when_profiles_of_two_state_dirs_took_their_ref(
        ws: Workspace, tiny_bert_store_path: str) -> None:
    """Root's profile (a state dir of its own) holds the user's refs/main and keeps their
    revision named; the user downloads a new revision (refs/main moves: root's claim is
    dead) and then a profile of the user's state dir takes refs/main: their new download
    must stay named too (the kept refs are one per profile, so root's, which names the
    older revision and which the user's profile cannot read a record of, is not in the
    way). `hf cache prune` then deletes nothing of the user's, and after both drop the
    cache is the user's: refs/main at their new download, no kept ref left."""
    newer = "d" * 40
    first = user_download(ws.hub)
    root_state = ws.root / "state-root"

    def as_root(data: dict):
        return activate_in(ws, root_state, data)

    assert as_root(manifest({"m": model(tiny_bert_store_path)}, profile="root")).code == 0
    second = user_download(ws.hub, commit=newer)
    res = ws.activate(manifest({"m": model(tiny_bert_store_path, revision=COMMIT_B)}))
    assert res.code == 0, res.stderr
    assert (ws.hub / REPO / "refs" / "main").read_text() == COMMIT_B
    hf("prune", hub=ws.hub)
    assert (second / "config.json").read_text() == '{"user": true}'
    assert as_root(manifest({}, profile="root")).code == 0
    assert ws.activate(manifest({})).code == 0
    assert refs_left(ws.hub) == (["main"], newer)
    assert (first / "config.json").exists() and (second / "config.json").exists()


def _fresh_store_path(tmp_path: Path, files: dict[str, str]) -> tuple[Path, str]:
    """A store path of its own (random content): a test may damage it, then deletes it."""
    from conftest import nix_store_add

    d = tmp_path / "own-model"
    for rel, text in files.items():
        (d / rel).parent.mkdir(parents=True, exist_ok=True)
        (d / rel).write_text(text)
    (d / "nonce.txt").write_text(os.urandom(8).hex())
    return d, nix_store_add(d)


def _delete_store_path(d: Path, store: str) -> None:
    import conftest

    conftest._added.pop(str(d), None)
    subprocess.run(["nix-store", "--delete", store], capture_output=True)


def _damage(store: str) -> None:
    """Remove ``config.json`` from ``store`` (what `hf cache rm hf://…/config.json` did
    through a whole link as root before the layout rule), or skip when this user cannot."""
    try:
        os.unlink(os.path.join(store, "config.json"))
    except OSError as exc:
        pytest.skip(reason=f"damaging a store path needs root on a writable store ({exc})")


def test_status_says_a_store_path_was_damaged(ws: Workspace, tmp_path: Path) -> None:
    """A store path changed after Nix made it (here: a file removed by root, as `hf cache
    rm hf://…/FILE` through a snapshot linked whole into a writable store once did) is
    reported by `status` as damaged (exit 1), with the way to check and repair it."""
    d, store = _fresh_store_path(tmp_path, {"config.json": "{}", "sub/vocab.txt": "x"})
    try:
        data = manifest({"x": model(store, repo_id="org/x")})
        assert ws.activate(data).code == 0
        res = ws.run("status", "--state-dir", str(ws.state))
        assert res.code == 0 and "damaged" not in res.stdout, res.stdout
        _damage(store)
        assert subprocess.run(["nix-store", "--verify-path", store],
                              capture_output=True).returncode != 0
        res = ws.run("status", "--state-dir", str(ws.state))
        assert res.code == 1, res.stdout
        assert "damaged" in res.stdout and "was changed after Nix made it" in res.stdout
        assert f"nix-store --verify-path {store}" in res.stdout
        res = ws.run("status", "--state-dir", str(ws.state), "--json")
        (entry,) = [e for p in json.loads(res.stdout) for e in p["entries"]
                    if e["kind"] in ("snapshot", "tree")]
        assert entry["status"] == "damaged"
    finally:
        _delete_store_path(d, store)


def _each_tool_leaves_the_store_path(ws: Workspace, store: str, data: dict) -> None:
    """Activate ``data`` (org/x at COMMIT_A, whose store path ``store`` holds a
    ``config.json`` of ``{}``), then run each cache tool as root (`hf cache rm` of that
    file, ``delete_revisions`` of the revision, `hf cache prune`): the store path stays
    as Nix made it (``nix-store --verify-path``); the next run links it again and
    ``status`` says ok."""
    snap = ws.hub / "models--org--x" / "snapshots" / COMMIT_A
    for tool in ("rm file", "delete_revisions", "prune"):
        assert ws.activate(data).code == 0, tool
        if tool == "rm file":
            hf("rm", "hf://models/org/x/config.json", hub=ws.hub)
            assert not (snap / "config.json").exists()
        elif tool == "delete_revisions":
            delete_revisions(ws.hub, COMMIT_A)
            assert not snap.exists()
        else:
            hf("prune", hub=ws.hub)
        verify = subprocess.run(["nix-store", "--verify-path", store], capture_output=True,
                                text=True)
        assert verify.returncode == 0, (tool, verify.stderr)
        assert os.path.exists(os.path.join(store, "config.json")), tool
    res = ws.activate(data)
    assert res.code == 0, res.stderr
    assert (snap / "config.json").read_text() == "{}"
    assert ws.run("status", "--state-dir", str(ws.state)).code == 0


def test_cache_tools_never_change_a_partial_snapshots_store_path(ws: Workspace,
                                                                 tmp_path: Path) -> None:
    """A snapshot linked file by file: `hf cache rm` of a file, `delete_revisions` of the
    revision and `hf cache prune`, as root, remove our links at most; the store path stays
    as Nix made it (nix-store --verify-path), and the next run links it again."""
    d, store = _fresh_store_path(tmp_path, {"config.json": "{}", "sub/vocab.txt": "x"})
    try:
        data = manifest({"x": model(store, repo_id="org/x", partial=True)})
        _each_tool_leaves_the_store_path(ws, store, data)
    finally:
        _delete_store_path(d, store)


def test_cache_tools_never_change_a_whole_snapshots_store_path(ws: Workspace,
                                                               tmp_path: Path) -> None:
    """Issue 13, finding 5: a WHOLE model, as root on a store not mounted read-only (this
    process can write it): `hf cache rm hf://models/ORG/NAME/FILE`, `delete_revisions` of
    the revision and `hf cache prune` leave the store path as Nix made it
    (nix-store --verify-path), since the layout rule (activate.tree.file_by_file) links
    it file by file; the next run links it again and status says ok."""
    from activate.tree import file_by_file

    d, store = _fresh_store_path(tmp_path, {"config.json": "{}", "sub/vocab.txt": "x"})
    try:
        if not os.access(os.path.dirname(store), os.W_OK):
            pytest.skip(reason="needs a store this user can write (root on a store not "
                        "mounted read-only): where it cannot, no cache tool can change it")
        assert file_by_file(store)
        data = manifest({"x": model(store, repo_id="org/x")})  # whole: no partial
        _each_tool_leaves_the_store_path(ws, store, data)
    finally:
        _delete_store_path(d, store)


def test_activation_blocks_a_damaged_store_path(ws: Workspace, tmp_path: Path) -> None:
    """After a store file was deleted (as `hf cache rm hf://…/FILE` through a whole link
    as root once did), the next activation (the repeat of the same manifest too) does not
    say ok: the model is blocked (exit 1, no offline variables) with the way to check and
    repair it."""
    d, store = _fresh_store_path(tmp_path, {"config.json": "{}", "sub/vocab.txt": "x"})
    try:
        data = manifest({"x": model(store, repo_id="org/x")})
        assert ws.activate(data).code == 0
        _damage(store)
        path = ws.root / "manifest.json"  # the same file: the repeat path is tried first
        res = ws.run("activate", "--manifest", str(path), "--cache-dir", str(ws.hub),
                     "--state-dir", str(ws.state), "--format", "json")
        assert res.code == 1, res.stderr
        assert "damaged" in res.stderr and f"nix-store --verify-path {store}" in res.stderr
        assert "HF_HUB_OFFLINE" not in res.env() and res.env()["MODEL_REPO_X"] == store
    finally:
        _delete_store_path(d, store)


@pytest.mark.parametrize("other_state_dir", [False, True], ids=["same state dir", "other state dir"])
def test_a_profile_relinking_a_ref_our_removed_revision_took_gives_the_users_back(
        ws: Workspace, tiny_bert_store_path: str, other_state_dir: bool) -> None:
    """One profile took the user's refs/main; the user deletes that profile's revision
    (refs/main goes with it); another profile links refs/main at its own commit before the
    first runs again. The user's revision must stay named (`hf cache prune` keeps it) and,
    after both drop, refs/main names it again: the second profile takes over the value to
    give back, from the first's records (same state dir) or from its kept ref (another
    state dir, whose records it cannot read)."""
    first_state = ws.root / ("state-root" if other_state_dir else "state")

    def first(data: dict):
        return activate_in(ws, first_state, data)

    snap = user_download(ws.hub)
    assert first(manifest({"m": model(tiny_bert_store_path)}, profile="first")).code == 0
    delete_revisions(ws.hub, COMMIT_A)
    assert not (ws.hub / REPO / "refs" / "main").exists()
    res = ws.activate(manifest({"m": model(tiny_bert_store_path, revision=COMMIT_B)}))
    assert res.code == 0, res.stderr
    hf("prune", hub=ws.hub)
    assert (snap / "config.json").read_text() == '{"user": true}'
    for _ in range(2):  # the second pass finds nothing left to undo
        assert first(manifest({}, profile="first")).code == 0
        assert ws.activate(manifest({})).code == 0
    assert refs_left(ws.hub) == (["main"], USER_COMMIT)


def test_a_kept_ref_stays_while_another_profile_holds_the_ref_without_one(
        tmp_path: Path) -> None:
    """Two profiles of one state dir hold the user's refs/main at one commit, each with
    its kept ref. The second one's drop is stopped before every write in turn (its state
    still claims the ref, its kept ref may be gone); then the first drops, leaving the
    ref to the second's claim. `hf cache prune` must still find the user's revision named
    whatever the stop, and once both drop, the cache is the user's again."""
    from test_activate_faults import KILLED, USER, run
    from test_activate_faults import user_download as plain_download

    from conftest import nix_store_add, shape

    src = tmp_path / "model-p"
    src.mkdir()
    (src / "config.json").write_text('{"n": 1}')
    store = nix_store_add(src)
    a = manifest({"x": model(store, repo_id="org/x")}, profile="hm")
    b = manifest({"x": model(store, repo_id="org/x")}, profile="devenv:/p")
    probe = tmp_path / "probe"
    plain_download(probe / "hub")
    assert run(probe, a) == 0 and run(probe, b) == 0
    stops = 0
    for kill_at in range(12):
        root = tmp_path / f"k{kill_at}"
        plain_download(root / "hub")
        original = shape(root / "hub")
        assert run(root, a) == 0 and run(root, b) == 0
        code = run(root, manifest({}, profile="devenv:/p"), kill_at=kill_at)
        stops += code == KILLED
        assert run(root, manifest({}, profile="hm")) == 0
        hf("prune", hub=root / "hub")
        assert (root / "hub/models--org--x/snapshots" / USER / "config.json").exists(), kill_at
        for _ in range(2):
            assert run(root, manifest({}, profile="devenv:/p")) == 0
            assert run(root, manifest({}, profile="hm")) == 0
        assert shape(root / "hub") == original, kill_at
    assert stops >= 3, stops  # the drop really was stopped part-way


def test_a_give_back_raced_by_a_download_leaves_no_kept_ref_in_the_way(tmp_path: Path) -> None:
    """(Found by the campaign, seed 3 sequence 19, when kept refs were one per ref.) A
    profile drops the model holding the user's refs/main while the user's download moves
    refs/main, at every write of the drop in turn; then another profile of the same state
    dir takes refs/main. `hf cache prune` must keep the user's new download named, and
    after both drop refs/main names it."""
    from test_activate_faults import run
    from test_activate_faults import user_download as plain_download

    from conftest import nix_store_add

    src = tmp_path / "model-p"
    src.mkdir()
    (src / "config.json").write_text('{"n": 2}')
    store = nix_store_add(src)
    newer = "1" * 40
    a = manifest({"x": model(store, repo_id="org/x")}, profile="hm")
    b = manifest({"x": model(store, repo_id="org/x", revision=COMMIT_B)}, profile="devenv:/p")
    for race_at in range(8):
        root = tmp_path / f"r{race_at}"
        plain_download(root / "hub")
        assert run(root, a) == 0
        assert run(root, manifest({}, profile="hm"),  # 1: a write met the download
                   during=(race_at, lambda root=root: plain_download(root / "hub", commit=newer))) in (0, 1)
        if (root / "hub/models--org--x/refs/main").read_text() != newer:
            plain_download(root / "hub", commit=newer)  # the drop ended before that write
        assert run(root, b) == 0
        hf("prune", hub=root / "hub")
        assert (root / "hub/models--org--x/snapshots" / newer / "config.json").exists(), race_at
        for _ in range(2):
            assert run(root, manifest({}, profile="devenv:/p")) == 0
            assert run(root, manifest({}, profile="hm")) == 0
        assert (root / "hub/models--org--x/refs/main").read_text() == newer, race_at
        assert [p.name for p in (root / "hub/models--org--x/refs").iterdir()] == ["main"]


def _one_file_model(tmp_path: Path) -> tuple[str, Path]:
    """A store path of one config.json, and the root (``<tmp>/c``) of a cache to test."""
    from conftest import nix_store_add

    src = tmp_path / "model-s"
    src.mkdir()
    (src / "config.json").write_text('{"n": 5}')
    return nix_store_add(src), tmp_path / "c"


@pytest.mark.parametrize("first", ["hm", "root"], ids=["same-state-dir", "other-state-dir"])
def test_an_older_kept_ref_does_not_stop_the_give_back(tmp_path: Path, first: str) -> None:
    """A first profile took the user's refs/main and keeps their revision named; the user
    downloads again (for root, of its own state dir: after deleting root's revision,
    refs/main going with it); devenv takes the new refs/main; the user deletes devenv's
    revision (refs/main goes with it) and devenv drops the model. refs/main must come
    back at the user's newer download, and the first profile's drop then changes nothing
    of the user's. hm (found by the campaign, seed 15 sequence 71): a stale kept ref of
    this state dir, whose records we read, is not a profile of another state dir to
    leave the give-back to. root (seed 23 sequence 43): a kept ref of another state dir
    written before ours holds an older value."""
    from test_activate_faults import run
    from test_activate_faults import user_download as plain_download

    store, root = _one_file_model(tmp_path)
    newer = "1" * 40
    state = "state-root" if first == "root" else "state"
    plain_download(root / "hub")
    assert run(root, manifest({"x": model(store, repo_id="org/x", revision=COMMIT_A)},
                              profile=first), profile_state=state) == 0
    if first == "root":
        delete_revisions(root / "hub", COMMIT_A)
    plain_download(root / "hub", commit=newer)
    dv = manifest({"x": model(store, repo_id="org/x", revision=COMMIT_B)}, profile="devenv:/p")
    assert run(root, dv) == 0
    delete_revisions(root / "hub", COMMIT_B)
    assert not (root / "hub/models--org--x/refs/main").exists()
    assert run(root, manifest({}, profile="devenv:/p")) == 0
    assert (root / "hub/models--org--x/refs/main").read_text() == newer
    assert run(root, manifest({}, profile=first), profile_state=state) == 0
    assert (root / "hub/models--org--x/refs/main").read_text() == newer
    assert [p.name for p in (root / "hub/models--org--x/refs").iterdir()] == ["main"]
