"""The NixOS module, evaluated with nixpkgs' lib.evalModules and stub
declarations of the NixOS options it sets."""

from __future__ import annotations

from nixeval import HASH, hf_model, nixos_eval


def test_service_tmpfiles_group_and_environment():
    r = nixos_eval(f"""{{ config, ... }}: {{
      services.model-repo = {{
        enable = true;
        models.embedding = {hf_model()};
        models.bert-base = {hf_model("google-bert/bert-base-uncased")};
      }};
      systemd.services.vllm = {{
        environment = config.services.model-repo.environment;
        after = [ "model-repo.service" ];
        requires = [ "model-repo.service" ];
      }};
    }}""")
    svc = r["services"]["model-repo"]
    sc = svc["serviceConfig"]
    assert sc["Type"] == "oneshot" and sc["RemainAfterExit"] is True
    assert sc["UMask"] == "0002" and sc["StateDirectory"] == "model-repo"
    assert sc["User"] == "root" and sc["Group"] == "model-repo"
    assert sc["ExecStart"].endswith(f"/bin/model-repo activate --manifest {r['manifestFile']} --log-format json")
    assert svc["environment"] == {"MODEL_REPO_STATE_DIR": "/var/lib/model-repo"}
    assert svc["wantedBy"] == ["multi-user.target"]

    assert r["groups"] == ["model-repo"]
    assert r["tmpfiles"] == [
        "d /var/cache/huggingface 2775 root model-repo - -",
        "d /var/cache/huggingface/hub 2775 root model-repo - -",
    ]
    env = r["environment"]
    assert env == {
        "HF_HUB_CACHE": "/var/cache/huggingface/hub",
        "HF_DATASETS_OFFLINE": "1",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "MODEL_REPO_EMBEDDING": r["modelPaths"]["embedding"],
        "MODEL_REPO_BERT_BASE": r["modelPaths"]["bert-base"],
    }
    assert r["services"]["vllm"]["environment"] == env

    m = r["manifest"]
    assert m["profile"] == "nixos" and m["cacheDir"] == "/var/cache/huggingface/hub"
    assert set(m["models"]) == {"embedding", "bert-base"}
    assert r["failedAssertions"] == [] and r["warnings"] == []


def test_custom_cache_dir_user_group_token():
    r = nixos_eval(f"""{{
      services.model-repo = {{
        enable = true;
        user = "models";
        group = "inference";
        createGroup = false;
        integration.huggingface = {{ cacheDir = "/data/models"; offlineMode = false; }};
        auth.tokenFile = "/run/secrets/hf-token";
        models.m = {hf_model()};
      }};
    }}""")
    assert r["groups"] == []
    assert r["tmpfiles"] == [
        "d /data/models 2775 models inference - -",
        "d /data/models/hub 2775 models inference - -",
    ]
    env = r["environment"]
    assert env["HF_HUB_CACHE"] == "/data/models/hub"
    assert env["HF_TOKEN_PATH"] == "/run/secrets/hf-token"
    assert "HF_HUB_OFFLINE" not in env
    assert r["manifest"]["cacheDir"] == "/data/models/hub"
    assert r["services"]["model-repo"]["serviceConfig"]["Group"] == "inference"


def test_integration_disabled_still_prunes():
    r = nixos_eval(f"""{{
      services.model-repo = {{ enable = true; integration.huggingface.enable = false; models.m = {hf_model()}; }};
    }}""")
    # The unit runs with every model unlinked: it prunes what was linked before.
    sc = r["services"]["model-repo"]["serviceConfig"]
    assert sc["ExecStart"].endswith(f"/bin/model-repo activate --manifest {r['manifestFile']} --log-format json")
    assert r["manifest"]["models"]["m"]["link"] is False
    assert r["tmpfiles"] == []
    assert set(r["environment"]) == {"MODEL_REPO_M"}


def test_store_cache_dir_rejected():
    r = nixos_eval(f"""{{
      services.model-repo = {{ enable = true; integration.huggingface.cacheDir = "/nix/store/x"; models.m = {hf_model()}; }};
    }}""")
    assert any("outside the Nix store" in m for m in r["failedAssertions"])


def test_module_token_file_is_every_hub_models_default():
    """Seed 000's production example: the module-wide auth.tokenFile makes gated Hub
    models fetch (netrc from the file); a model's own token settings win; non-Hub
    sources are not given it."""
    r = nixos_eval(f"""{{
      services.model-repo = {{
        enable = true;
        auth.tokenFile = "/run/secrets/hf-token";
        models.llama = {hf_model("meta-llama/Llama-3.2-1B")};
        models.own = {hf_model("org/own")} // {{ auth.tokenFile = "/run/secrets/other"; }};
        models.env = {hf_model("org/env")} // {{ auth.tokenEnvVar = "HF_TOKEN"; }};
        models.gguf = {{ source.url.url = "https://example.org/m.gguf"; hash = "{HASH}"; }};
      }};
    }}""")
    assert r["tokenFiles"] == {"llama": "/run/secrets/hf-token", "own": "/run/secrets/other",
                               "env": None, "gguf": None}
    assert "/run/secrets/hf-token" in r["fetchArgs"]["llama"]["netrcPhase"]
    assert r["environment"]["HF_TOKEN_PATH"] == "/run/secrets/hf-token"
    assert r["failedAssertions"] == []


def test_session_variables_off_by_default_and_command_on_path():
    r = nixos_eval(f"""{{ services.model-repo = {{ enable = true; models.m = {hf_model()}; }}; }}""")
    assert r["sessionVariables"] == {}
    assert len(r["systemPackages"]) == 1
    assert r["services"]["model-repo"]["serviceConfig"]["ExecStart"].startswith(r["systemPackages"][0] + "/bin/model-repo ")
    r = nixos_eval(f"""{{ services.model-repo = {{ enable = true; setSessionVariables = true; installCommand = false;
      models.m = {hf_model()}; }}; }}""")
    assert r["sessionVariables"] == r["environment"] and r["sessionVariables"]["HF_HUB_CACHE"] == "/var/cache/huggingface/hub"
    assert r["systemPackages"] == []


def test_cache_dir_trailing_slash_and_hub_warning():
    r = nixos_eval(f"""{{ services.model-repo = {{ enable = true; integration.huggingface.cacheDir = "/data/models/"; models.m = {hf_model()}; }}; }}""")
    assert r["environment"]["HF_HUB_CACHE"] == "/data/models/hub" and r["warnings"] == []
    assert r["tmpfiles"][0] == "d /data/models 2775 root model-repo - -"
    r = nixos_eval(f"""{{ services.model-repo = {{ enable = true; integration.huggingface.cacheDir = "/data/hub"; models.m = {hf_model()}; }}; }}""")
    (w,) = r["warnings"]
    assert 'services.model-repo.integration.huggingface.cacheDir = "/data/hub" ends in "hub"' in w and '"/data"?' in w


def test_disabled_module_unit_deactivates_only_with_state():
    r = nixos_eval(f"""{{ services.model-repo.models.m = {hf_model()}; }}""")
    unit = r["services"]["model-repo"]
    assert unit["unitConfig"] == {"ConditionPathExistsGlob": "/var/lib/model-repo/*.json"}
    assert unit["serviceConfig"]["ExecStart"].endswith("/bin/model-repo deactivate --profile nixos --log-format json")
    assert unit["environment"] == {"MODEL_REPO_STATE_DIR": "/var/lib/model-repo"}
    assert r["systemPackages"] == [] and r["tmpfiles"] == [] and r["groups"] == []
