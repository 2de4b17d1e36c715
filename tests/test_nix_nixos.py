"""The NixOS module, evaluated with nixpkgs' lib.evalModules and stub
declarations of the NixOS options it sets."""

from __future__ import annotations

from nixeval import hf_model, nixos_eval


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
