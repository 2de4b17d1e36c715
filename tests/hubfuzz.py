"""A hostile-Hub fuzz campaign for the Hub commands (``ls``, ``lock``, ``update``,
``prefetch --per-file``), shared by tests/test_hub_fuzz.py (derandomized, modest) and
bench/hub_fuzz.py (at size).

A :class:`Scenario` (drawn by :func:`scenarios`) turns the loopback mock Hub
(tests/mockhub.py) hostile in one or more ways: listing entries with wrong fields
(git blob ids, sizes, LFS fields, paths, types), duplicated or endless pages, next-page
links to another host, repo info with another commit or a broken one, file bodies that
are endless, short, wrong, trickling, rate limited, failing or redirected to another
host; a lock file, hand-edited. :func:`run_scenario` runs one command in-process and
checks the property:

    a correct pin, or exit 2/3 with one clear line on stderr — never exit 70, a hang
    past the deadline, a write outside the target, a token to another host.

"A correct pin": exit 0 with every non-LFS file hashed from the bytes the Hub serves
for that path at that commit, every LFS file pinned with the sha256 the listing gives,
and the commit the Hub resolved the ref to.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import strategies as st
from mockhub import MockHub, endless_body, trickle

REPO = "fuzz/model"
TOKEN = "hf_fuzz_token"
#: The command deadline and the per-file one given to every run (seconds).
DEADLINE = 6.0
FILE_DEADLINE = 2.0

FILES: dict[str, bytes] = {
    "config.json": b'{"hidden_size": 8}\n',
    "tokenizer.json": b'{"v": 1}\n',
    "sub/vocab.txt": b"a\nb\n",
    "model.safetensors": b"\x00" * 96,
}

# -- what a scenario may change


def _hex(n: int) -> st.SearchStrategy[str]:
    return st.text("0123456789abcdef", min_size=n, max_size=n)


ODD_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True),
    st.text(max_size=70), _hex(40), _hex(64), st.lists(st.integers(), max_size=2),
    st.dictionaries(st.sampled_from(["oid", "size", "sha256"]), st.integers(-5, 200) |
                    _hex(64) | st.text(max_size=5), max_size=3),
)
ODD_PATHS = st.one_of(
    st.sampled_from(["../../evil.bin", "/etc/evil.bin", "a//b.bin", "./dot.bin", "a\0b",
                     "evil\x1b[2K\rok.json", "--help", "x.drv", "config.json/inner",
                     "sub", ".", "", "é/ü.json", "a" * 300, "\udc80.bin", "bidi\u202e.txt",
                     "c1\x9b31m.json", "Config.json"]),
    st.text(min_size=1, max_size=30),
)
FIELDS = ["oid", "size", "lfs", "path", "type"]


@st.composite
def listing_edits(draw: Any) -> list[tuple[str, str, Any]]:
    """Edits to listing entries: (file, field, new value), or (file, "drop", field)."""
    edits = []
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 1, 2, 3]))):
        target = draw(st.sampled_from(sorted(FILES)))
        kind = draw(st.sampled_from(FIELDS + ["drop", "dup"]))
        if kind == "path":
            edits.append((target, "path", draw(ODD_PATHS)))
        elif kind == "drop":
            edits.append((target, "drop", draw(st.sampled_from(FIELDS))))
        elif kind == "dup":
            edits.append((target, "dup", None))
        else:
            edits.append((target, kind, draw(ODD_VALUES)))
    return edits


BODIES = ["endless", "short", "wrong", "trickle", "429", "429-huge", "503", "redirect-cdn",
          "redirect-loop", "empty"]


@dataclass
class Scenario:
    """One hostile Hub (and lock file) and the command run against it."""

    command: str
    edits: list[tuple[str, str, Any]] = field(default_factory=list)
    page_size: int = 2
    endless_pages: bool = False
    foreign_next: bool = False
    info: str | None = None  # another-commit, bad-sha, not-object, huge-id
    bodies: dict[str, str] = field(default_factory=dict)  # non-LFS file -> a hostile body
    lock_edit: tuple[str, Any] | None = None  # (field of the locked entry, value)
    exact_file: bool = False


@st.composite
def scenarios(draw: Any) -> Scenario:
    """A :class:`Scenario`: a command, and a few hostile changes (maybe none)."""
    small = [p for p in sorted(FILES) if not p.endswith(".safetensors")]
    return Scenario(
        command=draw(st.sampled_from(["ls", "lock", "update", "prefetch-per-file"])),
        edits=draw(listing_edits()),
        page_size=draw(st.integers(1, 5)),
        endless_pages=draw(st.sampled_from([False] * 6 + [True])),
        foreign_next=draw(st.sampled_from([False] * 6 + [True])),
        info=draw(st.sampled_from([None] * 8 + ["another-commit", "bad-sha", "not-object",
                                               "odd-id", "odd-gated"])),
        bodies=draw(st.dictionaries(st.sampled_from(small), st.sampled_from(BODIES),
                                    max_size=2)),
        lock_edit=draw(st.sampled_from([None, None]) | st.tuples(
            st.sampled_from(["commit", "ref", "repo", "files", "blobId", "size", "hash"]),
            ODD_VALUES | ODD_PATHS)),
        exact_file=draw(st.booleans()),
    )


# -- making the mock Hub hostile


def _edit_entries(sc: Scenario, items: list[dict]) -> list[dict]:
    items = [dict(e) for e in items]
    for target, kind, value in sc.edits:
        for e in list(items):
            if e.get("path") != target:
                continue
            if kind == "drop":
                e.pop(value, None)
            elif kind == "dup":
                items.append(dict(e))
            else:
                e[kind] = value
    return items


def _redirect(to: str):
    def answer(handler: Any) -> None:
        handler.send(302, {"Location": to})
    return answer


def _body(kind: str, data: bytes, hub: MockHub, path: str):
    sha = hashlib.sha256(data).hexdigest()
    if kind == "endless":
        return lambda h: endless_body(h, limit=32 << 20)
    if kind == "trickle":
        return trickle(0.5, limit=len(data))
    if kind in ("short", "wrong", "empty"):
        out = {"short": data[:-1], "wrong": data[:-1] + b"!", "empty": b""}[kind]
        return lambda h: h.send(200, {"Content-Type": "application/octet-stream"}, out)
    if kind == "redirect-cdn":
        return _redirect(f"{hub.cdn_url}/{sha}")
    if kind == "redirect-loop":
        return lambda h: h.send(302, {"Location": h.path})
    raise AssertionError(kind)


def make_hostile(hub: MockHub, sc: Scenario, commit: str, other: str) -> None:
    """Apply ``sc`` to ``hub`` (whose repo REPO is at ``commit`` on main; ``other`` is
    an older commit of it)."""
    hub.page_size = sc.page_size
    if sc.edits:
        hub.tree_hook = lambda items: _edit_entries(sc, items)
    hub.endless_pages = sc.endless_pages
    if sc.foreign_next:
        hub.link_hook = lambda url: url.replace(hub.url, hub.cdn_url)
    if sc.info:
        def info(doc: dict) -> Any:
            doc = dict(doc)
            if sc.info == "another-commit":
                doc["sha"] = other
            elif sc.info == "bad-sha":
                doc["sha"] = "g" * 40
            elif sc.info == "not-object":
                return [doc]
            elif sc.info == "odd-id":
                doc["id"] = "../evil\x1b[2J"
            elif sc.info == "odd-gated":
                doc["gated"] = {"x": 1}
            return doc
        hub.info_hook = info
    for path, kind in sc.bodies.items():
        if kind == "429":
            hub.rate_limited[path] = 1
            hub.retry_after = "1"
        elif kind == "429-huge":
            hub.rate_limited[path] = 10
            hub.retry_after = "86400"
        elif kind == "503":
            hub.repos[("model", REPO)].fail_api = None
            hub.file_hook[path] = lambda h: h.error(503, None, "Service Unavailable")
        else:
            hub.file_hook[path] = _body(kind, FILES[path], hub, path)


# -- running a command and checking the property


@dataclass
class Outcome:
    code: int
    stdout: str
    stderr: str
    seconds: float


def sri(data: bytes) -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(data).digest()).decode()


def _run_cli(argv: list[str], environ: dict[str, str]) -> Outcome:
    from activate.cli import main

    out, err = io.StringIO(), io.StringIO()
    t = time.monotonic()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv, environ)
    return Outcome(code, out.getvalue(), err.getvalue(), time.monotonic() - t)


def good_lock(hub: MockHub, commit: str, lock_file: Path) -> None:
    """Write a valid lock entry ``m`` of REPO at ``commit`` (as ``lock`` writes it)."""
    blobs = hub.repos[("model", REPO)].commits[commit]
    files = {p: {"size": b.size, "hash": sri(bytes(b.source)) if not b.lfs else
                 "sha256-" + base64.b64encode(bytes.fromhex(b.sha256)).decode(),
                 "lfs": b.lfs, "blobId": b.oid} for p, b in blobs.items()}
    doc = {"version": 1, "models": {"m": {
        "repo": REPO, "repoType": "model", "ref": "main", "commit": commit,
        "exactFiles": [], "include": [], "exclude": [], "files": files}}}
    lock_file.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")


def run_scenario(hub: MockHub, sc: Scenario, tmp: Path) -> Outcome:
    """Reset ``hub``, apply ``sc``, run its command in-process in ``tmp`` (fresh), check
    the property (AssertionError naming what broke) and return the outcome."""
    hub.repos.clear()
    hub.requests.clear()
    for attr, value in (("tree_hook", None), ("endless_pages", False), ("link_hook", None),
                        ("info_hook", None), ("answer_commit", {}), ("file_hook", {}),
                        ("rate_limited", {}), ("retry_after", "1")):
        setattr(hub, attr, value)
    old = hub.add_repo(REPO, {**FILES, "config.json": b'{"hidden_size": 4}\n'})
    commit = hub.commit(REPO, FILES)
    work = tmp / "work"
    work.mkdir()
    lock_file = work / "model-repo.lock.json"
    if sc.command == "update":
        good_lock(hub, old, lock_file)
        if sc.lock_edit is not None:
            key, value = sc.lock_edit
            doc = json.loads(lock_file.read_text())
            entry = doc["models"]["m"]
            if key in ("blobId", "size", "hash"):
                entry["files"]["config.json"][key] = value
            else:
                entry[key] = value
            lock_file.write_text(json.dumps(doc))
    make_hostile(hub, sc, commit, old)
    environ = {
        "HF_ENDPOINT": hub.url, "HF_TOKEN": TOKEN, "HF_HOME": str(tmp / "hf-home"),
        "HF_HUB_DISABLE_TELEMETRY": "1", "XDG_CACHE_HOME": str(tmp / "cache"),
        "TMPDIR": str(tmp), "PATH": os.environ.get("PATH", ""),
        "MODEL_REPO_HUB_TIMEOUT": str(DEADLINE), "MODEL_REPO_FILE_TIMEOUT": str(FILE_DEADLINE),
    }
    sel = ["--file", "config.json"] if sc.exact_file else []
    argv = {
        "ls": ["ls", REPO, *sel],
        "lock": ["lock", "m", REPO, *sel, "--lock-file", str(lock_file)],
        "update": ["update", "--lock-file", str(lock_file)],
        "prefetch-per-file": ["prefetch", REPO, "--per-file", "--json", *sel],
    }[sc.command]
    before = lock_file.read_bytes() if lock_file.exists() else None
    out = _run_cli(argv, environ)
    check(hub, sc, out, commit, lock_file, before, work)
    return out


def check(hub: MockHub, sc: Scenario, out: Outcome, commit: str, lock_file: Path,
          before: bytes | None, work: Path) -> None:
    """The property, for one run."""
    what = f"{sc}\nexit {out.code}\nstdout: {out.stdout[:2000]}\nstderr: {out.stderr[:3000]}"
    assert out.code in (0, 2, 3), "exit not 0/2/3: " + what
    assert "Traceback" not in out.stderr and "internal error" not in out.stderr, what
    assert out.seconds < DEADLINE + 10, f"ran {out.seconds:.1f} s: " + what
    # nothing written but the lock file (and its temporary, renamed or removed)
    assert sorted(os.listdir(work)) in ([], ["model-repo.lock.json"]), what
    # the token only ever goes to the Hub's own origin
    assert not [r for r in hub.requests if r["server"] == "cdn" and r["authorization"]], what
    for text in (out.stdout, out.stderr):
        assert not set(text) & {"\x1b", "\r", "\x9b", "\u202e"}, "a control character: " + what
    if out.code != 0:
        errors = [ln for ln in out.stderr.splitlines() if ln.startswith("[error")]
        assert len(errors) == 1, "not one error line: " + what
        if before is not None:
            assert lock_file.read_bytes() == before, "lock file changed on failure: " + what
        return
    if sc.info == "another-commit":  # the Hub says main is at the older commit: its word
        commit = next(c for c in hub.repos[("model", REPO)].commits if c != commit)
    blobs = hub.repos[("model", REPO)].commits[commit]
    touched = {target for target, _, _ in sc.edits}  # the listing's word for these
    if sc.command in ("lock", "update"):
        from activate.hub.lockfile import read_lock

        entry = read_lock(str(lock_file)).models["m"]
        assert entry.commit == commit, what
        pinned = {p: f.hash for p, f in entry.files.items()}
    elif sc.command == "prefetch-per-file":
        doc = json.loads(out.stdout)
        assert doc["revision"] == commit, what
        pinned = {f["path"]: f["hash"] for f in doc["files"]}
    else:
        return
    for p, h in pinned.items():
        if p in touched or (p not in blobs and any(e[1] == "path" for e in sc.edits)):
            continue
        assert p in blobs, f"pinned {p!r}, not a file of the commit: " + what
        b = blobs[p]
        if not b.lfs:
            data = b.source if isinstance(b.source, bytes) else b""
            assert h == sri(data), f"wrong hash for {p}: " + what
