"""End to end: each module's manifest, with the fetcher stubbed to return a real
store path, given to the activator; huggingface_hub then finds the model by repo id
offline, in the store path's files."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import assert_serves
from nixeval import REPO, REV, devenv_eval, hf_model, hm_eval, nixos_eval

REPO_ID = "model-repo-test/tiny-bert"
URL = f"https://huggingface.co/{REPO_ID}"


@pytest.fixture(scope="module")
def store_model(tmp_path_factory) -> str:
    if shutil.which("nix-store") is None:
        pytest.skip(reason="nix-store not found: install Debian's nix-bin")
    d = tmp_path_factory.mktemp("model") / "tiny-bert"
    (d / "1_Pooling").mkdir(parents=True)
    (d / "config.json").write_text('{"model_type": "bert", "hidden_size": 8}')
    (d / "1_Pooling" / "config.json").write_text('{"pooling_mode_mean_tokens": true}')
    (d / "vocab.txt").write_text("[PAD]\n[UNK]\nhello\n")
    return subprocess.run(["nix-store", "--add", str(d)], check=True, capture_output=True,
                          text=True).stdout.strip()


def models_nix() -> str:
    return f"models.tiny-bert = {hf_model(REPO_ID)};"


def manifests(store_model: str, tmp_path: Path) -> dict[str, dict]:
    fr = {URL: store_model}
    hm = hm_eval(f"{{ programs.model-repo = {{ enable = true; {models_nix()} }}; }}",
                 fetch_results=fr, real_store_paths=True)
    dv = devenv_eval(
        f"{{ services.model-repo = {{ enable = true; cacheDir = \"{tmp_path}/devenv-hf\"; {models_nix()} }}; }}",
        root=str(tmp_path), fetch_results=fr, real_store_paths=True, host_coreutils=True)
    nx = nixos_eval(f"{{ services.model-repo = {{ enable = true; {models_nix()} }}; }}",
                    fetch_results=fr, real_store_paths=True)
    return {"home-manager": hm, "devenv": dv, "nixos": nx}


def activate(manifest: dict, tmp: Path, hub: Path) -> subprocess.CompletedProcess:
    mf = tmp / "manifest.json"
    mf.write_text(json.dumps(manifest))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "MODEL_REPO_"))}
    return subprocess.run(
        [sys.executable, "-m", "activate", "activate", "--manifest", str(mf),
         "--cache-dir", str(hub), "--state-dir", str(tmp / "state"), "--format", "json"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


def load(hub: Path) -> dict:
    code = f"""
import json, sys
from huggingface_hub import hf_hub_download, snapshot_download, try_to_load_from_cache
c = sys.argv[1]
print(json.dumps({{
  "snapshot": snapshot_download({REPO_ID!r}, local_files_only=True, cache_dir=c),
  "config": hf_hub_download({REPO_ID!r}, "config.json", cache_dir=c),
  "pooling": hf_hub_download({REPO_ID!r}, "1_Pooling/config.json", revision={REV!r}, cache_dir=c),
  "try": try_to_load_from_cache({REPO_ID!r}, "vocab.txt", cache_dir=c),
}}))
"""
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    env.pop("HF_HUB_CACHE", None)
    res = subprocess.run([sys.executable, "-c", code, str(hub)], env=env, check=True,
                         capture_output=True, text=True)
    return json.loads(res.stdout)


@pytest.mark.parametrize("profile", ["home-manager", "devenv", "nixos"])
def test_module_manifest_activates_and_loads(profile, store_model, tmp_path):
    pytest.importorskip("huggingface_hub")
    r = manifests(store_model, tmp_path)[profile]
    manifest = r["manifest"]
    entry = manifest["models"]["tiny-bert"]
    assert entry["path"] == store_model and entry["repoId"] == REPO_ID and entry["link"] is True
    hub = tmp_path / "devenv-hf" / "hub" if profile == "devenv" else tmp_path / "hub"

    if profile == "devenv":
        status = r["task"]["status"]
        assert subprocess.run(["bash", "-c", status]).returncode != 0

    proc = activate(manifest, tmp_path, hub)
    assert proc.returncode == 0, proc.stderr

    repo = hub / f"models--{REPO_ID.replace('/', '--')}"
    assert_serves(repo / "snapshots" / REV, store_model)  # the layout rule's form
    assert (repo / "refs" / "main").read_bytes() == REV.encode()

    paths = load(hub)
    assert Path(paths["snapshot"]) == repo / "snapshots" / REV  # a link or our tree
    assert Path(paths["config"]).read_text() == '{"model_type": "bert", "hidden_size": 8}'
    assert Path(paths["config"]).resolve() == Path(store_model) / "config.json"
    assert Path(paths["pooling"]).resolve() == Path(store_model) / "1_Pooling" / "config.json"
    assert Path(paths["try"]).resolve() == Path(store_model) / "vocab.txt"

    if profile == "devenv":
        # Repeat shell entry: once the manifest is recorded (the task's exec does it
        # after a complete run; tests/test_nix_lifecycle.py runs the exec itself) the
        # generated status says "nothing to do".
        assert subprocess.run(["bash", "-c", r["task"]["status"]]).returncode != 0
        stamp = Path(r["devenvState"]) / "model-repo" / "devenv-task-manifest"
        stamp.parent.mkdir(parents=True, exist_ok=True)
        stamp.write_text(r["manifestFile"])
        assert subprocess.run(["bash", "-c", r["task"]["status"]]).returncode == 0


GGUF_REPO = "model-repo-test/Tiny-GGUF"
GGUF_FILES = ["Q8_0/Tiny-Q8_0-00001-of-00002.gguf", "Q8_0/Tiny-Q8_0-00002-of-00002.gguf",
              "mmproj-F16.gguf"]


@pytest.fixture(scope="module")
def store_gguf(tmp_path_factory) -> str:
    if shutil.which("nix-store") is None:
        pytest.skip(reason="nix-store not found: install Debian's nix-bin")
    d = tmp_path_factory.mktemp("gguf") / "tiny-gguf"
    for p in GGUF_FILES:
        (d / p).parent.mkdir(parents=True, exist_ok=True)
        (d / p).write_bytes(b"GGUF\x03\x00\x00\x00" + p.encode())
    return subprocess.run(["nix-store", "--add", str(d)], check=True, capture_output=True,
                          text=True).stdout.strip()


@pytest.mark.parametrize("profile", ["home-manager", "devenv"])
def test_the_cli_prints_the_modules_file_variable(profile, store_gguf, tmp_path):
    """A GGUF model's module-built manifest carries ``file`` (the model's first part,
    inside its store path), and ``model-repo activate`` on that manifest prints
    ``MODEL_REPO_<NAME>_FILE`` with the value the module's environment has."""
    from nixeval import HASH, nix_value

    model = nix_value({"source": {"huggingface": {
        "repo": f"{GGUF_REPO}:Q8_0", "revision": REV, "files": GGUF_FILES}}, "hash": HASH})
    fr = {f"https://huggingface.co/{GGUF_REPO}": store_gguf}
    if profile == "home-manager":
        r = hm_eval(f"{{ programs.model-repo = {{ enable = true; models.llama = {model}; }}; }}",
                    fetch_results=fr, real_store_paths=True)
        module_env = r["sessionVariables"]
        hub = tmp_path / "hub"
    else:
        r = devenv_eval(
            f"{{ services.model-repo = {{ enable = true; cacheDir = \"{tmp_path}/devenv-hf\"; "
            f"models.llama = {model}; }}; }}",
            root=str(tmp_path), fetch_results=fr, real_store_paths=True, host_coreutils=True)
        module_env = r["env"]
        hub = tmp_path / "devenv-hf" / "hub"
    entry = r["manifest"]["models"]["llama"]
    assert entry["path"] == store_gguf and entry["file"] == GGUF_FILES[0]
    proc = activate(r["manifest"], tmp_path, hub)
    assert proc.returncode == 0, proc.stderr
    env = json.loads(proc.stdout)
    want = f"{store_gguf}/{GGUF_FILES[0]}"
    assert env["MODEL_REPO_LLAMA_FILE"] == module_env["MODEL_REPO_LLAMA_FILE"] == want
    assert env["MODEL_REPO_LLAMA"] == module_env["MODEL_REPO_LLAMA"] == store_gguf
