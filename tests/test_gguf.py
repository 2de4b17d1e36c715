"""GGUF quantization tags: activate/gguf.py and lib/gguf.nix select the same files, case
by case, on a table of real llama.cpp / Hub file names (bartowski, TheBloke, unsloth,
Qwen, ggml-org naming; split files; mmproj; sub-folders; ambiguity). All cases go in
ONE nix-instantiate call."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from activate.gguf import GgufError, select_gguf, split_model_ref

from nixeval import lib_expr, nix_eval, nix_value

#: bartowski/Llama-3.2-3B-Instruct-GGUF (names as listed on the Hub).
BARTOWSKI = [
    ".gitattributes", "README.md",
    "Llama-3.2-3B-Instruct-IQ3_M.gguf", "Llama-3.2-3B-Instruct-IQ4_XS.gguf",
    "Llama-3.2-3B-Instruct-Q3_K_L.gguf", "Llama-3.2-3B-Instruct-Q3_K_XL.gguf",
    "Llama-3.2-3B-Instruct-Q4_0.gguf", "Llama-3.2-3B-Instruct-Q4_0_4_4.gguf",
    "Llama-3.2-3B-Instruct-Q4_K_L.gguf", "Llama-3.2-3B-Instruct-Q4_K_M.gguf",
    "Llama-3.2-3B-Instruct-Q4_K_S.gguf", "Llama-3.2-3B-Instruct-Q5_K_M.gguf",
    "Llama-3.2-3B-Instruct-Q6_K.gguf", "Llama-3.2-3B-Instruct-Q6_K_L.gguf",
    "Llama-3.2-3B-Instruct-Q8_0.gguf", "Llama-3.2-3B-Instruct-f16.gguf",
    "Llama-3.2-3B-Instruct.imatrix",
]
#: TheBloke/Mistral-7B-Instruct-v0.2-GGUF: "." before the tag, lower-case name.
THEBLOKE = ["config.json", "mistral-7b-instruct-v0.2.Q2_K.gguf",
            "mistral-7b-instruct-v0.2.Q4_K_M.gguf", "mistral-7b-instruct-v0.2.Q4_K_S.gguf",
            "mistral-7b-instruct-v0.2.Q5_K_M.gguf", "mistral-7b-instruct-v0.2.Q8_0.gguf"]
#: unsloth/Qwen3-VL-30B-A3B-Instruct-GGUF style: UD- tags, split files in sub-folders,
#: several mmproj files.
UNSLOTH = [
    "Qwen3-VL-30B-A3B-Instruct-Q4_K_M.gguf", "Qwen3-VL-30B-A3B-Instruct-UD-Q4_K_XL.gguf",
    "Qwen3-VL-30B-A3B-Instruct-Q8_0.gguf",
    "BF16/Qwen3-VL-30B-A3B-Instruct-BF16-00001-of-00002.gguf",
    "BF16/Qwen3-VL-30B-A3B-Instruct-BF16-00002-of-00002.gguf",
    "UD-Q8_K_XL/Qwen3-VL-30B-A3B-Instruct-UD-Q8_K_XL-00001-of-00003.gguf",
    "UD-Q8_K_XL/Qwen3-VL-30B-A3B-Instruct-UD-Q8_K_XL-00002-of-00003.gguf",
    "UD-Q8_K_XL/Qwen3-VL-30B-A3B-Instruct-UD-Q8_K_XL-00003-of-00003.gguf",
    "mmproj-BF16.gguf", "mmproj-F16.gguf", "mmproj-F32.gguf",
]
#: Qwen/Qwen2.5-7B-Instruct-GGUF: lower-case tags, split files at the root.
QWEN = [
    "qwen2.5-7b-instruct-q4_k_m-00001-of-00002.gguf",
    "qwen2.5-7b-instruct-q4_k_m-00002-of-00002.gguf",
    "qwen2.5-7b-instruct-q8_0-00001-of-00003.gguf",
    "qwen2.5-7b-instruct-q8_0-00002-of-00003.gguf",
    "qwen2.5-7b-instruct-q8_0-00003-of-00003.gguf",
    "qwen2.5-7b-instruct-fp16-00001-of-00004.gguf",
]
#: ggml-org/gemma-3-4b-it-GGUF: a bare tag file name and mmproj-model-f16.gguf.
GGML_ORG = ["gemma-3-4b-it-Q4_K_M.gguf", "gemma-3-4b-it-f16.gguf",
            "mmproj-model-f16.gguf"]

# (name, paths, quant, mmproj choice, expected parts, expected mmproj | error kind)
TABLE = [
    ("bartowski Q4_K_M", BARTOWSKI, "Q4_K_M", "auto",
     ["Llama-3.2-3B-Instruct-Q4_K_M.gguf"], None),
    ("lower-case tag", BARTOWSKI, "q4_k_m", "auto",
     ["Llama-3.2-3B-Instruct-Q4_K_M.gguf"], None),
    ("Q4_K does not match Q4_K_M", BARTOWSKI, "Q4_K", "auto", "no-match", None),
    ("Q4_0 not Q4_0_4_4", BARTOWSKI, "Q4_0", "auto",
     ["Llama-3.2-3B-Instruct-Q4_0.gguf"], None),
    ("Q6_K not Q6_K_L", BARTOWSKI, "Q6_K", "auto", ["Llama-3.2-3B-Instruct-Q6_K.gguf"], None),
    ("F16 matches f16", BARTOWSKI, "F16", "auto", ["Llama-3.2-3B-Instruct-f16.gguf"], None),
    ("IQ2_XXS absent", BARTOWSKI, "IQ2_XXS", "auto", "no-match", None),
    ("a bad tag", BARTOWSKI, "Q4 K", "auto", "bad-quant", None),
    ("a path is no tag", BARTOWSKI, "a/b", "auto", "bad-quant", None),
    ("TheBloke dot", THEBLOKE, "Q4_K_M", "auto", ["mistral-7b-instruct-v0.2.Q4_K_M.gguf"], None),
    ("TheBloke Q2_K", THEBLOKE, "Q2_K", "auto", ["mistral-7b-instruct-v0.2.Q2_K.gguf"], None),
    ("unsloth UD tag", UNSLOTH, "UD-Q4_K_XL", "auto",
     ["Qwen3-VL-30B-A3B-Instruct-UD-Q4_K_XL.gguf"], "mmproj-F16.gguf"),
    ("unsloth Q4_K_XL ends UD-Q4_K_XL", UNSLOTH, "Q4_K_XL", "auto",
     ["Qwen3-VL-30B-A3B-Instruct-UD-Q4_K_XL.gguf"], "mmproj-F16.gguf"),
    ("unsloth Q8_0: F16 mmproj", UNSLOTH, "Q8_0", "auto",
     ["Qwen3-VL-30B-A3B-Instruct-Q8_0.gguf"], "mmproj-F16.gguf"),
    ("unsloth BF16 split in a folder, BF16 mmproj", UNSLOTH, "BF16", "auto",
     ["BF16/Qwen3-VL-30B-A3B-Instruct-BF16-00001-of-00002.gguf",
      "BF16/Qwen3-VL-30B-A3B-Instruct-BF16-00002-of-00002.gguf"], "mmproj-BF16.gguf"),
    ("unsloth 3-part split", UNSLOTH, "UD-Q8_K_XL", "auto",
     [f"UD-Q8_K_XL/Qwen3-VL-30B-A3B-Instruct-UD-Q8_K_XL-0000{i}-of-00003.gguf"
      for i in (1, 2, 3)], "mmproj-F16.gguf"),
    ("mmproj none", UNSLOTH, "Q8_0", None, ["Qwen3-VL-30B-A3B-Instruct-Q8_0.gguf"], None),
    ("mmproj chosen", UNSLOTH, "Q8_0", "mmproj-F32.gguf",
     ["Qwen3-VL-30B-A3B-Instruct-Q8_0.gguf"], "mmproj-F32.gguf"),
    ("mmproj not listed", UNSLOTH, "Q8_0", "mmproj-Q8.gguf", "mmproj-missing", None),
    ("mmproj is no model", UNSLOTH, "F32", "auto", "no-match", None),
    ("missing split part", UNSLOTH[:6] + UNSLOTH[7:], "UD-Q8_K_XL", "auto",
     "missing-part", None),
    ("qwen split lower-case", QWEN, "Q4_K_M", "auto",
     ["qwen2.5-7b-instruct-q4_k_m-00001-of-00002.gguf",
      "qwen2.5-7b-instruct-q4_k_m-00002-of-00002.gguf"], None),
    ("qwen 3 parts", QWEN, "q8_0", "auto",
     [f"qwen2.5-7b-instruct-q8_0-0000{i}-of-00003.gguf" for i in (1, 2, 3)], None),
    ("qwen fp16 misses parts", QWEN, "fp16", "auto", "missing-part", None),
    ("ggml-org mmproj-model-f16", GGML_ORG, "Q4_K_M", "auto",
     ["gemma-3-4b-it-Q4_K_M.gguf"], "mmproj-model-f16.gguf"),
    ("bare tag name", ["Q4_K_M.gguf", "Q8_0.gguf"], "q4_k_m", "auto", ["Q4_K_M.gguf"], None),
    ("file and split group", ["m-Q4_K_M.gguf", "Q4_K_M/m-Q4_K_M-00001-of-00001.gguf"],
     "Q4_K_M", "auto", "ambiguous", None),
    ("two cases", ["x-Q4_K_M.gguf", "x-q4_k_m.gguf"], "Q4_K_M", "auto", "ambiguous", None),
    ("two folders", ["a/m-Q8_0.gguf", "b/m-Q8_0.gguf"], "Q8_0", "auto", "ambiguous", None),
    ("mmproj in the model's folder first",
     ["v/m-Q8_0.gguf", "v/mmproj-v-q8_0.gguf", "mmproj-F16.gguf"], "Q8_0", "auto",
     ["v/m-Q8_0.gguf"], "v/mmproj-v-q8_0.gguf"),
    ("mmproj by the tag", ["m-Q8_0.gguf", "mmproj-m-Q8_0.gguf", "mmproj-m-F16.gguf"],
     "Q8_0", "auto", ["m-Q8_0.gguf"], "mmproj-m-Q8_0.gguf"),
    ("one odd mmproj", ["m-Q8_0.gguf", "mmproj.gguf"], "Q8_0", "auto",
     ["m-Q8_0.gguf"], "mmproj.gguf"),
    ("mmproj ambiguous", ["m-Q8_0.gguf", "mmproj-a.gguf", "mmproj-b.gguf"], "Q8_0", "auto",
     "mmproj-ambiguous", None),
    ("mmproj ambiguous by F16", ["m-Q8_0.gguf", "a/mmproj-F16.gguf", "b/mmproj-f16.gguf"],
     "Q8_0", "auto", "mmproj-ambiguous", None),
    ("upper-case extension", ["M-Q4_K_M.GGUF"], "Q4_K_M", "auto", ["M-Q4_K_M.GGUF"], None),
    ("part 0 is no split", ["m-Q8_0-00000-of-00002.gguf"], "Q8_0", "auto", "no-match", None),
    ("unicode names", ["caf\u00e9/\u65e5\u672c-Q8_0.gguf"], "Q8_0", "auto",
     ["caf\u00e9/\u65e5\u672c-Q8_0.gguf"], None),
    ("no gguf at all", ["config.json"], "Q8_0", "auto", "no-match", None),
]


def _python(paths, quant, mm):
    try:
        s = select_gguf(paths, quant, mm)
    except GgufError as e:
        return {"ok": False, "kind": e.kind}
    return {"ok": True, "parts": list(s.parts), "mmproj": s.mmproj}


def test_python_selection_table():
    for name, paths, quant, mm, parts, mmproj in TABLE:
        got = _python(paths, quant, mm)
        want = ({"ok": False, "kind": parts} if isinstance(parts, str)
                else {"ok": True, "parts": parts, "mmproj": mmproj})
        assert got == want, name


def test_nix_selects_what_python_selects():
    cases = [{"paths": p, "quant": q, "mmproj": m} for _, p, q, m, _, _ in TABLE]
    expr = (f"let lib = {lib_expr()}; g = import ./lib/gguf.nix {{ inherit lib; }}; in "
            f"map (c: let r = g.select c; in if r.ok then {{ ok = true; inherit (r) parts mmproj; }}"
            f" else {{ ok = false; inherit (r) kind; }}) {nix_value(cases)}")
    got = nix_eval(expr)
    want = [_python(p, q, m) for _, p, q, m, _, _ in TABLE]
    for (name, *_), g, w in zip(TABLE, got, want):
        assert g == w, name


def test_errors_name_the_tag_and_the_candidates():
    with pytest.raises(GgufError, match=r"matches several .gguf files: x-Q4_K_M.gguf, "
                       r"x-q4_k_m.gguf"):
        select_gguf(["x-Q4_K_M.gguf", "x-q4_k_m.gguf"], "Q4_K_M")
    with pytest.raises(GgufError, match="part.s. 00002 are not in the repo"):
        select_gguf(["m-Q8_0-00001-of-00003.gguf", "m-Q8_0-00003-of-00003.gguf"], "Q8_0")
    with pytest.raises(GgufError, match="the .gguf files are: .*Q4_K_M.gguf"):
        select_gguf(BARTOWSKI, "Q4_K")


REFS = [
    ("bartowski/Llama-3.2-3B-Instruct-GGUF:Q4_K_M",
     ("bartowski/Llama-3.2-3B-Instruct-GGUF", "Q4_K_M")),
    ("unsloth/Qwen3-GGUF:UD-Q4_K_XL", ("unsloth/Qwen3-GGUF", "UD-Q4_K_XL")),
    ("org/name", ("org/name", None)),
    ("hf:gpt2", ("hf:gpt2", None)),
    ("hf:org/name:Q8_0", ("hf:org/name", "Q8_0")),
    ("org/name@v1.0:Q8_0", ("org/name@v1.0", "Q8_0")),
    ("https://huggingface.co/org/name", ("https://huggingface.co/org/name", None)),
    ("https://hf.co:443/org/name", ("https://hf.co:443/org/name", None)),
    ("org/name:", ("org/name:", None)),
    ("org/name:a b", ("org/name:a b", None)),
    ("gpt2:Q8_0", ("gpt2:Q8_0", None)),
]


def test_split_model_ref_python_and_nix():
    for arg, want in REFS:
        assert split_model_ref(arg) == want, arg
    expr = (f"let lib = {lib_expr()}; g = import ./lib/gguf.nix {{ inherit lib; }}; in "
            f"map (r: let s = g.splitModelRef r; in [ s.repo s.quant ]) "
            f"{nix_value([a for a, _ in REFS])}")
    assert nix_eval(expr) == [list(w) for _, w in REFS]


def test_messages_are_bounded_and_equal_in_python_and_nix():
    """A hostile listing (a split model claiming 99999 parts, thousands of .gguf files):
    the error names a bounded number of candidates, in the same words on both sides."""
    cases = [
        (["m-Q8_0-00001-of-99999.gguf"], "Q8_0"),
        (["m-Q8_0.gguf"] + [f"mmproj-{i}.gguf" for i in range(50)], "Q8_0"),
        (["m-Q8_0.gguf"], "Q4_K_M"),
        ([f"m{i}-Q4_K_M.gguf" for i in range(3000)], "Q4_K_M"),
        ([f"m{i}-Q4_K_M.gguf" for i in range(3000)], "Q8_0"),
    ]
    want = []
    for paths, quant in cases:
        with pytest.raises(GgufError) as exc:
            select_gguf(paths, quant)
        want.append(str(exc.value))
        assert len(str(exc.value)) < 2000
    expr = (f"let lib = {lib_expr()}; g = import ./lib/gguf.nix {{ inherit lib; }}; in "
            f"map (c: (g.select c).message) "
            f"{nix_value([{'paths': p, 'quant': q} for p, q in cases])}")
    got = nix_eval(expr)
    assert [g.replace('"', "'") for g in got] == [w.replace('"', "'") for w in want]


def test_a_pin_selects_itself_again():
    """What the CLI pins (the selection's files) selects the same files again with
    mmproj "auto": the Nix side, which sees only the pinned files, finds the same model
    file and mmproj whatever --mmproj was."""
    for name, paths, quant, mm, parts, _ in TABLE:
        if isinstance(parts, str):
            continue
        first = select_gguf(paths, quant, mm)
        again = select_gguf(list(first.files), quant)
        assert again == first, name


_NAME = st.builds(
    lambda folder, stem, sep, tag, split, ext: (
        f"{folder}{stem}{sep}{tag}" + (f"-{split[0]:05d}-of-{split[1]:05d}" if split else "")
        + ext),
    st.sampled_from(["", "Q8_0/", "BF16/", "sub/dir/"]),
    st.sampled_from(["Model", "mmproj", "mmproj-model", "x", "Llama-3-8B", ""]),
    st.sampled_from(["-", ".", "_", "", "-UD-"]),
    st.sampled_from(["Q4_K_M", "q4_k_m", "Q4_K", "Q8_0", "F16", "BF16", "IQ2_XXS", "K_M"]),
    st.one_of(st.none(), st.tuples(st.integers(0, 3), st.integers(0, 3))),
    st.sampled_from([".gguf", ".GGUF", ".gguf.part", ".bin"]),
)
_CASE = st.tuples(st.lists(_NAME, max_size=8, unique=True),
                  st.sampled_from(["Q4_K_M", "Q4_K", "q8_0", "F16", "BF16", "K_M", "UD-Q4_K_M"]),
                  st.sampled_from(["auto", None]))


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_CASE, min_size=40, max_size=40))
def test_generated_listings_select_the_same_in_python_and_nix(cases):
    expr = (f"let lib = {lib_expr()}; g = import ./lib/gguf.nix {{ inherit lib; }}; in "
            f"map (c: let r = g.select c; in if r.ok then {{ ok = true; inherit (r) parts mmproj; }}"
            f" else {{ ok = false; inherit (r) kind message; }}) "
            f"{nix_value([{'paths': p, 'quant': q, 'mmproj': m} for p, q, m in cases])}")
    got = nix_eval(expr)
    for (paths, quant, mm), g in zip(cases, got):
        try:
            s = select_gguf(paths, quant, mm)
            want = {"ok": True, "parts": list(s.parts), "mmproj": s.mmproj}
        except GgufError as e:
            want = {"ok": False, "kind": e.kind, "message": str(e).replace('"', "'")}
            g = dict(g, message=g["message"].replace('"', "'"))
        assert g == want, (paths, quant, mm)
