"""The Home Manager module, evaluated inside Home Manager's real full module set
(stub pkgs only) for x86_64-linux, and for aarch64-darwin through
home-manager.sharedModules as nix-darwin does."""

from __future__ import annotations

import shlex

import pytest

from nixeval import HASH, REV, hf_model, hm_eval, nix_eval_error

BASIC = f"""{{
  programs.model-repo = {{
    enable = true;
    models.bert-base = {hf_model("google-bert/bert-base-uncased")};
    models."all.MiniLM" = {hf_model()};
  }};
}}"""


@pytest.mark.parametrize(
    "system,shared",
    [("x86_64-linux", False), ("aarch64-darwin", True), ("aarch64-darwin", False)],
)
def test_activation_and_session_variables(system, shared):
    r = hm_eval(BASIC, system=system, shared=shared)
    assert r["hostPlatform"] == system

    act = r["activation"]
    assert act["after"] == ["linkGeneration"]
    order = r["activationOrder"]
    assert order.index("linkGeneration") < order.index("model-repo")
    assert order.index("writeBoundary") < order.index("model-repo")

    data = act["data"]
    # The activator by its full store path, with HM's dry-run and verbosity.
    assert "/bin/model-repo activate --manifest " + r["manifestFile"] in data
    assert r["manifestFile"].endswith("-model-repo-manifest.json")
    # DRY_RUN as Home Manager reads it: set (even empty) = dry run.
    assert "${DRY_RUN+--dry-run}" in data and "$VERBOSE_ARG" in data
    # Its own state under xdg.stateHome (same on darwin), given explicitly.
    assert "--state-dir " in data and "/.local/state/model-repo" in data
    assert ">/dev/null" in data  # the environment is in sessionVariables already
    # Exit 1 and 3 warn and continue; anything else stops activation.
    assert '1) warnEcho' in data and '3) errorEcho' in data
    assert 'exit "$modelRepoStatus"' in data

    env = r["sessionVariables"]
    assert env["MODEL_REPO_BERT_BASE"] == r["modelPaths"]["bert-base"]
    assert env["MODEL_REPO_ALL_MINILM"] == r["modelPaths"]["all.MiniLM"]
    assert env["HF_HUB_OFFLINE"] == "1" and env["TRANSFORMERS_OFFLINE"] == "1"
    assert "HF_HUB_CACHE" not in env  # cacheDir null: huggingface_hub's own default
    assert "HF_HOME" not in env
    assert r["failedAssertions"] == [] and r["warnings"] == []
    assert r["systemdUserUnits"] == []
    # The command on PATH (every subcommand), the same package the entry calls.
    assert len(r["packages"]) == 1 and data.startswith("modelRepoStatus=0") and r["packages"][0] + "/bin/model-repo activate" in data
    # systemd user services get the same variables on Linux; darwin has no systemd.
    if system.endswith("linux"):
        assert r["systemdSessionVariables"] == r["sessionVariables"]
    else:
        assert r["systemdSessionVariables"] == {}

    m = r["manifest"]
    assert m["profile"] == "home-manager" and m["cacheDir"] is None and m["offline"] is True
    assert m["version"] == 1 and m["storeDir"] == "/nix/store"
    assert m["models"]["bert-base"] == {
        "repoId": "google-bert/bert-base-uncased",
        "repoType": "model",
        "revision": REV,
        "refs": ["main"],
        "path": r["modelPaths"]["bert-base"],
        "link": True,
        "partial": False,
    }


@pytest.mark.parametrize("sparse,partial", [
    ({}, False),
    ({"include": ["*.json"]}, True),
    ({"exclude": ["onnx/*"]}, True),
    ({"files": ["config.json"]}, True),
])
def test_manifest_marks_sparse_snapshots_partial_and_matches_the_schema(sparse, partial):
    """A store path holding some of the repo's files is `partial` (the activator then
    links files, not the folder); the whole manifest validates against the
    activator's own JSON Schema (`model-repo schema`)."""
    jsonschema = pytest.importorskip("jsonschema")
    import json
    import subprocess
    import sys

    from nixeval import REPO

    r = hm_eval(f"""{{ programs.model-repo = {{ enable = true;
      models.m = {hf_model(huggingface=sparse)}; }}; }}""")
    assert r["manifest"]["models"]["m"]["partial"] is partial
    schema = json.loads(subprocess.run([sys.executable, "-m", "activate", "schema"], cwd=REPO, check=True,
                                       capture_output=True, text=True).stdout)
    jsonschema.validate(r["manifest"], schema)


def test_fetch_arguments():
    r = hm_eval(BASIC)
    args = r["fetchArgs"]["bert-base"]
    assert args["url"] == "https://huggingface.co/google-bert/bert-base-uncased"
    assert args["rev"] == REV and args["hash"] == HASH and args["fetchLFS"] is True
    assert "sparseCheckout" not in args


def test_cache_dir_offline_off_and_per_model_link():
    r = hm_eval(f"""{{
      programs.model-repo = {{
        enable = true;
        integration.huggingface = {{ cacheDir = "/home/alice/hf/"; offlineMode = false; }};
        models.a = {hf_model()};
        models.b = {hf_model("google-bert/bert-base-uncased")} // {{ integration.huggingface.enable = false; }};
      }};
    }}""")
    env = r["sessionVariables"]
    # cacheDir is HF_HOME-like (a trailing slash accepted): the hub is its hub folder.
    assert env["HF_HUB_CACHE"] == "/home/alice/hf/hub" and "HF_HOME" not in env
    assert "HF_HUB_OFFLINE" not in env and "TRANSFORMERS_OFFLINE" not in env
    assert r["manifest"]["cacheDir"] == "/home/alice/hf/hub"
    assert r["warnings"] == []
    assert r["manifest"]["offline"] is False
    assert r["manifest"]["models"]["a"]["link"] is True
    assert r["manifest"]["models"]["b"]["link"] is False
    assert set(env) >= {"MODEL_REPO_A", "MODEL_REPO_B"}


def test_integration_disabled_keeps_only_model_variables():
    r = hm_eval(f"""{{
      programs.model-repo = {{
        enable = true;
        integration.huggingface.enable = false;
        models.a = {hf_model()};
      }};
    }}""")
    # The entry still runs: it prunes what an earlier generation linked.
    assert "/bin/model-repo activate --manifest " + r["manifestFile"] in r["activation"]["data"]
    assert set(r["sessionVariables"]) == {"MODEL_REPO_A"}
    assert r["manifest"]["models"]["a"]["link"] is False


def test_setup_on_activation_off():
    r = hm_eval(f"""{{
      programs.model-repo = {{
        enable = true;
        integration.huggingface.setupOnActivation = false;
        models.a = {hf_model()};
      }};
    }}""")
    assert r["activation"] is None
    assert r["sessionVariables"]["HF_HUB_OFFLINE"] == "1"


def test_disabled_module_sets_nothing_but_the_deactivate_entry():
    r = hm_eval(f"""{{ programs.model-repo.models.a = {hf_model()}; }}""")
    assert r["sessionVariables"] == {} and r["packages"] == [] and r["failedAssertions"] == []
    data = r["activation"]["data"]
    assert r["activation"]["after"] == ["linkGeneration"]
    # One glob on the state dir; Python only when a state file is there.
    assert f"for modelRepoState in {shlex.quote(r['stateHome'] + '/model-repo')}/*.json; do" in data
    assert "/bin/model-repo deactivate --profile home-manager --state-dir " in data
    assert "/bin/model-repo activate" not in data and "${DRY_RUN+--dry-run}" in data


def test_install_command_opt_out():
    r = hm_eval(f"""{{ programs.model-repo = {{ enable = true; installCommand = false; models.a = {hf_model()}; }}; }}""")
    assert r["packages"] == [] and "/bin/model-repo activate" in r["activation"]["data"]


@pytest.mark.parametrize("value", ["/home/alice/.cache/huggingface/hub", "/home/alice/.cache/huggingface/hub/"])
def test_cache_dir_ending_in_hub_warns(value):
    r = hm_eval(f"""{{ programs.model-repo = {{ enable = true; integration.huggingface.cacheDir = "{value}"; models.a = {hf_model()}; }}; }}""")
    assert r["sessionVariables"]["HF_HUB_CACHE"] == "/home/alice/.cache/huggingface/hub/hub"
    (w,) = r["warnings"]
    assert 'programs.model-repo.integration.huggingface.cacheDir = "/home/alice/.cache/huggingface/hub" ends in "hub"' in w
    assert 'Did you mean its parent, "/home/alice/.cache/huggingface"?' in w


def test_assertions():
    r = hm_eval(f"""{{
      programs.model-repo = {{
        enable = true;
        integration.huggingface.cacheDir = "relative/hub";
        models."bert-base" = {hf_model()};
        models."bert.base" = {hf_model("google-bert/bert-base-uncased")};
        models."-bad" = {hf_model("org/other")};
        models.x = {hf_model("org/two", rev="2" * 40)};
        models.y = {hf_model("org/two", rev="3" * 40)};
      }};
    }}""")
    msgs = "\n".join(r["failedAssertions"])
    assert '"bert-base", "bert.base"' in msgs and "MODEL_REPO_BERT_BASE" in msgs
    assert 'model name "-bad" is not allowed' in msgs and "^[A-Za-z0-9_][A-Za-z0-9_.+-]{0,99}$" in msgs
    assert "cacheDir must be an absolute path" in msgs
    assert '"x", "y" link models--org--two with different commits under the same ref "main"' in msgs


def test_network_warning():
    r = hm_eval(f"""{{
      programs.model-repo = {{
        enable = true;
        globalNetwork.timeout = 30;
        models.a = {hf_model()};
      }};
    }}""")
    assert any("programs.model-repo.models.a.network is set" in w for w in r["warnings"])


def test_global_validation_is_a_default():
    r = hm_eval(f"""{{
      programs.model-repo = {{
        enable = true;
        globalValidation.requiredFiles = [ "config.json" ];
        models.a = {hf_model()};
        models.b = {hf_model("google-bert/bert-base-uncased")} // {{ validation.requiredFiles = [ "vocab.txt" ]; }};
      }};
    }}""")
    assert '"$out"/config.json' in r["fetchArgs"]["a"]["postFetch"]
    assert "vocab.txt" in r["fetchArgs"]["b"]["postFetch"]
    assert "config.json" not in r["fetchArgs"]["b"]["postFetch"]


def test_branch_revision_fails_evaluation_with_instructions():
    from nixeval import nix_string, pkgs_path, require_input

    err = nix_eval_error(f"""(import ./tests/nix/home-manager.nix {{
      nixpkgsLib = {nix_string(require_input('nixpkgs-lib') / 'lib')};
      homeManager = {nix_string(require_input('home-manager'))};
      pkgsPath = {nix_string(pkgs_path())};
      userModule.programs.model-repo = {{
        enable = true;
        models.bert = {hf_model("google-bert/bert-base-uncased", rev="main")};
      }};
    }}).sessionVariables""")
    assert 'model "bert": source.huggingface.revision must be a pinned 40-character lowercase hex commit, got "main"' in err
    assert "model-repo prefetch google-bert/bert-base-uncased" in err
    assert "git ls-remote https://huggingface.co/google-bert/bert-base-uncased main" in err
