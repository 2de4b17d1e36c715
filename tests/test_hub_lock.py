"""``model-repo lock`` / ``model-repo update`` and the lock file, against the mock Hub.

- The lock file's JSON Schema (schemas/lockfile.schema.json) is generated from the
  pydantic models and accepts what they write.
- ``lock`` pins per file (no LFS download) and writes the entry; locking again with
  nothing changed leaves the file as it was (same inode).
- ``update`` prints files added/removed/changed and the bytes to download, downloads
  only the small files whose blob id changed, writes atomically; ``--dry-run`` writes
  nothing; a repo gone or a gated repo without a token fails and leaves the lock file
  byte for byte as it was.
- Nix: ``lib.fetchModel`` with ``lockFile`` and only ``repo``/``ref`` takes the commit
  and file hashes of its entry (stale entries are errors naming the fix), and a real
  ``nix-build`` of it from the mock Hub gives the locked files; the modules' ``lockFile``
  is every model's default.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest
from mockhub import MockHub
from nixeval import lib_expr, nix_eval, nix_eval_error, nix_string
from test_hub_build import build, cli, need_nix_build, resolved_paths, cdn_paths, tiny_model
from test_hub_pin import sri_of, tiny_files

from activate.hub.lockfile import LockFile, read_lock, render_schema

ROOT = Path(__file__).resolve().parent.parent
REPO = "model-repo-test/locked"


@pytest.fixture
def hub():
    with MockHub(page_size=50) as h:
        yield h


def test_schema_file_matches_the_models():
    committed = (ROOT / "schemas" / "lockfile.schema.json").read_text()
    assert committed == render_schema(), (
        "schemas/lockfile.schema.json is stale: run `python -m activate.hub.lockfile > "
        "schemas/lockfile.schema.json`")


def lock(hub: MockHub, tmp: Path, *args: str) -> subprocess.CompletedProcess:
    return cli(hub, tmp, *args, "--lock-file", str(tmp / "model-repo.lock.json"))


def test_lock_writes_an_entry_without_downloading_lfs_files(hub: MockHub, tmp_path: Path):
    files = tiny_files()
    commit = hub.add_repo(REPO, files)
    p = lock(hub, tmp_path, "lock", "tiny", REPO, "--json")
    assert p.returncode == 0, p.stderr
    assert hub.seen("cdn") == []
    path = tmp_path / "model-repo.lock.json"
    data = json.loads(path.read_text())
    assert data["version"] == 1
    entry = data["models"]["tiny"]
    assert (entry["repo"], entry["ref"], entry["commit"], entry["repoType"]) == (
        REPO, "main", commit, "model")
    assert {k: v["hash"] for k, v in entry["files"].items()} == {
        k: sri_of(v) for k, v in files.items()}
    assert entry["files"]["model.safetensors"]["lfs"] is True
    report = json.loads(p.stdout)["models"][0]
    assert report["from"] is None and report["to"] == commit
    assert sorted(a["path"] for a in report["added"]) == sorted(files)
    jsonschema = pytest.importorskip("jsonschema", reason="pip install jsonschema (test extra)")
    jsonschema.validate(data, json.loads(render_schema()))
    read_lock(str(path))  # the pydantic models accept it too

    inode = path.stat().st_ino
    p = lock(hub, tmp_path, "lock", "tiny", REPO)
    assert p.returncode == 0 and "up to date" in p.stdout, p.stderr
    assert path.stat().st_ino == inode  # nothing changed: not rewritten
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".model-repo.lock.")]


def test_lock_rejects_bad_names_commits_and_broken_files(hub: MockHub, tmp_path: Path):
    commit = hub.add_repo(REPO, tiny_files())
    p = lock(hub, tmp_path, "lock", "bad name", REPO)
    assert p.returncode == 2 and "NAME 'bad name'" in p.stderr
    p = lock(hub, tmp_path, "lock", "tiny", REPO, "--revision", commit)
    assert p.returncode == 2 and "follows a branch or tag" in p.stderr
    hub.set_ref(REPO, "-bad", commit)
    p = lock(hub, tmp_path, "lock", "tiny", REPO, "--revision=-bad")
    assert p.returncode == 2 and "--revision '-bad'" in p.stderr, p.stderr
    (tmp_path / "model-repo.lock.json").write_text('{"version": 2, "models": {}}')
    hub.requests.clear()
    p = lock(hub, tmp_path, "lock", "tiny", REPO)
    assert p.returncode == 2 and "is not a model-repo lock file" in p.stderr, p.stderr
    assert "version" in p.stderr and hub.requests == []  # before any Hub request


def test_update_reports_changes_and_downloads_only_changed_small_files(
        hub: MockHub, tmp_path: Path):
    files = tiny_files()
    a = hub.add_repo(REPO, files)
    assert lock(hub, tmp_path, "lock", "tiny", REPO).returncode == 0
    path = tmp_path / "model-repo.lock.json"
    before = path.read_bytes()

    p = lock(hub, tmp_path, "update")
    assert p.returncode == 0 and "up to date" in p.stdout, p.stderr

    new = dict(files)
    new["config.json"] = files["config.json"].replace(b"}", b', "note": "v2"}', 1)
    new["added.json"] = b'{"x": 1}'
    del new["special_tokens_map.json"]
    b = hub.commit(REPO, new)
    hub.requests.clear()
    p = lock(hub, tmp_path, "update", "--dry-run", "--json")
    assert p.returncode == 0, p.stderr
    assert path.read_bytes() == before  # --dry-run writes nothing
    (m,) = json.loads(p.stdout)["models"]
    assert (m["from"], m["to"]) == (a, b)
    assert m["added"] == [{"path": "added.json", "size": 8}]
    assert m["removed"] == ["special_tokens_map.json"]
    assert m["changed"] == [{"path": "config.json", "size": len(new["config.json"])}]
    assert m["downloadBytes"] == 8 + len(new["config.json"])
    # Unchanged small files (same git blob id) were not downloaded again; no LFS file.
    assert resolved_paths(hub) == ["added.json", "config.json"] and cdn_paths(hub) == []

    p = lock(hub, tmp_path, "update", "tiny")
    assert p.returncode == 0, p.stderr
    assert "+ added.json" in p.stdout and "~ config.json" in p.stdout
    assert "- special_tokens_map.json" in p.stdout
    assert "1 added, 1 removed, 1 changed" in p.stdout
    assert f"({8 + len(new['config.json'])} bytes)" in p.stdout
    entry = read_lock(str(path)).models["tiny"]
    assert entry.commit == b and entry.files["config.json"].hash == sri_of(new["config.json"])


def test_update_check_exits_1_when_behind_and_0_when_current(hub: MockHub, tmp_path: Path):
    """``update --check`` (a CI job's gate): resolves the refs only (no file download),
    writes nothing, exit 0 while the lock file is current and 1 once a ref moved."""
    a = hub.add_repo(REPO, tiny_files())
    assert lock(hub, tmp_path, "lock", "tiny", REPO).returncode == 0
    path = tmp_path / "model-repo.lock.json"
    p = lock(hub, tmp_path, "update", "--check")
    assert p.returncode == 0 and "tiny: model-repo-test/locked main" in p.stdout, p.stderr
    assert "up to date" in p.stdout
    b = hub.commit(REPO, {**tiny_files(), "config.json": b'{"model_type": "bert", "v": 2}'})
    before = path.read_bytes()
    hub.requests.clear()
    p = lock(hub, tmp_path, "update", "--check")
    assert p.returncode == 1, (p.stdout, p.stderr)
    assert f"{a[:12]} is behind {b[:12]}" in p.stdout and "model-repo update tiny" in p.stdout
    assert resolved_paths(hub) == [] and cdn_paths(hub) == []  # no file downloaded
    p = lock(hub, tmp_path, "update", "tiny", "--check", "--json")
    assert p.returncode == 1
    (m,) = json.loads(p.stdout)["models"]
    assert (m["name"], m["from"], m["to"], m["behind"]) == ("tiny", a, b, True)
    assert path.read_bytes() == before  # --check writes nothing
    assert lock(hub, tmp_path, "update", "--check", "--dry-run").returncode == 2
    assert lock(hub, tmp_path, "update").returncode == 0
    assert lock(hub, tmp_path, "update", "--check").returncode == 0


def test_update_errors_leave_the_lock_file_untouched(hub: MockHub, tmp_path: Path):
    hub.add_repo(REPO, tiny_files())
    assert lock(hub, tmp_path, "lock", "tiny", REPO).returncode == 0
    path = tmp_path / "model-repo.lock.json"
    hub.commit(REPO, {**tiny_files(), "config.json": b'{"model_type": "bert", "v": 2}'})
    before = path.read_bytes()

    p = lock(hub, tmp_path, "update", "nope")
    assert p.returncode == 2 and "nope: not in" in p.stderr and "has tiny" in p.stderr
    del hub.repos[("model", REPO)]  # the repo is gone
    p = lock(hub, tmp_path, "update")
    assert p.returncode == 2 and "not found" in p.stderr, p.stderr
    assert path.read_bytes() == before
    hub.add_repo(REPO, tiny_files(), gated=True, token="hf_ok")  # back, now gated
    hub.commit(REPO, {**tiny_files(), "config.json": b'{"model_type": "bert", "v": 3}'})
    p = lock(hub, tmp_path, "update")
    assert p.returncode == 2 and "gated" in p.stderr, p.stderr
    assert path.read_bytes() == before
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".model-repo.lock.")]


# ------------------------------------------------------------------------- Nix side

H = "sha256-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
REV = "c9745ed1d9f207416be6d2e6f8de32d1f16199bf"


def write_lock(tmp: Path, **entry) -> Path:
    base = {"repo": "o/n", "repoType": "model", "ref": "main", "commit": REV,
            "exactFiles": [], "include": [], "exclude": [],
            "files": {"config.json": {"size": 2, "hash": H, "lfs": False}}}
    base.update(entry)
    path = tmp / "model-repo.lock.json"
    path.write_text(json.dumps({"version": 1, "models": {"m": base}}))
    LockFile.model_validate_json(path.read_text())
    return path


def eval_model(lock_path: Path, hf: str, extra: str = "") -> str:
    return f"""let lib = {lib_expr()}; mr = import ./lib {{ inherit lib; }};
      pkgs = import ./tests/nix/stubs/pkgs.nix {{ inherit lib; }};
      m = mr.fetchModel pkgs {{ name = "m"; lockFile = {lock_path}; source.huggingface = {hf}; {extra} }};
    in"""


def test_fetch_model_takes_commit_and_files_from_the_lock_file(tmp_path: Path):
    lockp = write_lock(tmp_path)
    got = nix_eval(eval_model(lockp, '{ repo = "o/n"; }') + """ {
      inherit (m) revision ref; files = builtins.attrNames m.files;
      url = m.files."config.json".fetchArgs.url; hash = m.files."config.json".fetchArgs.hash; }""")
    assert got == {"revision": REV, "ref": "main", "files": ["config.json"],
                   "url": f"https://huggingface.co/o/n/resolve/{REV}/config.json", "hash": H}
    # A revision given in the configuration wins (and then needs its own hash).
    got = nix_eval(eval_model(lockp, '{ repo = "o/n"; revision = "%s"; }' % ("1" * 40),
                              f'hash = "{H}";') + " { inherit (m) revision fetcher; }")
    assert got == {"revision": "1" * 40, "fetcher": "fetchgit"}


@pytest.mark.parametrize("hf,entry,message", [
    ('{ repo = "o/other"; }', {}, 'pins o/n, the model says source.huggingface.repo = "o/other"'),
    ('{ repo = "o/n"; ref = "v2"; }', {}, 'follows ref "main", the model says ref = "v2"'),
    ('{ repo = "o/n"; include = [ "*.json" ]; }', {}, "was pinned with files/include/exclude"),
    ('{ repo = "o/n"; }', {"repoType": "dataset"}, 'is a dataset repo'),
])
def test_a_stale_lock_entry_is_an_error_naming_the_fix(tmp_path: Path, hf, entry, message):
    lockp = write_lock(tmp_path, **entry)
    err = nix_eval_error(eval_model(lockp, hf) + " m.outPath")
    assert message in err and "model-repo lock m" in err, err


def test_a_missing_entry_says_how_to_lock_it(tmp_path: Path):
    lockp = tmp_path / "model-repo.lock.json"
    lockp.write_text('{"version": 1, "models": {}}')
    err = nix_eval_error(eval_model(lockp, '{ repo = "o/n"; ref = "v1"; }') + " m.outPath")
    assert 'has no entry "m": run `model-repo lock m o/n --ref v1`' in err, err
    lockp.write_text('{"version": 7}')
    err = nix_eval_error(eval_model(lockp, '{ repo = "o/n"; }') + " m.outPath")
    assert "is not a model-repo lock file of version 1" in err, err


def test_lock_then_nix_build_from_the_mock_hub(hub: MockHub, tmp_path: Path):
    """mock Hub -> `model-repo lock` -> lib.fetchModel { lockFile; repo; } -> nix-build."""
    need_nix_build()
    import uuid

    nonce = uuid.uuid4().hex[:12]
    files = tiny_model(nonce)
    repo = f"model-repo-test/lock-{nonce}"
    hub.add_repo(repo, files)
    lockp = tmp_path / "model-repo.lock.json"
    p = cli(hub, tmp_path, "lock", "tiny", repo, "--lock-file", str(lockp), "-q")
    assert p.returncode == 0, p.stderr
    hub.requests.clear()
    p = build(f'mr.fetchModel pkgs {{ name = "tiny"; lockFile = {nix_string(lockp)}; '
              f'source.huggingface = {{ repo = "{repo}"; endpoint = "{hub.url}"; }}; }}')
    assert p.returncode == 0, p.stderr
    out = Path(p.stdout.strip())
    assert {n: (out / n).read_bytes() for n in os.listdir(out)} == files
    assert resolved_paths(hub) == sorted(files) and cdn_paths(hub) == ["model.safetensors"]
    assert hashlib.sha256((out / "model.safetensors").read_bytes()).hexdigest() == \
        hashlib.sha256(files["model.safetensors"]).hexdigest()


def test_the_home_manager_lock_file_is_every_models_default(tmp_path: Path):
    """Inside the real Home Manager module set: programs.model-repo.lockFile gives a
    model that names only its repo its commit (manifest) and per-file store path."""
    from nixeval import hm_eval

    lockp = write_lock(tmp_path)
    r = hm_eval(f"""{{ programs.model-repo = {{ enable = true; lockFile = {lockp};
      models.m = {{ source.huggingface.repo = "o/n"; network.retries = 2; }}; }}; }}""")
    entry = r["manifest"]["models"]["m"]
    assert entry["repoId"] == "o/n" and entry["revision"] == REV
    assert r["modelPaths"]["m"].endswith(f"-hf-o--n-{REV[:12]}")
    # network options apply to per-file fetches: no "does not use it" warning
    assert r["failedAssertions"] == [] and r["warnings"] == []


def test_the_docs_lock_file_snippet_works_pasted_on_its_own(tmp_path: Path):
    """docs/nix.md's lockFile snippet, pasted as it is into a Home Manager configuration
    (with the lock file it names beside it), links its model: it enables the module."""
    from nixeval import hm_eval

    docs = (ROOT / "docs" / "nix.md").read_text()
    start = docs.index("```nix\nprograms.model-repo = {            # Home Manager")
    block = docs[start + len("```nix\n"):docs.index("```", start + 7)]
    snippet = block[:block.index("\n};\n") + 4]  # the module part, without the lib comment
    lockp = write_lock(tmp_path, repo="sentence-transformers/all-MiniLM-L6-v2")
    data = json.loads(lockp.read_text())
    data["models"] = {"all-MiniLM-L6-v2": data["models"]["m"]}
    lockp.write_text(json.dumps(data))
    r = hm_eval("{ " + snippet.replace("./model-repo.lock.json", str(lockp)) + " }")
    entry = r["manifest"]["models"]["all-MiniLM-L6-v2"]
    assert entry["repoId"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert entry["revision"] == REV
    # Enabled: the variable of the model is in the session (a disabled module sets none).
    assert r["sessionVariables"]["MODEL_REPO_ALL_MINILM_L6_V2"] == r["modelPaths"][
        "all-MiniLM-L6-v2"]


def _env(hub: MockHub, tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("HF_", "HUGGING_FACE_", "TRANSFORMERS_"))}
    env.update(HF_HOME=str(tmp / "hf-home"), TMPDIR=str(tmp), HF_HUB_DISABLE_TELEMETRY="1",
               XDG_CACHE_HOME=str(tmp / "cache"), PYTHONPATH=str(ROOT), HF_ENDPOINT=hub.url)
    return env


def test_concurrent_locks_and_updates_keep_every_entry(hub: MockHub, tmp_path: Path):
    """Real processes at once on one lock file (each reading it before any writes: the
    small files download slowly): every entry ends up in it, and it stays valid."""
    import sys

    names = [f"m{i}" for i in range(4)]
    for n in names:
        hub.add_repo(f"org/{n}", {"config.json": f'{{"name": "{n}", "pad": "{n * 8}"}}\n'
                                  .encode()})
    hub.add_repo("org/moving", {"config.json": b'{"v": 1, "pad": "................"}\n'})
    path = tmp_path / "model-repo.lock.json"
    p = lock(hub, tmp_path, "lock", "moving", "org/moving")
    assert p.returncode == 0, p.stderr
    hub.commit("org/moving", {"config.json": b'{"v": 2, "pad": "................"}\n'})
    hub.throttle = 20  # ~2 s per small file: every process reads before any writes
    procs = [subprocess.Popen([sys.executable, "-m", "activate", "lock", n, f"org/{n}",
                               "--lock-file", str(path)], cwd=ROOT, env=_env(hub, tmp_path),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for n in names]
    procs.append(subprocess.Popen([sys.executable, "-m", "activate", "update", "moving",
                                   "--lock-file", str(path)], cwd=ROOT,
                                  env=_env(hub, tmp_path), stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True))
    for proc in procs:
        _, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err
    models = read_lock(str(path)).models
    assert sorted(models) == sorted(names + ["moving"])
    assert models["moving"].commit == hub.repos[("model", "org/moving")].refs["main"]
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".model-repo.lock.")]


def test_update_writes_through_a_symlinked_lock_file_and_keeps_its_mode(hub: MockHub,
                                                                        tmp_path: Path):
    hub.add_repo(REPO, {"config.json": b'{"v": 1}\n'})
    real_dir = tmp_path / "shared"
    real_dir.mkdir()
    target = real_dir / "models.lock.json"
    p = cli(hub, tmp_path, "lock", "m", REPO, "--lock-file", str(target))
    assert p.returncode == 0, p.stderr
    target.chmod(0o600)
    link = tmp_path / "model-repo.lock.json"
    link.symlink_to(target)
    new = hub.commit(REPO, {"config.json": b'{"v": 2}\n'})
    p = lock(hub, tmp_path, "update")
    assert p.returncode == 0, p.stderr
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert read_lock(str(target)).models["m"].commit == new
    assert target.stat().st_mode & 0o777 == 0o600
    hub.commit(REPO, {"config.json": b'{"v": 3}\n'})
    p = lock(hub, tmp_path, "lock", "m", REPO)
    assert p.returncode == 0, p.stderr
    assert link.is_symlink() and target.stat().st_mode & 0o777 == 0o600
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".model-repo.lock.")]
