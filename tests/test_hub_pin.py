"""``model-repo prefetch --per-file``: a repo pinned file by file from the Hub's own
hashes, against the mock Hub (tests/mockhub.py) on loopback.

- LFS files are pinned by the listing's sha256 and never requested (no CDN request, no
  resolve request for them); the other files are downloaded once and hashed: the bytes
  the mock served equal the non-LFS files' total.
- The printed Nix value evaluates (real nix-instantiate) to each file's SRI hash, equal
  to the sha256 of the file's bytes; ``--json`` gives path, size, hash and lfs.
- A non-LFS file whose bytes differ from the listing fails (exit 3); a gated repo
  without a token fails (exit 2) before any file request; ``--per-file`` with
  ``--add-to-store`` is refused (exit 2).
- ``--include``/``--file`` select the files pinned, and are printed as the selection.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from mockhub import MockHub

from activate.hub.pin import hex_from_sri, sri_from_hex

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "examples" / "tiny-bert"
REPO = "model-repo-test/tiny-bert"


def sri_of(data: bytes) -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(data).digest()).decode()


def tiny_files() -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(TINY.iterdir()) if p.is_file()}


def cli(hub: MockHub, tmp: Path, *args: str, **extra: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("HF_", "HUGGING_FACE_", "TRANSFORMERS_"))}
    env.update(HF_HOME=str(tmp / "hf-home"), TMPDIR=str(tmp), HF_HUB_DISABLE_TELEMETRY="1",
               XDG_CACHE_HOME=str(tmp / "cache"), PYTHONPATH=str(ROOT),
               HF_ENDPOINT=hub.url, **extra)
    return subprocess.run([sys.executable, "-m", "activate", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture
def hub():
    with MockHub(page_size=3) as h:
        yield h


def test_sri_conversions_round_trip():
    data = b"hello\n"
    hexd = hashlib.sha256(data).hexdigest()
    assert sri_from_hex(hexd) == sri_of(data)
    assert hex_from_sri(sri_of(data)) == hexd
    for bad in ("abc", "zz" * 32, "00" * 31):
        with pytest.raises(ValueError):
            sri_from_hex(bad)
    with pytest.raises(ValueError):
        hex_from_sri("sha512-" + base64.b64encode(b"x" * 32).decode())
    # The one SRI hash rule (activate/srihash.py): nothing around the hash, canonical.
    good = sri_of(data)
    for bad in (good + "\n", " " + good, good[:-2] + "B=", "sha512-" + "A" * 86 + "=="):
        with pytest.raises(ValueError, match="the hash"):
            hex_from_sri(bad)


def test_per_file_pin_downloads_no_lfs_file(hub: MockHub, tmp_path: Path):
    files = tiny_files()
    big = b"\x00" * (11 << 20)  # LFS by size too (>= 10 MiB), not only by suffix
    files["weights/extra.bin"] = big
    commit = hub.add_repo(REPO, files)
    proc = cli(hub, tmp_path, "prefetch", REPO, "--per-file", "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["revision"] == commit and doc["ref"] == "main" and doc["repo"] == REPO
    got = {f["path"]: f for f in doc["files"]}
    assert sorted(got) == sorted(files)
    for path, data in files.items():
        assert got[path]["hash"] == sri_of(data), path
        assert got[path]["size"] == len(data)
    lfs = {p for p in files if p.endswith((".safetensors", ".bin"))}
    assert {p for p, f in got.items() if f["lfs"]} == lfs
    # Nothing of an LFS file was requested: no CDN request, no resolve of an LFS path.
    assert hub.seen("cdn") == []
    resolved = [r["path"].split("/resolve/", 1)[1].split("/", 1)[1]
                for r in hub.seen("hub") if "/resolve/" in r["path"]]
    assert sorted(resolved) == sorted(set(files) - lfs)
    small = sum(len(d) for p, d in files.items() if p not in lfs)
    assert hub.bytes_sent == small  # bytes downloaded to pin = the non-LFS files' total
    assert small < len(files["model.safetensors"]) + len(big)


def test_per_file_pin_prints_a_nix_value(hub: MockHub, tmp_path: Path):
    nix = shutil.which("nix-instantiate")
    if nix is None:
        from nixeval import missing_input

        missing_input("nix-instantiate not found: install Debian's nix-bin "
                      "(apt-get install -y nix-bin)")
    files = tiny_files()
    commit = hub.add_repo(REPO, files)
    proc = cli(hub, tmp_path, "prefetch", REPO, "--per-file", "-q")
    assert proc.returncode == 0, proc.stderr
    assert "hash =" not in proc.stdout.replace("fileHashes =", "")
    out = subprocess.run([nix, "--eval", "--strict", "--json", "-E", proc.stdout],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr + proc.stdout
    value = json.loads(out.stdout)
    hf = value["source"]["huggingface"]
    assert hf["repo"] == REPO and hf["revision"] == commit
    assert hf["fileHashes"] == {p: sri_of(d) for p, d in files.items()}
    assert "hash" not in value


def test_per_file_pin_rejects_a_file_that_does_not_match(hub: MockHub, tmp_path: Path):
    files = tiny_files()
    hub.add_repo(REPO, files)
    hub.corrupt[hashlib.sha256(files["config.json"]).hexdigest()] = b"{}" + b" " * (
        len(files["config.json"]) - 2)
    proc = cli(hub, tmp_path, "prefetch", REPO, "--per-file")
    assert proc.returncode == 3, proc.stderr
    assert "config.json" in proc.stderr and "does not match the Hub's listing" in proc.stderr
    assert proc.stdout == ""


def test_per_file_pin_of_a_gated_repo_needs_a_token(hub: MockHub, tmp_path: Path):
    files = tiny_files()
    hub.add_repo(REPO, files, gated=True, token="hf_good")
    proc = cli(hub, tmp_path, "prefetch", REPO, "--per-file")
    assert proc.returncode == 2 and "gated" in proc.stderr, proc.stderr
    assert not [r for r in hub.seen("hub") if "/resolve/" in r["path"]]
    proc = cli(hub, tmp_path, "prefetch", REPO, "--per-file", "--json", HF_TOKEN="hf_good")
    assert proc.returncode == 0, proc.stderr
    asked = [r for r in hub.seen("hub") if "/resolve/" in r["path"]]
    assert asked and all(r["authorization"] == "Bearer hf_good" for r in asked)


def test_per_file_and_add_to_store_are_refused_together(hub: MockHub, tmp_path: Path):
    proc = cli(hub, tmp_path, "prefetch", REPO, "--per-file", "--add-to-store")
    assert proc.returncode == 2 and "--per-file and --add-to-store" in proc.stderr
    assert hub.requests == []


def test_per_file_pin_takes_the_selection(hub: MockHub, tmp_path: Path):
    files = tiny_files()
    hub.add_repo(REPO, files)
    proc = cli(hub, tmp_path, "prefetch", REPO, "--per-file", "--json", "--include", "*.json",
               "--file", "vocab.txt")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert sorted(f["path"] for f in doc["files"]) == sorted(
        p for p in files if p.endswith(".json") or p == "vocab.txt")
    assert doc["include"] == ["*.json"] and doc["exactFiles"] == ["vocab.txt"]
    assert hub.bytes_sent == sum(len(files[f["path"]]) for f in doc["files"])
    proc = cli(hub, tmp_path, "prefetch", REPO, "--per-file", "-q", "--include", "*.json")
    assert 'include = [ "*.json" ];' in proc.stdout and "fileHashes = {" in proc.stdout
    assert "model.safetensors" not in proc.stdout
