"""A real ``nix-build`` of a Hub model pinned per file, from the mock Hub on loopback.

The chain, all real: mock Hub (tests/mockhub.py) -> ``model-repo prefetch --per-file``
(or ``model-repo lock``) -> ``lib.fetchModel`` evaluated with a stub ``pkgs.fetchurl``
that maps to Nix's builtin fetcher (``import <nix/fetchurl.nix>``: Debian's Nix 2.8
builds it against ``http://127.0.0.1:PORT``) and the suite's ``linkFarm`` over
``/bin/sh`` -> ``nix-build --option substituters ""`` -> the activator links the result
-> transformers loads it by repo id offline, by path, and safetensors maps it.

Every test uses fresh file contents (a random BERT, a nonce in config.json and
vocab.txt), so no store path exists before it and the mock's request counts are exact:

- a build downloads each file once; a revision bump that changes one file downloads
  that file only; a second model sharing a file shares its store path and downloads
  nothing of it;
- a build that fails on one file (bytes that do not match its hash) keeps the others,
  and the next build fetches only that one (resume at file granularity);
- the snapshot directory is links: its own size is a few hundred bytes, whatever the
  model's size.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from conftest import Workspace, assert_serves, manifest, model
from mockhub import MockHub
from nixeval import lib_expr, missing_input, nix_string, nix_value

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "examples" / "tiny-bert"


def need_nix_build() -> None:
    for tool in ("nix-build", "nix-store", "nix-instantiate"):
        if shutil.which(tool) is None:
            missing_input(f"{tool} not found: install Debian's nix-bin "
                          "(apt-get install -y nix-bin)")


def tiny_model(nonce: str) -> dict[str, bytes]:
    """A random tiny BERT with its tokenizer files; every file's bytes hold ``nonce``
    (or random weights), so its store paths are new."""
    transformers = pytest.importorskip("transformers", reason="pip install transformers "
                                       "torch (test extra)")
    import tempfile

    vocab = (TINY / "vocab.txt").read_text().splitlines() + [f"nonce{nonce}"]
    cfg = transformers.BertConfig(vocab_size=len(vocab), hidden_size=8, num_hidden_layers=1,
                                  num_attention_heads=2, intermediate_size=16,
                                  max_position_embeddings=32)
    cfg.model_repo_nonce = nonce
    with tempfile.TemporaryDirectory() as d:
        transformers.BertModel(cfg).save_pretrained(d, safe_serialization=True)
        files = {p: (Path(d) / p).read_bytes() for p in ("config.json", "model.safetensors")}
    files["vocab.txt"] = ("\n".join(vocab) + "\n").encode()
    files["tokenizer_config.json"] = json.dumps(
        {"do_lower_case": True, "tokenizer_class": "BertTokenizer",
         "model_max_length": 32, "model_repo_nonce": nonce}).encode()
    return files


def cli(hub: MockHub, tmp: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("HF_", "HUGGING_FACE_", "TRANSFORMERS_"))}
    env.update(HF_HOME=str(tmp / "hf-home"), TMPDIR=str(tmp), HF_HUB_DISABLE_TELEMETRY="1",
               XDG_CACHE_HOME=str(tmp / "cache"), PYTHONPATH=str(ROOT), HF_ENDPOINT=hub.url)
    return subprocess.run([sys.executable, "-m", "activate", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def pin(hub: MockHub, tmp: Path, repo: str) -> dict:
    proc = cli(hub, tmp, "prefetch", repo, "--per-file", "--json", "-q")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


PKGS = """
  base = import ./tests/nix/stubs/pkgs.nix { inherit lib; };
  # nixpkgs' fetchurl stands in for Nix's builtin fetcher (no curl, no stdenv): same
  # url, name and flat hash, so the same fixed-output path.
  pkgs = base // {
    fetchurl = args: import <nix/fetchurl.nix> { inherit (args) url name hash; };
  };
"""


def model_expr(name: str, doc: dict, hub: MockHub) -> str:
    hf = {"repo": doc["repo"], "revision": doc["revision"], "endpoint": hub.url,
          "fileHashes": {f["path"]: f["hash"] for f in doc["files"]}}
    return f"(mr.fetchModel pkgs {nix_value({'name': name, 'source': {'huggingface': hf}})})"


def build(body: str, *extra: str) -> subprocess.CompletedProcess:
    expr = f"let lib = {lib_expr()}; mr = import ./lib {{ inherit lib; }}; {PKGS} in {body}"
    return subprocess.run(["nix-build", "--no-out-link", "--option", "substituters", "",
                           *extra, "-E", expr], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)


def downloads(hub: MockHub) -> list[str]:
    """Files whose bytes the mock served since the last clear: non-LFS files by their
    resolve path, LFS files by their CDN request (``?name=<path>``)."""
    out = []
    for r in hub.requests:
        if r["method"] != "GET":
            continue
        if r["server"] == "cdn":
            out.append("cdn:" + r["path"].split("?name=", 1)[1])
        elif "/resolve/" in r["path"]:
            out.append(r["path"])
    return out


def resolved_paths(hub: MockHub) -> list[str]:
    return sorted(p.split("/resolve/", 1)[1].split("/", 1)[1] for p in downloads(hub)
                  if not p.startswith("cdn:"))


def cdn_paths(hub: MockHub) -> list[str]:
    return sorted(p[4:] for p in downloads(hub) if p.startswith("cdn:"))


LOAD = r"""
import json, os, sys
from transformers import AutoConfig, AutoModel, AutoTokenizer
from safetensors import safe_open
repo, cache, path, nonce = sys.argv[1:5]
cfg = AutoConfig.from_pretrained(repo, cache_dir=cache)
m = AutoModel.from_pretrained(repo, cache_dir=cache)
tok = AutoTokenizer.from_pretrained(repo, cache_dir=cache)
by_path = AutoModel.from_pretrained(path)
with safe_open(os.path.join(path, "model.safetensors"), "pt") as f:  # mmap
    names = list(f.keys())
    t = f.get_tensor(names[0])
print(json.dumps({"nonce": cfg.model_repo_nonce, "vocab": ("nonce" + nonce) in tok.get_vocab(),
                  "same": all((a == b).all().item() for a, b in zip(m.state_dict().values(),
                                                                by_path.state_dict().values())),
                  "tensors": len(names), "shape": list(t.shape)}))
"""


@pytest.fixture
def hub():
    with MockHub(page_size=50) as h:
        yield h


def test_per_file_build_links_and_loads_offline(hub: MockHub, tmp_path: Path, ws: Workspace):
    need_nix_build()
    nonce = uuid.uuid4().hex[:12]
    files = tiny_model(nonce)
    repo = f"model-repo-test/tiny-{nonce}"
    commit = hub.add_repo(repo, files)
    doc = pin(hub, tmp_path, repo)
    assert doc["revision"] == commit
    hub.requests.clear()

    p = build(model_expr("tiny", doc, hub))
    assert p.returncode == 0, p.stderr
    out = Path(p.stdout.strip())
    # One download per file, no more: small files from the Hub, the LFS file from the CDN.
    assert resolved_paths(hub) == sorted(["config.json", "model.safetensors",
                                          "tokenizer_config.json", "vocab.txt"])
    assert cdn_paths(hub) == ["model.safetensors"]
    assert sorted(os.listdir(out)) == sorted(files)
    for name, data in files.items():
        target = os.readlink(out / name)
        assert target.startswith("/nix/store/") and target.endswith("-" + name)
        assert Path(target).read_bytes() == data
    # Links, not copies: the directory's own NAR is tiny whatever the model's size.
    size = int(subprocess.run(["nix-store", "-q", "--size", str(out)], check=True,
                              capture_output=True, text=True).stdout)
    assert size < 2048 < sum(len(d) for d in files.values()), size

    hub.requests.clear()
    act = ws.activate(manifest({"tiny": model(str(out), repo_id=repo, revision=commit)}))
    assert act.code == 0, act.stderr
    env = act.env()
    snapshot = ws.hub / f"models--{repo.replace('/', '--')}" / "snapshots" / commit
    assert_serves(snapshot, str(out))  # the layout rule's form
    env_run = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_"))}
    env_run.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    load = subprocess.run([sys.executable, "-c", LOAD, repo, str(ws.hub),
                           env["MODEL_REPO_TINY"], nonce], capture_output=True, text=True,
                          env=env_run, timeout=300)
    assert load.returncode == 0, load.stderr
    got = json.loads(load.stdout.strip().splitlines()[-1])
    assert got["nonce"] == nonce and got["vocab"] and got["same"] and got["tensors"] > 0
    assert hub.requests == []  # offline: the mock saw nothing while activating and loading


def test_revision_bump_downloads_the_changed_file_and_shared_files_share_a_path(
        hub: MockHub, tmp_path: Path):
    need_nix_build()
    nonce = uuid.uuid4().hex[:12]
    files = tiny_model(nonce)
    repo = f"model-repo-test/bump-{nonce}"
    hub.add_repo(repo, files)
    first = pin(hub, tmp_path, repo)
    p = build(model_expr("bump", first, hub))
    assert p.returncode == 0, p.stderr
    out_a = Path(p.stdout.strip())

    changed = dict(files)
    cfg = json.loads(files["config.json"])
    cfg["model_repo_nonce"] = nonce + "-v2"
    changed["config.json"] = json.dumps(cfg).encode()
    commit_b = hub.commit(repo, changed)
    second = pin(hub, tmp_path, repo)
    assert second["revision"] == commit_b
    hub.requests.clear()
    p = build(model_expr("bump", second, hub))
    assert p.returncode == 0, p.stderr
    out_b = Path(p.stdout.strip())
    assert resolved_paths(hub) == ["config.json"] and cdn_paths(hub) == []  # one file
    assert out_a != out_b
    for name in ("model.safetensors", "vocab.txt", "tokenizer_config.json"):
        assert os.readlink(out_a / name) == os.readlink(out_b / name)
    assert os.readlink(out_a / "config.json") != os.readlink(out_b / "config.json")

    # Another repo holding the same weights: same store path, nothing downloaded for it.
    other = f"model-repo-test/other-{nonce}"
    hub.add_repo(other, {"model.safetensors": files["model.safetensors"],
                         "config.json": files["config.json"]})
    third = pin(hub, tmp_path, other)
    hub.requests.clear()
    p = build(model_expr("other", third, hub))
    assert p.returncode == 0, p.stderr
    out_c = Path(p.stdout.strip())
    assert downloads(hub) == []
    assert os.readlink(out_c / "model.safetensors") == os.readlink(out_a / "model.safetensors")


def test_a_failed_file_keeps_the_others_and_the_next_build_fetches_it_alone(
        hub: MockHub, tmp_path: Path):
    need_nix_build()
    import hashlib

    nonce = uuid.uuid4().hex[:12]
    files = tiny_model(nonce)
    repo = f"model-repo-test/resume-{nonce}"
    hub.add_repo(repo, files)
    doc = pin(hub, tmp_path, repo)
    bad = hashlib.sha256(files["vocab.txt"]).hexdigest()
    hub.corrupt[bad] = b"not the vocabulary\n"
    hub.requests.clear()
    p = build(model_expr("resume", doc, hub), "--keep-going")
    assert p.returncode != 0
    assert "hash mismatch" in p.stderr and "vocab.txt" in p.stderr, p.stderr[-2000:]
    assert sorted(resolved_paths(hub)) == sorted(files)  # every file was tried once
    del hub.corrupt[bad]
    hub.requests.clear()
    p = build(model_expr("resume", doc, hub))
    assert p.returncode == 0, p.stderr
    assert resolved_paths(hub) == ["vocab.txt"] and cdn_paths(hub) == []


def test_per_file_fetch_sends_the_token_and_the_network_options():
    """Evaluated only (the builtin fetcher sends no header): each file's fetchurl gets
    the bearer header from the token (as source.url files do), curl's retry options,
    and the dataset URL form."""
    from nixeval import nix_eval, require_input

    lib = require_input("nixpkgs-lib") / "lib"
    rev = "c9745ed1d9f207416be6d2e6f8de32d1f16199bf"
    h = "sha256-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
    expr = f"""let lib = import {nix_string(lib)}; mr = import ./lib {{ inherit lib; }};
      pkgs = import ./tests/nix/stubs/pkgs.nix {{ inherit lib; }};
      m = mr.fetchDataset pkgs {{ name = "d"; source.huggingface = {{ repo = "org/data";
        revision = "{rev}"; fileHashes = {{ "a b/x+y.parquet" = "{h}"; }}; }};
        auth.tokenEnvVar = "HF_TOKEN"; network = {{ retries = 4; timeout = 9; }}; }};
      a = m.files."a b/x+y.parquet".fetchArgs;
    in {{ inherit (a) url name curlOpts hash netrcPhase; imp = a.netrcImpureEnvVars;
         inherit (m) revision repoType; }}"""
    got = nix_eval(expr)
    assert got["url"] == f"https://huggingface.co/datasets/org/data/resolve/{rev}/a%20b/x%2By.parquet"
    assert got["name"] == "x+y.parquet" and got["hash"] == h
    assert got["curlOpts"] == "--connect-timeout 9 --retry 4"
    assert "Authorization: Bearer" in got["netrcPhase"] and got["imp"] == ["HF_TOKEN"]
    assert got["revision"] == rev and got["repoType"] == "dataset"


H0 = "sha256-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="


@pytest.mark.parametrize("body,extra,message", [
    ('fileHashes = { "config.json" = "nope"; };', "", "must be an SRI hash"),
    # The one SRI hash rule (lib/srihash.nix): the exact length for the algorithm.
    ('fileHashes = { "config.json" = "sha512-AAAA=="; };', "",
     'fileHashes."config.json": the hash "sha512-AAAA==" has 4 base64 characters before '
     'the padding, a sha512 digest has 86'),
    (f'fileHashes = {{ "../x" = "{H0}"; }};', "",
     'the file path "../x" has a ".." segment: not a repo file path'),
    (f'fileHashes = {{ "x.drv" = "{H0}"; }};', "", 'the file path "x.drv" ends in ".drv"'),
    (f'fileHashes = {{ "c.json" = "{H0}"; }};', f'hash = "{H0}";', "set either hash"),
    (f'fileHashes = {{ "c.json" = "{H0}"; }};', 'validation.requiredFiles = [ "v.txt" ];',
     "v.txt is not among source.huggingface.fileHashes"),
])
def test_per_file_errors_name_the_option(body: str, extra: str, message: str):
    from nixeval import nix_eval_error, require_input

    lib = require_input("nixpkgs-lib") / "lib"
    rev = "c9745ed1d9f207416be6d2e6f8de32d1f16199bf"
    err = nix_eval_error(f"""let lib = import {nix_string(lib)}; mr = import ./lib {{ inherit lib; }};
      pkgs = import ./tests/nix/stubs/pkgs.nix {{ inherit lib; }};
      in (mr.fetchModel pkgs {{ name = "m"; source.huggingface = {{ repo = "o/n";
        revision = "{rev}"; {body} }}; {extra} }}).outPath""")
    assert message in err and 'model "m"' in err, err
