"""Hostile repo file paths (issue 14, finding 5) and the lock file's hash pattern (finding
10): what a Hub listing or a hand-edited lock file says is checked against the repo file
path rule (activate/repopath.py, lib/repopath.nix) before anything is pinned, written or
fetched."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mockhub import MockHub
from nixeval import lib_expr, nix_eval, nix_eval_error
from test_hub_pin import cli

from activate.hub.api import Failure
from activate.hub.lockfile import read_lock, render_schema

REPO = "model-repo-test/hostile"
H = "sha256-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
REV = "c9745ed1d9f207416be6d2e6f8de32d1f16199bf"

HOSTILE = ["../../evil.bin", "/etc/evil.bin", "a//b.bin", "./dot.bin", "nul\x00.bin",
           "esc\x1b[2J.bin", "evil.drv"]


@pytest.fixture(scope="module")
def hub():
    with MockHub(page_size=50) as h:
        yield h


@pytest.mark.parametrize("bad", HOSTILE)
def test_lock_refuses_a_hostile_listing(hub: MockHub, tmp_path: Path, bad: str):
    repo = f"{REPO}-{HOSTILE.index(bad)}"
    hub.add_repo(repo, {"config.json": b"{}", bad: b"evil"})
    lockp = tmp_path / "model-repo.lock.json"
    p = cli(hub, tmp_path, "lock", "m", repo, "--lock-file", str(lockp))
    assert p.returncode == 3, (p.returncode, p.stderr)
    assert json.dumps(bad) in p.stderr and "the Hub lists a file" in p.stderr, p.stderr
    assert "Traceback" not in p.stderr
    assert not lockp.exists()
    p = cli(hub, tmp_path, "prefetch", repo, "--per-file")
    assert p.returncode == 3 and json.dumps(bad) in p.stderr, (p.returncode, p.stderr)
    assert p.stdout == ""


def test_an_excluded_hostile_file_is_not_in_the_way(hub: MockHub, tmp_path: Path):
    repo = f"{REPO}-excluded"
    hub.add_repo(repo, {"config.json": b"{}", "evil.drv": b"evil"})
    p = cli(hub, tmp_path, "prefetch", repo, "--per-file", "--json", "--exclude", "*.drv")
    assert p.returncode == 0, p.stderr
    assert [f["path"] for f in json.loads(p.stdout)["files"]] == ["config.json"]


def lock_text(files: dict, *, hash_: str = H) -> str:
    entry = {"repo": "o/n", "repoType": "model", "ref": "main", "commit": REV,
             "files": {p: {"size": 2, "hash": hash_, "lfs": False} for p in files}}
    return json.dumps({"version": 1, "models": {"m": entry}})


@pytest.mark.parametrize("bad", HOSTILE + ["dir/", "a/../b", "x" * 256])
def test_read_lock_refuses_hostile_keys(tmp_path: Path, bad: str):
    path = tmp_path / "model-repo.lock.json"
    path.write_text(lock_text({"config.json": 1, bad: 1}))
    with pytest.raises(Failure) as exc:
        read_lock(str(path))
    assert exc.value.code == 2 and json.dumps(bad) in str(exc.value), str(exc.value)


@pytest.mark.parametrize("bad_hash", [f"junk {H} junk", f"{H}\n", f"x{H}", f"{H}x"])
def test_the_hash_pattern_is_anchored(tmp_path: Path, bad_hash: str):
    path = tmp_path / "model-repo.lock.json"
    path.write_text(lock_text({"config.json": 1}, hash_=bad_hash))
    with pytest.raises(Failure) as exc:
        read_lock(str(path))
    assert exc.value.code == 2 and "hash" in str(exc.value)
    jsonschema = pytest.importorskip("jsonschema", reason="pip install jsonschema (test extra)")
    # ECMA-262's "$" (JSON Schema's dialect) ends the string; the jsonschema package uses
    # Python's re, whose "$" also matches before a final newline.
    if not bad_hash.endswith("\n"):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(json.loads(path.read_text()), json.loads(render_schema()))
    path.write_text(lock_text({"config.json": 1}))
    jsonschema.validate(json.loads(path.read_text()), json.loads(render_schema()))


def eval_lock(path: Path) -> str:
    return nix_eval_error(f"""let lib = {lib_expr()}; mr = import ./lib {{ inherit lib; }};
      pkgs = import ./tests/nix/stubs/pkgs.nix {{ inherit lib; }};
    in (mr.fetchModel pkgs {{ name = "m"; lockFile = {path};
                              source.huggingface.repo = "o/n"; }}).outPath""")


@pytest.mark.parametrize("bad", ["../../evil.bin", "/etc/evil.bin", "a//b.bin", "./dot.bin",
                                 "esc\x1b[2J.bin", "evil.drv", "a\x85b"])
def test_nix_refuses_hostile_lock_keys(tmp_path: Path, bad: str):
    path = tmp_path / "model-repo.lock.json"
    path.write_text(lock_text({"config.json": 1, bad: 1}))
    err = eval_lock(path)
    assert "lockFile's entry \"m\" has the file path" in err and "not a repo file path" in err, err


def test_nix_refuses_a_nul_in_the_lock_file(tmp_path: Path):
    # Nix would read the key "ok.bin\u0000/../../x" as "ok.bin" (a C string).
    path = tmp_path / "model-repo.lock.json"
    path.write_text(lock_text({"config.json": 1, "ok.bin\x00/../../x": 1}))
    assert "\\u0000" in path.read_text()
    err = eval_lock(path)
    assert 'holds a "\\u0000" (NUL)' in err, err


def test_leading_dash_names_build_end_to_end(hub: MockHub, tmp_path: Path):
    """Repo files named "--help" and "-n.json" (allowed by the path rule): mock Hub ->
    `prefetch --per-file` -> a real nix-build of the per-file model with the suite's
    stubs (which run nixpkgs' linkFarm code: `--` before every name) -> exactly those
    files, with their bytes."""
    import os
    import uuid

    from test_hub_build import build, model_expr, need_nix_build, pin

    need_nix_build()
    nonce = uuid.uuid4().hex
    files = {"--help": f"help {nonce}".encode(), "-n.json": b'{"n": "%s"}' % nonce.encode(),
             "sub/-x": nonce.encode(), "config.json": b"{}"}
    repo = f"{REPO}-dash-{nonce[:8]}"
    hub.add_repo(repo, files)
    doc = pin(hub, tmp_path, repo)
    p = build(model_expr("dash", doc, hub))
    assert p.returncode == 0, p.stderr
    out = Path(p.stdout.strip())
    got = {}
    for root, _dirs, names in os.walk(out):
        for n in names:
            full = Path(root) / n
            got[str(full.relative_to(out))] = full.read_bytes()
    assert got == files
    assert sorted(os.listdir(out)) == sorted(["--help", "-n.json", "config.json", "sub"])


def test_stub_link_farm_is_nixpkgs(tmp_path: Path):
    """The suite's linkFarm takes a list (last wins for a repeated name) or an attribute
    set, gives passthru.entries, and throws on anything else, as nixpkgs' does."""
    from nixeval import nix_eval

    got = nix_eval(f"""let lib = {lib_expr()};
      pkgs = import ./tests/nix/stubs/pkgs.nix {{ inherit lib; }};
      l = pkgs.linkFarm "l" [ {{ name = "a"; path = "/x"; }} {{ name = "-b"; path = "/y"; }}
                             {{ name = "a"; path = "/z"; }} ];
      s = pkgs.linkFarm "l" {{ a = "/z"; "-b" = "/y"; }};
    in {{ l = l.entries; s = s.entries; same = l.drvPath == s.drvPath;
         bad = (builtins.tryEval (pkgs.linkFarm "x" "nope").drvPath).success; }}""")
    assert got == {"l": {"a": "/z", "-b": "/y"}, "s": {"a": "/z", "-b": "/y"}, "same": True,
                   "bad": False}


H512 = "sha512-" + "A" * 86 + "=="
BAD_LOCK_HASHES = ["sha512-AAAA==", "sha256-AAAA", "sha256:" + "0" * 64, "0" * 64,
                   "sha1-2jmj7l5rSw0yVb/vlWAYkK/YBwk=", "sha256-" + "A" * 42 + "B=",
                   "junk " + H, H + "x"]


@pytest.mark.parametrize("bad_hash", BAD_LOCK_HASHES)
def test_python_and_nix_refuse_a_lock_hash_with_the_rules_reason(tmp_path: Path,
                                                                  bad_hash: str):
    # The one SRI hash rule (activate/srihash.py, lib/srihash.nix) on both sides: Nix
    # alone used to accept any length of sha256/sha512 base64 ("sha512-AAAA==").
    from activate.srihash import shown, sri_hash_error

    why = sri_hash_error(bad_hash)
    assert why is not None
    path = tmp_path / "model-repo.lock.json"
    path.write_text(lock_text({"config.json": 1}, hash_=bad_hash))
    with pytest.raises(Failure) as exc:
        read_lock(str(path))
    assert exc.value.code == 2 and f"the hash {shown(bad_hash)} {why}" in str(exc.value)
    err = eval_lock(path)
    assert (f'lockFile\'s entry "m" has for "config.json" the hash {shown(bad_hash)}, '
            f"which {why}") in err, err


def test_a_sha512_lock_hash_is_accepted_on_both_sides(tmp_path: Path):
    path = tmp_path / "model-repo.lock.json"
    path.write_text(lock_text({"config.json": 1}, hash_=H512))
    assert read_lock(str(path)).models["m"].files["config.json"].hash == H512
    got = nix_eval(f"""let lib = {lib_expr()}; mr = import ./lib {{ inherit lib; }};
      pkgs = import ./tests/nix/stubs/pkgs.nix {{ inherit lib; }};
    in (mr.fetchModel pkgs {{ name = "m"; lockFile = {path};
                              source.huggingface.repo = "o/n"; }})
       .files."config.json".fetchArgs.hash""")
    assert got == H512
