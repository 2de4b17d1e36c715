"""Linking behaviour on real store paths: layout, idempotence, pruning, other people's data."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import (COMMIT_A, COMMIT_B, TINY_BERT_REPO, WholeStore, Workspace, manifest, model,
                      shape, tree)

from activate import hubfs

REPO = "models--model-repo-example--tiny-bert"


def test_layout_is_flat_snapshot_link(ws: Workspace, tiny_bert_store_path: str,
                                      whole_store: WholeStore) -> None:
    """On a store mounted read-only (NixOS) a whole model's snapshot is one link."""
    tiny_bert_store_path = whole_store.path(tiny_bert_store_path)
    res = ws.activate(whole_store.manifest({"tiny-bert": model(tiny_bert_store_path,
                                                               refs=["main", "v1"])}))
    assert res.code == 0, res.stderr
    repo = ws.hub / REPO
    assert repo.is_dir() and not repo.is_symlink()
    assert os.readlink(repo / "snapshots" / COMMIT_A) == tiny_bert_store_path
    for ref in ("main", "v1"):
        assert (repo / "refs" / ref).read_bytes() == COMMIT_A.encode()  # no newline
    # Nothing else in the hub dir but huggingface_hub's own .locks.
    assert sorted(p.name for p in ws.hub.iterdir()) == [".locks", REPO]
    assert sorted(p.name for p in repo.iterdir()) == ["refs", "snapshots"]
    env = res.env()
    assert env == {
        "HF_DATASETS_OFFLINE": "1",
        "HF_HUB_CACHE": str(ws.hub),
        "HF_HUB_OFFLINE": "1",
        "MODEL_REPO_TINY_BERT": tiny_bert_store_path,
        "TRANSFORMERS_OFFLINE": "1",
    }


def test_the_layout_rule_links_a_store_not_mounted_read_only_file_by_file(
        ws: Workspace, tiny_bert_store_path: str) -> None:
    """The layout rule (activate.tree.file_by_file): a whole model's snapshot is a link
    only into a store mounted read-only; into any other (writable by root, or by the
    user of a single-user Nix) it is a real directory of per-file links, as for a
    partial model, so no cache tool can reach a store file through it."""
    from activate.tree import BLOB_PREFIX, file_by_file, store_files

    res = ws.activate(manifest({"tiny-bert": model(tiny_bert_store_path)}))
    assert res.code == 0, res.stderr
    snap = ws.hub / REPO / "snapshots" / COMMIT_A
    read_only = bool(os.statvfs(tiny_bert_store_path).f_flag & os.ST_RDONLY)
    assert file_by_file(tiny_bert_store_path) is not read_only
    if read_only:
        assert os.readlink(snap) == tiny_bert_store_path
        return
    assert snap.is_dir() and not snap.is_symlink()
    files = store_files(tiny_bert_store_path)
    assert files and sorted(str(p.relative_to(snap)) for p in snap.rglob("*")
                            if not p.is_dir()) == sorted(files)
    for f in files:
        link = snap / f
        assert link.is_symlink() and os.readlink(link).startswith("../../blobs/" + BLOB_PREFIX)
        assert os.path.realpath(link) == os.path.join(tiny_bert_store_path, f)


def test_huggingface_hub_resolves_by_repo_id_ref_and_commit(ws: Workspace, tiny_bert_store_path: str) -> None:
    from huggingface_hub import scan_cache_dir, try_to_load_from_cache

    assert ws.activate(manifest({"tiny-bert": model(tiny_bert_store_path, refs=["main", "v1"])})).code == 0
    for revision in (None, "v1", COMMIT_A):
        got = try_to_load_from_cache(TINY_BERT_REPO, "config.json", cache_dir=ws.hub, revision=revision)
        assert isinstance(got, str) and os.path.realpath(got) == f"{tiny_bert_store_path}/config.json"
    info = scan_cache_dir(ws.hub)
    assert info.warnings == []
    (repo,) = info.repos
    (rev,) = repo.revisions
    assert (repo.repo_id, rev.commit_hash, set(rev.refs)) == (TINY_BERT_REPO, COMMIT_A, {"main", "v1"})


def test_repeat_run_writes_nothing_and_prints_same_env(ws: Workspace, tiny_bert_store_path: str) -> None:
    data = manifest({"tiny-bert": model(tiny_bert_store_path)})
    first = ws.activate(data, fmt="sh")
    path = ws.root / "manifest.json"
    before_hub, before_state = tree(ws.hub), tree(ws.state)
    for extra in ((), ("--verbose",)):  # the no-op path, then the full path
        again = ws.run("activate", "--manifest", str(path), "--cache-dir", str(ws.hub),
                       "--state-dir", str(ws.state), "--format", "sh", *extra)
        assert again.code == 0
        assert again.stdout == first.stdout
        assert tree(ws.hub) == before_hub
        assert tree(ws.state) == before_state


def test_dropped_model_is_pruned_and_empty_dirs_removed(ws: Workspace, tiny_bert_store_path: str,
                                                        second_store_path: str,
                                                        whole_store: WholeStore) -> None:
    tiny_bert_store_path = whole_store.path(tiny_bert_store_path)
    second_store_path = whole_store.path(second_store_path)
    manifest = whole_store.manifest
    both = manifest({
        "tiny-bert": model(tiny_bert_store_path),
        "second": model(second_store_path, repo_id="org/second", revision=COMMIT_B),
    })
    assert ws.activate(both).code == 0
    assert (ws.hub / "models--org--second" / "snapshots" / COMMIT_B).is_symlink()
    res = ws.activate(manifest({"tiny-bert": model(tiny_bert_store_path)}))
    assert res.code == 0
    assert not (ws.hub / "models--org--second").exists()
    assert "MODEL_REPO_SECOND" not in res.env()
    assert (ws.hub / REPO / "snapshots" / COMMIT_A).is_symlink()
    # And an empty manifest removes everything we made, keeping the hub dir.
    assert ws.activate(manifest({})).code == 0
    assert sorted(p.name for p in ws.hub.iterdir()) == [".locks"]


def test_revision_update_moves_ref_after_new_snapshot(ws: Workspace, tiny_bert_store_path: str) -> None:
    assert ws.activate(manifest({"m": model(tiny_bert_store_path)})).code == 0
    assert ws.activate(manifest({"m": model(tiny_bert_store_path, revision=COMMIT_B)})).code == 0
    repo = ws.hub / REPO
    assert (repo / "refs" / "main").read_text() == COMMIT_B
    assert sorted(p.name for p in (repo / "snapshots").iterdir()) == [COMMIT_B]


def test_users_own_download_stays_usable_and_ref_is_restored(ws: Workspace, tiny_bert_store_path: str) -> None:
    """A user's real snapshot of another commit: we take refs/main, give it back on prune."""
    user_commit = "c" * 40
    repo = ws.hub / REPO
    (repo / "snapshots" / user_commit).mkdir(parents=True)
    (repo / "snapshots" / user_commit / "config.json").write_text("{}")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(user_commit)
    (repo / "blobs").mkdir()
    assert ws.activate(manifest({"m": model(tiny_bert_store_path)})).code == 0
    assert (repo / "refs" / "main").read_text() == COMMIT_A
    assert (repo / "snapshots" / user_commit / "config.json").read_text() == "{}"
    assert ws.activate(manifest({})).code == 0
    assert (repo / "refs" / "main").read_text() == user_commit
    assert sorted(p.name for p in (repo / "snapshots").iterdir()) == [user_commit]
    assert (repo / "blobs").is_dir()


def test_real_snapshot_dir_for_same_commit_serves_only_when_complete(
        ws: Workspace, tiny_bert_store_path: str) -> None:
    """A user's own snapshot folder at the pinned commit is never changed; it satisfies
    the model only when it serves every file of the store path (issue 13, finding 7: a
    download of only config.json gave exit 0 and the offline variables, and
    from_pretrained then failed offline)."""
    snap = ws.hub / REPO / "snapshots" / COMMIT_A
    snap.mkdir(parents=True)
    (snap / "config.json").write_text("{}")
    before = shape(ws.hub)
    res = ws.activate(manifest({"m": model(tiny_bert_store_path)}))
    assert res.code == 1, res.stderr
    assert str(snap) in res.stderr and "model-repo does not change it" in res.stderr
    assert "HF_HUB_OFFLINE" not in res.env()
    assert {k: v for k, v in shape(ws.hub).items() if k in before} == before
    assert not (ws.hub / REPO / "refs" / "main").exists()  # no ref names a broken snapshot
    # Complete (every file of the store path, as the user's own files): it serves.
    for f in sorted(Path(tiny_bert_store_path).rglob("*")):
        rel = f.relative_to(tiny_bert_store_path)
        if f.is_dir():
            (snap / rel).mkdir(exist_ok=True)
        else:
            (snap / rel).write_bytes(b"user's copy")
    res = ws.activate(manifest({"m": model(tiny_bert_store_path)}))
    assert res.code == 0, res.stderr
    assert res.env()["HF_HUB_OFFLINE"] == "1"
    assert snap.is_dir() and not snap.is_symlink()
    assert (snap / "config.json").read_text() == "user's copy"
    assert (ws.hub / REPO / "refs" / "main").read_text() == COMMIT_A
    assert ws.activate(manifest({})).code == 0
    assert (snap / "config.json").read_text() == "user's copy"
    assert not (ws.hub / REPO / "refs" / "main").exists()


@pytest.mark.parametrize("kind", ["file", "foreign-link", "dir-for-ref"])
def test_path_in_the_way_blocks_only_that_model(ws: Workspace, tiny_bert_store_path: str,
                                                second_store_path: str, kind: str) -> None:
    repo = ws.hub / REPO
    if kind == "file":
        (repo / "snapshots").mkdir(parents=True)
        (repo / "snapshots" / COMMIT_A).write_text("mine")
        blocker = repo / "snapshots" / COMMIT_A
    elif kind == "foreign-link":
        (repo / "snapshots").mkdir(parents=True)
        os.symlink("/somewhere/else", repo / "snapshots" / COMMIT_A)
        blocker = repo / "snapshots" / COMMIT_A
    else:
        (repo / "refs" / "main").mkdir(parents=True)
        blocker = repo / "refs" / "main"
    before = tree(ws.hub)
    res = ws.activate(manifest({
        "tiny-bert": model(tiny_bert_store_path),
        "second": model(second_store_path, repo_id="org/second", revision=COMMIT_B),
    }))
    assert res.code == 1  # partial
    assert str(blocker) in res.stderr and "fix:" in res.stderr
    env = res.env()
    assert "HF_HUB_OFFLINE" not in env and "TRANSFORMERS_OFFLINE" not in env
    assert env["MODEL_REPO_SECOND"] == second_store_path
    assert (ws.hub / "models--org--second" / "refs" / "main").read_text() == COMMIT_B
    after = tree(ws.hub)
    for rel, what in before.items():
        if rel.startswith(REPO) and what[0] != "dir":
            assert after[rel] == what  # the blocker and its siblings are untouched


def test_planted_symlink_repo_folder_is_not_followed(ws: Workspace, tiny_bert_store_path: str,
                                                     tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    ws.hub.mkdir()
    os.symlink(outside, ws.hub / REPO)
    res = ws.activate(manifest({"m": model(tiny_bert_store_path)}))
    assert res.code == 1
    assert list(outside.iterdir()) == []
    assert "symlink" in res.stderr


def test_planted_symlink_snapshots_dir_is_not_followed(ws: Workspace, tiny_bert_store_path: str,
                                                       tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (ws.hub / REPO).mkdir(parents=True)
    os.symlink(outside, ws.hub / REPO / "snapshots")
    res = ws.activate(manifest({"m": model(tiny_bert_store_path)}))
    assert res.code == 1
    assert list(outside.iterdir()) == []


def test_symlink_swapped_in_after_activation_is_not_followed_on_prune(
        ws: Workspace, tiny_bert_store_path: str, tmp_path: Path) -> None:
    assert ws.activate(manifest({"m": model(tiny_bert_store_path)})).code == 0
    outside = tmp_path / "outside"
    (outside / "refs").mkdir(parents=True)
    (outside / "refs" / "main").write_text(COMMIT_A)
    (outside / "snapshots").mkdir()
    os.symlink(tiny_bert_store_path, outside / "snapshots" / COMMIT_A)
    os.rename(ws.hub / REPO, tmp_path / "moved")
    os.symlink(outside, ws.hub / REPO)
    before = tree(outside)
    res = ws.activate(manifest({}))
    assert res.code == 1
    assert tree(outside) == before


def test_nested_ref_names(ws: Workspace, tiny_bert_store_path: str) -> None:
    from huggingface_hub import try_to_load_from_cache

    assert ws.activate(manifest({"m": model(tiny_bert_store_path, refs=["main", "refs/pr/1"])})).code == 0
    assert (ws.hub / REPO / "refs" / "refs" / "pr" / "1").read_text() == COMMIT_A
    got = try_to_load_from_cache(TINY_BERT_REPO, "config.json", cache_dir=ws.hub, revision="refs/pr/1")
    assert isinstance(got, str)
    assert ws.activate(manifest({})).code == 0
    assert sorted(p.name for p in ws.hub.iterdir()) == [".locks"]


def test_dangling_link_is_reported_with_restore_hint(ws: Workspace, tmp_path: Path) -> None:
    store = tmp_path / "store"
    path = store / ("0" * 32 + "-gone-model")
    path.mkdir(parents=True)
    data = manifest({"gone": model(str(path))}, store_dir=str(store))
    assert ws.activate(data).code == 0
    path.rmdir()  # "garbage-collected"
    res = ws.activate(data)
    assert res.code == 1
    assert "missing" in res.stderr and "nix-store --realise" in res.stderr
    assert "HF_HUB_OFFLINE" not in res.env()
    status = ws.run("status", "--json", "--state-dir", str(ws.state))
    (prof,) = json.loads(status.stdout)
    assert any(e["status"] == "dangling" for e in prof["entries"])
    # No longer wanted: our dangling link is removed.
    assert ws.activate(manifest({}, store_dir=str(store))).code == 0
    assert not (ws.hub / REPO).exists()


def test_link_false_gives_variable_only(ws: Workspace, tiny_bert_store_path: str) -> None:
    res = ws.activate(manifest({"m": model(tiny_bert_store_path, link=False)}))
    assert res.code == 0
    assert res.env()["MODEL_REPO_M"] == tiny_bert_store_path
    assert not (ws.hub / REPO).exists()


def test_two_profiles_share_a_link_and_each_keeps_it(ws: Workspace, tiny_bert_store_path: str,
                                                     whole_store: WholeStore) -> None:
    tiny_bert_store_path = whole_store.path(tiny_bert_store_path)
    manifest = whole_store.manifest
    data = manifest({"m": model(tiny_bert_store_path)})
    assert ws.activate(dict(data, profile="home-manager"), name="hm.json").code == 0
    assert ws.activate(dict(data, profile="devenv:/p"), name="dv.json").code == 0
    # home-manager drops it; devenv still wants it: the link stays.
    res = ws.activate(manifest({}, profile="home-manager"), name="hm.json")
    assert res.code == 0
    assert (ws.hub / REPO / "snapshots" / COMMIT_A).is_symlink()
    assert (ws.hub / REPO / "refs" / "main").read_text() == COMMIT_A


def test_leftover_temporary_names_are_removed(ws: Workspace, tiny_bert_store_path: str) -> None:
    data = manifest({"m": model(tiny_bert_store_path)})
    assert ws.activate(data).code == 0
    leftover = ws.hub / REPO / f"{hubfs.TEMP_PREFIX}123-abc"
    os.symlink(tiny_bert_store_path, leftover)
    assert ws.activate(data, "--verbose").code == 0
    assert not os.path.lexists(leftover)


def test_a_stopped_runs_private_folder_is_removed_and_a_run_leaves_none(
        ws: Workspace, tiny_bert_store_path: str, second_store_path: str) -> None:
    """Temporary names live in one private folder per run in ``.locks/``: a run removes
    its own when done, and the next run removes one a stopped run left (with what is in
    it, never followed); a plain file under the prefix there is not a folder we made."""
    assert ws.activate(manifest({"m": model(tiny_bert_store_path)})).code == 0
    locks = ws.hub / ".locks"
    assert not [n for n in os.listdir(locks) if n.startswith(hubfs.TEMP_PREFIX)]
    stopped = locks / f"{hubfs.TEMP_PREFIX}123-abc-1"
    stopped.mkdir(mode=0o700)
    os.symlink(tiny_bert_store_path, stopped / f"{hubfs.TEMP_PREFIX}123-abc-2")
    (stopped / f"{hubfs.TEMP_PREFIX}123-abc-3").write_text("half a ref")
    not_ours = locks / f"{hubfs.TEMP_PREFIX}file"
    not_ours.write_text("someone's")
    res = ws.activate(manifest({"m": model(second_store_path, revision=COMMIT_B)}), "--verbose")
    assert res.code == 0, res.stderr
    assert f"removing leftover {stopped}" in res.stderr
    assert not os.path.lexists(stopped)
    assert os.path.isdir(tiny_bert_store_path)  # the link in it was not followed
    assert not_ours.read_text() == "someone's"
    assert sorted(n for n in os.listdir(locks) if n.startswith(hubfs.TEMP_PREFIX)) == [
        not_ours.name]


def test_deactivate_removes_profile_links(ws: Workspace, tiny_bert_store_path: str) -> None:
    assert ws.activate(manifest({"m": model(tiny_bert_store_path)}, profile="nixos")).code == 0
    res = ws.run("deactivate", "--profile", "nixos", "--state-dir", str(ws.state))
    assert res.code == 0, res.stderr
    assert sorted(p.name for p in ws.hub.iterdir()) == [".locks"]
    assert list(ws.state.iterdir()) == []


def test_dry_run_writes_nothing(ws: Workspace, tiny_bert_store_path: str) -> None:
    from activate.tree import file_by_file

    res = ws.activate(manifest({"m": model(tiny_bert_store_path)}), "--dry-run")
    assert res.code == 0
    # The layout rule's form: per-file links (a tree) or one whole link.
    assert ("would tree" if file_by_file(tiny_bert_store_path) else "would link") in res.stderr
    assert not ws.hub.exists() and not ws.state.exists()


def test_the_state_index_never_hides_a_changed_state(ws: Workspace, tiny_bert_store_path: str,
                                                     second_store_path: str) -> None:
    """Runs find the other profiles that touch their repo folders through the state
    dir's index (a cache checked by stat): a state saved after the index was written is
    read again, so a profile dropping a link another profile has since come to want
    keeps it. `env` writes no index."""
    from activate.state import INDEX_NAME

    y = model(second_store_path, repo_id="org/y", revision=COMMIT_B)
    x = model(tiny_bert_store_path)
    assert ws.activate(manifest({"y": y}, profile="b"), name="b.json").code == 0
    assert ws.activate(manifest({"x": x}, profile="a"), name="a.json").code == 0
    assert (ws.state / INDEX_NAME).is_file()  # b's state is indexed: folder org--y only
    assert ws.activate(manifest({"y": y, "x": x}, profile="b"), name="b.json").code == 0
    assert ws.activate(manifest({}, profile="a"), name="a.json").code == 0
    assert (ws.hub / REPO / "snapshots" / COMMIT_A).exists()  # b wants it: kept
    assert (ws.hub / REPO / "refs" / "main").read_text() == COMMIT_A
    assert ws.run("status", "--state-dir", str(ws.state), "--profile", "b").code == 0
    fresh = ws.root / "other-state"
    path = ws.write_manifest(manifest({"x": x}, profile="c"), "c.json")
    res = ws.run("env", "--manifest", str(path), "--cache-dir", str(ws.hub),
                 "--state-dir", str(fresh))
    assert res.code == 0, res.stderr
    assert not (fresh / INDEX_NAME).exists()


def test_two_partial_snapshots_of_one_store_path_share_blob_links(ws: Workspace,
                                                                   tiny_bert_store_path: str) -> None:
    """Two commits of one repo linked file by file to the same store path: their blob
    links (named after store path and file) are one set. Both link in one run (one mkdir
    of blobs/), dropping one leaves the other readable, dropping both leaves nothing."""
    a = model(tiny_bert_store_path, revision=COMMIT_A, partial=True)
    b = model(tiny_bert_store_path, revision=COMMIT_B, partial=True, refs=["v2"])
    res = ws.activate(manifest({"a": a, "b": b}))
    assert res.code == 0, res.stderr
    assert ws.activate(manifest({"b": b})).code == 0
    snap_b = ws.hub / REPO / "snapshots" / COMMIT_B
    assert (snap_b / "config.json").read_bytes() == \
        (Path(tiny_bert_store_path) / "config.json").read_bytes()
    assert ws.run("status", "--state-dir", str(ws.state)).code == 0
    assert ws.activate(manifest({})).code == 0
    assert not (ws.hub / REPO).exists()


def test_stamping_refs_holds_one_repo_folders_descriptors_at_a_time(tmp_path: Path) -> None:
    """After the writes, the stamps of the refs are read with the descriptors of one repo
    folder at a time (as the planner and apply do): under a low open-files limit (a
    NixOS service's default is 1024; here 64 for 150 repo folders) every ref of a
    version-2 state (no stamp yet) gets its stamp, none is left without one by EMFILE."""
    import subprocess
    import sys

    hub = tmp_path / "hub"
    for i in range(150):
        refs = hub / f"models--org--m{i}" / "refs"
        refs.mkdir(parents=True)
        (refs / "main").write_text(COMMIT_A)
    code = r"""
import resource, sys
from activate.hubfs import HubFS
from activate.linking import stamp_refs
from activate.state import Record
resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
recs = [Record(f"models--org--m{i}/refs/main", "ref", "a" * 40, created=True) for i in range(150)]
out = stamp_refs(HubFS(sys.argv[1]), recs, set())
print(sum(1 for r in out if r.stamp))
"""
    res = subprocess.run([sys.executable, "-c", code, str(hub)], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parent.parent)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "150", res.stdout
