"""The persist-folder fuzz campaign (issue 14): hypothesis builds a persist folder another
user could have written (manifests, ours and nix-hug's; narinfos; NARs; links leading
out of it) and runs the real commands on it in-process, with the real Nix store:
``store ls``, ``import --all`` (no trust given), ``import --all --yes`` (trust given),
``export`` of a valid path. The property:

- every command ends with 0, 1 (partial), 2 or 3, never 70 (a traceback); a 2 or 3
  says why in a log line, no traceback;
- without ``--yes`` nothing enters the store but a content-addressed path whose
  contents give its name (Nix checks the NAR against the narinfo, we check the name);
- nothing outside the persist folder and the imported store paths is written: the
  files beside it, which planted links point at, keep their bytes and no file appears.

Used by tests/test_persist_fuzz.py (a derandomized handful in CI) and
bench/persist_fuzz.py (the same at size, with figures).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import secrets
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

from activate.hub.binarycache import fixed_output_path, nix_base32
from activate.hub.nar import write_nar
from activate.persistdir import narinfo_path

B32 = "0123456789abcdfghijklmnpqrsvwxyz"


def nar_of(tree: Path) -> bytes:
    chunks: list[bytes] = []
    write_nar(tree, chunks.append)
    return b"".join(chunks)


@dataclass
class Materials:
    """What every example starts from: a real content-addressed store path ``good``
    (re-added before each example), its tree, its NAR; a planted tree's NAR."""

    nix_store: str
    root: Path
    good_tree: Path
    good: str
    good_nar: bytes
    planted_nar: bytes

    @classmethod
    def make(cls, nix_store: str, root: Path) -> Materials:
        tree = root / "src" / f"hf-org--fuzz-{secrets.token_hex(6)}"
        (tree / "sub").mkdir(parents=True)
        (tree / "config.json").write_text('{"model_type": "bert"}\n')
        (tree / "sub" / "weights.bin").write_bytes(os.urandom(2048))
        planted = root / "src" / "planted" / tree.name
        planted.mkdir(parents=True)
        (planted / "config.json").write_text('{"model_type": "evil"}\n')
        good = subprocess.run([nix_store, "--add-fixed", "--recursive", "sha256", str(tree)],
                              check=True, capture_output=True, text=True).stdout.strip()
        return cls(nix_store, root, tree, good, nar_of(tree), nar_of(planted))

    def readd_good(self) -> None:
        """``good`` valid with its true contents (an example with ``--yes`` may have
        imported other bytes under its name: that is what trust allows)."""
        subprocess.run([self.nix_store, "--delete", self.good], capture_output=True)
        subprocess.run([self.nix_store, "--add-fixed", "--recursive", "sha256",
                        str(self.good_tree)], check=True, capture_output=True)


def _narinfo(store_path: str, nar: bytes, *, ca: bool) -> dict[str, str]:
    b32 = nix_base32(hashlib.sha256(nar).digest())
    info = {"StorePath": store_path, "URL": f"nar/{b32}.nar", "Compression": "none",
            "FileHash": f"sha256:{b32}", "FileSize": str(len(nar)), "NarHash": f"sha256:{b32}",
            "NarSize": str(len(nar)), "References": ""}
    if ca:
        info["CA"] = f"fixed:r:sha256:{b32}"
    return info


_KEYS = ["StorePath", "URL", "Compression", "FileHash", "FileSize", "NarHash", "NarSize",
         "References", "CA", "Sig", "Deriver"]
_VALUES = ["", "../outside/victim", "/etc/passwd", "link/victim", "nar/../../outside/victim",
           "nar/", "nar/missing.nar", "nar/\x00x", "none", "xz", "zstd", "bzip2", "-1", "0",
           "99999999999999999999999", "abc", "sha256:", "sha256:" + "0" * 52, "md5:abc",
           "fixed:r:sha256:" + "0" * 52, "text:sha256:" + "1" * 52, "../../etc",
           "\x1b[2J\x1b[31mred", "cache.nixos.org-1:AAAA", "/nix/store/short"]

narinfo_mutation = st.one_of(
    st.tuples(st.just("drop"), st.sampled_from(_KEYS), st.just("")),
    st.tuples(st.just("set"), st.sampled_from(_KEYS),
              st.one_of(st.sampled_from(_VALUES), st.text(max_size=30))),
)
nar_damage = st.sampled_from(["genuine", "genuine", "truncated", "flipped", "planted",
                              "random", "link out", "missing", "xz", "xz bomb"])
json_value = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=3),
    max_leaves=8)
_ENTRY_KEYS = ["repoId", "repoType", "revision", "ref", "storePath", "narHash", "narSize",
               "exportedAt", "files", "include", "exclude", "names"]
_STORE_PATHS = ["", "/etc/passwd", "../x", "/nix/store/short", "relative/path",
                "/nix/store/" + "e" * 32 + "-x", "/gnu/store/" + "0" * 32 + "-x", "\x1b[2J"]
manifest_entry = st.one_of(
    st.tuples(st.just("good"), st.just(""), st.none()),
    st.tuples(st.just("fake"), st.just(""), st.none()),
    st.tuples(st.sampled_from(["good", "fake"]), st.sampled_from(_ENTRY_KEYS), json_value),
    st.tuples(st.just("storePath"), st.sampled_from(_STORE_PATHS), st.none()),
    st.tuples(st.just("junk"), st.just(""), json_value),
)


@st.composite
def folders(draw: Any) -> dict[str, Any]:
    """One persist folder, as a plan :func:`run_example` writes out."""
    paths = {}
    for which in ("good", "fake"):
        clean = draw(st.sampled_from([True, False, False]))  # an untouched cache entry
        paths[which] = {
            "present": clean or draw(st.sampled_from([True, True, False])),
            "nar": "genuine" if clean else draw(st.sampled_from(["genuine", "planted"])),
            "ca": clean or draw(st.booleans()),
            "mutations": [] if clean else draw(st.lists(narinfo_mutation, max_size=3)),
            "damage": "genuine" if clean else draw(nar_damage),
            "junk": b"" if clean else draw(st.one_of(st.just(b""), st.binary(max_size=24))),
        }
    return {
        "paths": paths,
        "manifest": draw(st.sampled_from(["entries", "entries", "entries", "absent",
                                          "not json", "wrong version"])),
        "entries": draw(st.lists(manifest_entry, max_size=5)),
        "nix_hug": draw(st.one_of(st.none(), st.lists(
            st.one_of(st.sampled_from(["good", "fake"]), json_value), max_size=3))),
        "nar_folder_link": draw(st.sampled_from([False, False, False, True])),
        "without_nix_copy": draw(st.booleans()),
    }


def _write(plan: dict[str, Any], m: Materials, persist: Path, outside: Path,
           fake: str) -> None:
    persist.mkdir()
    (persist / "nar").mkdir()
    (persist / "link").symlink_to(outside)
    (persist / "nix-cache-info").write_text("StoreDir: /nix/store\n")
    entries: list[Any] = []
    for which, spec in plan["paths"].items():
        store_path = m.good if which == "good" else fake
        nar = m.good_nar if spec["nar"] == "genuine" else m.planted_nar
        info = _narinfo(store_path, nar, ca=spec["ca"])
        url = info["URL"]
        for op, key, value in spec["mutations"]:
            if op == "drop":
                info.pop(key, None)
            else:
                info[key] = value
        if spec["present"]:
            text = "".join(f"{k}: {v}\n" for k, v in info.items()).encode(
                "utf-8", "surrogateescape") + spec["junk"]
            Path(narinfo_path(str(persist), store_path)).write_bytes(text)
        target = persist / url
        if os.path.lexists(target):  # both paths' NARs may be the same file
            target.unlink()
        damage = spec["damage"]
        if damage == "genuine":
            target.write_bytes(nar)
        elif damage == "truncated":
            target.write_bytes(nar[: len(nar) // 2])
        elif damage == "flipped":
            target.write_bytes(nar[:100] + bytes([nar[100] ^ 1]) + nar[101:])
        elif damage == "planted":
            target.write_bytes(m.planted_nar)
        elif damage == "random":
            target.write_bytes(os.urandom(len(nar)))
        elif damage in ("xz", "xz bomb"):
            import lzma

            packed = lzma.compress(nar + (b"\0" * (4 << 20) if damage == "xz bomb" else b""))
            target.write_bytes(packed)
            info.update({"Compression": "xz", "FileSize": str(len(packed))})
            if spec["present"]:
                text = "".join(f"{k}: {v}\n" for k, v in info.items()).encode(
                    "utf-8", "surrogateescape") + spec["junk"]
                Path(narinfo_path(str(persist), store_path)).write_bytes(text)
        elif damage == "link out":
            target.symlink_to(outside / "victim")
        entries.append((which, store_path, info))
    by_name = {w: (p, i) for w, p, i in entries}
    doc_entries: list[Any] = []
    for kind, key, value in plan["entries"]:
        if kind in ("good", "fake"):
            store_path, info = by_name[kind]
            entry = {"repoId": "org/fuzz", "repoType": "model", "revision": "a" * 40,
                     "ref": None, "storePath": store_path, "narHash": "sha256-" + "A" * 43 + "=",
                     "narSize": len(m.good_nar), "exportedAt": "2026-01-01T00:00:00Z",
                     "files": [], "include": [], "exclude": [], "names": ["fuzz"]}
            if key:
                entry[key] = value
            doc_entries.append(entry)
        elif kind == "storePath":
            doc_entries.append({"repoId": "org/fuzz", "revision": "b" * 40,
                                "storePath": key, "narHash": "", "narSize": 1})
        else:
            doc_entries.append(value)
    manifest = persist / "model-repo-persist.json"
    if plan["manifest"] == "entries":
        manifest.write_text(json.dumps({"version": 1, "entries": doc_entries}))
    elif plan["manifest"] == "not json":
        manifest.write_text("{not json")
    elif plan["manifest"] == "wrong version":
        manifest.write_text(json.dumps({"version": 99, "entries": doc_entries}))
    if plan["nix_hug"] is not None:
        hug = [{"repoId": "org/fuzz", "type": "model", "rev": "c" * 40,
                "storePath": by_name[x][0]} if isinstance(x, str) and x in by_name else x
               for x in plan["nix_hug"]]
        (persist / "nix-hug-manifest.json").write_text(json.dumps(hug))
    if plan["nar_folder_link"]:
        shutil.rmtree(persist / "nar")
        (persist / "nar").symlink_to(outside)


def _snapshot(directory: Path) -> dict[str, bytes | str]:
    out: dict[str, bytes | str] = {}
    for p in sorted(directory.rglob("*")):
        rel = str(p.relative_to(directory))
        out[rel] = ("link:" + os.readlink(p)) if p.is_symlink() else (
            p.read_bytes() if p.is_file() else "dir")
    return out


def _cli(argv: list[str], environ: dict[str, str]) -> tuple[int, str, str]:
    """``model-repo ARGV`` in this process (stdin not a terminal); (status, out, err)."""
    from activate.cli import main

    out, err = io.StringIO(), io.StringIO()
    saved, sys.stdin = sys.stdin, io.StringIO("")
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(argv, environ=environ)
    finally:
        sys.stdin = saved
    return code, out.getvalue(), err.getvalue()


def _valid(nix_store: str, path: str) -> bool:
    return subprocess.run([nix_store, "--check-validity", path],
                          capture_output=True).returncode == 0


def _ca_correct(nix_store: str, path: str) -> bool:
    """The store path's contents give its name (a recursive sha256 fixed-output path)."""
    got = subprocess.run([nix_store, "--query", "--hash", path], capture_output=True,
                         text=True).stdout.strip()
    algo, _, b32 = got.partition(":")
    from activate.hub.binarycache import nix_base32_decode

    digest = nix_base32_decode(b32) if algo == "sha256" else None
    name = os.path.basename(path).split("-", 1)[1]
    return digest is not None and fixed_output_path(os.path.dirname(path), name,
                                                    digest) == path


def run_example(plan: dict[str, Any], m: Materials, counts: Counter[str]) -> None:
    """Write ``plan`` out, run the commands, assert the property; tally ``counts``."""
    work = m.root / f"ex-{secrets.token_hex(4)}"
    outside = work / "outside"
    outside.mkdir(parents=True)
    (outside / "victim").write_bytes(b"victim bytes\n")
    persist = work / "persist"
    fake = "/nix/store/" + "".join(secrets.choice(B32) for _ in range(32)) + "-fuzz-fake"
    _write(plan, m, persist, outside, fake)
    before_outside = _snapshot(outside)
    path_var = os.environ.get("PATH", os.defpath)
    if plan.get("without_nix_copy"):  # nix-store only: our own --dump/--import code
        only = m.root / "only-nix-store"
        if not only.exists():
            only.mkdir()
            (only / "nix-store").symlink_to(m.nix_store)
        path_var = str(only)
    env = {"PATH": path_var, "HOME": str(work / "home"),
           "MODEL_REPO_PERSIST_DIR": str(persist), "MODEL_REPO_STATE_DIR": str(work / "state"),
           "XDG_CONFIG_HOME": str(work / "config")}
    subprocess.run([m.nix_store, "--delete", m.good], capture_output=True)
    imported_untrusted = False
    try:
        for argv, trusted in ((["store", "ls", "--json"], False), (["import", "--all"], False),
                              (["import", m.good], False), (["import", "--all", "--yes"], True),
                              (["export", m.good], True), (["store", "ls"], True)):
            if argv[0] == "export":
                m.readd_good()
            code, out, err = _cli(argv, env)
            shown = " ".join("PATH" if a == m.good else a for a in argv)
            counts[f"{shown} -> {code}"] += 1
            assert code in (0, 1, 2, 3), (argv, code, err)
            assert "Traceback" not in err and "internal error" not in err, (argv, err)
            if code in (2, 3):
                assert [ln for ln in err.splitlines() if ln.startswith("[error")], (argv, err)
            if not trusted:
                # Without trust only a content-addressed path enters the store.
                if _valid(m.nix_store, m.good):
                    assert _ca_correct(m.nix_store, m.good), argv
                    imported_untrusted = True
                assert not _valid(m.nix_store, fake), (argv, err)
            assert _snapshot(outside) == before_outside, argv
        if imported_untrusted:
            counts["examples: good imported without --yes (CA checked)"] += 1
        if _valid(m.nix_store, fake):
            counts["examples: fake imported with --yes (trusted)"] += 1
        if plan.get("without_nix_copy"):
            counts["examples: without nix copy"] += 1
        assert sorted(p.name for p in work.iterdir()) in (
            ["outside", "persist"], ["home", "outside", "persist"],
            ["home", "outside", "persist", "state"], ["outside", "persist", "state"]), \
            sorted(p.name for p in work.iterdir())
    finally:
        subprocess.run([m.nix_store, "--delete", fake], capture_output=True)
        m.readd_good()
        shutil.rmtree(work, ignore_errors=True)
    counts["examples"] += 1
