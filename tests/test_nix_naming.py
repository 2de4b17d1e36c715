"""The Nix naming rules (lib/naming.nix) equal the activator's (activate/naming.py).

Hypothesis generates batches of names; each batch is evaluated by Nix in ONE
nix-instantiate call and compared name by name with Python.
"""

from __future__ import annotations

import re
import string

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

# Deliberately not guarded: without the activator's naming module this test fails.
from activate.naming import MODEL_NAME_RE, env_var_name, file_var_name, repo_folder_name

from nixeval import lib_expr, nix_eval, nix_value


def documented_rule(name: str) -> str:
    """The rule as documented (docs/nix.md), written independently of both sides."""
    return "MODEL_REPO_" + re.sub(r"[^A-Z0-9_]", "_", name.translate(
        str.maketrans(string.ascii_lowercase, string.ascii_uppercase)))


valid_names = st.from_regex(r"\A[A-Za-z0-9_][A-Za-z0-9_.+-]{0,99}\Z")
# Any printable ASCII (Nix string literals cannot carry control characters here).
ascii_names = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)
names = st.one_of(valid_names, ascii_names)


def nix_naming(batch: list[str]) -> list[dict]:
    expr = f"""
      let n = import ./lib/naming.nix {{ lib = {lib_expr()}; }};
      in map (s: {{ var = n.envVarName s; file = n.fileVarName s; valid = n.isValidModelName s; }})
        {nix_value(batch)}
    """
    return nix_eval(expr)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(names, min_size=50, max_size=150))
def test_env_var_rule_matches_python(batch):
    out = nix_naming(batch)
    for name, got in zip(batch, out):
        assert got["var"] == env_var_name(name) == documented_rule(name), name
        assert got["file"] == file_var_name(name) == documented_rule(name) + "_FILE", name
        assert got["valid"] == bool(MODEL_NAME_RE.match(name)), name


def test_known_examples():
    batch = ["bert-base", "all.MiniLM", "a+b", "_x", "Z9", "x" * 100]
    out = nix_naming(batch)
    assert [o["var"] for o in out] == [
        "MODEL_REPO_BERT_BASE",
        "MODEL_REPO_ALL_MINILM",
        "MODEL_REPO_A_B",
        "MODEL_REPO__X",
        "MODEL_REPO_Z9",
        "MODEL_REPO_" + "X" * 100,
    ]
    assert all(o["valid"] for o in out)
    bad = nix_naming(["", "-x", ".x", "x" * 101, "a b", "a/b", "é"])
    assert not any(o["valid"] for o in bad)


repo_ids = st.from_regex(r"\A[A-Za-z0-9]([A-Za-z0-9_]|-[A-Za-z0-9]){0,20}/[A-Za-z0-9]([A-Za-z0-9_]|[.-][A-Za-z0-9]){0,20}\Z")


@settings(max_examples=3, deadline=None)
@given(st.lists(st.tuples(repo_ids, st.sampled_from(["model", "dataset"])), min_size=30, max_size=60))
def test_hub_folder_name_matches_python(batch):
    expr = f"""
      let n = import ./lib/naming.nix {{ lib = {lib_expr()}; }};
      in map (p: n.hubFolderName {{ repoId = builtins.elemAt p 0; repoType = builtins.elemAt p 1; }})
        {nix_value([list(p) for p in batch])}
    """
    out = nix_eval(expr)
    assert out == [repo_folder_name(r, t) for r, t in batch]
