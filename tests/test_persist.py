"""Models that survive garbage collection: ``model-repo export``, ``import``, ``store ls``,
``store path`` and the persistence settings, with the real Nix store (Debian's nix-bin,
root, single-user).

Every test makes its own store paths (unique contents, so a unique path) and deletes
them with ``nix-store --delete`` afterwards; none runs a garbage collection.

- ``test_export_delete_import_activate_loads_offline``: a model added as the fetcher's
  fixed-output path is activated, exported by repo id and ref (the full commit comes
  from the profile's state), deleted from the store; ``activate`` then reports the
  missing store path with ``model-repo import`` as the fix, and so does ``status``;
  ``import`` restores it without a prompt (content-addressed) from a non-terminal; after
  ``activate``, transformers loads it by repo id offline.
- ``test_export_a_dataset``: dataset forms find and record a linked dataset.
- ``test_export_and_import_by_model_name``, ``test_export_by_store_path_*``: the ways
  to name what to export (``models.<name>``, store path, commit prefix, ``hf:``) and
  the errors for ambiguous or unknown ones.
- ``test_store_ls_shows_each_state``: valid / persisted / broken, text and JSON.
- ``test_truncated_nar_*``, ``test_corrupt_nar_*``, ``test_bad_narinfo_*``: a damaged
  persist folder gives a clear error and leaves nothing in the store, including the
  unregistered directory Nix itself leaves behind on a bad NAR.
  ``test_export_again_repairs_a_damaged_copy``: a second export replaces a bad copy.
- ``test_unsigned_*``: an input-addressed path (``nix-build``, ``/bin/sh`` builder)
  needs ``--yes`` without a terminal (exit 2, nothing imported), and on a real terminal
  (a pty) the prompt's answer decides.
- ``test_persist_folder_is_a_substituter_*``: a fixed-output derivation (the fetcher's
  shape) is substituted from the folder by ``nix-build``, no signing key needed.
- ``test_a_nix_hug_persist_folder_is_read``: nix-hug's ``nix-hug-manifest.json``.
- ``test_nix_store_fallback_*``: without ``nix`` on PATH, export writes the cache with
  ``nix-store --dump`` (real ``nix copy --from`` reads it) and import checks the NAR.
- ``test_config_*``: the config file, the variables (nix-hug's names too), the
  precedence and the errors, through ``model-repo store path``.
- ``test_auto_persist_*``: ``prefetch --add-to-store`` against the loopback mock Hub
  exports, then restores instead of downloading; a damaged copy falls back to the
  download, whose export repairs it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pty
import secrets
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import ROOT, TINY_BERT, TINY_BERT_REPO, Workspace, manifest, model, need_nix
from nixeval import missing_input

NIX_MISSING = ("Debian's nix-bin is not installed (apt-get install -y nix-bin): no nix or "
               "nix-build")


def _nix() -> None:
    need_nix()
    if not shutil.which("nix"):
        missing_input(NIX_MISSING)


def _env(tmp: Path, **extra: str) -> dict[str, str]:
    env = {"PATH": os.environ.get("PATH", os.defpath), "HOME": str(tmp / "home"),
           "MODEL_REPO_PERSIST_DIR": str(tmp / "persist"),
           "MODEL_REPO_STATE_DIR": str(tmp / "state")}
    env.update(extra)
    return {k: v for k, v in env.items() if v is not None}


def cli(env: dict[str, str], *args: str, stdin: int | None = subprocess.DEVNULL,
        timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``model-repo ARGS`` in a fresh process (stdin: /dev/null, not a terminal)."""
    return subprocess.run([sys.executable, "-m", "activate", *args], cwd=ROOT, env=env,
                          stdin=stdin, capture_output=True, text=True, timeout=timeout)


def _delete(*paths: str) -> None:
    for p in paths:
        if p and os.path.lexists(p):
            subprocess.run([need_nix(), "--delete", p], capture_output=True)


def _valid(path: str) -> bool:
    return subprocess.run([need_nix(), "--check-validity", path],
                          capture_output=True).returncode == 0


class Models:
    """Makes unique store paths named as the fetcher names a Hub repo, and deletes them."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.made: list[str] = []

    def tree(self, commit: str, repo_id: str = TINY_BERT_REPO) -> Path:
        d = self.tmp / "src" / secrets.token_hex(4) / ("hf-" + repo_id.replace("/", "--")
                                                      + "-" + commit[:12])
        shutil.copytree(TINY_BERT, d)
        (d / "README.md").write_text(f"persist test {secrets.token_hex(16)}\n")
        return d

    def fixed(self, commit: str, repo_id: str = TINY_BERT_REPO) -> str:
        """A fixed-output (content-addressed) path, as ``prefetch --add-to-store`` adds."""
        d = self.tree(commit, repo_id)
        out = subprocess.run([need_nix(), "--add-fixed", "--recursive", "sha256", str(d)],
                             check=True, capture_output=True, text=True).stdout.strip()
        self.made.append(out)
        return out

    def built(self, commit: str, repo_id: str = TINY_BERT_REPO) -> str:
        """An input-addressed path: the output of a real derivation (``/bin/sh`` builder)."""
        if not shutil.which("nix-build"):
            missing_input(NIX_MISSING)
        d = self.tree(commit, repo_id)
        expr = self.tmp / f"build-{secrets.token_hex(4)}.nix"
        expr.write_text(
            "{ src, name }: builtins.derivation { inherit name; system = "
            "builtins.currentSystem; builder = \"/bin/sh\"; args = [ \"-c\" "
            "\"/bin/mkdir $out && /bin/cp -r ${src}/. $out/\" ]; }\n")
        proc = subprocess.run(["nix-build", str(expr), "--no-out-link", "--option",
                               "substituters", "", "--arg", "src", str(d), "--argstr",
                               "name", d.name], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        out = proc.stdout.strip().splitlines()[-1]
        deriver = subprocess.run([need_nix(), "-q", "--deriver", out], capture_output=True,
                                 text=True).stdout.strip()
        srcs = subprocess.run([need_nix(), "-q", "--references", deriver],
                              capture_output=True, text=True).stdout.split()
        self.made += [out, deriver, *[s for s in srcs if not s.endswith(".drv")]]
        return out

    def cleanup(self) -> None:
        _delete(*self.made)


@pytest.fixture
def models(tmp_path: Path) -> Iterator[Models]:
    _nix()
    m = Models(tmp_path)
    yield m
    m.cleanup()


def _commit() -> str:
    return secrets.token_hex(20)


def _entries(env: dict[str, str]) -> dict[str, dict]:
    proc = cli(env, "store", "ls", "--json")
    assert proc.returncode in (0, 1), proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["persistDir"] == env["MODEL_REPO_PERSIST_DIR"]
    return {e["storePath"]: e for e in doc["entries"]}


LOAD = """
import os, sys
from transformers import AutoModel, AutoTokenizer
tok = AutoTokenizer.from_pretrained(sys.argv[1])
m = AutoModel.from_pretrained(sys.argv[1])
out = m(**tok(["hello world"], return_tensors="pt"))
shape = tuple(out.last_hidden_state.shape)
# The store path its config.json resolves to (one link, or a tree of per-file links).
print("LOADED", shape[0], shape[-1], os.path.dirname(os.path.realpath(
    os.path.join(os.environ["HF_HUB_CACHE"], "models--" + sys.argv[1].replace("/", "--"),
                 "snapshots", sys.argv[2], "config.json"))))
"""


def test_export_delete_import_activate_loads_offline(tmp_path: Path, models: Models,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    ws = Workspace(tmp_path)
    env = _env(tmp_path)
    commit = _commit()
    path = models.fixed(commit)
    data = manifest({"tiny": model(path, revision=commit, refs=["main"])})

    res = ws.activate(data, environ={"HOME": env["HOME"]})
    assert res.code == 0, res.stderr

    # By repo id and ref: the profile's state gives the store path and the full commit.
    exp = cli(env, "export", TINY_BERT_REPO, "--revision", "main", "--state-dir",
              str(ws.state), "--json")
    assert exp.returncode == 0, exp.stderr
    entry = json.loads(exp.stdout)
    assert entry["storePath"] == path
    assert entry["revision"] == commit and entry["ref"] == "main"
    assert entry["repoId"] == TINY_BERT_REPO and entry["repoType"] == "model"
    nar = subprocess.run([need_nix(), "-q", "--hash", path], capture_output=True,
                         text=True).stdout.strip()
    assert entry["narHash"].startswith("sha256-") and nar.startswith("sha256:")
    assert entry["narSize"] > 30_000
    persist = Path(env["MODEL_REPO_PERSIST_DIR"])
    narinfo = persist / (Path(path).name.split("-", 1)[0] + ".narinfo")
    assert "CA: fixed:r:sha256:" in narinfo.read_text()
    assert "Compression: none" in narinfo.read_text()
    assert (persist / "nix-cache-info").is_file()
    assert _entries(env)[path]["status"] == "valid"

    _delete(path)
    assert not os.path.lexists(path)
    assert _entries(env)[path]["status"] == "persisted"

    # activate and status report the dangling link with the import as its fix (the
    # planner reads the process environment, as the activator does when run).
    monkeypatch.setenv("MODEL_REPO_PERSIST_DIR", env["MODEL_REPO_PERSIST_DIR"])
    res = ws.activate(data, environ={"HOME": env["HOME"]})
    assert res.code == 1
    assert f"the store path {path} is missing" in res.stderr
    assert f"model-repo import {path}" in res.stderr
    status = ws.run("status", "--state-dir", str(ws.state), "--json",
                    environ={"HOME": env["HOME"],
                             "MODEL_REPO_PERSIST_DIR": env["MODEL_REPO_PERSIST_DIR"]})
    assert status.code == 1
    (dangling,) = [e for p in json.loads(status.stdout) for e in p["entries"]
                   if e["status"] == "dangling"]
    assert dangling["value"] == path and f"model-repo import {path}" in dangling["fix"]

    # Content-addressed: no prompt, although stdin is not a terminal and there is no --yes.
    imp = cli(env, "import", TINY_BERT_REPO)
    assert imp.returncode == 0, imp.stderr
    assert imp.stdout.split() == [path]
    assert _valid(path)
    assert _entries(env)[path]["status"] == "valid"
    again = cli(env, "import", TINY_BERT_REPO, "--revision", commit[:7])
    assert again.returncode == 0 and "already in the store" in again.stderr

    res = ws.activate(data, environ={"HOME": env["HOME"]})
    assert res.code == 0, res.stderr
    if not all(importlib.util.find_spec(m) for m in ("transformers", "torch")):
        pytest.skip(reason="pip install torch==2.13.0 transformers (to load the restored "
                    "model); the restore itself was checked")
    load_env = {**os.environ, **res.env(), "HF_HUB_CACHE": str(ws.hub),
                "HF_HUB_OFFLINE": "1", "HOME": env["HOME"]}
    load_env.pop("HF_HOME", None)
    proc = subprocess.run([sys.executable, "-c", LOAD, TINY_BERT_REPO, commit],
                          env=load_env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert f"LOADED 1 16 {path}" in proc.stdout


def test_export_and_import_by_model_name(tmp_path: Path, models: Models) -> None:
    """NAME as in ``models.<name>``: export finds it in the activated manifests (the
    profile's receipt names its manifest) and records it, so ``import NAME`` works after
    the model is gone."""
    ws = Workspace(tmp_path)
    env = _env(tmp_path, MODEL_REPO_STATE_DIR=str(tmp_path / "state"))
    commit = _commit()
    path = models.fixed(commit)
    other = models.fixed(_commit())                  # another revision of the same repo
    data = manifest({"tinyname": model(path, revision=commit, refs=["main"])})
    assert ws.activate(data, environ={"HOME": env["HOME"]}).code == 0
    exp = cli(env, "export", "tinyname", "--json")
    assert exp.returncode == 0, exp.stderr
    entry = json.loads(exp.stdout)
    assert (entry["storePath"], entry["revision"], entry["names"], entry["ref"]) == (
        path, commit, ["tinyname"], "main")
    assert cli(env, "export", other, "-q").returncode == 0
    _delete(path, other)
    res = cli(env, "import", "tinyname")
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == [path]
    assert _valid(path) and not _valid(other)


def test_export_a_dataset(tmp_path: Path, models: Models) -> None:
    """A dataset linked by a profile (``datasets--ORG--NAME``) is found by its dataset
    forms and recorded as one; ``import datasets/ORG/NAME`` restores it."""
    ws = Workspace(tmp_path)
    env = _env(tmp_path)
    commit = _commit()
    repo = "model-repo-example/tiny-data"
    path = models.fixed(commit, repo)
    data = manifest({"d": model(path, repo_id=repo, revision=commit, repoType="dataset")})
    assert ws.activate(data, environ={"HOME": env["HOME"]}).code == 0
    exp = cli(env, "export", f"hf-datasets:{repo}", "--json")
    assert exp.returncode == 0, exp.stderr
    entry = json.loads(exp.stdout)
    assert (entry["repoType"], entry["revision"], entry["storePath"]) == (
        "dataset", commit, path)
    _delete(path)
    assert cli(env, "import", f"https://huggingface.co/{repo}").returncode == 2  # a model
    res = cli(env, "import", f"datasets/{repo}")
    assert res.returncode == 0, res.stderr
    assert _valid(path)


def test_export_by_store_path_and_commit_prefix(tmp_path: Path, models: Models) -> None:
    env = _env(tmp_path)
    c1, c2 = _commit(), _commit()
    p1, p2 = models.fixed(c1), models.fixed(c2)
    # Two store paths of the repo and no state: a bare repo id is ambiguous.
    amb = cli(env, "export", TINY_BERT_REPO)
    assert amb.returncode == 2
    assert "several store paths hold" in amb.stderr and p1 in amb.stderr and p2 in amb.stderr
    # A ref needs a profile's state to know it (export works offline).
    ref = cli(env, "export", TINY_BERT_REPO, "--revision", "main")
    assert ref.returncode == 2
    assert "no profile records the ref 'main'" in ref.stderr and "give the commit" in ref.stderr
    # A commit prefix from the store name picks one; hf: and URL forms name the same repo.
    one = cli(env, "export", f"hf:{TINY_BERT_REPO}", "--revision", c1[:8], "-q")
    assert one.returncode == 0, one.stderr
    assert one.stdout.split() == [p1]
    two = cli(env, "export", p2, "--revision", c2, "-q")
    assert two.returncode == 0, two.stderr
    got = _entries(env)
    assert got[p1]["revision"] == c1[:12]      # only the store name told it
    assert got[p2]["revision"] == c2           # given in full
    # Nothing of an unknown repo: a clear error, exit 2.
    none = cli(env, "export", "model-repo-example/not-there")
    assert none.returncode == 2
    assert "no store path of model-repo-example/not-there" in none.stderr
    assert "prefetch model-repo-example/not-there --add-to-store" in none.stderr


def test_store_ls_shows_each_state(tmp_path: Path, models: Models) -> None:
    env = _env(tmp_path)
    valid, gone, broken = (models.fixed(_commit()) for _ in range(3))
    for p in (valid, gone, broken):
        assert cli(env, "export", p, "-q").returncode == 0
    _delete(gone, broken)
    persist = Path(env["MODEL_REPO_PERSIST_DIR"])
    info = (persist / (Path(broken).name.split("-", 1)[0] + ".narinfo")).read_text()
    nar = persist / next(ln.split(": ", 1)[1] for ln in info.splitlines()
                         if ln.startswith("URL: "))
    nar.unlink()

    got = _entries(env)
    assert {p: e["status"] for p, e in got.items()} == {
        valid: "valid", gone: "persisted", broken: "broken"}
    assert "is missing" in got[broken]["problem"]
    text = cli(env, "store", "ls")
    assert text.returncode == 1      # something is broken
    rows = {next(t for t in ln.split() if t.startswith(os.path.dirname(valid) + "/")):
            ln.split()[0] for ln in text.stdout.splitlines() if not ln.startswith("#")}
    assert rows == {valid: "valid", gone: "persisted", broken: "broken"}
    assert cli(env, "store", "path").stdout == env["MODEL_REPO_PERSIST_DIR"] + "\n"

    # --all restores what it can and says what it cannot.
    res = cli(env, "import", "--all")
    assert res.returncode == 1
    assert _valid(gone) and not os.path.lexists(broken)
    assert f"cannot import {broken}" in res.stderr and "nothing was imported" in res.stderr


def _damaged(tmp_path: Path, models: Models) -> tuple[dict[str, str], str, Path, Path]:
    env = _env(tmp_path)
    path = models.fixed(_commit())
    assert cli(env, "export", path, "-q").returncode == 0
    _delete(path)
    persist = Path(env["MODEL_REPO_PERSIST_DIR"])
    narinfo = persist / (Path(path).name.split("-", 1)[0] + ".narinfo")
    url = next(ln.split(": ", 1)[1] for ln in narinfo.read_text().splitlines()
               if ln.startswith("URL: "))
    return env, path, narinfo, persist / url


def _nothing_left(path: str) -> None:
    assert not os.path.lexists(path), f"{path} was left half-imported"
    assert not _valid(path)


def test_truncated_nar_is_refused_before_nix_runs(tmp_path: Path, models: Models) -> None:
    env, path, _narinfo, nar = _damaged(tmp_path, models)
    os.truncate(nar, nar.stat().st_size // 2)
    res = cli(env, "import", path)
    assert res.returncode == 3
    assert "(truncated?)" in res.stderr and "nothing was imported" in res.stderr
    _nothing_left(path)


def test_truncated_nar_with_matching_narinfo_leaves_nothing(tmp_path: Path,
                                                            models: Models) -> None:
    # The narinfo agrees with the short file: Nix itself fails half-way ("coroutine has
    # finished") and leaves an unregistered directory at the store path; it is removed.
    env, path, narinfo, nar = _damaged(tmp_path, models)
    os.truncate(nar, 20_000)
    text = narinfo.read_text().replace(
        next(ln for ln in narinfo.read_text().splitlines() if ln.startswith("FileSize: ")),
        "FileSize: 20000")
    narinfo.write_text(text)
    res = cli(env, "import", path)
    assert res.returncode == 3, res.stderr
    assert f"cannot import {path}" in res.stderr
    assert "removed the partial copy Nix left in the store" in res.stderr
    _nothing_left(path)


def test_corrupt_nar_same_size_leaves_nothing(tmp_path: Path, models: Models) -> None:
    env, path, _narinfo, nar = _damaged(tmp_path, models)
    data = bytearray(nar.read_bytes())
    data[len(data) // 2] ^= 0xFF          # one flipped byte inside the weights
    nar.write_bytes(bytes(data))
    res = cli(env, "import", path)
    assert res.returncode == 3
    assert "hash mismatch" in res.stderr and "nothing was imported" in res.stderr
    _nothing_left(path)


def test_export_again_repairs_a_damaged_copy(tmp_path: Path, models: Models) -> None:
    """Nix's own ``nix copy`` skips a path whose narinfo exists; export checks the copy
    (NarHash against the store, the NAR file against FileHash) and replaces a bad one."""
    env = _env(tmp_path)
    path = models.fixed(_commit())
    assert cli(env, "export", path, "-q").returncode == 0
    again = cli(env, "export", path)
    assert again.returncode == 0 and "already in the persist folder" in again.stderr
    persist = Path(env["MODEL_REPO_PERSIST_DIR"])
    nar = next((persist / "nar").iterdir())
    data = bytearray(nar.read_bytes())
    data[len(data) // 2] ^= 0xFF
    nar.write_bytes(bytes(data))
    fixed = cli(env, "export", path)
    assert fixed.returncode == 0, fixed.stderr
    assert "replacing the persisted copy" in fixed.stderr and "FileHash" in fixed.stderr
    _delete(path)
    res = cli(env, "import", path)
    assert res.returncode == 0, res.stderr
    assert _valid(path)


def test_bad_narinfo_is_a_clear_error(tmp_path: Path, models: Models) -> None:
    env, path, narinfo, _nar = _damaged(tmp_path, models)
    narinfo.write_text("garbage\n")
    res = cli(env, "import", TINY_BERT_REPO)
    assert res.returncode == 3
    assert f"{narinfo} is corrupt" in res.stderr
    _nothing_left(path)
    assert _entries(env)[path]["status"] == "broken"
    # A manifest that is not JSON names itself and the fix.
    (narinfo.parent / "model-repo-persist.json").write_text("{not json")
    res = cli(env, "store", "ls")
    assert res.returncode == 3 and "model-repo-persist.json is not valid JSON" in res.stderr


def test_unsigned_path_needs_yes_without_a_terminal(tmp_path: Path, models: Models) -> None:
    env = _env(tmp_path)
    path = models.built(_commit())
    assert cli(env, "export", path, "-q").returncode == 0
    persist = Path(env["MODEL_REPO_PERSIST_DIR"])
    info = (persist / (Path(path).name.split("-", 1)[0] + ".narinfo")).read_text()
    assert "CA:" not in info and "Sig:" not in info
    _delete(path)
    res = cli(env, "import", path)
    assert res.returncode == 2
    assert "pass --yes" in res.stderr and "not a terminal" in res.stderr
    _nothing_left(path)
    res = cli(env, "import", path, "--yes")
    assert res.returncode == 0, res.stderr
    assert _valid(path)
    _delete(path)
    assert cli(env, "import", path, "--no-check-sigs").returncode == 0   # nix-hug's flag
    assert _valid(path)


def _on_terminal(env: dict[str, str], answer: bytes, *args: str) -> tuple[int, str]:
    """Run ``model-repo ARGS`` with a pty as stdin (a real terminal), type ``answer``
    once the prompt is shown; returns the exit status and stderr."""
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen([sys.executable, "-m", "activate", *args], cwd=ROOT,
                                env=env, stdin=slave, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        os.close(slave)
        slave = -1
        assert proc.stderr is not None
        seen = b""
        deadline = time.monotonic() + 60
        os.set_blocking(proc.stderr.fileno(), False)
        while b"[y/N]" not in seen and time.monotonic() < deadline and proc.poll() is None:
            select.select([proc.stderr], [], [], 0.5)
            seen += proc.stderr.read() or b""
        assert b"[y/N]" in seen, seen.decode()
        os.write(master, answer)
        code = proc.wait(timeout=60)
        os.set_blocking(proc.stderr.fileno(), True)
        seen += proc.stderr.read()
        return code, seen.decode()
    finally:
        if slave >= 0:
            os.close(slave)
        os.close(master)


def test_unsigned_path_prompt_on_a_terminal(tmp_path: Path, models: Models) -> None:
    env = _env(tmp_path)
    path = models.built(_commit())
    assert cli(env, "export", path, "-q").returncode == 0
    _delete(path)
    code, err = _on_terminal(env, b"n\n", "import", path)
    assert code == 1 and "not confirmed" in err
    assert path in err                       # the prompt lists what it would trust
    _nothing_left(path)
    code, err = _on_terminal(env, b"y\n", "import", path)
    assert code == 0, err
    assert _valid(path)


def test_persist_folder_is_a_substituter_for_the_fetchers_derivation(
        tmp_path: Path, models: Models) -> None:
    """The persist folder is a binary cache Nix substitutes from: a fixed-output
    derivation (the fetcher's shape: recursive sha256, same name) whose builder would
    fail is realised from it with no signature settings (docs/nix.md)."""
    env = _env(tmp_path)
    path = models.fixed(_commit())
    exp = cli(env, "export", path, "--json")
    assert exp.returncode == 0, exp.stderr
    nar_hash = json.loads(exp.stdout)["narHash"]
    _delete(path)
    expr = tmp_path / "fod.nix"
    expr.write_text(
        "builtins.derivation { name = \"%s\"; system = builtins.currentSystem; "
        "builder = \"/bin/sh\"; args = [ \"-c\" \"echo no download here >&2; exit 1\" ]; "
        "outputHashMode = \"recursive\"; outputHashAlgo = \"sha256\"; "
        "outputHash = \"%s\"; }\n" % (Path(path).name.split("-", 1)[1], nar_hash))
    if not shutil.which("nix-build"):
        missing_input(NIX_MISSING)
    proc = subprocess.run(["nix-build", str(expr), "--no-out-link", "--option",
                           "substituters", f"file://{env['MODEL_REPO_PERSIST_DIR']}"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == path
    assert "no download here" not in proc.stderr and _valid(path)


def test_a_nix_hug_persist_folder_is_read(tmp_path: Path, models: Models) -> None:
    """A folder nix-hug's ``export`` filled (``nix copy --to file://DIR``, its default xz,
    and ``nix-hug-manifest.json``) is listed and restored by model-repo."""
    env = _env(tmp_path)
    commit = _commit()
    path = models.fixed(commit)
    persist = Path(env["MODEL_REPO_PERSIST_DIR"])
    copy = subprocess.run(["nix", "--extra-experimental-features", "nix-command", "copy",
                           "--to", f"file://{persist}", path], capture_output=True, text=True)
    assert copy.returncode == 0, copy.stderr
    (persist / "nix-hug-manifest.json").write_text(json.dumps([{
        "repoId": TINY_BERT_REPO, "type": "model", "rev": commit, "filters": None,
        "storePath": path, "exportedAt": "2026-01-02T03:04:05Z"}]))
    _delete(path)
    entry = _entries(env)[path]
    assert (entry["status"], entry["revision"], entry["repoId"]) == (
        "persisted", commit, TINY_BERT_REPO)
    assert entry["narHash"].startswith("sha256-") and entry["narSize"] > 30_000
    res = cli(env, "import", TINY_BERT_REPO, "--revision", commit)
    assert res.returncode == 0, res.stderr
    assert _valid(path)
    assert not (persist / "model-repo-persist.json").exists()   # nix-hug's file is read only


# ------------------------------------------------- without nix copy (nix-store only)


def _only_nix_store(tmp: Path) -> str:
    """A PATH holding nix-store and no nix: the fallback through --dump/--import."""
    d = tmp / "only-nix-store"
    d.mkdir(exist_ok=True)
    link = d / "nix-store"
    if not link.exists():
        link.symlink_to(need_nix())
    return str(d)


def test_nix_store_fallback_writes_a_cache_nix_copy_reads(tmp_path: Path,
                                                          models: Models) -> None:
    """Without ``nix``: export writes the binary cache itself (nix-store --dump) with the
    narinfo ``nix copy`` would write, content address included; real ``nix copy --from``
    restores from it without --no-check-sigs, and the fallback import restores too."""
    from activate.hub.binarycache import fixed_output_path, nix_base32_decode

    env = _env(tmp_path, PATH=_only_nix_store(tmp_path))
    path = models.fixed(_commit())
    res = cli(env, "export", path)
    assert res.returncode == 0, res.stderr
    assert "exported with nix-store --dump" in res.stderr
    persist = Path(env["MODEL_REPO_PERSIST_DIR"])
    info = dict(ln.split(": ", 1) for ln in (persist / (Path(path).name.split("-", 1)[0]
                                                         + ".narinfo")).read_text().splitlines())
    nar_hash = subprocess.run([need_nix(), "-q", "--hash", path], capture_output=True,
                              text=True).stdout.strip()
    assert info["NarHash"] == nar_hash and info["CA"] == "fixed:r:" + nar_hash
    digest = nix_base32_decode(nar_hash.split(":", 1)[1])
    assert digest is not None
    assert fixed_output_path("/nix/store", Path(path).name.split("-", 1)[1], digest) == path
    _delete(path)
    copy = subprocess.run(["nix", "--extra-experimental-features", "nix-command", "copy",
                           "--from", f"file://{persist}", path], capture_output=True, text=True)
    assert copy.returncode == 0, copy.stderr      # Nix reads our cache, CA accepted
    assert _valid(path)
    _delete(path)
    res = cli(env, "import", path)                # content-addressed: no --yes needed
    assert res.returncode == 0, res.stderr
    assert _valid(path)


def test_nix_store_fallback_refuses_a_corrupt_nar(tmp_path: Path, models: Models) -> None:
    env = _env(tmp_path, PATH=_only_nix_store(tmp_path))
    path = models.built(_commit())
    assert cli(env, "export", path, "-q").returncode == 0
    _delete(path)
    persist = Path(env["MODEL_REPO_PERSIST_DIR"])
    nar = next((persist / "nar").iterdir())
    data = bytearray(nar.read_bytes())
    data[len(data) // 2] ^= 0xFF
    nar.write_bytes(bytes(data))
    res = cli(env, "import", path, "--yes")
    assert res.returncode == 3
    assert "the NAR does not match its narinfo" in res.stderr
    assert "nothing was imported" in res.stderr
    _nothing_left(path)


# ---------------------------------------------------------------------- settings


def _store_path(tmp: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return cli(env, "store", "path", *args)


def test_config_file_and_precedence(tmp_path: Path) -> None:
    home = tmp_path / "home"
    cfg_home = tmp_path / "xdg-config"
    (cfg_home / "model-repo").mkdir(parents=True)
    (cfg_home / "model-repo" / "config").write_text(
        "# nix-hug's format\n\n  persist_dir = /persist/models  \nauto_persist=true\n")
    base = {"PATH": os.environ.get("PATH", os.defpath), "HOME": str(home)}
    env = {**base, "XDG_CONFIG_HOME": str(cfg_home)}
    assert _store_path(tmp_path, env).stdout == "/persist/models\n"
    assert _store_path(tmp_path, {**env, "NIX_HUG_PERSIST_DIR": "/from/nixhug"}).stdout == \
        "/from/nixhug\n"
    both = {**env, "NIX_HUG_PERSIST_DIR": "/from/nixhug", "MODEL_REPO_PERSIST_DIR": "/ours"}
    assert _store_path(tmp_path, both).stdout == "/ours\n"
    assert _store_path(tmp_path, both, "--persist-dir", "/flag").stdout == "/flag\n"
    # Default without any setting: the user's data dir.
    assert _store_path(tmp_path, base).stdout == \
        str(home / ".local" / "share" / "model-repo" / "persist") + "\n"
    assert _store_path(tmp_path, {**base, "XDG_DATA_HOME": str(tmp_path / "d")}).stdout == \
        str(tmp_path / "d" / "model-repo" / "persist") + "\n"
    # ~ is the home directory; quotes are dropped; an unknown key is a warning.
    (cfg_home / "model-repo" / "config").write_text('persist_dir="~/models"\ncolour=blue\n')
    res = _store_path(tmp_path, env)
    assert (res.returncode, res.stdout) == (0, str(home / "models") + "\n")
    assert "unknown setting 'colour' ignored" in res.stderr

    # nix-hug's config file counts while model-repo's does not exist.
    (cfg_home / "nix-hug").mkdir()
    (cfg_home / "nix-hug" / "config").write_text("persist_dir=/nix-hug/models\n")
    assert _store_path(tmp_path, env).stdout == str(home / "models") + "\n"
    (cfg_home / "model-repo" / "config").unlink()
    assert _store_path(tmp_path, env).stdout == "/nix-hug/models\n"

    from activate.hub.config import load_config

    (cfg_home / "model-repo" / "config").write_text("auto_persist = yes\n")
    cfg = load_config(env)
    assert cfg.auto_persist and cfg.auto_persist_source.endswith("config:1")
    assert not load_config({**env, "NIX_HUG_AUTO_PERSIST": "false"}).auto_persist
    assert load_config({**env, "NIX_HUG_AUTO_PERSIST": "false",
                        "MODEL_REPO_AUTO_PERSIST": "1"}).auto_persist
    assert not load_config(base).auto_persist


@pytest.mark.parametrize("content, env_extra, message", [
    ("persist_dir\n", {}, "config:1: expected key=value"),
    ("persist_dir=relative/dir\n", {}, "must be an absolute path"),
    ("persist_dir=/has space\n", {}, "which Nix cannot take in a file:// binary cache URL"),
    ("", {"MODEL_REPO_PERSIST_DIR": "rel"}, "MODEL_REPO_PERSIST_DIR: the persist folder must"),
])
def test_config_errors_name_the_setting(tmp_path: Path, content: str,
                                        env_extra: dict[str, str], message: str) -> None:
    cfg_home = tmp_path / "xdg-config"
    (cfg_home / "model-repo").mkdir(parents=True)
    (cfg_home / "model-repo" / "config").write_text(content)
    env = {"PATH": os.environ.get("PATH", os.defpath), "HOME": str(tmp_path / "home"),
           "XDG_CONFIG_HOME": str(cfg_home), **env_extra}
    res = _store_path(tmp_path, env)
    assert res.returncode == 2
    assert message in res.stderr


def test_auto_persist_must_be_a_boolean(tmp_path: Path) -> None:
    from activate.hub.config import ConfigError, load_config

    env = {"HOME": str(tmp_path), "MODEL_REPO_AUTO_PERSIST": "sometimes"}
    with pytest.raises(ConfigError, match="MODEL_REPO_AUTO_PERSIST: expected true or false"):
        load_config(env)


def test_import_hint_is_a_file_test_in_the_persist_folder(tmp_path: Path) -> None:
    from activate.persistdir import import_hint

    store_path = "/nix/store/" + "a" * 32 + "-hf-org--name-0123456789ab"
    env = {"HOME": str(tmp_path), "MODEL_REPO_PERSIST_DIR": str(tmp_path / "p")}
    assert import_hint(store_path, env) is None
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / ("a" * 32 + ".narinfo")).write_text("StorePath: x\n")
    hint = import_hint(store_path, env)
    assert hint is not None and f"model-repo import {store_path}" in hint
    # A bad setting never turns a report into a crash.
    assert import_hint(store_path, {"HOME": str(tmp_path),
                                    "MODEL_REPO_PERSIST_DIR": "relative"}) is None



# -------------------------------------------------------------------- auto-persist


def test_auto_persist_prefetch_exports_then_restores_without_download(
        tmp_path: Path, models: Models) -> None:
    """``prefetch --add-to-store`` with auto_persist: the added path is exported; after
    it is deleted from the store, the same prefetch restores it from the persist folder
    and downloads no file (the Hub is asked only to resolve the ref)."""
    pytest.importorskip("huggingface_hub", reason="pip install huggingface_hub (prefetch)")
    from mockhub import MockHub

    repo = "model-repo-test/persisted"
    files = {"config.json": b'{"model_type": "bert", "id": "%s"}\n' % secrets.token_hex(8)
             .encode(), "README.md": b"auto-persist\n"}
    with MockHub() as hub:
        commit = hub.add_repo(repo, files)
        env = {**_env(tmp_path), "HF_ENDPOINT": hub.url, "HF_HOME": str(tmp_path / "hf"),
               "TMPDIR": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path / "cache"),
               "HF_HUB_DISABLE_TELEMETRY": "1", "MODEL_REPO_AUTO_PERSIST": "true"}
        first = cli(env, "prefetch", repo, "--add-to-store", "--json", "--include",
                    "*.json")
        assert first.returncode == 0, first.stderr
        pin = json.loads(first.stdout)
        path = pin["storePath"]
        models.made.append(path)
        entry = _entries(env)[path]
        assert (entry["status"], entry["revision"], entry["narHash"], entry["include"]) == (
            "valid", commit, pin["hash"], ["*.json"])

        _delete(path)
        downloads = len([r for r in hub.requests if "/resolve/" in r["path"]])
        assert downloads >= 1
        second = cli(env, "prefetch", repo, "--add-to-store", "--json", "--include",
                     "*.json")
        assert second.returncode == 0, second.stderr
        again = json.loads(second.stdout)
        assert (again["storePath"], again["hash"], again["revision"]) == (
            path, pin["hash"], commit)
        assert _valid(path)
        assert len([r for r in hub.requests if "/resolve/" in r["path"]]) == downloads
        assert "restored from the persist folder" in second.stderr

        # A damaged copy: the prefetch warns, downloads, and export replaces the copy.
        _delete(path)
        persist = Path(env["MODEL_REPO_PERSIST_DIR"])
        nar = next((persist / "nar").iterdir())
        data = bytearray(nar.read_bytes())
        data[len(data) // 2] ^= 0xFF
        nar.write_bytes(bytes(data))
        third = cli(env, "prefetch", repo, "--add-to-store", "--json", "--include",
                    "*.json")
        assert third.returncode == 0, third.stderr
        assert json.loads(third.stdout)["hash"] == pin["hash"]
        assert "downloading instead" in third.stderr
        assert "replacing the persisted copy" in third.stderr
        assert len([r for r in hub.requests if "/resolve/" in r["path"]]) > downloads
        _delete(path)
        assert cli(env, "import", path).returncode == 0 and _valid(path)


def _plant(persist: Path, store_path: str, tree: Path, *, ca: bool) -> str:
    """Write a narinfo for ``store_path`` whose NAR is ``tree`` (what a user who can
    write the persist folder can do): uncompressed, no signature, a ``CA:`` line only
    when ``ca``. Returns the planted NAR's SRI hash."""
    import hashlib

    from activate.hub.binarycache import nix_base32
    from activate.hub.nar import sri, write_nar
    from activate.persistdir import narinfo_path

    chunks: list[bytes] = []
    write_nar(tree, chunks.append)
    nar = b"".join(chunks)
    digest = hashlib.sha256(nar).digest()
    b32 = nix_base32(digest)
    (persist / "nar").mkdir(exist_ok=True)
    (persist / "nar" / f"{b32}.nar").write_bytes(nar)
    lines = [f"StorePath: {store_path}", f"URL: nar/{b32}.nar", "Compression: none",
             f"FileHash: sha256:{b32}", f"FileSize: {len(nar)}", f"NarHash: sha256:{b32}",
             f"NarSize: {len(nar)}", "References: "] + ([f"CA: fixed:r:sha256:{b32}"] if ca
                                                       else [])
    Path(narinfo_path(str(persist), store_path)).write_text("\n".join(lines) + "\n")
    return sri(digest)


def test_auto_persist_never_restores_planted_bytes(tmp_path: Path, models: Models) -> None:
    """Issue 14, finding 2: a persist folder another user can write. (a) The true pin's
    store path with planted bytes and no content address: never imported (before: it
    was, with --no-check-sigs, and its hash printed as the pin); (b) a content-addressed
    path of planted bytes under the pin's name: imported by Nix, but its files are not
    the Hub's, so it is deleted again. Both times the prefetch downloads and prints the
    true pin, and the store path holds the Hub's bytes."""
    pytest.importorskip("huggingface_hub", reason="pip install huggingface_hub (prefetch)")
    from mockhub import MockHub

    from activate.hub.binarycache import fixed_output_path
    from activate.hub.nar import nar_hash

    repo = "model-repo-test/planted"
    files = {"config.json": b'{"model_type": "bert", "id": "%s"}\n' % secrets.token_hex(8)
             .encode(), "README.md": b"true bytes\n"}
    with MockHub() as hub:
        hub.add_repo(repo, files)
        env = {**_env(tmp_path), "HF_ENDPOINT": hub.url, "HF_HOME": str(tmp_path / "hf"),
               "TMPDIR": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path / "cache"),
               "HF_HUB_DISABLE_TELEMETRY": "1", "MODEL_REPO_AUTO_PERSIST": "true"}
        first = cli(env, "prefetch", repo, "--add-to-store", "--json")
        assert first.returncode == 0, first.stderr
        pin = json.loads(first.stdout)
        path = pin["storePath"]
        models.made.append(path)
        persist = Path(env["MODEL_REPO_PERSIST_DIR"])
        doc = json.loads((persist / "model-repo-persist.json").read_text())
        name = os.path.basename(path).split("-", 1)[1]
        planted = tmp_path / "planted" / name
        planted.mkdir(parents=True)
        (planted / "config.json").write_text('{"model_type": "evil"}\n')
        (planted / "README.md").write_text("planted bytes\n")

        for ca in (False, True):
            _delete(path)
            assert not _valid(path)
            target = path
            if ca:
                target = fixed_output_path(os.path.dirname(path), name, nar_hash(planted))
                models.made.append(target)
            doc["entries"][-1]["storePath"] = target
            doc["entries"][-1]["narHash"] = _plant(persist, target, planted, ca=ca)
            (persist / "model-repo-persist.json").write_text(json.dumps(doc))
            downloads = len([r for r in hub.requests if "/resolve/" in r["path"]])
            again = cli(env, "prefetch", repo, "--add-to-store", "--json")
            assert again.returncode == 0, again.stderr
            out = json.loads(again.stdout)
            assert (out["storePath"], out["hash"]) == (path, pin["hash"]), again.stderr
            assert "downloading instead" in again.stderr
            assert len([r for r in hub.requests if "/resolve/" in r["path"]]) > downloads
            assert Path(path, "README.md").read_bytes() == b"true bytes\n"
            assert not _valid(target) or target == path
            # The export after it recorded the true path again (the newest entry).
            doc = json.loads((persist / "model-repo-persist.json").read_text())
            assert doc["entries"][-1]["storePath"] == path


# ------------------------------------------------------- a folder others can write


def _victims(tmp: Path) -> dict[Path, bytes]:
    """Root-owned files outside the persist folder that planted links point at."""
    outside = tmp / "outside"
    outside.mkdir(exist_ok=True)
    out = {}
    for name in ("victim-manifest", "victim-narinfo", "victim-nar", "victim-lock",
                 "victim-url"):
        (outside / name).write_bytes(b"do not touch " + name.encode() + b"\n")
        out[outside / name] = (outside / name).read_bytes()
    return out


def _plant_links(persist: Path, store_path: str, outside: Path) -> None:
    """Symlinks under every name the export wrote through before issue 14's fix: the
    manifest's and the NAR's temporary names for the next 3000 process ids, the
    narinfo's temporary name, and a dangling nix-cache-info."""
    from activate.persistdir import narinfo_path

    (persist / "nar").mkdir(parents=True, exist_ok=True)
    last = int(Path("/proc/sys/kernel/ns_last_pid").read_text())
    for pid in range(last, last + 3000):
        (persist / f"model-repo-persist.json.tmp-{pid}").symlink_to(outside / "victim-manifest")
        (persist / "nar" / f".dump-{pid}.tmp").symlink_to(outside / "victim-nar")
    Path(narinfo_path(str(persist), store_path) + ".tmp").symlink_to(outside / "victim-narinfo")
    (persist / "nix-cache-info").symlink_to(outside / "created-through-a-link")


@pytest.mark.parametrize("how", ["nix copy", "nix-store --dump", "shared folder"])
def test_export_never_writes_through_planted_symlinks(tmp_path: Path, models: Models,
                                                      how: str) -> None:
    """Issue 14, finding 3: in a persist folder another user can write, links planted
    under the names export writes (the manifest's and narinfo's temporary files, the
    NAR's, nix-cache-info) are never followed: every victim keeps its bytes, nothing is
    created outside, and the export works. A folder others can write (mode 1777) is
    never given to `nix copy --to`, whose own temporary names (`<file>.tmp.<pid>.<n>`,
    planted here too) it would follow."""
    env = _env(tmp_path, PATH=_only_nix_store(tmp_path)) if how == "nix-store --dump" \
        else _env(tmp_path)
    victims = _victims(tmp_path)
    persist = Path(env["MODEL_REPO_PERSIST_DIR"])
    path = models.fixed(_commit())
    _plant_links(persist, path, tmp_path / "outside")
    if how == "nix copy":
        (persist / "nix-cache-info").unlink()  # nix copy writes it itself (not ours)
    if how == "shared folder":
        from activate.persistdir import narinfo_path

        persist.chmod(0o1777)
        (persist / "nar").chmod(0o1777)
        last = int(Path("/proc/sys/kernel/ns_last_pid").read_text())
        for pid in range(last, last + 3000):
            Path(f"{narinfo_path(str(persist), path)}.tmp.{pid}.1").symlink_to(
                tmp_path / "outside" / "victim-narinfo")
    res = cli(env, "export", path)
    assert res.returncode == 0, res.stderr
    if how == "shared folder":
        assert "model-repo's own writer" in res.stderr
    assert {p: p.read_bytes() for p in victims} == victims
    assert not (tmp_path / "outside" / "created-through-a-link").exists()
    assert _entries(env)[path]["status"] == "valid"
    _delete(path)
    assert cli(env, "import", path).returncode == 0 and _valid(path)


def test_planted_lock_nar_folder_and_url_links_are_refused(tmp_path: Path,
                                                           models: Models) -> None:
    """The lock file as a link: export refuses (exit 3, one line), the victim keeps its
    bytes. The NAR folder as a link: the fallback export refuses to write through it. A
    stale narinfo whose URL leads through a linked folder: export replaces the entry
    without removing the file the URL reaches outside."""
    from activate.persistdir import narinfo_path

    victims = _victims(tmp_path)
    outside = tmp_path / "outside"
    env = _env(tmp_path)
    persist = Path(env["MODEL_REPO_PERSIST_DIR"])
    persist.mkdir()
    path = models.fixed(_commit())
    (persist / ".model-repo-persist.lock").symlink_to(outside / "victim-lock")
    res = cli(env, "export", path)
    assert res.returncode == 3 and "symbolic link" in res.stderr, res.stderr
    assert "Traceback" not in res.stderr
    (persist / ".model-repo-persist.lock").unlink()

    (persist / "nar").symlink_to(outside)
    res = cli(_env(tmp_path, PATH=_only_nix_store(tmp_path)), "export", path)
    assert res.returncode == 3 and "symbolic link" in res.stderr, res.stderr
    assert sorted(p.name for p in outside.iterdir()) == sorted(p.name for p in victims)
    (persist / "nar").unlink()

    (persist / "evil").symlink_to(outside)
    Path(narinfo_path(str(persist), path)).write_text(
        f"StorePath: {path}\nURL: evil/victim-url\nCompression: none\nFileHash: sha256:"
        f"{'0' * 52}\nFileSize: {len(victims[outside / 'victim-url'])}\nNarHash: sha256:"
        f"{'0' * 52}\nNarSize: 1\nReferences: \n")
    res = cli(env, "export", path)
    assert res.returncode == 0, res.stderr
    assert {p: p.read_bytes() for p in victims} == victims
    assert _entries(env)[path]["status"] == "valid"


def test_a_bare_name_resolves_as_prefetch_pinned_it(tmp_path: Path, models: Models) -> None:
    """``prefetch gpt2 --add-to-store`` pins what the Hub calls the repo
    (``openai-community/gpt2``); ``export gpt2`` and ``import gpt2`` then find that store
    path and that entry offline, and a bare name two repos share is an error naming
    both."""
    pytest.importorskip("huggingface_hub", reason="pip install huggingface_hub (prefetch)")
    from mockhub import MockHub

    full = "model-repo-test-org/alias" + secrets.token_hex(3)
    bare = full.split("/")[1]
    files = {"config.json": b'{"model_type": "bert", "id": "%s"}\n' % secrets.token_hex(8)
             .encode()}
    with MockHub() as hub:
        commit = hub.add_repo(full, files)
        hub.aliases[("model", bare)] = full
        env = {**_env(tmp_path), "HF_ENDPOINT": hub.url, "HF_HOME": str(tmp_path / "hf"),
               "TMPDIR": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path / "cache"),
               "HF_HUB_DISABLE_TELEMETRY": "1"}
        pre = cli(env, "prefetch", bare, "--add-to-store", "--json")
        assert pre.returncode == 0, pre.stderr
    path = json.loads(pre.stdout)["storePath"]
    models.made.append(path)
    assert json.loads(pre.stdout)["repo"] == full
    exp = cli(env, "export", bare)
    assert exp.returncode == 0, exp.stderr
    assert exp.stdout.strip() == path
    entry = _entries(env)[path]
    assert entry["repoId"] == full and commit.startswith(entry["revision"])
    _delete(path)
    imp = cli(env, "import", bare)
    assert imp.returncode == 0, imp.stderr
    assert _valid(path)
    # Another org's repo of the same name: the bare name is ambiguous, both are named.
    other = models.fixed(_commit(), "another-org/" + bare)
    amb = cli(env, "export", bare)
    assert amb.returncode == 2 and full in amb.stderr and f"another-org/{bare}" in amb.stderr
    assert "give the full repo id" in amb.stderr
    assert cli(env, "export", "another-org/" + bare).stdout.strip() == other
    amb = cli(env, "import", bare)
    assert amb.returncode == 2 and "names several repos in the persist folder" in amb.stderr
    # A repo whose id is the bare name itself comes first.
    exact = models.fixed(_commit(), bare)
    assert cli(env, "export", bare).stdout.strip() == exact


def test_one_bad_manifest_entry_breaks_only_itself(tmp_path: Path, models: Models) -> None:
    """Issue 14, finding 12: bad entries in model-repo's manifest and in nix-hug's (a
    storePath that is not one, outside the store, in another store dir, `..`; missing or
    mistyped fields; not an object; terminal escapes) are listed as broken, one line
    each; `store ls` and `import --all` still handle the good entries (exit 1: partial)."""
    env = _env(tmp_path)
    persist = Path(env["MODEL_REPO_PERSIST_DIR"])
    ours, theirs = models.fixed(_commit()), models.fixed(_commit())
    for p in (ours, theirs):
        assert cli(env, "export", p, "-q").returncode == 0
    doc = json.loads((persist / "model-repo-persist.json").read_text())
    good, hug = doc["entries"]
    assert (good["storePath"], hug["storePath"]) == (ours, theirs)
    base = {k: v for k, v in good.items() if k != "storePath"}
    bad = [{**base, "storePath": "not-a-path"}, {**base, "storePath": "/etc/passwd"},
           {**base, "storePath": "/gnu/store/" + "a" * 32 + "-x"},
           {**base, "storePath": ours + "/../" + os.path.basename(theirs)},
           {**base, "storePath": theirs, "narSize": "12"},
           {**base, "storePath": theirs, "names": "abc"},
           # The one SRI hash rule (activate/srihash.py) on narHash.
           {**base, "storePath": theirs, "narHash": "sha512-AAAA=="},
           {k: v for k, v in good.items() if k != "revision"}, 42, None,
           {**base, "repoId": "evil\x1b[31m\nfake line", "storePath": "\x1b[2J"}]
    doc["entries"] = [bad[0], good, *bad[1:]]
    (persist / "model-repo-persist.json").write_text(json.dumps(doc))
    (persist / "nix-hug-manifest.json").write_text(json.dumps([
        {"repoId": hug["repoId"], "type": "model", "rev": hug["revision"],
         "storePath": theirs}, {"storePath": theirs}, {"repoId": "x", "storePath": "../x"},
        "junk"]))
    _delete(ours, theirs)

    res = cli(env, "store", "ls")
    assert res.returncode == 1, res.stderr
    lines = res.stdout.splitlines()[1:]
    assert len(lines) == 1 + len(bad) + 1 + 3, res.stdout
    assert [ln.split()[0] for ln in lines].count("persisted") == 2, res.stdout
    assert [ln.split()[0] for ln in lines].count("broken") == len(bad) + 3
    assert "\x1b" not in res.stdout and "\\x1b[31m\\x0afake line" in res.stdout
    rows = json.loads(cli(env, "store", "ls", "--json").stdout)["entries"]
    assert {r["storePath"]: r["status"] for r in rows if r["status"] != "broken"} == {
        ours: "persisted", theirs: "persisted"}
    assert all(r["problem"] for r in rows if r["status"] == "broken")
    assert any('narHash: "sha512-AAAA==" has 4 base64 characters' in r["problem"]
               for r in rows if r["status"] == "broken"), rows

    res = cli(env, "import", "--all")
    assert res.returncode == 1, res.stderr
    assert "Traceback" not in res.stderr
    assert sorted(res.stdout.split()) == sorted([ours, theirs])
    assert _valid(ours) and _valid(theirs)
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("[error")]
    assert len(errors) == len(bad) + 3, res.stderr   # one line per broken entry
    # Rewriting the manifest (a new export) keeps the broken entries as they were, but
    # those of the path exported again, which the new entry replaces.
    assert cli(env, "export", ours, "-q").returncode == 0
    again = json.loads((persist / "model-repo-persist.json").read_text())["entries"]
    assert again[:-1] == [e for e in doc["entries"]
                          if not isinstance(e, dict) or e.get("storePath") != ours]
    assert again[-1]["storePath"] == ours


# ------------------------------------------------------------------------ signals


def _big_model(tmp: Path, models: Models, mb: int) -> str:
    d = tmp / "big" / ("hf-model-repo-test--big-" + _commit()[:12])
    d.mkdir(parents=True)
    with open(d / "model.safetensors", "wb") as fh:
        for _ in range(mb):
            fh.write(os.urandom(1 << 20))
    out = subprocess.run([need_nix(), "--add-fixed", "--recursive", "sha256", str(d)],
                         check=True, capture_output=True, text=True).stdout.strip()
    models.made.append(out)
    shutil.rmtree(d)
    return out


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("how", ["nix copy", "nix-store --import"])
def test_signal_during_import_leaves_nothing(tmp_path: Path, models: Models,
                                             sig: signal.Signals, how: str) -> None:
    """Issue 14, finding 13: SIGINT or SIGTERM sent (as a terminal, systemd or a
    supervisor does) to the whole process group of `import` while Nix writes into the
    store: one line, exit 128+signal, and no unregistered directory left at the store
    path (before: SIGTERM left it). The process group is stopped at the moment the
    directory appears, so the signal always lands mid-import."""
    env = _env(tmp_path) if how == "nix copy" else _env(tmp_path, PATH=_only_nix_store(tmp_path))
    path = _big_model(tmp_path, models, 64)
    assert cli(env, "export", path, "-q").returncode == 0
    _delete(path)
    assert not os.path.lexists(path)
    proc = subprocess.Popen([sys.executable, "-m", "activate", "import", path], cwd=ROOT,
                            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not os.path.lexists(path):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the import never started writing"
            time.sleep(0.001)
        os.killpg(proc.pid, signal.SIGSTOP)
        assert not _valid(path), "the import finished before the signal: use a bigger model"
        os.killpg(proc.pid, sig)
        os.killpg(proc.pid, signal.SIGCONT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 128 + sig, err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == f"model-repo: interrupted by {sig.name}", err
    assert not os.path.lexists(path), f"{path} left in the store"
    assert not _valid(path)
    res = cli(env, "import", path)   # and the next run imports it
    assert res.returncode == 0, res.stderr
    assert _valid(path)
    # Nix's own empty lock file beside the path (left by the killed Nix) is gone too.
    assert not os.path.lexists(path + ".lock")


_WRITER = """
import sys, time
from pathlib import Path
from activate.hub.signals import on_interrupt
from activate.statefile import write_if_changed

def chunks():
    yield b"half of a lock file"
    Path(sys.argv[2]).write_text("writing")
    time.sleep(60)
    yield b"never"

on_interrupt.install()
write_if_changed(sys.argv[1], chunks(), durable=True)
"""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_during_a_file_write_leaves_no_temporary_file(tmp_path: Path,
                                                             sig: signal.Signals) -> None:
    """Issue 14, finding 13 (the lock write): a real signal while the one writer
    (statefile.write_if_changed, used by `lock`/`update`, the persist manifest and
    narinfo) streams into its temporary file, under the Hub commands' handler: exit
    128+signal, the temporary file removed, the target as it was."""
    target = tmp_path / "models.lock.json"
    target.write_text("old\n")
    marker = tmp_path / "marker"
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(target), str(marker)],
                            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not marker.exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name]  # it is there
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 128 + sig, err
    assert err.strip() == f"model-repo: interrupted by {sig.name}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["marker", "models.lock.json"]
    assert target.read_text() == "old\n"


def test_export_and_import_show_a_bytes_bar_on_a_terminal_only(tmp_path: Path,
                                                               models: Models) -> None:
    """``export`` and ``import`` (``nix copy``, which reports no byte progress to a
    file:// cache) show a bytes bar with the rate on a terminal; none on a pipe or with
    -q."""
    if not shutil.which("nix"):
        missing_input(NIX_MISSING)
    from test_prefetch import BYTES_AND_RATE, on_terminal

    env = _env(tmp_path)
    path = models.fixed(_commit())
    piped = cli(env, "export", path)
    assert piped.returncode == 0, piped.stderr
    assert "Exporting" not in piped.stderr and "B/s" not in piped.stderr
    _delete(path)
    code, _, term = on_terminal(env, "import", path)
    assert code == 0 and _valid(path), term
    name = os.path.basename(path).split("-", 1)[1]
    assert f"Importing {name}".encode() in term and BYTES_AND_RATE.search(term), term
    shutil.rmtree(env["MODEL_REPO_PERSIST_DIR"])
    code, out, term = on_terminal(env, "export", path)
    assert code == 0 and out.strip() == path, term
    assert f"Exporting {name}".encode() in term and BYTES_AND_RATE.search(term), term
    _delete(path)
    code, _, term = on_terminal(env, "import", path, "-q")
    assert code == 0 and _valid(path) and term == b"", term
    # Without `nix` (nix-store --dump / --import): the same bars.
    fallback = {**env, "PATH": _only_nix_store(tmp_path)}
    shutil.rmtree(env["MODEL_REPO_PERSIST_DIR"])
    code, out, term = on_terminal(fallback, "export", path)
    assert code == 0 and out.strip() == path, term
    assert f"Exporting {name}".encode() in term and BYTES_AND_RATE.search(term), term
    _delete(path)
    code, _, term = on_terminal(fallback, "import", path)
    assert code == 0 and _valid(path), term
    assert f"Importing {name}".encode() in term and BYTES_AND_RATE.search(term), term


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_during_export_leaves_no_temporary_file(tmp_path: Path, models: Models,
                                                       sig: signal.Signals) -> None:
    """A signal while `export` (nix-store --dump) streams the NAR into the folder: exit
    128+signal, one line, no temporary NAR, narinfo or manifest left; the next export
    works."""
    env = _env(tmp_path, PATH=_only_nix_store(tmp_path))
    persist = Path(env["MODEL_REPO_PERSIST_DIR"])
    path = _big_model(tmp_path, models, 64)
    proc = subprocess.Popen([sys.executable, "-m", "activate", "export", path], cwd=ROOT,
                            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not (persist / "nar").is_dir() or not any((persist / "nar").iterdir()):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the export never started writing"
            time.sleep(0.001)
        os.killpg(proc.pid, signal.SIGSTOP)
        assert not (persist / "model-repo-persist.json").exists(), "finished: bigger model"
        os.killpg(proc.pid, sig)
        os.killpg(proc.pid, signal.SIGCONT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 128 + sig, err
    assert err.strip().splitlines()[-1] == f"model-repo: interrupted by {sig.name}", err
    left = sorted(str(p.relative_to(persist)) for p in persist.rglob("*"))
    assert left == [".model-repo-persist.lock", "nar"], left
    res = cli(env, "export", path)
    assert res.returncode == 0, res.stderr


def test_fallback_import_reads_no_more_than_the_narinfo_says(tmp_path: Path,
                                                            models: Models) -> None:
    """Without nix copy, an xz NAR that decompresses past its narinfo's NarSize (a
    decompression bomb) is cut at NarSize + 1 byte, and one that is not xz at all is a
    clear error (exit 3, before: a traceback, exit 70); nothing is left in the store."""
    import lzma

    from activate.persistdir import narinfo_path

    env = _env(tmp_path, PATH=_only_nix_store(tmp_path))
    path = models.fixed(_commit())
    assert cli(env, "export", path, "-q").returncode == 0
    _delete(path)
    persist = Path(env["MODEL_REPO_PERSIST_DIR"])
    info_file = Path(narinfo_path(str(persist), path))
    info = dict(ln.split(": ", 1) for ln in info_file.read_text().splitlines())
    nar = (persist / info["URL"]).read_bytes()
    for name, data, expect in (
            ("bomb.nar.xz", lzma.compress(nar + b"\0" * (20 << 20)), "got sha256-"),
            ("junk.nar.xz", b"not xz at all" * 100, "LZMAError")):
        (persist / "nar" / name).write_bytes(data)
        info.update({"URL": f"nar/{name}", "Compression": "xz",
                     "FileSize": str(len(data))})
        info_file.write_text("".join(f"{k}: {v}\n" for k, v in info.items()))
        res = cli(env, "import", path, "--yes")
        assert res.returncode == 3, res.stderr
        assert expect in res.stderr and "Traceback" not in res.stderr
        if name == "bomb.nar.xz":
            assert f"{int(info['NarSize']) + 1} bytes)" in res.stderr, res.stderr
        _nothing_left(path)
