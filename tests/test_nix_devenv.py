"""The devenv module, evaluated inside devenv's real module set
(src/modules/top-level.nix with every language, service and integration module)
with a stub pkgs."""

from __future__ import annotations

import os
import shutil
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
    assert (f"/bin/model-repo activate --manifest {r['manifestFile']} "
            f"--state-dir {r['devenvState']}/model-repo --quiet || modelRepoStatus=$?") in task["exec"]
    assert r["packages"] and task["exec"].startswith(f"modelRepoStatus=0\n{r['packages'][0]}/bin/model-repo")
    status = task["status"]
    # First: was the last complete run's manifest this one (dropping a model reruns it)?
    assert status.startswith('[ "$(/') and f"{r['devenvState']}/model-repo/devenv-task-manifest 2>/dev/null)\" = {r['manifestFile']} ]" in status
    snap = f"{hub}/models--sentence-transformers--all-MiniLM-L6-v2/snapshots/{REV}"
    assert f'/bin/readlink {snap})" = {r["modelPaths"]["all.MiniLM"]} ]' in status
    assert f"{hub}/models--google-bert--bert-base-uncased/refs/main" in status
    assert f"= {REV}x ]" in status  # exact content: a trailing newline would not match
    assert "model-repo" + " activate" not in status and "python" not in status
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
    r = devenv_eval(f"""{{ services.model-repo = {{ enable = true; cacheDir = "./.cache/hf/"; {MODELS} }}; }}""")
    # HF_HOME-like, relative to the project root, trailing slash accepted.
    assert r["hubDir"] == "/home/alice/project/.cache/hf/hub" and r["warnings"] == []
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
    # The task still runs (it prunes what was linked before), with every model unlinked.
    assert "model-repo activate --manifest" in r["task"]["exec"] and r["linkVia"] == "task"
    assert all(not m["link"] for m in r["manifest"]["models"].values())
    assert set(r["env"]) == {"MODEL_REPO_ALL_MINILM", "MODEL_REPO_BERT"}


def test_status_script_runs(tmp_path: Path):
    """The generated status exits 0 exactly when links and refs are in place."""
    model = tmp_path / "model"
    model.mkdir()
    r = devenv_eval(
        f"""{{ services.model-repo = {{ enable = true; cacheDir = {str(tmp_path / 'hf')!r}; models.m = {hf_model()}; }}; }}""".replace("'", '"'),
        root=str(tmp_path / "project"), host_coreutils=True,
    )
    stamp = Path(r["devenvState"]) / "model-repo" / "devenv-task-manifest"
    status = r["task"]["status"]
    path = r["modelPaths"]["m"]

    def run() -> int:
        return subprocess.run(["bash", "-c", status], env={"PATH": os.environ["PATH"]}).returncode

    repo = tmp_path / "hf" / "hub" / "models--sentence-transformers--all-MiniLM-L6-v2"
    assert run() != 0
    stamp.parent.mkdir(parents=True)
    stamp.write_text(r["manifestFile"])
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
    stamp.write_text(r["manifestFile"] + "x")  # another manifest ran last
    assert run() != 0
    stamp.write_text(r["manifestFile"])
    (repo / "refs" / "main").write_text(REV + "\n")
    assert run() != 0
    (repo / "refs" / "main").write_text(REV)
    os.unlink(repo / "snapshots" / REV)
    os.symlink(tmp_path, repo / "snapshots" / REV)
    assert run() != 0


def test_home_manager_spelling_is_an_alias():
    """integration.huggingface.{enable,cacheDir,offlineMode}, as in the Home Manager
    and NixOS modules, set linkToHuggingFace, cacheDir and offlineMode."""
    r = devenv_eval(f"""{{ services.model-repo = {{ enable = true; {MODELS}
      integration.huggingface = {{ cacheDir = "/data/hf"; offlineMode = false; }}; }}; }}""")
    assert r["hubDir"] == "/data/hf/hub" and r["env"]["HF_HUB_CACHE"] == "/data/hf/hub"
    assert "HF_HUB_OFFLINE" not in r["env"] and r["manifest"]["offline"] is False
    r = devenv_eval(f"""{{ services.model-repo = {{ enable = true; {MODELS} integration.huggingface.enable = false; }}; }}""")
    assert set(r["env"]) == {"MODEL_REPO_ALL_MINILM", "MODEL_REPO_BERT"}
    assert all(not m["link"] for m in r["manifest"]["models"].values())


def test_cache_dir_ending_in_hub_warns():
    r = devenv_eval(f"""{{ services.model-repo = {{ enable = true; cacheDir = ".cache/huggingface/hub"; {MODELS} }}; }}""")
    assert r["hubDir"] == "/home/alice/project/.cache/huggingface/hub/hub"
    (w,) = r["warnings"]
    assert 'services.model-repo.cacheDir = "/home/alice/project/.cache/huggingface/hub" ends in "hub"' in w
    assert 'Did you mean its parent, "/home/alice/project/.cache/huggingface"?' in w


def test_install_command_opt_out():
    r = devenv_eval(f"{{ services.model-repo = {{ enable = true; installCommand = false; {MODELS} }}; }}")
    assert r["packages"] == [] and "activate --manifest" in r["task"]["exec"]


def test_disabled_module_task_only_deactivates():
    r = devenv_eval(f"{{ services.model-repo = {{ {MODELS} }}; }}")
    assert r["env"] == {} and r["packages"] == []
    task = r["task"]
    assert "/bin/model-repo deactivate --profile devenv:/home/alice/project --state-dir /home/alice/project/.devenv/state/model-repo --quiet" in task["exec"]
    assert "activate --manifest" not in task["exec"]
    assert task["status"] == ("! ( [ -e /home/alice/project/.devenv/state/model-repo/devenv-task-manifest ] || "
                              "{ set -- /home/alice/project/.devenv/state/model-repo/*.json; [ -e \"$1\" ]; } )\n")


def test_disabled_status_runs_the_task_only_while_state_exists(tmp_path: Path):
    """The disabled task's status, run in bash (and in dash: no bash-only builtins):
    skipped (exit 0) without state, run (non-zero) with a state file or the stamp."""
    root = tmp_path / "my project"
    status = devenv_eval(f"{{ services.model-repo = {{ {MODELS} }}; }}", root=str(root))["task"]["status"]
    state = root / ".devenv" / "state" / "model-repo"

    def run(shell: str) -> int:
        return subprocess.run([shell, "-c", status], env={"PATH": os.environ["PATH"]}).returncode

    shells = ["bash"] + (["dash"] if shutil.which("dash") else [])
    assert all(run(sh) == 0 for sh in shells)
    state.mkdir(parents=True)
    (state / "receipt-1").write_text("")
    assert all(run(sh) == 0 for sh in shells)
    (state / "0123.json").write_text("{}")
    assert all(run(sh) != 0 for sh in shells)
    (state / "0123.json").unlink()
    (state / "devenv-task-manifest").write_text("/nix/store/x")
    assert all(run(sh) != 0 for sh in shells)
