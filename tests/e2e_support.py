"""The probe that ``test_activate_e2e.py`` runs in a fresh process, often as another user.

It loads a linked model through the hub cache the way users do (no local paths), and
reports what it saw as one line ``E2E-RESULT <json>`` on stdout; the test asserts on it.

Self-contained on purpose: standard library plus the Hugging Face stack, no pytest and no
project imports, so any python that has huggingface_hub, transformers and
sentence-transformers can run it from its source text::

    python -c "$(cat e2e_support.py)" '<json arguments>'

The environment (``HF_HUB_CACHE``, ``HF_HUB_OFFLINE``, ``HOME``) is set by the caller:
huggingface_hub reads it once, at import.
"""

from __future__ import annotations

import json
import os
import sys
import time

MARKER = "E2E-RESULT "

#: A paraphrase pair and an unrelated pair sharing the first sentence. Measured with this
#: model: cosine 0.86 and -0.03. Random or wrong weights give no such gap (an untrained
#: BERT scores every pair alike).
PARAPHRASE = ("How do I reset my password?", "How can I change my password?")
UNRELATED = ("How do I reset my password?", "Penguins live in the Antarctic.")


def _cosines(emb) -> dict[str, float]:  # emb: 3 x d, rows: PARAPHRASE + UNRELATED[1]
    import torch

    emb = torch.nn.functional.normalize(emb.float(), p=2, dim=1)
    return {
        "paraphrase": float(emb[0] @ emb[1]),
        "unrelated": float(emb[0] @ emb[2]),
    }


def probe(args: dict) -> dict:
    """Load ``args['repo_id']`` every way the test needs; return what happened."""
    timings: dict[str, float] = {}
    t = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal t
        now = time.perf_counter()
        timings[name] = round(now - t, 3)
        t = now

    repo_id: str = args["repo_id"]
    commit: str = args["commit"]
    refs: list[str] = args["refs"]
    sentences = [PARAPHRASE[0], PARAPHRASE[1], UNRELATED[1]]

    import huggingface_hub
    import sentence_transformers
    import torch
    import transformers
    from huggingface_hub import constants, hf_hub_download, scan_cache_dir
    from huggingface_hub.errors import LocalEntryNotFoundError
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModel, AutoTokenizer

    lap("import")
    out: dict = {
        "uid": os.getuid(),
        "euid": os.geteuid(),
        "hub_cache": constants.HF_HUB_CACHE,
        "offline": bool(constants.HF_HUB_OFFLINE),
        "versions": {
            "huggingface_hub": huggingface_hub.__version__,
            "transformers": transformers.__version__,
            "sentence_transformers": sentence_transformers.__version__,
            "torch": torch.__version__,
        },
    }

    # sentence-transformers: by repo id (refs/main), by another ref, by the commit.
    st_results = {}
    reference = None
    for label, revision in [("repo_id", None)] + [(f"ref:{r}", r) for r in refs if r != "main"] + [
        ("commit", commit)
    ]:
        model = SentenceTransformer(repo_id, revision=revision, device="cpu")
        emb = model.encode(sentences, convert_to_tensor=True)
        lap(f"st:{label}")
        if reference is None:
            reference = emb
        st_results[label] = {
            **_cosines(emb),
            "dim": int(emb.shape[1]),
            "max_abs_diff_to_repo_id": float((emb - reference).abs().max()),
        }
        del model
    out["sentence_transformers"] = st_results

    # transformers alone: tokenizer + encoder, mean pooling over the attention mask.
    tok = AutoTokenizer.from_pretrained(repo_id)
    enc = AutoModel.from_pretrained(repo_id)
    batch = tok(sentences, padding=True, truncation=True, return_tensors="pt")
    with torch.no_grad():
        hidden = enc(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    out["transformers"] = {
        **_cosines(pooled),
        "model_class": type(enc).__name__,
        "max_abs_diff_to_st": float(
            (torch.nn.functional.normalize(pooled, dim=1) - reference.float()).abs().max()
        ),
    }
    lap("transformers")

    # hf_hub_download: what a user's code gets as a path.
    config = hf_hub_download(repo_id, "config.json")
    pooling = hf_hub_download(repo_id, "1_Pooling/config.json", revision=refs[-1])
    out["download"] = {
        "config": config,
        "config_realpath": os.path.realpath(config),
        "pooling": pooling,
        "pooling_realpath": os.path.realpath(pooling),
    }
    # Negative controls: a ref and a commit nobody linked must not resolve (proves that
    # revisions are honoured and that offline mode is on).
    for label, revision in (("missing_ref", "no-such-ref"), ("missing_commit", "0" * 40)):
        try:
            got = hf_hub_download(repo_id, "config.json", revision=revision)
        except LocalEntryNotFoundError as exc:
            got = f"LocalEntryNotFoundError: {type(exc).__name__}"
        out["download"][label] = got
    lap("hf_hub_download")

    info = scan_cache_dir(constants.HF_HUB_CACHE)
    out["scan"] = {
        "warnings": [str(w) for w in info.warnings],
        "repos": [
            {
                "repo_id": repo.repo_id,
                "repo_type": repo.repo_type,
                "nb_files": repo.nb_files,
                "revisions": [
                    {
                        "commit": rev.commit_hash,
                        "refs": sorted(rev.refs),
                        "nb_files": rev.nb_files,
                        "snapshot_path": str(rev.snapshot_path),
                    }
                    for rev in repo.revisions
                ],
            }
            for repo in info.repos
        ],
    }
    lap("scan_cache_dir")
    out["timings"] = timings
    return out


def main(argv: list[str]) -> int:
    args = json.loads(argv[0])
    result = probe(args)
    sys.stdout.write("\n" + MARKER + json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0


def parse_output(stdout: str) -> dict:
    """The probe's result from its stdout (libraries may print around it)."""
    for line in reversed(stdout.splitlines()):
        if line.startswith(MARKER):
            return json.loads(line[len(MARKER):])
    raise ValueError("the probe printed no result line")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
