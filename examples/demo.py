"""The main job on the bundled example: put examples/tiny-bert in the Nix store, activate
it into a fresh hub cache, then load it offline by repo id with transformers.

Run: bash scripts/demo.sh   (or .venv/bin/python examples/demo.py once set up)
Uses Debian's nix-store when present; otherwise a stand-in store directory, so the demo
also runs where Nix is not installed. Everything but the store path lives in a temporary
folder that is removed at the end.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO_ID = "model-repo-example/tiny-bert"
COMMIT = "7a1e5c0de0000000000000000000000000000001"

LOAD = f"""
import os, torch
from transformers import AutoModel, AutoTokenizer
from huggingface_hub import hf_hub_download, scan_cache_dir
tok = AutoTokenizer.from_pretrained("{REPO_ID}")
model = AutoModel.from_pretrained("{REPO_ID}")
batch = tok(["the cat sat on the mat", "a dog ran"], padding=True, return_tensors="pt")
with torch.no_grad():
    out = model(**batch).last_hidden_state
print("loaded", "{REPO_ID}", "offline:", os.environ["HF_HUB_OFFLINE"])
print("hidden states:", tuple(out.shape))
print("config.json ->", os.path.realpath(hf_hub_download("{REPO_ID}", "config.json")))
info = scan_cache_dir()
for repo in info.repos:
    for rev in repo.revisions:
        print("cache:", repo.repo_id, rev.commit_hash[:12], sorted(rev.refs), "warnings:", len(info.warnings))
"""


def store_path(work: Path) -> tuple[str, str]:
    """(store dir, store path) of the tiny model."""
    nix_store = shutil.which("nix-store")
    if nix_store:
        out = subprocess.run([nix_store, "--add", str(HERE / "tiny-bert")], check=True,
                             capture_output=True, text=True).stdout.strip()
        return os.path.dirname(out), out
    store = work / "store"
    path = store / ("0" * 32 + "-tiny-bert")
    shutil.copytree(HERE / "tiny-bert", path)
    print("(nix-store not found: using a stand-in store at", store, ")")
    return str(store), str(path)


def main() -> int:
    """Run the demo in a temporary folder, removed at the end (also on failure; the
    store path stays, as any ``nix-store --add`` does, until garbage collection)."""
    with tempfile.TemporaryDirectory(prefix="model-repo-demo-") as tmp:
        return run(Path(tmp))


def run(work: Path) -> int:
    """Add, activate and load the example with everything under ``work``; returns the
    exit status. stdout: the steps and their results; stderr: the activator's logs."""
    store_dir, path = store_path(work)
    manifest = {
        "version": 1, "profile": "demo", "cacheDir": str(work / "hub"), "offline": True,
        "storeDir": store_dir,
        "models": {"tiny-bert": {"repoId": REPO_ID, "revision": COMMIT,
                                 "refs": ["main"], "path": path}},
    }
    (work / "manifest.json").write_text(json.dumps(manifest, indent=2))
    args = ["activate", "--manifest", str(work / "manifest.json"), "--state-dir",
            str(work / "state"), "--format", "json", "--verbose"]
    print("$ model-repo", " ".join(args), flush=True)
    done = subprocess.run([sys.executable, "-m", "activate", *args], stdout=subprocess.PIPE,
                          text=True)
    if done.returncode != 0:
        return done.returncode
    env = json.loads(done.stdout)
    print("environment:", json.dumps(env, indent=2), flush=True)
    load = subprocess.run([sys.executable, "-c", LOAD], env={**os.environ, **env},
                          capture_output=True, text=True)
    print(load.stdout, end="", flush=True)
    if load.returncode != 0:
        sys.stderr.write(load.stderr)
        return load.returncode
    return 0


if __name__ == "__main__":
    sys.exit(main())
