"""lib.fetchModel / fetchDataset / buildCache, the flake's outputs, and honest
evaluation failures."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from nixeval import (
    HASH,
    REPO,
    REV,
    REV2,
    lib_expr,
    nix_eval,
    nix_eval_error,
    nix_string,
    nix_value,
    pkgs_path,
    require_input,
)


def with_lib(body: str, **pkgs_args) -> str:
    args = " ".join(f"{k} = {nix_value(v)};" for k, v in pkgs_args.items())
    return f"""
      let
        lib = {lib_expr()};
        mr = import ./lib {{ inherit lib; }};
        pkgs = import ./tests/nix/stubs/pkgs.nix {{ inherit lib; {args} }};
      in {body}
    """


def fetch(args: str, fn: str = "fetchModel", **pkgs_args) -> dict:
    return nix_eval(with_lib(f"""
      let m = mr.{fn} pkgs ({args}); in {{
        path = "${{m}}";
        inherit (m) fetcher repoId org model repoType revision ref sourceType hfCachePath;
        passthru = builtins.removeAttrs m.passthru [ "modelMeta" ];
        fetchArgs = builtins.removeAttrs m.fetchArgs [ "netrcPhase" "postFetch" ];
        netrcPhase = m.fetchArgs.netrcPhase or null;
        postFetch = m.fetchArgs.postFetch or null;
      }}""", **pkgs_args))


def test_fetch_model_uses_fetchgit_with_lfs():
    r = fetch(f"""{{ name = "embed"; source.huggingface = {{ repo = "sentence-transformers/all-MiniLM-L6-v2"; revision = "{REV}"; }}; hash = "{HASH}"; }}""")
    assert r["fetcher"] == "fetchgit"
    assert r["fetchArgs"] == {
        "name": "hf-sentence-transformers--all-MiniLM-L6-v2-" + REV[:12],
        "url": "https://huggingface.co/sentence-transformers/all-MiniLM-L6-v2",
        "rev": REV,
        "hash": HASH,
        "fetchLFS": True,
    }
    expected = {
        "repoId": "sentence-transformers/all-MiniLM-L6-v2",
        "org": "sentence-transformers",
        "model": "all-MiniLM-L6-v2",
        "repoType": "model",
        "revision": REV,
        "ref": "main",
        "sourceType": "huggingface",
        "hfCachePath": "models--sentence-transformers--all-MiniLM-L6-v2",
    }
    for k, v in expected.items():
        assert r[k] == v and r["passthru"][k] == v, k


def test_fetch_dataset_and_sparse_checkout():
    r = fetch(f"""{{ name = "wiki"; source.huggingface = {{ repo = "org/wiki"; revision = "{REV}"; ref = "v1";
      files = [ "config.json" ]; include = [ "*.parquet" ]; exclude = [ "raw/*" ]; }}; hash = "{HASH}"; }}""", fn="fetchDataset")
    assert r["fetchArgs"]["url"] == "https://huggingface.co/datasets/org/wiki"
    assert r["fetchArgs"]["sparseCheckout"] == ["/config.json", "*.parquet", "!raw/*"]
    assert r["fetchArgs"]["nonConeMode"] is True
    assert r["repoType"] == "dataset" and r["hfCachePath"] == "datasets--org--wiki" and r["ref"] == "v1"


def test_uses_nixpkgs_fetch_from_hugging_face_when_present():
    r = fetch(f"""{{ name = "e"; source.huggingface = {{ repo = "org/m"; revision = "{REV}"; include = [ "*.json" ]; }}; hash = "{HASH}"; }}""",
              withHfFetcher=True)
    assert r["fetcher"] == "fetchFromHuggingFace"
    assert r["fetchArgs"] == {"owner": "org", "repo": "m", "rev": REV, "hash": HASH, "sparseCheckout": ["*.json"]}
    # Auth needs the git fetcher's netrc support.
    r = fetch(f"""{{ name = "e"; source.huggingface = {{ repo = "org/m"; revision = "{REV}"; }}; hash = "{HASH}"; auth.tokenEnvVar = "HF_TOKEN"; }}""",
              withHfFetcher=True)
    assert r["fetcher"] == "fetchgit"
    assert r["fetchArgs"]["netrcImpureEnvVars"] == ["HF_TOKEN"]
    assert '"$HF_TOKEN"' in r["netrcPhase"]


@pytest.mark.parametrize(
    "args,message",
    [
        ('source.huggingface = { repo = "org/m"; revision = "main"; }; hash = "%s";' % HASH,
         'model "m": source.huggingface.revision must be a pinned 40-character lowercase hex commit, got "main"'),
        ('source.huggingface = { repo = "org/m"; }; hash = "%s";' % HASH,
         'model "m": source.huggingface.revision must be a pinned 40-character lowercase hex commit, but none is set'),
        ('source.huggingface = { repo = "org/m"; revision = "%s"; }; hash = "%s";' % (REV.upper(), HASH),
         "must be a pinned 40-character lowercase hex commit"),
        ('source.huggingface = { repo = "org/m"; revision = "%s"; }; hash = "abc";' % REV,
         'model "m": hash must be an SRI hash such as "sha256-<base64>", got "abc"'),
        ('source.huggingface = { repo = "bert-base-uncased"; revision = "%s"; }; hash = "%s";' % (REV, HASH),
         'source.huggingface.repo must be a full repo id "ORG/NAME"'),
        ('source.s3 = { bucket = "b"; prefix = "p/"; }; hash = "%s";' % HASH,
         'model "m": source.s3 is not supported yet'),
        ('source.url = { urls = [ "https://example.org/x.bin" ]; }; hash = "%s";' % HASH,
         'model "m": source.url is not supported yet'),
        ('source.git-lfs = { url = "https://example.org/r.git"; rev = "%s"; }; hash = "%s";' % (REV, HASH),
         'model "m": source.git-lfs is not supported yet'),
        ('hash = "%s";' % HASH, "set exactly one of source.huggingface, source.url, source.git-lfs, source.s3 (none is set)"),
    ],
)
def test_honest_failures(args, message):
    err = nix_eval_error(with_lib(f'(mr.fetchModel pkgs {{ name = "m"; {args} }}).outPath'))
    assert message in err, err


def test_branch_revision_error_shows_how_to_pin():
    err = nix_eval_error(with_lib(
        '(mr.fetchDataset pkgs { name = "d"; source.huggingface = { repo = "org/data"; revision = "v2"; ref = "v2"; }; hash = "%s"; }).outPath' % HASH))
    assert "model-repo prefetch org/data" in err
    assert "git ls-remote https://huggingface.co/datasets/org/data v2" in err


def test_build_cache_is_a_read_only_hub_cache(tmp_path: Path):
    """lib.buildCache built by Debian's nix-build (stub runCommand over /bin/sh) over a
    real store path; huggingface_hub loads from it by repo id, offline."""
    hub = pytest.importorskip("huggingface_hub")
    if shutil.which("nix-build") is None or shutil.which("nix-store") is None:
        pytest.skip("nix-build/nix-store not found: install Debian's nix-bin")
    model = tmp_path / "tiny"
    (model / "sub").mkdir(parents=True)
    (model / "config.json").write_text('{"model_type": "bert"}')
    (model / "sub" / "nested.txt").write_text("nested")
    store_model = subprocess.run(["nix-store", "--add", str(model)], check=True,
                                 capture_output=True, text=True).stdout.strip()

    def m(name, repo, rev, fn="fetchModel", ref="main"):
        return (f'(mr.{fn} pkgs {{ name = "{name}"; source.huggingface = {{ repo = "{repo}"; revision = "{rev}"; ref = "{ref}"; }}; '
                f'hash = "{HASH}"; }})')
    fetch_results = {
        "https://huggingface.co/model-repo-test/tiny": store_model,
        "https://huggingface.co/datasets/model-repo-test/data": store_model,
    }
    expr = with_lib(
        f"mr.buildCache pkgs {{ models = [ {m('a', 'model-repo-test/tiny', REV)} {m('b', 'model-repo-test/tiny', REV2, ref='v2')} ]; "
        f"datasets = [ {m('d', 'model-repo-test/data', REV, fn='fetchDataset')} ]; }}",
        fetchResults=fetch_results, realStorePaths=True)
    out = subprocess.run(["nix-build", "--no-out-link", "-E", expr], cwd=REPO,
                         check=True, capture_output=True, text=True).stdout.strip()
    root = Path(out)
    repo = root / "models--model-repo-test--tiny"
    assert os.readlink(repo / "snapshots" / REV) == store_model
    assert os.readlink(repo / "snapshots" / REV2) == store_model
    assert (repo / "refs" / "main").read_bytes() == REV.encode()  # no newline
    assert (repo / "refs" / "v2").read_bytes() == REV2.encode()
    assert not (root / "blobs").exists() and not (repo / "blobs").exists()

    code = f"""
import json, sys
from huggingface_hub import hf_hub_download, snapshot_download, try_to_load_from_cache
c = sys.argv[1]
out = {{
  "main": hf_hub_download("model-repo-test/tiny", "config.json", cache_dir=c),
  "nested": hf_hub_download("model-repo-test/tiny", "sub/nested.txt", cache_dir=c),
  "v2": hf_hub_download("model-repo-test/tiny", "config.json", revision="v2", cache_dir=c),
  "snap": snapshot_download("model-repo-test/tiny", cache_dir=c, local_files_only=True),
  "try": try_to_load_from_cache("model-repo-test/tiny", "config.json", cache_dir=c),
  "data": hf_hub_download("model-repo-test/data", "config.json", repo_type="dataset", cache_dir=c),
}}
print(json.dumps(out))
"""
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf-home"))
    res = subprocess.run([sys.executable, "-c", code, out], env=env, check=True,
                         capture_output=True, text=True)
    paths = json.loads(res.stdout)
    assert Path(paths["main"]).read_text() == '{"model_type": "bert"}'
    assert Path(paths["nested"]).read_text() == "nested"
    assert paths["main"].startswith(str(repo / "snapshots" / REV))
    assert paths["v2"].startswith(str(repo / "snapshots" / REV2))
    assert Path(paths["snap"]).resolve() == Path(store_model)
    assert paths["try"] == paths["main"]
    assert Path(paths["data"]).read_text() == '{"model_type": "bert"}'


def test_build_cache_rejects_two_commits_for_one_ref():
    m = lambda rev: f'(mr.fetchModel pkgs {{ name = "a"; source.huggingface = {{ repo = "o/m"; revision = "{rev}"; }}; hash = "{HASH}"; }})'
    err = nix_eval_error(with_lib(f"(mr.buildCache pkgs {{ models = [ {m(REV)} {m(REV2)} ]; }}).drvPath"))
    assert 'both claim ref "main" of models--o--m' in err


def test_flake_outputs_with_stub_inputs():
    """flake.nix's outputs evaluate with stub inputs, and its checks (the same
    scenarios against the inputs they are given) pass at evaluation time."""
    hm = require_input("home-manager")
    dv = require_input("devenv")
    expr = f"""
      let
        lib = {lib_expr()};
        flake = import ./flake.nix;
        stubPkgs = system: import ./tests/nix/stubs/pkgs.nix {{ inherit lib system; pkgsPath = {nix_string(pkgs_path())}; }}
          // {{
            callPackage = _: _: (stubPkgs system).model-repo;
            python3.withPackages = _: (stubPkgs system).model-repo;
            nixfmt-rfc-style = (stubPkgs system).model-repo;
          }};
        nixpkgs = {{
          inherit lib;
          outPath = {nix_string(pkgs_path())};
          legacyPackages = lib.genAttrs [ "x86_64-linux" "aarch64-linux" "x86_64-darwin" "aarch64-darwin" ] stubPkgs;
        }};
        inputs = {{
          inherit self nixpkgs;
          home-manager.outPath = {nix_string(hm)};
          devenv.outPath = {nix_string(dv)};
        }};
        self = flake.outputs inputs;
        checks = self.checks.x86_64-linux;
      in {{
        lib = builtins.attrNames self.lib;
        modules = [ (builtins.isPath self.homeManagerModules.default) (builtins.isPath self.devenvModules.default) (builtins.isPath self.nixosModules.default) ];
        packages = builtins.attrNames self.packages.aarch64-darwin;
        overlay = builtins.isFunction self.overlays.default;
        checks = lib.mapAttrs (n: c: if n == "build-cache-loads-offline" || n == "activator" then c.type else c.drvPath) checks;
      }}
    """
    r = nix_eval(expr)
    assert {"fetchModel", "fetchDataset", "buildCache", "envVarName", "hubFolderName", "naming"} <= set(r["lib"])
    assert r["modules"] == [True, True, True]
    assert r["packages"] == ["default", "model-repo"]
    assert r["overlay"] is True
    assert set(r["checks"]) >= {"eval-home-manager-linux", "eval-home-manager-darwin-shared", "eval-devenv",
                                "eval-nixos", "eval-naming", "eval-rejects-branch-revision",
                                "build-cache-loads-offline"}
