"""Regenerate examples/tiny-bert: a two-layer BERT small enough to commit (~20 KB).

Deterministic (seeded); needs torch, transformers and safetensors. The bundled demo
links this folder as the snapshot of repo id ``model-repo-example/tiny-bert``.
"""

import json
import pathlib

import torch
from transformers import BertConfig, BertModel

OUT = pathlib.Path(__file__).resolve().parent / "tiny-bert"
WORDS = (
    "the a an is are was cat cats dog dogs sat on mat rug sun moon hot cold red blue "
    "model nix store cache link hub offline fast small big good bad run runs ran"
).split()
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, ".", ",", "!", "?"]


def main() -> None:
    OUT.mkdir(exist_ok=True)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(VOCAB), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=64, type_vocab_size=2,
    )
    model = BertModel(config)
    model.save_pretrained(OUT, safe_serialization=True)
    (OUT / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    (OUT / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "BertTokenizer", "do_lower_case": True, "model_max_length": 64},
        indent=2) + "\n")
    (OUT / "special_tokens_map.json").write_text(json.dumps(
        {"cls_token": "[CLS]", "mask_token": "[MASK]", "pad_token": "[PAD]",
         "sep_token": "[SEP]", "unk_token": "[UNK]"}, indent=2) + "\n")


if __name__ == "__main__":
    main()
