"""Many activators on one cache at once, and the lock's bounded wait."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import COMMIT_A, COMMIT_B, ROOT, assert_serves, manifest, model, tree

from activate.activation import LOCK_NAME


def _cmd(hub: Path, state: Path, manifest_path: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "activate", "activate", "--manifest", str(manifest_path),
            "--cache-dir", str(hub), "--state-dir", str(state), "--format", "json", *extra]


def test_16_concurrent_activators(tmp_path: Path, tiny_bert_store_path: str,
                                  second_store_path: str) -> None:
    hub, state = tmp_path / "hub", tmp_path / "state"
    shared = model(tiny_bert_store_path, repo_id="org/shared", refs=["main"])
    paths = []
    for i in range(16):
        if i < 8:  # eight runs of one profile with one manifest
            data = manifest({"shared": shared}, profile="same")
            name = "same.json"
        else:  # eight profiles, each with the shared model and one of its own
            data = manifest({
                "shared": shared,
                f"own{i}": model(second_store_path, repo_id=f"org/own{i}", revision=COMMIT_B),
            }, profile=f"p{i}")
            name = f"p{i}.json"
        p = tmp_path / name
        p.write_text(json.dumps(data))
        paths.append(p)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    procs = [subprocess.Popen(_cmd(hub, state, p), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, env=env) for p in paths]
    results = [(p.wait(timeout=120), p.stdout.read(), p.stderr.read()) for p in procs]  # type: ignore[union-attr]
    for code, out, err in results:
        assert code == 0, err.decode()
        assert json.loads(out)["MODEL_REPO_SHARED"] == tiny_bert_store_path
    assert_serves(hub / "models--org--shared" / "snapshots" / COMMIT_A, tiny_bert_store_path)
    assert (hub / "models--org--shared" / "refs" / "main").read_text() == COMMIT_A
    for i in range(8, 16):
        repo = hub / f"models--org--own{i}"
        assert_serves(repo / "snapshots" / COMMIT_B, second_store_path)
        assert (repo / "refs" / "main").read_text() == COMMIT_B
    assert not any(n.startswith(".model-repo-tmp") for _, _, fs in os.walk(hub) for n in fs)
    from huggingface_hub import scan_cache_dir

    info = scan_cache_dir(hub)
    assert info.warnings == [] and len(info.repos) == 9
    # Every profile's state agrees with the cache: a second round changes nothing.
    before = tree(hub)
    for p in paths:
        again = subprocess.run(_cmd(hub, state, p), capture_output=True, env=env)
        assert again.returncode == 0
    assert tree(hub) == before
    # Dropping the shared model from one profile keeps it for the others.
    (tmp_path / "p8.json").write_text(json.dumps(manifest({}, profile="p8")))
    assert subprocess.run(_cmd(hub, state, tmp_path / "p8.json"), env=env).returncode == 0
    assert_serves(hub / "models--org--shared" / "snapshots" / COMMIT_A, tiny_bert_store_path)
    assert not (hub / "models--org--own8").exists()


def test_lock_timeout_is_an_environment_error(tmp_path: Path, tiny_bert_store_path: str) -> None:
    import filelock

    hub = tmp_path / "hub"
    (hub / ".locks").mkdir(parents=True)
    m = tmp_path / "m.json"
    m.write_text(json.dumps(manifest({"x": model(tiny_bert_store_path)})))
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    with filelock.FileLock(str(hub / ".locks" / LOCK_NAME)):
        done = subprocess.run(_cmd(hub, tmp_path / "state", m, "--lock-timeout", "0.3"),
                              capture_output=True, text=True, env=env)
    assert done.returncode == 3
    assert "held" in done.stderr and "--lock-timeout" in done.stderr
    assert done.stdout == ""
    assert sorted(os.listdir(hub)) == [".locks"]
