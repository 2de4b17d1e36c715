"""``ORG/NAME:QUANT`` in ``ls``, ``prefetch`` and ``lock`` against the mock Hub serving a
GGUF-style repo (bartowski/unsloth naming: single files, a split model in a sub-folder,
a split model missing a part, two mmproj files), and the pins they print read back by
``lib`` (the model file, the mmproj, ``modelRef``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mockhub import MockHub
from test_hub_build import cli

REPO = "model-repo-test/Tiny-GGUF"


def gguf(tag: str, n: int = 1) -> bytes:
    """Bytes that start like a GGUF file (magic, version 3) and differ per tag/part."""
    return b"GGUF\x03\x00\x00\x00" + f"{tag}-{n}".encode() * 16


FILES = {
    ".gitattributes": b"*.gguf filter=lfs diff=lfs merge=lfs -text\n",
    "README.md": b"# Tiny GGUF\n",
    "Tiny-Q4_K_M.gguf": gguf("Q4_K_M"),
    "Tiny-Q4_K_S.gguf": gguf("Q4_K_S"),
    "Tiny-UD-Q4_K_XL.gguf": gguf("UD-Q4_K_XL"),
    "Q8_0/Tiny-Q8_0-00001-of-00002.gguf": gguf("Q8_0", 1),
    "Q8_0/Tiny-Q8_0-00002-of-00002.gguf": gguf("Q8_0", 2),
    "IQ2_XXS/Tiny-IQ2_XXS-00001-of-00002.gguf": gguf("IQ2_XXS", 1),
    "mmproj-F16.gguf": gguf("mmproj-F16"),
    "mmproj-BF16.gguf": gguf("mmproj-BF16"),
}


@pytest.fixture(scope="module")
def hub():
    with MockHub(page_size=4) as h:
        h.add_repo(REPO, FILES)
        yield h


def run(hub: MockHub, tmp: Path, *args: str):
    return cli(hub, tmp, *args)


def test_ls_shows_the_files_a_tag_selects(hub: MockHub, tmp_path: Path):
    p = run(hub, tmp_path, "ls", f"{REPO}:q4_k_m")
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[1] == f"# {REPO}:q4_k_m: llama.cpp loads Tiny-Q4_K_M.gguf (mmproj mmproj-F16.gguf)"
    body = [ln.split("  ", 1)[1] for ln in lines[2:-1]]
    assert body == ["Tiny-Q4_K_M.gguf  (lfs)  [gguf model]", "mmproj-F16.gguf  (lfs)  [mmproj]"]
    assert lines[-1].startswith("2 files,")

    p = run(hub, tmp_path, "ls", f"{REPO}:Q8_0", "--json")
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    parts = ["Q8_0/Tiny-Q8_0-00001-of-00002.gguf", "Q8_0/Tiny-Q8_0-00002-of-00002.gguf"]
    assert [f["path"] for f in doc["files"]] == sorted(parts + ["mmproj-F16.gguf"])
    assert doc["gguf"] == {"quant": "Q8_0", "main": parts[0], "parts": parts,
                           "mmproj": "mmproj-F16.gguf"}
    assert doc["exactFiles"] == parts + ["mmproj-F16.gguf"]

    p = run(hub, tmp_path, "ls", f"{REPO}:Q8_0", "--mmproj", "none", "--json")
    assert json.loads(p.stdout)["gguf"]["mmproj"] is None
    p = run(hub, tmp_path, "ls", f"{REPO}:Q8_0", "--mmproj", "mmproj-BF16.gguf")
    assert "mmproj-BF16.gguf  (lfs)  [mmproj]" in p.stdout and "mmproj-F16" not in p.stdout
    assert hub.seen("cdn") == []  # ls downloads nothing


@pytest.mark.parametrize("arg,extra,message", [
    (":Q4_K", (), "no .gguf file matches the quantization tag 'Q4_K'"),
    (":Q4_K_XL", (), None),  # ends UD-Q4_K_XL only: fine
    (":IQ2_XXS", (), "part(s) 00002 are not in the repo"),
    (":K_S", (), None),  # a suffix of one name: selected, as nixpkgs' rule does
    (":Q4_K_M", ("--file", "README.md"), "leave out --file/--include/--exclude"),
    ("", ("--mmproj", "mmproj-F16.gguf"), "--mmproj 'mmproj-F16.gguf' goes with a "
     "quantization tag"),
    (":Q4_K_M", ("--mmproj", "nope.gguf"), "mmproj 'nope.gguf' is not a .gguf file"),
])
def test_tag_errors_exit_2_naming_the_fix(hub: MockHub, tmp_path: Path, arg, extra, message):
    p = run(hub, tmp_path, "ls", REPO + arg, *extra)
    if message is None:
        assert p.returncode == 0, p.stderr
        return
    assert p.returncode == 2, p.stdout + p.stderr
    assert message in p.stderr, p.stderr


def test_prefetch_pins_the_selected_files_with_the_model_ref(hub: MockHub, tmp_path: Path):
    from activate.hub.nar import nar_hash_sri

    from test_prefetch import materialize

    p = run(hub, tmp_path, "prefetch", f"{REPO}:Q8_0", "-q")
    assert p.returncode == 0, p.stderr
    text = p.stdout
    assert f'repo = "{REPO}:Q8_0";' in text
    assert ('files = [ "Q8_0/Tiny-Q8_0-00001-of-00002.gguf" '
            '"Q8_0/Tiny-Q8_0-00002-of-00002.gguf" "mmproj-F16.gguf" ];') in text
    chosen = ["Q8_0/Tiny-Q8_0-00001-of-00002.gguf", "Q8_0/Tiny-Q8_0-00002-of-00002.gguf",
              "mmproj-F16.gguf"]
    tree = materialize({k: FILES[k] for k in chosen}, tmp_path / "tree")
    assert f'hash = "{nar_hash_sri(tree)}";' in text

    p = run(hub, tmp_path, "prefetch", f"{REPO}:Q4_K_M", "--per-file", "-q")
    assert p.returncode == 0, p.stderr
    assert f'repo = "{REPO}:Q4_K_M";' in p.stdout
    assert '"Tiny-Q4_K_M.gguf" = "sha256-' in p.stdout and "Q4_K_S" not in p.stdout


def test_lock_keeps_the_selection_as_exact_files(hub: MockHub, tmp_path: Path):
    lockp = tmp_path / "model-repo.lock.json"
    p = run(hub, tmp_path, "lock", "tiny", f"{REPO}:UD-Q4_K_XL", "--lock-file", str(lockp),
            "-q")
    assert p.returncode == 0, p.stderr
    entry = json.loads(lockp.read_text())["models"]["tiny"]
    assert entry["repo"] == REPO
    assert entry["exactFiles"] == ["Tiny-UD-Q4_K_XL.gguf", "mmproj-F16.gguf"]
    assert sorted(entry["files"]) == ["Tiny-UD-Q4_K_XL.gguf", "mmproj-F16.gguf"]


def test_a_hostile_listing_is_refused_only_where_it_is_chosen(tmp_path: Path):
    """The Hub actor: a .gguf name breaking the repo file path rule is refused (exit 3)
    when the tag picks it, and harmless when the tag picks another file."""
    with MockHub(page_size=50) as h:
        h.add_repo("model-repo-test/Evil-GGUF", {
            "a/../../evil-Q4_K_M.gguf": gguf("evil"), "ok-Q8_0.gguf": gguf("Q8_0")})
        p = run(h, tmp_path, "prefetch", "model-repo-test/Evil-GGUF:Q4_K_M")
        assert p.returncode == 3, p.stdout + p.stderr
        assert "has a \"..\" segment" in p.stderr and p.stdout == ""
        assert h.seen("cdn") == []
        p = run(h, tmp_path, "ls", "model-repo-test/Evil-GGUF:Q8_0")
        assert p.returncode == 0, p.stderr
        assert "ok-Q8_0.gguf" in p.stdout and "evil" not in p.stdout


def test_update_follows_the_tag_when_the_quant_files_are_renamed_and_split(
        hub: MockHub, tmp_path: Path):
    """``lock NAME ORG/NAME:QUANT`` keeps the tag (and the ``--mmproj`` choice) in the
    entry; when the repo's next commit renames and re-splits the quantization, ``update``
    selects by the tag again (not the old file names), ``--check`` and ``--dry-run``
    write nothing, and an entry without a tag reads and writes without the fields."""
    repo = "model-repo-test/Moving-GGUF"
    first = hub.add_repo(repo, {"README.md": b"# m\n", "Moving-Q4_K_M.gguf": gguf("Q4_K_M"),
                                "Moving-Q8_0.gguf": gguf("Q8_0"),
                                "mmproj-F16.gguf": gguf("mmproj")})
    lockp = tmp_path / "model-repo.lock.json"
    args = ("--lock-file", str(lockp), "-q")
    p = run(hub, tmp_path, "lock", "m", f"{repo}:Q4_K_M", "--mmproj", "none", *args)
    assert p.returncode == 0, p.stderr
    entry = json.loads(lockp.read_text())["models"]["m"]
    assert (entry["quant"], entry["mmproj"]) == ("Q4_K_M", "none")
    assert entry["exactFiles"] == ["Moving-Q4_K_M.gguf"] and entry["commit"] == first
    p = run(hub, tmp_path, "lock", "plain", f"{repo}", "--file", "README.md", *args)
    assert p.returncode == 0, p.stderr
    plain = json.loads(lockp.read_text())["models"]["plain"]
    assert "quant" not in plain and "mmproj" not in plain
    split = {"Q4_K_M/Moving-v2-Q4_K_M-00001-of-00002.gguf": gguf("Q4_K_M", 1),
             "Q4_K_M/Moving-v2-Q4_K_M-00002-of-00002.gguf": gguf("Q4_K_M", 2)}
    second = hub.commit(repo, {"README.md": b"# m\n", **split,
                               "Moving-v2-Q8_0.gguf": gguf("Q8_0"),
                               "mmproj-F16.gguf": gguf("mmproj")})
    before = lockp.read_bytes()
    assert run(hub, tmp_path, "update", "m", "--check", *args).returncode == 1
    p = run(hub, tmp_path, "update", "m", "--dry-run", "--json", *args)
    assert p.returncode == 0, p.stderr
    (m,) = json.loads(p.stdout)["models"]
    assert [a["path"] for a in m["added"]] == sorted(split)
    assert m["removed"] == ["Moving-Q4_K_M.gguf"]
    assert lockp.read_bytes() == before  # --check and --dry-run write nothing
    p = run(hub, tmp_path, "update", "m", *args)
    assert p.returncode == 0, p.stderr
    entry = json.loads(lockp.read_text())["models"]["m"]
    assert entry["commit"] == second and entry["exactFiles"] == sorted(split)
    assert sorted(entry["files"]) == sorted(split)  # the tag's parts, no mmproj ("none")
    assert (entry["quant"], entry["mmproj"]) == ("Q4_K_M", "none")
    assert run(hub, tmp_path, "update", "m", "--check", *args).returncode == 0
