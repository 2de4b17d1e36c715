"""Crash safety: stop the activator at every write step in turn (cache and state), check
the cache is valid at that instant, re-run, and compare with an uninterrupted run."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import COMMIT_A, COMMIT_B, manifest, model, shape

from activate import activation, hubfs
from activate.activation import request_of, run_activate
from activate.log import Log
from activate.manifest import validate_manifest

USER_COMMIT = "c" * 40
COMMIT_D = "d" * 40


class Stop(BaseException):
    """Stands for a kill: not an OSError, so nothing in the activator handles it."""


def _setup_user_download(hub: Path) -> None:
    repo = hub / "models--org--x"
    (repo / "snapshots" / USER_COMMIT).mkdir(parents=True)
    (repo / "snapshots" / USER_COMMIT / "config.json").write_text("{}")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(USER_COMMIT)


def _manifests(a: str, b: str) -> tuple[dict, dict]:
    first = manifest({
        "x": model(a, repo_id="org/x", revision=COMMIT_A, refs=["main", "v1"]),
        "y": model(a, repo_id="org/y", revision=COMMIT_A, refs=["main", "refs/pr/1"]),
        "w": model(b, repo_id="org/w", revision=COMMIT_B),
    })
    second = manifest({
        "x": model(a, repo_id="org/x", revision=COMMIT_B, refs=["main"]),
        "w": model(a, repo_id="org/w", revision=COMMIT_B),  # same commit, new store path
        "z": model(b, repo_id="org/z", revision=COMMIT_D, refs=["main", "stable"]),
    })
    return first, second


def _run(root: Path, data: dict, fault_at: int | None = None) -> int:
    """Activate ``data``; raise Stop before write number ``fault_at``. Returns writes."""
    count = [0]

    def before(_what: str) -> None:
        if fault_at is not None and count[0] == fault_at:
            raise Stop
        count[0] += 1

    original_save = activation._save_state

    def save(p: str, st: object) -> None:
        before("state")
        original_save(p, st)  # type: ignore[arg-type]

    activation._save_state = save  # type: ignore[assignment]
    try:
        run_activate(
            request_of(validate_manifest(data)), hub_dir=str(root / "hub"), explicit_hub=True,
            state_dir=str(root / "state"),
            log=Log("error"), before_write=before,
        )
    finally:
        activation._save_state = original_save  # type: ignore[assignment]
    return count[0]


def _invariants(hub: Path) -> None:
    """Every ref names an existing snapshot; no temporary name where huggingface_hub reads."""
    for repo in hub.iterdir():
        if repo.name == ".locks":
            continue
        snapshots = repo / "snapshots"
        for dirpath, _dirs, files in os.walk(repo / "refs"):
            for f in files:
                assert not f.startswith(hubfs.TEMP_PREFIX), f"temporary name in refs: {f}"
                commit = (Path(dirpath) / f).read_text()
                assert os.path.lexists(snapshots / commit), f"{repo.name} ref {f} -> missing {commit}"
        if snapshots.is_dir():
            for s in snapshots.iterdir():
                assert not s.name.startswith(hubfs.TEMP_PREFIX)


def test_fault_at_every_write_step(tmp_path: Path, tiny_bert_store_path: str,
                                   second_store_path: str) -> None:
    first, second = _manifests(tiny_bert_store_path, second_store_path)
    clean = tmp_path / "clean"
    clean.mkdir()
    _setup_user_download(clean / "hub")
    _run(clean, first)
    steps = _run(clean, second)
    expected = shape(clean / "hub")
    _run(clean, manifest({}))
    expected_empty = shape(clean / "hub")
    assert steps >= 15, steps  # the transition really exercises many writes
    assert expected_empty == {
        "models--org--x": "dir", "models--org--x/refs": "dir",
        "models--org--x/refs/main": f"file:{USER_COMMIT}",
        "models--org--x/snapshots": "dir", f"models--org--x/snapshots/{USER_COMMIT}": "dir",
        f"models--org--x/snapshots/{USER_COMMIT}/config.json": "file:{}",
    }
    for fault_at in range(steps):
        root = tmp_path / f"f{fault_at}"
        root.mkdir()
        _setup_user_download(root / "hub")
        _run(root, first)
        with pytest.raises(Stop):
            _run(root, second, fault_at=fault_at)
        _invariants(root / "hub")
        _run(root, second)
        _invariants(root / "hub")
        assert shape(root / "hub") == expected, f"after a stop at write {fault_at}"
        _run(root, manifest({}))
        assert shape(root / "hub") == expected_empty, f"prune after a stop at write {fault_at}"


def test_fault_during_first_activation_then_removal(tmp_path: Path, tiny_bert_store_path: str) -> None:
    data = manifest({"x": model(tiny_bert_store_path, repo_id="org/x", refs=["main", "v1"])})
    probe = tmp_path / "probe"
    probe.mkdir()
    steps = _run(probe, data)
    for fault_at in range(steps):
        root = tmp_path / f"f{fault_at}"
        root.mkdir()
        with pytest.raises(Stop):
            _run(root, data, fault_at=fault_at)
        _invariants(root / "hub")
        # Whatever was half made is ours: dropping the model leaves an empty hub dir.
        _run(root, manifest({}))
        assert shape(root / "hub") == {}, f"leftovers after a stop at write {fault_at}"
