"""The words nix-hug users type (issue 9 §2) and darwin's case-insensitive sparse
patterns (§4): repo argument forms, dataset detection with its request count on the
loopback mock Hub, --file, --ref, --debug, --version, and the case warning checked
against real git with core.ignorecase=true."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mockhub import MockHub
from test_prefetch import _git, cli, git_repo, need, ok, sparse_checkout

from activate.hub.repoarg import RepoArgError, RepoRef, parse_repo
from activate.hub.sparse import case_differences, sparse_patterns, sparse_select

C = "0123456789abcdef0123456789abcdef01234567"


@pytest.mark.parametrize("arg, want", [
    ("org/name", RepoRef("org/name", None)),
    ("gpt2", RepoRef("gpt2", None)),
    ("hf:org/name", RepoRef("org/name", "model")),
    ("hf-datasets:org/data", RepoRef("org/data", "dataset")),
    ("datasets/org/data", RepoRef("org/data", "dataset")),
    ("models/org/name", RepoRef("org/name", "model")),
    ("https://huggingface.co/org/name", RepoRef("org/name", "model")),
    ("https://huggingface.co/org/name/", RepoRef("org/name", "model")),
    ("http://hf.co/gpt2", RepoRef("gpt2", "model")),
    ("https://huggingface.co/datasets/org/data", RepoRef("org/data", "dataset")),
    ("https://huggingface.co/org/name/tree/v1.0", RepoRef("org/name", "model", "v1.0")),
    (f"https://huggingface.co/org/name/tree/{C}/onnx", RepoRef("org/name", "model", C)),
    ("https://huggingface.co/org/name/tree/refs%2Fpr%2F1", RepoRef("org/name", "model",
                                                                   "refs/pr/1")),
    ("https://huggingface.co/org/name/blob/main/onnx/model.onnx",
     RepoRef("org/name", "model", "main", "onnx/model.onnx")),
    ("https://huggingface.co/datasets/org/data/resolve/main/a%20b.json",
     RepoRef("org/data", "dataset", "main", "a b.json")),
    ("https://huggingface.co/gpt2/blob/main/config.json",
     RepoRef("gpt2", "model", "main", "config.json")),
    # huggingface_hub's hf:// URIs (parse_hf_uri) and the @REV marker on short forms
    ("hf://org/name", RepoRef("org/name", "model")),
    ("hf://models/org/name", RepoRef("org/name", "model")),
    ("hf://datasets/org/data", RepoRef("org/data", "dataset")),
    (f"hf://org/name@{C}", RepoRef("org/name", "model", C)),
    ("hf://org/name@v1.0/onnx/model.onnx", RepoRef("org/name", "model", "v1.0",
                                                   "onnx/model.onnx")),
    ("hf://datasets/org/data@refs/pr/3/train.json", RepoRef("org/data", "dataset",
                                                            "refs/pr/3", "train.json")),
    ("hf://org/name@refs%2Fpr%2F1", RepoRef("org/name", "model", "refs/pr/1")),
    ("hf://org/name/file@1.txt", RepoRef("org/name", "model", None, "file@1.txt")),
    ("org/name@main", RepoRef("org/name", None, "main")),
    ("gpt2@v2", RepoRef("gpt2", None, "v2")),
    ("datasets/org/data@v1", RepoRef("org/data", "dataset", "v1")),
    ("hf:org/name@dev", RepoRef("org/name", "model", "dev")),
])
def test_parse_repo_forms(arg: str, want: RepoRef):
    assert parse_repo(arg) == want


@pytest.mark.parametrize("arg, message", [
    ("", "the repo argument is empty"),
    ("a/b/c", "at most one '/'"),
    ("hf:bad--id", "invalid repo id 'bad--id' in 'hf:bad--id': may not contain '--'"),
    ("https://example.com/org/name", "not a Hugging Face Hub URL (host 'example.com'"),
    ("https://huggingface.co/spaces/org/app", "is a Space"),
    ("spaces/org/app", "is a Space"),
    ("https://huggingface.co/org/name/commits/main", "/tree/<rev>, /blob/<rev>/<file>"),
    ("https://huggingface.co/org/name/blob/main", "must be followed by a file path"),
    ("https://huggingface.co/", "names no repo"),
    ("org/name@", "nothing after '@'"),
    ("hf://org/name@", "nothing after '@'"),
    ("hf://gpt2", "the repo id is ORG/NAME"),
    ("hf://spaces/org/app", "not a model or dataset repo"),
])
def test_parse_repo_errors_name_the_form(arg: str, message: str):
    with pytest.raises(RepoArgError) as err:
        parse_repo(arg)
    assert message in str(err.value)


def test_parse_repo_accepts_the_endpoint_host():
    assert parse_repo("http://127.0.0.1:8080/datasets/o/d/tree/v2",
                      endpoint="http://127.0.0.1:8080") == RepoRef("o/d", "dataset", "v2")
    with pytest.raises(RepoArgError):
        parse_repo("http://127.0.0.1:8080/o/d")


# ----------------------------------------------------------------- on the mock Hub


@pytest.fixture(scope="module")
def hub():
    with MockHub(page_size=50) as h:
        h.add_repo("org/model", {"config.json": b"{}\n", "a*b.json": b"star\n",
                                 "onnx/model.onnx": b"onnx\n"})
        h.add_repo("org/data", {"train.jsonl": b'{"t": 1}\n', "README.md": b"# d\n"},
                   repo_type="dataset", ref="v1.0")
        h.add_repo("openai-community/gpt2", {"config.json": b'{"model_type": "gpt2"}\n'})
        h.aliases[("model", "gpt2")] = "openai-community/gpt2"
        yield h


def _api_calls(hub: MockHub, start: int) -> list[str]:
    """The repo-info requests (``/api/{models,datasets}/…`` but the listings) since
    ``start``, as ``"models/org/x"``-like strings."""
    out = []
    for r in hub.requests[start:]:
        path = r["path"].split("?")[0]
        if r["server"] == "hub" and path.startswith("/api/") and "/tree/" not in path \
                and "agent-harnesses" not in path:
            out.append(path[len("/api/"):].split("/revision/")[0])
    return out


def ls_json(hub: MockHub, tmp: Path, *args: str) -> tuple[dict, list[str]]:
    start = len(hub.requests)
    doc = json.loads(ok(cli(hub, tmp, "ls", *args, "--json")).stdout)
    return doc, _api_calls(hub, start)


def test_dataset_detection_costs_one_request_only_when_ambiguous(hub: MockHub, tmp_path: Path):
    # A bare id of a model: the model request that resolves the revision, nothing more.
    doc, calls = ls_json(hub, tmp_path, "org/model")
    assert doc["repoType"] == "model" and calls == ["models/org/model"]
    # A bare id of a dataset: exactly one extra request (the model one, not found).
    doc, calls = ls_json(hub, tmp_path, "org/data", "-r", "v1.0")
    assert doc["repoType"] == "dataset"
    assert calls == ["models/org/data", "datasets/org/data"]
    # Forms that say "dataset", and --dataset: no detection.
    for form in (["datasets/org/data"], ["hf-datasets:org/data"], ["org/data", "--dataset"],
                 [f"{hub.url}/datasets/org/data"]):
        doc, calls = ls_json(hub, tmp_path, *form, "--ref", "v1.0")
        assert (doc["repoType"], calls) == ("dataset", ["datasets/org/data"]), form
    # Forms that say "model": no detection either.
    for form in ("hf:org/model", f"{hub.url}/org/model", "models/org/model"):
        doc, calls = ls_json(hub, tmp_path, form)
        assert (doc["repoType"], calls) == ("model", ["models/org/model"]), form
    # Neither exists: both asked, one clear error.
    start = len(hub.requests)
    p = cli(hub, tmp_path, "ls", "org/nothing")
    assert p.returncode == 2 and "no model or dataset repo org/nothing on" in p.stderr
    assert _api_calls(hub, start) == ["models/org/nothing",
                                      "datasets/org/nothing"]
    p = cli(hub, tmp_path, "ls", "hf:org/data", "--dataset")
    assert p.returncode == 2 and "names a model repo" in p.stderr


def test_url_forms_give_revision_and_file(hub: MockHub, tmp_path: Path):
    commit = hub.repos[("dataset", "org/data")].refs["v1.0"]
    doc, _ = ls_json(hub, tmp_path, f"{hub.url}/datasets/org/data/tree/v1.0")
    assert (doc["revision"], doc["ref"]) == (commit, "v1.0")
    doc, _ = ls_json(hub, tmp_path, f"{hub.url}/datasets/org/data/blob/v1.0/train.jsonl")
    assert [f["path"] for f in doc["files"]] == ["train.jsonl"]
    assert doc["exactFiles"] == ["train.jsonl"]
    # The URL's revision and --revision must agree.
    p = cli(hub, tmp_path, "ls", f"{hub.url}/datasets/org/data/tree/v1.0", "-r", "main")
    assert p.returncode == 2 and "disagree" in p.stderr
    doc, _ = ls_json(hub, tmp_path, f"{hub.url}/datasets/org/data/tree/v1.0", "-r", "v1.0")
    assert doc["revision"] == commit


def test_single_name_repo_pins_the_canonical_id(hub: MockHub, tmp_path: Path):
    doc, calls = ls_json(hub, tmp_path, "gpt2")
    assert doc["repo"] == "openai-community/gpt2" and calls == ["models/gpt2"]
    out = ok(cli(hub, tmp_path, "prefetch", "gpt2", "--json"))
    pin = json.loads(out.stdout)
    assert pin["repo"] == "openai-community/gpt2"
    assert pin["name"].startswith("hf-openai-community--gpt2-")


def test_file_is_an_exact_path(hub: MockHub, tmp_path: Path):
    # "a*b.json" is a file name, not a pattern: config.json stays out.
    pin = json.loads(ok(cli(hub, tmp_path, "prefetch", "org/model", "--file", "a*b.json",
                            "--file", "onnx/model.onnx", "--json")).stdout)
    assert [f["path"] for f in pin["files"]] == ["a*b.json", "onnx/model.onnx"]
    assert pin["exactFiles"] == ["a*b.json", "onnx/model.onnx"]
    text = ok(cli(hub, tmp_path, "prefetch", "org/model", "--file", "a*b.json")).stdout
    assert 'files = [ "a*b.json" ];' in text
    missing = cli(hub, tmp_path, "ls", "org/model", "--file", "nope.json")
    assert missing.returncode == 2 and "--file nope.json: not in org/model" in missing.stderr
    bad = cli(hub, tmp_path, "ls", "org/model", "--file", "../x")
    assert bad.returncode == 2 and "--file '../x'" in bad.stderr


def test_exact_file_patterns_are_what_git_checks_out(tmp_path: Path):
    """--file paths with glob characters, a backslash and a trailing space select
    exactly themselves in a real git sparse checkout."""
    names = ["a*b.json", "axb.json", "x/[1]?.txt", "x/1z.txt", "back\\slash", "backxslash",
             "trailing ", "trailing"]
    src = git_repo({n: n.encode() for n in names}, tmp_path / "src")
    for i, chosen in enumerate([["a*b.json"], ["x/[1]?.txt"], ["back\\slash"], ["trailing "]]):
        pats = sparse_patterns([], [], chosen)
        out = sparse_checkout(src, pats, tmp_path / f"w{i}")
        got = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
        assert got == chosen == sparse_select(names, pats), pats


def test_debug_ref_and_version(hub: MockHub, tmp_path: Path):
    p = ok(cli(hub, tmp_path, "ls", "org/model", "--debug", "--ref", "main"))
    assert "resolved" in p.stderr  # debug-level log of the resolution
    quiet = ok(cli(hub, tmp_path, "ls", "org/model"))
    assert "resolved" not in quiet.stderr
    from activate import __version__

    v = subprocess.run([sys.executable, "-m", "activate", "--version"], capture_output=True,
                       text=True, cwd=Path(__file__).resolve().parent.parent)
    assert (v.returncode, v.stdout) == (0, f"model-repo {__version__}\n")


# ----------------------------------------------------------- darwin: ignorecase


CASE_FILES = ["config.json", "Config.json", "README.md", "readme.md", "onnx/Model.onnx",
              "ONNX/model.onnx", "weights.BIN", "weights.bin"]
CASE_PATTERNS = [["/config.json"], ["*.bin"], ["onnx/"], ["/*", "!readme.md"],
                 ["*.json", "!Config.json"], ["[a-z]*.md"], ["*.txt"]]


def test_ignore_case_selection_is_git_with_core_ignorecase(tmp_path: Path):
    """sparse_select(ignore_case=True) is what git checks out with core.ignorecase=true
    (what `git init` sets on darwin), for patterns that differ only by case."""
    need("git")
    src = git_repo({n: n.encode() for n in CASE_FILES}, tmp_path / "src")
    for i, pats in enumerate(CASE_PATTERNS):
        where = tmp_path / f"w{i}"
        where.mkdir()
        _git("init", "-q", cwd=where)
        _git("config", "core.ignorecase", "true", cwd=where)
        _git("remote", "add", "origin", str(src), cwd=where)
        _git("sparse-checkout", "set", "--stdin", "--no-cone", cwd=where,
             stdin="\n".join(pats) + "\n")
        _git("fetch", "-q", "--depth=1", "origin", "main", cwd=where)
        _git("checkout", "-q", "FETCH_HEAD", cwd=where)
        got = {p.relative_to(where).as_posix() for p in where.rglob("*")
               if p.is_file() and ".git" not in p.relative_to(where).parts}
        assert set(sparse_select(CASE_FILES, pats, ignore_case=True)) == got, pats
    assert case_differences(CASE_FILES, ["/config.json"]) == (["Config.json"], [])
    assert case_differences(CASE_FILES, ["*.txt"]) == ([], [])


def test_prefetch_warns_when_darwin_would_select_other_files(hub: MockHub, tmp_path: Path):
    hub.add_repo("org/cased", {"config.json": b"{}\n", "Config.json": b"{ }\n",
                               "w.bin": b"w\n"})
    p = ok(cli(hub, tmp_path, "ls", "org/cased", "--file", "config.json"))
    assert "core.ignorecase=true" in p.stderr and "adds Config.json" in p.stderr
    clean = ok(cli(hub, tmp_path, "ls", "org/cased", "--include", "*.bin"))
    assert "ignorecase" not in clean.stderr


def test_debug_logs_each_hub_call(hub: MockHub, tmp_path: Path):
    err = ok(cli(hub, tmp_path, "ls", "org/data", "--ref", "v1.0", "--debug")).stderr
    assert err.count("resolving the revision") == 2  # the model, then the dataset
    assert "no model of that id: trying the dataset" in err
    assert "listing the files" in err


def test_hf_uri_with_a_revision_and_a_file_pins_that_file(tmp_path: Path):
    with MockHub() as hub:
        commit = hub.add_repo("org/uri", {"config.json": b"{}\n", "w.bin": b"w\n"})
        hub.commit("org/uri", {"config.json": b"{ }\n", "w.bin": b"w\n"})
        doc = json.loads(ok(cli(hub, tmp_path, "prefetch", f"hf://org/uri@{commit}/config.json",
                                "--per-file", "--json")).stdout)
        assert doc["revision"] == commit and [f["path"] for f in doc["files"]] == ["config.json"]
        # an exact file is asked of paths-info, in one request: the tree is never listed
        assert [r["path"] for r in hub.seen("hub") if "/tree/" in r["path"]] == []
        assert len([r for r in hub.seen("hub", "POST") if "/paths-info/" in r["path"]]) == 1
        p = cli(hub, tmp_path, "ls", f"org/uri@{commit}", "--json")
        assert json.loads(ok(p).stdout)["revision"] == commit
        p = cli(hub, tmp_path, "ls", "org/uri@main", "-r", "dev")
        assert p.returncode == 2 and "disagree" in p.stderr


def test_hf_token_whitespace_is_stripped_as_huggingface_hub_does(tmp_path: Path):
    with MockHub() as hub:
        hub.add_repo("org/gated", {"config.json": b"{}\n"}, gated=True, token="hf_secret")
        p = cli(hub, tmp_path, "prefetch", "org/gated", "--per-file", "--json",
                HF_TOKEN=" hf_secret\r\n")
        assert p.returncode == 0, p.stderr
        auth = {r["authorization"] for r in hub.seen("hub")}
        assert auth == {"Bearer hf_secret"}
