"""The devenv module, evaluated inside devenv's real module set
(src/modules/top-level.nix with every language, service and integration module)
with a stub pkgs."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from nixeval import REV, devenv_eval, hf_model

MODELS = f"""
  models."all.MiniLM" = {hf_model()};
  models.bert = {hf_model("google-bert/bert-base-uncased")};
"""


def test_task_env_and_manifest():
    r = devenv_eval(f"{{ services.model-repo = {{ enable = true; {MODELS} }}; }}")
    hub = "/home/alice/project/.devenv/state/model-repo/hub"
    assert r["devenvState"] == "/home/alice/project/.devenv/state"
    assert r["hubDir"] == hub

    task = r["task"]
    assert task["before"] == ["devenv:enterShell"]
    assert task["exec"].endswith(
        f"/bin/model-repo activate --manifest {r['manifestFile']} "
        f"--state-dir {r['devenvState']}/model-repo --quiet")
    status = task["status"]
    snap = f"{hub}/models--sentence-transformers--all-MiniLM-L6-v2/snapshots/{REV}"
    assert f'/bin/readlink {snap})" = {r["modelPaths"]["all.MiniLM"]} ]' in status
    assert f"{hub}/models--google-bert--bert-base-uncased/refs/main" in status
    assert f"= {REV}x ]" in status  # exact content: a trailing newline would not match
    assert "model-repo activate" not in status and "python" not in status
    assert r["linkVia"] == "task"  # CLI 2.x: the task, not enterShell

    env = r["env"]
    assert env["HF_HUB_CACHE"] == hub
    assert env["HF_HUB_OFFLINE"] == "1" and env["TRANSFORMERS_OFFLINE"] == "1"
    assert env["MODEL_REPO_ALL_MINILM"] == r["modelPaths"]["all.MiniLM"]
    assert env["MODEL_REPO_BERT"] == r["modelPaths"]["bert"]
    assert "HF_HOME" not in env

    m = r["manifest"]
    assert m["profile"] == "devenv:/home/alice/project"
    assert m["cacheDir"] == hub and m["offline"] is True
    assert r["failedAssertions"] == []


def test_relative_cache_dir_resolves_against_root():
    r = devenv_eval(f"""{{ services.model-repo = {{ enable = true; cacheDir = "./.cache/hf/hub"; {MODELS} }}; }}""")
    assert r["hubDir"] == "/home/alice/project/.cache/hf/hub"
    assert r["env"]["HF_HUB_CACHE"] == "/home/alice/project/.cache/hf/hub"
    assert r["manifest"]["cacheDir"] == "/home/alice/project/.cache/hf/hub"
    assert "/home/alice/project/.cache/hf/hub/models--" in r["task"]["status"]


def test_user_env_overrides_module_defaults():
    r = devenv_eval(f"""{{ services.model-repo = {{ enable = true; {MODELS} }}; env.HF_HUB_OFFLINE = "0"; }}""")
    assert r["env"]["HF_HUB_OFFLINE"] == "0"


def test_flakes_integration_falls_back_to_enter_shell():
    for version in (None, "1.11.2"):
        r = devenv_eval(f"{{ services.model-repo = {{ enable = true; {MODELS} }}; }}", cli_version=version)
        assert r["task"] is None, version
        assert r["linkVia"] == "enterShell"
        shell = r["enterShellFallback"]
        assert f"model-repo activate --manifest {r['manifestFile']}" in shell
        assert "readlink" in shell and shell.startswith("if ! {")


def test_link_to_hugging_face_off():
    r = devenv_eval(f"""{{ services.model-repo = {{ enable = true; linkToHuggingFace = false; {MODELS} }}; }}""")
    assert r["task"] is None and r["linkVia"] == "none"
    assert set(r["env"]) == {"MODEL_REPO_ALL_MINILM", "MODEL_REPO_BERT"}


def test_status_script_runs(tmp_path: Path):
    """The generated status exits 0 exactly when links and refs are in place."""
    model = tmp_path / "model"
    model.mkdir()
    r = devenv_eval(
        f"""{{ services.model-repo = {{ enable = true; cacheDir = {str(tmp_path / 'hub')!r}; models.m = {hf_model()}; }}; }}""".replace("'", '"'),
        host_coreutils=True,
    )
    status = r["task"]["status"]
    path = r["modelPaths"]["m"]

    def run() -> int:
        return subprocess.run(["bash", "-c", status], env={"PATH": os.environ["PATH"]}).returncode

    repo = tmp_path / "hub" / "models--sentence-transformers--all-MiniLM-L6-v2"
    assert run() != 0
    (repo / "snapshots").mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(REV)
    os.symlink(path, repo / "snapshots" / REV)
    # The model's store path is a stub here: make the link's target exist.
    if not Path(path).exists():
        os.unlink(repo / "snapshots" / REV)
        os.symlink(model, repo / "snapshots" / REV)
        status = status.replace(path, str(model))
    assert run() == 0
    (repo / "refs" / "main").write_text(REV + "\n")
    assert run() != 0
    (repo / "refs" / "main").write_text(REV)
    os.unlink(repo / "snapshots" / REV)
    os.symlink(tmp_path, repo / "snapshots" / REV)
    assert run() != 0
