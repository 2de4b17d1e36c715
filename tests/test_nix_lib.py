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
    r = fetch(f"""{{ name = "e"; source.huggingface = {{ repo = "org/m"; revision = "{REV}"; }}; hash = "{HASH}"; }}""",
              withHfFetcher=True)
    assert r["fetcher"] == "fetchFromHuggingFace"
    # nixpkgs' signature (repoId; backend "lfs", its "xet" default throws) and our store
    # name, so `model-repo prefetch --add-to-store` gives the same path.
    assert r["fetchArgs"] == {"repoId": "org/m", "rev": REV, "hash": HASH, "backend": "lfs",
                              "name": "hf-org--m-" + REV[:12]}
    r = fetch(f"""{{ name = "d"; source.huggingface = {{ repo = "org/d"; revision = "{REV}"; repoType = "dataset"; }}; hash = "{HASH}"; }}""",
              withHfFetcher=True)
    assert (r["fetcher"], r["fetchArgs"]["repoType"]) == ("fetchFromHuggingFace", "dataset")
    assert r["hfCachePath"] == "datasets--org--d"
    # A fetcher of that name with another signature (owner/repo) is not called.
    r = fetch(f"""{{ name = "e"; source.huggingface = {{ repo = "org/m"; revision = "{REV}"; }}; hash = "{HASH}"; }}""",
              withHfFetcher="owner-repo")
    assert r["fetcher"] == "fetchgit"
    # Sparse patterns are ours (non-cone, "!" excludes): always the git fetcher.
    r = fetch(f"""{{ name = "e"; source.huggingface = {{ repo = "org/m"; revision = "{REV}"; include = [ "*.json" ]; }}; hash = "{HASH}"; }}""",
              withHfFetcher=True)
    assert r["fetcher"] == "fetchgit"
    # Auth needs the git fetcher's netrc support.
    r = fetch(f"""{{ name = "e"; source.huggingface = {{ repo = "org/m"; revision = "{REV}"; }}; hash = "{HASH}"; auth.tokenEnvVar = "HF_TOKEN"; }}""",
              withHfFetcher=True)
    assert r["fetcher"] == "fetchgit"
    assert r["fetchArgs"]["netrcImpureEnvVars"] == ["HF_TOKEN"]
    assert "${HF_TOKEN:-}" in r["netrcPhase"]  # run for real in test_netrc_phases_run


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
        ('source.huggingface = { repo = "org/m"; revision = "%s"; }; hash = "sha256:%s";' % (REV, "0" * 64),
         'got "sha256:%s", which is in Nix\'s "sha256:<digest>" form, not SRI; convert it with '
         '`nix hash convert --to sri sha256:<digest>`' % ("0" * 64)),
        ('source.huggingface = { repo = "org/m"; revision = "%s"; }; hash = "junk %s";' % (REV, HASH),
         'got "junk %s", which holds whitespace' % HASH),
        ('source.huggingface = { repo = "bert-base-uncased"; revision = "%s"; }; hash = "%s";' % (REV, HASH),
         'source.huggingface.repo must be a full repo id "ORG/NAME"'),
        ('hash = "%s";' % HASH, "set exactly one of source.huggingface, source.url, source.git-lfs, source.s3 (none is set)"),
        # Two sources at once.
        ('source.huggingface = { repo = "org/m"; revision = "%s"; }; source.url.url = "https://x.org/a.gguf"; hash = "%s";' % (REV, HASH),
         "set exactly one of source.huggingface, source.url, source.git-lfs, source.s3 (set: source.huggingface, source.url)"),
        # source.url
        ("source.url = { }; ",
         'model "m": source.url has no files: set source.url.url'),
        ('source.url.url = "https://x.org/a.gguf";',
         'model "m": source.url (a.gguf): no hash.'),
        ('source.url.files = [ { url = "https://x.org/a.gguf"; } { url = "https://x.org/b.gguf"; } ]; hash = "%s";' % HASH,
         'model "m": hash is set, but source.url has 2 files: each file carries its own hash'),
        ('source.url.files = [ { url = "https://x.org/a.gguf"; hash = "%s"; } { url = "https://x.org/b.gguf"; } ];' % HASH,
         'model "m": source.url.files #2 (b.gguf): no hash.'),
        ('source.url = { url = "https://x.org/a.gguf"; files = [ { url = "https://x.org/b"; hash = "%s"; } ]; };' % HASH,
         "source.url: use either url/urls/name (one file, hashed by the model's hash) or files, not both."),
        ('source.url.files = [ { hash = "%s"; } ];' % HASH, 'model "m": source.url.files #1: no url.'),
        ('source.url.files = [ { url = "https://x.org/a"; urls = [ "https://y.org/a" ]; hash = "%s"; } ];' % HASH,
         "source.url.files #1: set url or urls, not both."),
        ('source.url.files = [ { url = "https://x.org/a"; sha256 = "abc"; } ];', 'source.url.files #1 (a): sha256 must be 64 hex characters, got "abc"'),
        ('source.url.files = [ { url = "https://x.org/a"; hash = "%s"; sha256 = "%s"; } ];' % (HASH, "a" * 64), "(a): set hash or sha256, not both."),
        ('source.url.files = [ { url = "https://x.org/a"; hash = "abc"; } ];', '(a): hash "abc" does not start with "sha256-" or "sha512-": it must be an SRI hash such as "sha256-<base64>"'),
        # The one SRI hash rule (lib/srihash.nix): exact length, no junk around it.
        ('source.url.files = [ { url = "https://x.org/a"; hash = "sha256-AAAA"; } ];', '(a): hash "sha256-AAAA" ends in 0 "=", a sha256 digest in base64 ends in one "="'),
        ('source.url.files = [ { url = "https://x.org/a"; hash = "sha512-AAAA=="; } ];', '(a): hash "sha512-AAAA==" has 4 base64 characters before the padding, a sha512 digest has 86'),
        ('source.url.files = [ { url = "https://x.org/a/"; hash = "%s"; } ];' % HASH, 'source.url.files #1: "" is not usable as a file name'),
        ('source.url.files = [ { url = "https://x.org/a"; name = "../etc/passwd"; hash = "%s"; } ];' % HASH, '"../etc/passwd" is not usable as a file name'),
        ('source.url.files = [ { url = "https://x.org/a"; name = "/abs"; hash = "%s"; } ];' % HASH, '"/abs" is not usable as a file name'),
        ('source.url.files = [ { url = "https://x.org/1/a"; hash = "%s"; } { url = "https://x.org/2/a"; hash = "%s"; } ];' % (HASH, HASH),
         'source.url: several files are named "a"; set name on them.'),
        ('source.url.files = [ { url = "https://x.org/a"; hash = "%s"; main = true; } { url = "https://x.org/b"; hash = "%s"; main = true; } ];' % (HASH, HASH),
         "source.url: only one file can be main = true (a, b)."),
        ('source.url.url = "https://x.org/a.gguf"; hash = "%s"; validation.requiredFiles = [ "config.json" ];' % HASH,
         "validation.requiredFiles: config.json is not among the files of source.url (a.gguf)."),
        # source.git-lfs
        ('source.git-lfs = { url = "https://example.org/r.git"; }; hash = "%s";' % HASH,
         'model "m": source.git-lfs.rev must be a pinned 40-character lowercase hex commit, but none is set.'),
        ('source.git-lfs = { url = "https://example.org/r.git"; rev = "v1.0"; }; hash = "%s";' % HASH,
         'model "m": source.git-lfs.rev must be a pinned 40-character lowercase hex commit, got "v1.0"'),
        ('source.git-lfs = { url = "https://example.org/r.git"; rev = "%s"; }; hash = "%s";' % (REV[:12], HASH),
         "git ls-remote https://example.org/r.git <branch or tag>"),
        ('source.git-lfs = { url = "https://example.org/r.git"; rev = "%s"; };' % REV,
         'model "m": hash must be an SRI hash such as "sha256-<base64>", but none is set.'),
        ('source.git-lfs = { url = "git@example.org:r.git"; rev = "%s"; }; hash = "%s"; auth.tokenEnvVar = "T";' % (REV, HASH),
         'auth with source.git-lfs needs an http(s) URL'),
        # source.s3
        ('source.s3 = { bucket = "b"; }; ', 'model "m": hash must be an SRI hash such as "sha256-<base64>", but none is set.'),
        ('source.s3 = { prefix = "p/"; }; hash = "%s";' % HASH, "`source.s3.bucket'"),
        ('source.s3 = { bucket = "b"; }; hash = "%s"; auth.tokenEnvVar = "AWS_SECRET_ACCESS_KEY";' % HASH,
         "auth.tokenEnvVar / auth.tokenFile do not apply to source.s3"),
        # auth
        ('source.url.url = "https://x.org/a"; hash = "%s"; auth.awsProfile = "p";' % HASH, "auth.awsProfile applies to source.s3 only."),
        ('source.url.url = "https://x.org/a"; hash = "%s"; auth = { tokenEnvVar = "T"; tokenFile = "/t"; };' % HASH,
         "set one of auth.tokenEnvVar and auth.tokenFile, not both."),
        ('source.url.url = "https://x.org/a"; hash = "%s"; auth.tokenEnvVar = "$(rm -rf /)";' % HASH, "auth.tokenEnvVar"),
        ('source.url.url = "https://x.org/a"; hash = "%s"; auth.tokenFile = "relative/token";' % HASH, "auth.tokenFile"),
    ],
)
def test_honest_failures(args, message):
    err = nix_eval_error(with_lib(f'(mr.fetchModel pkgs {{ name = "m"; {args} }}).outPath'))
    assert message in err, err


def test_fetch_dataset_is_for_hub_sources_only():
    err = nix_eval_error(with_lib(f'(mr.fetchDataset pkgs {{ name = "d"; source.url.url = "https://x.org/d.parquet"; hash = "{HASH}"; }}).outPath'))
    assert "fetchDataset d: only source.huggingface has a repo type" in err


def test_branch_revision_error_shows_how_to_pin():
    err = nix_eval_error(with_lib(
        '(mr.fetchDataset pkgs { name = "d"; source.huggingface = { repo = "org/data"; revision = "v2"; ref = "v2"; }; hash = "%s"; }).outPath' % HASH))
    assert "model-repo prefetch org/data" in err
    assert "git ls-remote https://huggingface.co/datasets/org/data v2" in err


def test_build_cache_is_a_read_only_hub_cache(tmp_path: Path):
    """lib.buildCache built by Debian's nix-build (stub runCommand over /bin/sh) over a
    real store path; huggingface_hub loads from it by repo id, offline."""
    pytest.importorskip("huggingface_hub", reason="pip install huggingface_hub (test extra)")
    if shutil.which("nix-build") is None or shutil.which("nix-store") is None:
        pytest.skip(reason="nix-build/nix-store not found: install Debian's nix-bin")
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

    code = """
import json, sys
from huggingface_hub import hf_hub_download, snapshot_download, try_to_load_from_cache
c = sys.argv[1]
out = {
  "main": hf_hub_download("model-repo-test/tiny", "config.json", cache_dir=c),
  "nested": hf_hub_download("model-repo-test/tiny", "sub/nested.txt", cache_dir=c),
  "v2": hf_hub_download("model-repo-test/tiny", "config.json", revision="v2", cache_dir=c),
  "snap": snapshot_download("model-repo-test/tiny", cache_dir=c, local_files_only=True),
  "try": try_to_load_from_cache("model-repo-test/tiny", "config.json", cache_dir=c),
  "data": hf_hub_download("model-repo-test/data", "config.json", repo_type="dataset", cache_dir=c),
}
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
    """flake.nix's outputs evaluate with stub inputs (nixpkgs is its only input), and
    dev/flake.nix's checks (the same scenarios against the inputs they are given)
    pass at evaluation time."""
    hm = require_input("home-manager")
    dv = require_input("devenv")
    expr = f"""
      let
        lib = {lib_expr()};
        flake = import ./flake.nix;
        devFlake = import ./dev/flake.nix;
        stub = system: (import ./tests/nix/stubs/pkgs.nix {{ inherit lib system; pkgsPath = {nix_string(pkgs_path())}; }});
        stubPkgs = system: stub system
          // {{
            callPackage = _: _: (stub system).model-repo;
            python3.withPackages = f: (stub system).model-repo // {{ withPackages = f; }};
            mkShell = args: (stub system).model-repo // {{ shellArgs = args; }};
            nixfmt-tree = (stub system).model-repo // {{ name = "nixfmt-tree"; }};
            # nixpkgs >= 25.11: a deprecated alias (lib.warnOnInstantiate); here it fails.
            nixfmt-rfc-style = throw "nixfmt-rfc-style is now the same as pkgs.nixfmt which should be used instead.";
            nix = (stub system).model-repo; git = (stub system).model-repo; zsh = (stub system).model-repo;
            fish = (stub system).model-repo; dash = (stub system).model-repo;
          }};
        nixpkgs = {{
          inherit lib;
          outPath = {nix_string(pkgs_path())};
          legacyPackages = lib.genAttrs [ "x86_64-linux" "aarch64-linux" "x86_64-darwin" "aarch64-darwin" ] stubPkgs;
        }};
        self = flake.outputs {{ inherit self nixpkgs; }};
        dev = devFlake.outputs {{
          model-repo = self // {{ outPath = ./.; }};
          inherit nixpkgs;
          home-manager.outPath = {nix_string(hm)};
          devenv.outPath = {nix_string(dv)};
        }};
        checks = dev.checks.x86_64-linux;
      in {{
        inputs = builtins.attrNames flake.inputs;
        devInputs = builtins.attrNames devFlake.inputs;
        outputs = builtins.attrNames self;
        lib = builtins.attrNames self.lib;
        integration = builtins.attrNames self.lib.integration;
        modules = [ (builtins.isPath self.homeModules.default) (builtins.isPath self.devenvModules.default) (builtins.isPath self.nixosModules.default) ];
        hmAlias = self.homeManagerModules.default == self.homeModules.default;
        formatter = self.formatter.x86_64-linux.name;
        packages = builtins.attrNames self.packages.aarch64-darwin;
        app = self.apps.x86_64-linux.default // {{ meta = null; }};
        defaultPackage = "${{self.packages.x86_64-linux.default}}";
        devShell = builtins.length self.devShells.x86_64-linux.default.shellArgs.packages;
        devDevShell = dev.devShells.x86_64-linux.default == self.devShells.x86_64-linux.default;
        overlay = builtins.isFunction self.overlays.default;
        checks = lib.mapAttrs (n: c: if n == "build-cache-loads-offline" || n == "activator" then c.type else c.drvPath) checks;
      }}
    """
    r = nix_eval(expr)
    assert r["inputs"] == ["nixpkgs"]  # what every user's lock file gets
    assert set(r["devInputs"]) == {"model-repo", "nixpkgs", "home-manager", "devenv"}
    assert set(r["outputs"]) == {"lib", "overlays", "homeModules", "homeManagerModules", "devenvModules",
                                 "nixosModules", "packages", "apps", "devShells", "formatter"}
    assert r["hmAlias"] is True  # homeManagerModules: the former name, same module
    assert r["formatter"] == "nixfmt-tree"  # not the deprecated nixfmt-rfc-style alias
    assert {"fetchModel", "fetchDataset", "buildCache", "envVarName", "hubFolderName", "naming"} <= set(r["lib"])
    assert r["integration"] == ["getModelPath", "mkCacheName", "mkLinkScript"]
    assert r["modules"] == [True, True, True]
    assert r["packages"] == ["default", "model-repo", "model-repo-full"]
    assert r["app"] == {"type": "app", "program": r["defaultPackage"] + "/bin/model-repo", "meta": None}
    assert r["devShell"] == 6 and r["devDevShell"] is True
    assert r["overlay"] is True
    assert set(r["checks"]) >= {"eval-home-manager-linux", "eval-home-manager-darwin-shared", "eval-devenv",
                                "eval-nixos", "eval-naming", "eval-rejects-branch-revision",
                                "eval-sources", "build-cache-loads-offline",
                                "eval-home-manager-prune-and-disable", "eval-devenv-alias",
                                "eval-nixos-disable-and-token"}


# --- source.url, source.git-lfs, source.s3: derivation attributes -------------------

SHA_HEX = "4A8B6A0F1C2E3D4C5B6A79881726354453627180918273645546372819A0B1C2"
HASH2 = "sha256-BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBA="
GGUF_URL = f"https://huggingface.co/org/m-GGUF/resolve/{REV}/m-Q4_K_M.gguf?download=true"


def other_source(args: str, extra: str = "", **pkgs_args) -> dict:
    """fetchModel on a non-Hub source: the result's passthru, the stub fetchers'
    recorded arguments, and the manifest entry the modules would write for it."""
    return nix_eval(with_lib(f"""
      let
        args = {{ name = "m"; {args} }};
        m = mr.fetchModel pkgs args;
        entry = mr.manifest.mkEntry {{ cfg = mr.options.evalModel args; drv = m; linkEnabled = true; }};
        pt = builtins.removeAttrs m.passthru [ "modelMeta" "files" "entries" ];
      in {{
        path = "${{m}}";
        passthru = pt;
        same = builtins.all (k: m.${{k}} == pt.${{k}}) (builtins.attrNames pt);
        derived = mr.derivedRevision (mr.options.evalModel args);
        entry = builtins.removeAttrs entry [ "path" ];
        entryPath = entry.path;
        {extra}
      }}""", **pkgs_args))


def test_url_files_are_fetchurls_in_a_flat_link_farm():
    r = other_source(f"""
      source.url.files = [
        {{ url = "{GGUF_URL}"; sha256 = "{SHA_HEX}"; }}
        {{ urls = [ "https://mirror-a.example/mmproj.gguf" "https://mirror-b.example/mmproj.gguf" ]; hash = "{HASH2}"; main = true; }}
        {{ url = "https://x.example/t.json"; name = "tokenizer/tokenizer.json"; hash = "{HASH}"; }}
      ];
      integration.huggingface = {{ org = "me"; model = "m-gguf"; }};
      network = {{ timeout = 20; retries = 4; }};
      validation.requiredFiles = [ "tokenizer/tokenizer.json" ];""",
      extra="""
        fetchArgs = map (e: e.fetchArgs) (builtins.attrValues m.files);
        fileNames = builtins.attrNames m.files;
        filePaths = builtins.mapAttrs (n: f: "${f}") m.files;
        farm = m.linkFarmArgs;""")
    assert r["fileNames"] == ["m-Q4_K_M.gguf", "mmproj.gguf", "tokenizer/tokenizer.json"]
    args = dict(zip(r["fileNames"], r["fetchArgs"]))
    common = {"curlOpts": "--connect-timeout 20 --retry 4"}
    # One fixed-output fetchurl per file, with that file's own (flat) hash; the
    # Hub's hex SHA-256 is passed as fetchurl's sha256; query strings do not
    # reach names; names with "/" keep their directory in the farm only.
    assert args["m-Q4_K_M.gguf"] == {"name": "m-Q4_K_M.gguf", "url": GGUF_URL, "sha256": SHA_HEX.lower(), **common}
    assert args["mmproj.gguf"] == {"name": "mmproj.gguf", "hash": HASH2, **common,
                                   "urls": ["https://mirror-a.example/mmproj.gguf", "https://mirror-b.example/mmproj.gguf"]}
    assert args["tokenizer/tokenizer.json"] == {"name": "tokenizer.json", "url": "https://x.example/t.json", "hash": HASH, **common}
    # The directory: a linkFarm of exactly those store paths, under the file names.
    assert r["farm"]["name"] == "url-m"
    assert {e["name"]: e["path"] for e in r["farm"]["entries"]} == r["filePaths"]
    pt = r["passthru"]
    assert r["same"] is True
    assert pt["file"] == r["path"] + "/mmproj.gguf" and pt["mainFile"] == "mmproj.gguf"
    assert pt["sourceType"] == "url" and pt["repoId"] == "me/m-gguf" and pt["org"] == "me" and pt["model"] == "m-gguf"
    assert pt["hfCachePath"] == "models--me--m-gguf" and pt["repoType"] == "model" and pt["ref"] == "main"
    # No commit of its own: linked under sha1(store path basename), as the manifest does.
    assert pt["revision"] == r["derived"] and len(pt["revision"]) == 40
    assert r["entry"] == {"repoId": "me/m-gguf", "repoType": "model", "revision": pt["revision"], "refs": ["main"], "link": True,
                          "partial": False, "file": "mmproj.gguf"}  # MODEL_REPO_<NAME>_FILE
    assert r["entryPath"] == r["path"]


def test_url_single_file_takes_the_model_hash():
    r = other_source(f'source.url.url = "{GGUF_URL}"; hash = "{HASH}";',
                     extra="fetchArgs = (builtins.head (builtins.attrValues m.files)).fetchArgs; farm = m.linkFarmArgs;")
    assert r["fetchArgs"] == {"name": "m-Q4_K_M.gguf", "url": GGUF_URL, "hash": HASH}
    assert [e["name"] for e in r["farm"]["entries"]] == ["m-Q4_K_M.gguf"]
    pt = r["passthru"]
    assert pt["file"] == r["path"] + "/m-Q4_K_M.gguf"
    # Without integration.huggingface.{org,model} there is no repo id to link under.
    assert pt["repoId"] is None and pt["hfCachePath"] is None and pt["org"] is None
    assert r["entry"]["link"] is False and r["entry"]["repoId"] == "model-repo-local/m"
    assert r["entry"]["revision"] == pt["revision"] == r["derived"]
    # Derived from what pins the content (file name and hash), not from the store
    # path (a linkFarm's path moves with nixpkgs' stdenv).
    import hashlib

    pin = 'm-Q4_K_M.gguf {"hash":"%s"}' % HASH
    assert pt["revision"] == hashlib.sha1(pin.encode()).hexdigest()
    assert pt["revision"] != hashlib.sha1(os.path.basename(r["path"]).encode()).hexdigest()

    r = other_source(f'source.url = {{ urls = [ "https://a.example/w.bin" "https://b.example/w.bin" ]; name = "weights.bin"; }}; hash = "{HASH}";',
                     extra="fetchArgs = (builtins.head (builtins.attrValues m.files)).fetchArgs;")
    assert r["fetchArgs"] == {"name": "weights.bin", "urls": ["https://a.example/w.bin", "https://b.example/w.bin"], "hash": HASH}
    assert r["passthru"]["mainFile"] == "weights.bin"


def test_url_auth_is_a_bearer_header_through_netrc_phase():
    r = other_source(f'source.url.url = "{GGUF_URL}"; hash = "{HASH}"; auth.tokenEnvVar = "HF_TOKEN";',
                     extra="f = (builtins.head (builtins.attrValues m.files)).fetchArgs;")
    assert r["f"]["netrcImpureEnvVars"] == ["HF_TOKEN"]
    phase = r["f"]["netrcPhase"]
    assert "${HF_TOKEN:-}" in phase and "--header @$PWD/model-repo-auth-header" in phase
    assert "NIX_HASHED_MIRRORS=' '" in phase
    r = other_source(f'source.url.url = "{GGUF_URL}"; hash = "{HASH}"; auth.tokenFile = "/run/secrets/hf";',
                     extra="f = (builtins.head (builtins.attrValues m.files)).fetchArgs;")
    assert "netrcImpureEnvVars" not in r["f"] and "/run/secrets/hf" in r["f"]["netrcPhase"]


def test_git_lfs_is_fetchgit_with_lfs_at_a_commit():
    r = other_source(f"""
      source.git-lfs = {{ url = "https://gitlab.example.org/org/My-Model.git"; rev = "{REV}";
        files = [ "config.json" ]; include = [ "*.safetensors" ]; exclude = [ "onnx/*" ]; }};
      hash = "{HASH}";
      integration.huggingface = {{ org = "org"; model = "my-model"; }};
      auth = {{ tokenEnvVar = "FORGE_TOKEN"; user = "oauth2"; }};
      validation.requiredFiles = [ "config.json" ];""",
      extra="fetcher = m.fetcher; fetchArgs = m.fetchArgs;")
    assert r["fetcher"] == "fetchgit"
    fa = r["fetchArgs"]
    assert {k: fa[k] for k in ("name", "url", "rev", "hash", "fetchLFS", "sparseCheckout", "nonConeMode", "netrcImpureEnvVars")} == {
        "name": "git-My-Model-" + REV[:12],
        "url": "https://gitlab.example.org/org/My-Model.git",
        "rev": REV,
        "hash": HASH,
        "fetchLFS": True,
        "sparseCheckout": ["/config.json", "*.safetensors", "!onnx/*"],
        "nonConeMode": True,
        "netrcImpureEnvVars": ["FORGE_TOKEN"],
    }
    assert "printf 'machine %s login %s password %s\\n' gitlab.example.org oauth2" in fa["netrcPhase"]
    assert "config.json is missing from the snapshot" in fa["postFetch"]
    pt = r["passthru"]
    assert pt["revision"] == REV and pt["sourceType"] == "git-lfs" and pt["repoId"] == "org/my-model"
    assert pt["hfCachePath"] == "models--org--my-model" and r["same"] is True
    assert r["entry"] == {"repoId": "org/my-model", "repoType": "model", "revision": REV, "refs": ["main"], "link": True,
                          "partial": True}  # sparse checkout: some of the repo's files


AWS_VARS = ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
            "AWS_REGION", "AWS_DEFAULT_REGION"]


def test_s3_is_a_fixed_output_aws_cli_copy():
    r = other_source(f"""
      source.s3 = {{ bucket = "my-models"; prefix = "/fine-tuned/llama"; region = "eu-west-1";
        endpoint = "https://minio.example.org:9000"; include = [ "*.json" "*.safetensors" ]; exclude = [ "*.bin" ]; }};
      hash = "{HASH}";
      auth.awsProfile = "models";
      network = {{ timeout = 15; retries = 2; }};
      integration.huggingface = {{ org = "me"; model = "llama-ft"; }};""",
      extra="""
        drv = { inherit (m) name outputHash outputHashMode impureEnvVars preferLocalBuild AWS_MAX_ATTEMPTS AWS_RETRY_MODE;
                nativeBuildInputs = map (p: p.name) m.runCommandArgs.env.nativeBuildInputs; };
        script = m.runCommandArgs.script;
        proxy = lib.fetchers.proxyImpureEnvVars;""")
    d = r["drv"]
    assert d["outputHash"] == HASH and d["outputHashMode"] == "recursive"
    assert d["nativeBuildInputs"] == ["awscli2-2.22.0"]
    assert d["impureEnvVars"][: len(r["proxy"])] == r["proxy"]
    assert set(AWS_VARS) <= set(d["impureEnvVars"])
    assert d["AWS_MAX_ATTEMPTS"] == "3" and d["AWS_RETRY_MODE"] == "standard"
    assert d["name"] == "s3-my-models-fine-tuned-llama-"
    assert ("aws s3 cp s3://my-models/fine-tuned/llama/ \"$out\" --recursive --no-progress --only-show-errors "
            "--region eu-west-1 --endpoint-url https://minio.example.org:9000 --profile models --cli-connect-timeout 15 "
            "--exclude '*' --include '*.json' --include '*.safetensors' --exclude '*.bin'") in r["script"]
    pt = r["passthru"]
    assert pt["sourceType"] == "s3" and pt["repoId"] == "me/llama-ft" and pt["revision"] == r["derived"]
    assert r["entry"] == {"repoId": "me/llama-ft", "repoType": "model", "revision": pt["revision"], "refs": ["main"], "link": True,
                          "partial": True}  # include/exclude: some of the prefix's objects
    r = other_source(f'source.s3 = {{ bucket = "open"; anonymous = true; }}; hash = "{HASH}";',
                     extra="script = m.runCommandArgs.script;")
    assert "aws s3 cp s3://open/ \"$out\" --recursive --no-progress --only-show-errors --no-sign-request\n" in r["script"]


def test_passthru_repo_id_follows_integration_overrides_like_the_manifest():
    r = nix_eval(with_lib(f"""
      let
        args = {{ name = "m"; source.huggingface = {{ repo = "org/m"; revision = "{REV}"; }}; hash = "{HASH}";
                  integration.huggingface = {{ org = "mine"; model = "m2"; }}; }};
        m = mr.fetchModel pkgs args;
        e = mr.manifest.mkEntry {{ cfg = mr.options.evalModel args; drv = m; linkEnabled = true; }};
      in {{ inherit (m) repoId hfCachePath; entry = e.repoId; }}"""))
    assert r["repoId"] == r["entry"] == "mine/m2" and r["hfCachePath"] == "models--mine--m2"


# --- the netrc phases, run for real -------------------------------------------------

def netrc_phase(model: str) -> str:
    return nix_eval(with_lib(f"""
      let m = mr.fetchModel pkgs {{ name = "gated"; {model} }}; in
        (if m ? files then (builtins.head (builtins.attrValues m.files)) else m).fetchArgs.netrcPhase"""))


def run_phase(phase: str, cwd: Path, env: dict) -> subprocess.CompletedProcess:
    """The phase as fetchurl/fetchgit run it (in setup, cwd = the build dir),
    under POSIX sh with -eu; prints curlOpts and NIX_HASHED_MIRRORS after it."""
    script = f'set -eu\ncurlOpts=""\n{phase}\nprintf "%s|%s" "$curlOpts" "${{NIX_HASHED_MIRRORS-unset}}"'
    return subprocess.run(["/bin/sh", "-c", script], cwd=cwd, env={"PATH": "/usr/bin:/bin", **env},
                          capture_output=True, text=True)


def test_netrc_phases_run(tmp_path: Path):
    git_env = netrc_phase(f'source.huggingface = {{ repo = "org/gated"; revision = "{REV}"; }}; hash = "{HASH}"; auth.tokenEnvVar = "HF_TOKEN";')
    d = tmp_path / "git-env"; d.mkdir()
    p = run_phase(git_env, d, {"HF_TOKEN": "hf_secret"})
    assert p.returncode == 0, p.stderr
    assert (d / "netrc").read_text() == "machine huggingface.co login model-repo password hf_secret\n"
    assert (d / "netrc").stat().st_mode & 0o077 == 0
    assert "hf_secret" not in p.stdout + p.stderr

    # Unset and empty look the same in a builder (Nix passes unset impure variables as "").
    for env in ({}, {"HF_TOKEN": ""}):
        d = tmp_path / f"git-empty-{len(env)}"; d.mkdir()
        p = run_phase(git_env, d, env)
        assert p.returncode == 1 and "auth.tokenEnvVar HF_TOKEN is empty or unset in the builder's environment" in p.stderr
        assert not (d / "netrc").exists()

    token = tmp_path / "token"
    token.write_text("hf_from_file\n")
    git_file = netrc_phase(f'source.git-lfs = {{ url = "https://forge.example:8443/o/r.git"; rev = "{REV}"; }}; hash = "{HASH}"; auth.tokenFile = "{token}";')
    d = tmp_path / "git-file"; d.mkdir()
    p = run_phase(git_file, d, {})
    assert p.returncode == 0, p.stderr
    assert (d / "netrc").read_text() == "machine forge.example login model-repo password hf_from_file\n"
    token.write_text("")
    p = run_phase(git_file, d, {})
    assert p.returncode == 1 and f"auth.tokenFile {token} is empty" in p.stderr
    missing = netrc_phase(f'source.git-lfs = {{ url = "https://f.example/r.git"; rev = "{REV}"; }}; hash = "{HASH}"; auth.tokenFile = "{tmp_path}/nope";')
    p = run_phase(missing, d, {})
    assert p.returncode == 1 and "is not readable by the builder" in p.stderr and "extra-sandbox-paths" in p.stderr

    url_env = netrc_phase(f'source.url.url = "{GGUF_URL}"; hash = "{HASH}"; auth.tokenEnvVar = "HF_TOKEN";')
    d = tmp_path / "url-env"; d.mkdir()
    p = run_phase(url_env, d, {"HF_TOKEN": "hf_secret"})
    assert p.returncode == 0, p.stderr
    curl_opts, mirrors = p.stdout.split("|")
    assert curl_opts == f" --header @{d}/model-repo-auth-header"  # the token is not on curl's command line
    assert mirrors == " "  # fetchurl's builder then tries no content-addressed mirror
    assert (d / "model-repo-auth-header").read_text() == "Authorization: Bearer hf_secret\n"
    assert (d / "model-repo-auth-header").stat().st_mode & 0o077 == 0
    assert (d / "netrc").read_text() == ""  # fetchurl passes --netrc-file netrc whenever netrcPhase is set
    # fetchurl's builder (bash) word-splits curlOpts, and picks its hashed mirrors like this:
    probe = """
      curl=(curl --location $curlOpts); echo ${#curl[@]}
      hashedMirrors=https://tarballs.nixos.org
      if test -n "$NIX_HASHED_MIRRORS"; then hashedMirrors="$NIX_HASHED_MIRRORS"; fi
      for mirror in $hashedMirrors; do echo "tries $mirror"; done
    """
    out = subprocess.run(["bash", "-c", probe], env={"curlOpts": curl_opts, "NIX_HASHED_MIRRORS": mirrors},
                         capture_output=True, text=True).stdout.split()
    assert out == ["4"]


# --- real builds: the s3 fetcher, a url model in buildCache, mkLinkScript -----------

def need_nix_build() -> None:
    if shutil.which("nix-build") is None or shutil.which("nix-store") is None:
        pytest.skip(reason="nix-build/nix-store not found: install Debian's nix-bin")


def store_add(path: Path) -> str:
    return subprocess.run(["nix-store", "--add", str(path)], check=True,
                          capture_output=True, text=True).stdout.strip()


def nar_hash(path: str) -> str:
    return subprocess.run(["nix", "--extra-experimental-features", "nix-command", "hash", "path", path],
                          check=True, capture_output=True, text=True).stdout.strip()


def nix_build(expr: str, env: dict | None = None) -> subprocess.CompletedProcess:
    # No substituters: a fresh fixed-output path would otherwise be looked up on
    # cache.nixos.org first (seconds of retries without network).
    return subprocess.run(["nix-build", "--no-out-link", "--option", "substituters", "", "-E", expr],
                          cwd=REPO, capture_output=True, text=True,
                          env=None if env is None else {**os.environ, **env}, timeout=300)


def test_s3_fetcher_builds_with_a_stub_aws_cli(tmp_path: Path):
    """The s3 fixed-output derivation built for real (stub runCommand over /bin/sh),
    with a stand-in `aws` that copies a local tree: the output is the prefix's
    files (NAR hash as declared), impure AWS_* variables reach the builder and the
    ones the caller did not set are unset, and the failures are explicit."""
    need_nix_build()
    import uuid

    fixture = tmp_path / "bucket"
    (fixture / "models" / "x" / "sub").mkdir(parents=True)
    (fixture / "models" / "x" / "config.json").write_text('{"model_type": "bert"}')
    (fixture / "models" / "x" / "sub" / "w.safetensors").write_bytes(b"\x00\x01weights")
    store_fixture = store_add(fixture)
    aws = tmp_path / "awscli" / "bin" / "aws"
    aws.parent.mkdir(parents=True)
    aws.write_text(f"""#!/bin/sh
echo "aws-args: $*" >&2
echo "aws-env: AWS_ACCESS_KEY_ID=${{AWS_ACCESS_KEY_ID-unset}} AWS_PROFILE=${{AWS_PROFILE-unset}} HOME=$HOME" >&2
[ "$1 $2" = "s3 cp" ] || exit 2
key=${{3#s3://}}
prefix=${{key#*/}}
if [ -d "{store_fixture}/$prefix" ]; then mkdir -p "$4"; cp -R "{store_fixture}/$prefix/." "$4/"; fi
""")
    aws.chmod(0o755)
    awscli = store_add(aws.parent.parent)
    expected = nar_hash(f"{store_fixture}/models/x")

    def build(prefix: str, extra: str = "", env: dict | None = None) -> subprocess.CompletedProcess:
        bucket = "test-" + uuid.uuid4().hex[:12]  # a fresh output path: the builder really runs
        return nix_build(with_lib(
            f'mr.fetchModel pkgs {{ name = "s"; source.s3 = {{ bucket = "{bucket}"; prefix = "{prefix}"; region = "eu-west-1"; }}; '
            f'hash = "{expected}"; {extra} }}', awscliPath=awscli), env)

    p = build("models/x", env={"AWS_ACCESS_KEY_ID": "AKIATEST"})
    assert p.returncode == 0, p.stderr
    out = Path(p.stdout.strip())
    assert (out / "config.json").read_text() == '{"model_type": "bert"}'
    assert (out / "sub" / "w.safetensors").read_bytes() == b"\x00\x01weights"
    assert "aws-args: s3 cp s3://test-" in p.stderr and "/models/x/ " in p.stderr
    assert " --recursive --no-progress --only-show-errors --region eu-west-1" in p.stderr
    assert "AWS_ACCESS_KEY_ID=AKIATEST AWS_PROFILE=unset" in p.stderr  # empty impure vars are unset
    assert "HOME=/homeless-shelter" not in p.stderr

    p = build("empty")
    assert p.returncode != 0 and "model-repo: model s: no objects under s3://test-" in p.stderr and "/empty/" in p.stderr
    p = build("models/x", 'validation.requiredFiles = [ "tokenizer.json" ];')
    assert p.returncode != 0
    assert "model-repo: model s: validation.requiredFiles: tokenizer.json is missing from the snapshot" in p.stderr


GGUF_BYTES = b"GGUF\x03\x00\x00\x00tiny"
CONFIG = '{"model_type": "llama"}'
TINY_URL_REPO = "model-repo-test/tiny-gguf"


@pytest.fixture(scope="module")
def url_model(tmp_path_factory) -> dict:
    """A source.url model whose stub fetchurls return real store files, built
    for real (its linkFarm directory), plus a Hub model (a real store dir)."""
    need_nix_build()
    d = tmp_path_factory.mktemp("files")
    (d / "model-Q4.gguf").write_bytes(GGUF_BYTES)
    (d / "cfg.json").write_text(CONFIG)
    hf_dir = d / "hf"
    hf_dir.mkdir()
    (hf_dir / "config.json").write_text('{"model_type": "bert"}')
    results = {
        "https://example.org/w/model-Q4.gguf?download=true": store_add(d / "model-Q4.gguf"),
        "https://example.org/w/cfg.json": store_add(d / "cfg.json"),
        "https://huggingface.co/model-repo-test/tiny": store_add(hf_dir),
    }
    url_nix = (f'(mr.fetchModel pkgs {{ name = "gguf"; source.url.files = ['
               f'{{ url = "https://example.org/w/model-Q4.gguf?download=true"; hash = "{HASH}"; }} '
               f'{{ url = "https://example.org/w/cfg.json"; name = "config.json"; hash = "{HASH2}"; }} ]; '
               f'integration.huggingface = {{ org = "model-repo-test"; model = "tiny-gguf"; }}; }})')
    hf_nix = (f'(mr.fetchModel pkgs {{ name = "tiny"; source.huggingface = {{ repo = "model-repo-test/tiny"; '
              f'revision = "{REV}"; }}; hash = "{HASH}"; }})')
    p = nix_build(with_lib(url_nix, fetchResults=results, realStorePaths=True))
    assert p.returncode == 0, p.stderr
    info = nix_eval(with_lib(f"let m = {url_nix}; in {{ path = \"${{m}}\"; inherit (m) file revision; }}",
                             fetchResults=results, realStorePaths=True))
    assert info["path"] == p.stdout.strip()
    return {"results": results, "url_nix": url_nix, "hf_nix": hf_nix, "hf_path": results["https://huggingface.co/model-repo-test/tiny"], **info}


def hub_probe(hub: Path, *calls: str) -> list:
    code = "import json, sys\nfrom huggingface_hub import hf_hub_download, try_to_load_from_cache, scan_cache_dir\n" \
           f"c = sys.argv[1]\nprint(json.dumps([{', '.join(calls)}]))"
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    for k in ("HF_HUB_CACHE", "HF_HOME"):
        env.pop(k, None)
    res = subprocess.run([sys.executable, "-c", code, str(hub)], env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def test_url_model_directory_and_build_cache(url_model):
    """The linkFarm is flat (file names, links to the fetchurl outputs), passthru.file
    is the main file; buildCache links it under integration.huggingface's repo id
    and huggingface_hub loads its files by repo id, offline."""
    pytest.importorskip("huggingface_hub")
    m = url_model
    d = Path(m["path"])
    assert sorted(os.listdir(d)) == ["config.json", "model-Q4.gguf"]
    assert os.readlink(d / "model-Q4.gguf") == m["results"]["https://example.org/w/model-Q4.gguf?download=true"]
    assert m["file"] == f"{d}/model-Q4.gguf" and Path(m["file"]).read_bytes() == GGUF_BYTES

    p = nix_build(with_lib(f"mr.buildCache pkgs {{ models = [ {m['url_nix']} {m['hf_nix']} ]; }}",
                           fetchResults=m["results"], realStorePaths=True))
    assert p.returncode == 0, p.stderr
    cache = Path(p.stdout.strip())
    repo = cache / "models--model-repo-test--tiny-gguf"
    assert os.readlink(repo / "snapshots" / m["revision"]) == m["path"]
    assert (repo / "refs" / "main").read_bytes() == m["revision"].encode()
    gguf, cfg, hf_cfg = hub_probe(cache, f'hf_hub_download("{TINY_URL_REPO}", "model-Q4.gguf", cache_dir=c)',
                                  f'hf_hub_download("{TINY_URL_REPO}", "config.json", cache_dir=c)',
                                  'hf_hub_download("model-repo-test/tiny", "config.json", cache_dir=c)')
    assert Path(gguf).read_bytes() == GGUF_BYTES and Path(cfg).read_text() == CONFIG
    assert gguf.startswith(str(repo / "snapshots" / m["revision"]))
    assert Path(hf_cfg).read_text() == '{"model_type": "bert"}'


def test_build_cache_refuses_a_model_without_repo_id():
    err = nix_eval_error(with_lib(
        f'(mr.buildCache pkgs {{ models = [ (mr.fetchModel pkgs {{ name = "w"; source.url.url = "https://x.org/w.gguf"; hash = "{HASH}"; }}) ]; }}).drvPath'))
    assert 'buildCache: model "w" (source.url) has no Hugging Face repo id to be linked under; set integration.huggingface.org and integration.huggingface.model' in err
    err = nix_eval_error(with_lib(
        f'mr.integration.mkLinkScript {{ model = mr.fetchModel pkgs {{ name = "w"; source.url.url = "https://x.org/w.gguf"; hash = "{HASH}"; }}; }}'))
    assert 'integration.mkLinkScript: model "w" (source.url) has no Hugging Face repo id' in err


def link_script(url_model, cache_dir: str | None = None) -> str:
    m = url_model
    arg = "" if cache_dir is None else f"cacheDir = {nix_string(cache_dir)};"
    return nix_eval(with_lib(f"mr.integration.mkLinkScript {{ models = [ {m['url_nix']} {m['hf_nix']} ]; {arg} }}",
                             fetchResults=m["results"], realStorePaths=True))


def sh(script: str, home: Path, **env) -> subprocess.CompletedProcess:
    """Run as a shellHook would be: pasted into a POSIX shell (dash here), which then goes on."""
    wrapped = script + '\necho "after=$?"\ncase $- in *e*) echo "set -e leaked";; esac\n'
    return subprocess.run(["/bin/sh", "-c", wrapped], capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(home), **env})


def test_mk_link_script_links_atomically_and_idempotently(url_model, tmp_path: Path):
    pytest.importorskip("huggingface_hub")
    m = url_model
    script = link_script(url_model)
    assert "ln -sfn" not in script and "mv -T" in script and "printf '%s'" in script
    assert "echo" not in "".join(l for l in script.splitlines() if "refs" in l and "model-repo:" not in l)

    home = tmp_path / "home"
    hf_home = tmp_path / "hf-home"
    hub = hf_home / "hub"  # HF_HOME=DIR means the hub cache is DIR/hub
    p = sh(script, home, HF_HOME=str(hf_home))
    assert p.returncode == 0 and p.stdout == "after=0\n" and p.stderr == "", p.stderr
    url_repo = hub / "models--model-repo-test--tiny-gguf"
    hf_repo = hub / "models--model-repo-test--tiny"
    assert os.readlink(url_repo / "snapshots" / m["revision"]) == m["path"]
    assert (url_repo / "refs" / "main").read_bytes() == m["revision"].encode()  # no newline
    assert os.readlink(hf_repo / "snapshots" / REV) == m["hf_path"]
    assert (hf_repo / "refs" / "main").read_bytes() == REV.encode()
    assert sorted(os.listdir(url_repo)) == ["refs", "snapshots"]  # no temp entry left, no blobs/
    assert sorted(os.listdir(hub)) == ["models--model-repo-test--tiny", "models--model-repo-test--tiny-gguf"]

    # Re-running changes nothing: same inodes, same link targets.
    def state():
        return {str(q): (q.lstat().st_ino, q.lstat().st_mtime_ns) for q in hub.rglob("*")}
    before = state()
    p = sh(script, home, HF_HOME=str(hf_home))
    assert p.returncode == 0 and p.stdout == "after=0\n" and p.stderr == ""
    assert state() == before

    gguf, try_cfg, try_hf, scan = hub_probe(
        hub,
        f'hf_hub_download("{TINY_URL_REPO}", "model-Q4.gguf", cache_dir=c)',
        f'try_to_load_from_cache("{TINY_URL_REPO}", "config.json", cache_dir=c)',
        'try_to_load_from_cache("model-repo-test/tiny", "config.json", cache_dir=c)',
        "[[str(w) for w in scan_cache_dir(c).warnings], sorted((r.repo_id, sorted(x.commit_hash for x in r.revisions)) for r in scan_cache_dir(c).repos)]")
    assert Path(gguf).read_bytes() == GGUF_BYTES
    assert try_cfg == str(url_repo / "snapshots" / m["revision"] / "config.json") and Path(try_cfg).read_text() == CONFIG
    assert try_hf == str(hf_repo / "snapshots" / REV / "config.json")
    assert scan == [[], [["model-repo-test/tiny", [REV]], [TINY_URL_REPO, [m["revision"]]]]]

    # Repairs: a ref with a trailing newline, a link to the wrong place.
    (hf_repo / "refs" / "main").write_text(REV + "\n")
    (url_repo / "snapshots" / m["revision"]).unlink()
    (url_repo / "snapshots" / m["revision"]).symlink_to("/nonexistent")
    p = sh(script, home, HF_HOME=str(hf_home))
    assert p.returncode == 0 and p.stdout == "after=0\n"
    assert (hf_repo / "refs" / "main").read_bytes() == REV.encode()
    assert os.readlink(url_repo / "snapshots" / m["revision"]) == m["path"]

    # A real directory where a link should go (the user's own download) is left
    # alone and reported; the other model is still linked; the shell goes on.
    (hf_repo / "snapshots" / REV).unlink()
    (hf_repo / "snapshots" / REV).mkdir()
    (hf_repo / "snapshots" / REV / "mine.txt").write_text("mine")
    shutil.rmtree(url_repo)
    p = sh(script, home, HF_HOME=str(hf_home))
    assert p.stdout == "after=1\n"  # non-zero status, no exit, no set -e left behind
    assert f"model-repo: {hf_repo}/snapshots/{REV} exists and is not a link" in p.stderr
    assert (hf_repo / "snapshots" / REV / "mine.txt").read_text() == "mine"
    assert os.readlink(url_repo / "snapshots" / m["revision"]) == m["path"]


def test_mk_link_script_cache_dir_resolution(url_model, tmp_path: Path):
    home = tmp_path / "home"
    # cacheDir is shell text expanded when the script runs.
    p = sh(link_script(url_model, "$HOME/my hub"), home)
    assert p.returncode == 0 and p.stdout == "after=0\n", p.stderr
    assert (home / "my hub" / "models--model-repo-test--tiny" / "refs" / "main").read_bytes() == REV.encode()
    # Default: huggingface_hub's order.
    script = link_script(url_model)
    cases = [
        ({"HF_HUB_CACHE": str(tmp_path / "a"), "HF_HOME": str(tmp_path / "no")}, tmp_path / "a"),
        ({"HUGGINGFACE_HUB_CACHE": str(tmp_path / "b")}, tmp_path / "b"),
        ({"XDG_CACHE_HOME": str(tmp_path / "xdg")}, tmp_path / "xdg" / "huggingface" / "hub"),
        ({"HF_HUB_CACHE": "~/tilde"}, home / "tilde"),
        ({}, home / ".cache" / "huggingface" / "hub"),
    ]
    for env, hub in cases:
        p = sh(script, home, **env)
        assert p.returncode == 0 and p.stdout == "after=0\n", (env, p.stderr)
        assert os.readlink(hub / "models--model-repo-test--tiny" / "snapshots" / REV) == url_model["hf_path"], env


def test_integration_helpers():
    r = nix_eval(with_lib(f"""
      let m = mr.fetchModel pkgs {{ name = "e"; source.huggingface = {{ repo = "org/m"; revision = "{REV}"; }}; hash = "{HASH}"; }};
      in {{
        name = mr.integration.mkCacheName {{ org = "meta-llama"; model = "Llama-2-7b-hf"; }};
        dataset = mr.integration.mkCacheName {{ org = "o"; model = "d"; repoType = "dataset"; }};
        path = mr.integration.getModelPath m;
        drv = "${{m}}";
      }}"""))
    assert r["name"] == "models--meta-llama--Llama-2-7b-hf" and r["dataset"] == "datasets--o--d"
    assert r["path"] == r["drv"]


def test_nixos_module_links_a_url_model_through_the_activator(url_model, tmp_path: Path):
    """A source.url model in the NixOS module: its manifest entry (derived revision,
    integration repo id) given to the activator; huggingface_hub then resolves it."""
    pytest.importorskip("huggingface_hub")
    from nixeval import nixos_eval

    m = url_model
    r = nixos_eval(f"""{{ services.model-repo = {{ enable = true;
        models.gguf = {{ source.url.files = [
          {{ url = "https://example.org/w/model-Q4.gguf?download=true"; hash = "{HASH}"; }}
          {{ url = "https://example.org/w/cfg.json"; name = "config.json"; hash = "{HASH2}"; }} ];
          integration.huggingface = {{ org = "model-repo-test"; model = "tiny-gguf"; }}; }};
        models.plain = {{ source.url.url = "https://example.org/w/cfg.json"; hash = "{HASH2}"; }};
      }}; }}""", fetch_results=m["results"], real_store_paths=True)
    entries = r["manifest"]["models"]
    assert entries["gguf"] == {"repoId": TINY_URL_REPO, "repoType": "model", "revision": m["revision"],
                               "refs": ["main"], "path": m["path"], "link": True, "partial": False,
                               "file": "model-Q4.gguf"}
    assert entries["plain"]["link"] is False and r["failedAssertions"] == []
    assert r["environment"]["MODEL_REPO_GGUF"] == m["path"]
    manifest = dict(r["manifest"], models={"gguf": entries["gguf"]})
    mf = tmp_path / "manifest.json"
    mf.write_text(json.dumps(manifest))
    hub = tmp_path / "hub"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "MODEL_REPO_"))}
    proc = subprocess.run([sys.executable, "-m", "activate", "activate", "--manifest", str(mf), "--cache-dir", str(hub),
                           "--state-dir", str(tmp_path / "state"), "--format", "json"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["MODEL_REPO_GGUF_FILE"] == f"{m['path']}/model-Q4.gguf"
    (cfg,) = hub_probe(hub, f'try_to_load_from_cache("{TINY_URL_REPO}", "config.json", cache_dir=c)')
    assert Path(cfg).read_text() == CONFIG


def test_git_lfs_warns_about_unused_network_settings():
    p = subprocess.run(["nix-instantiate", "--eval", "-E", with_lib(
        f'(mr.fetchModel pkgs {{ name = "g"; source.git-lfs = {{ url = "https://x.example/r.git"; rev = "{REV}"; }}; '
        f'hash = "{HASH}"; network.retries = 2; }}).revision')], cwd=REPO, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert 'model-repo: model "g": network.timeout / network.retries are not used by the git fetcher of source.git-lfs.' in p.stderr
