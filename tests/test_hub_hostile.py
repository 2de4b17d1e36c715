"""The Hub commands against a Hub that lies or never ends (tests/mockhub.py's hostile
answers, loopback only, every one bounded), and against a closed stdout.

What they promise: a correct pin, or exit 2/3 with one clear line on stderr — never a
traceback (exit 70), a hang past the deadline (``MODEL_REPO_HUB_TIMEOUT``,
``MODEL_REPO_FILE_TIMEOUT``), a control character on the terminal, or a commit other
than the one asked for.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mockhub import MockHub, endless_body, trickle
from test_prefetch import ROOT, cli, cli_env

REPO = "org/hostile"
FILES = {"config.json": b'{"a": 1}\n', "tokenizer.json": b"{}\n",
         "model.safetensors": b"\0" * 64}


@pytest.fixture
def hub():
    with MockHub(page_size=2) as h:
        yield h


def failed(p: subprocess.CompletedProcess, code: int, *words: str) -> str:
    """Assert exit ``code`` and one clear error line (no traceback) naming ``words``."""
    assert p.returncode == code, f"exit {p.returncode}\n{p.stdout}\n{p.stderr}"
    assert "Traceback" not in p.stderr and "internal error" not in p.stderr, p.stderr
    errors = [ln for ln in p.stderr.splitlines() if "error" in ln.lower()]
    assert len(errors) == 1, p.stderr
    for w in words:
        assert w in errors[0], p.stderr
    return errors[0]


# -- finding 8: a full commit comes back unchanged, or nothing is pinned


@pytest.mark.parametrize("args", [("prefetch",), ("prefetch", "--per-file"), ("ls",)])
def test_a_commit_answered_with_another_commit_is_refused(hub: MockHub, tmp_path: Path,
                                                          args: tuple[str, ...]):
    c1 = hub.add_repo(REPO, FILES)
    c2 = hub.commit(REPO, {**FILES, "config.json": b"{}\n"})
    hub.answer_commit[c2] = c1  # asked for C2, the Hub says C1
    p = cli(hub, tmp_path, *args, REPO, "-r", c2, "--json")
    failed(p, 3, c2, c1)
    assert p.stdout == ""
    assert hub.seen("cdn") == [] and not [r for r in hub.seen("hub") if "/resolve/" in r["path"]]


# -- finding 9: a listing with fields a lock file cannot hold fails with exit 3


@pytest.mark.parametrize("field,value,words", [
    ("oid", "ab" * 32, ["git blob id", "40 lowercase hex"]),  # a 64-hex sha256 object id
    ("size", -1, ["size", "0 or more"]),
    ("size", True, ["size"]),
    ("lfs", {"oid": "zz", "size": 64}, ["LFS sha256"]),
    ("lfs", {"oid": "ab" * 32, "size": 63}, ["LFS size"]),
    ("path", "../../evil.bin", ['".." segment']),
    ("path", "/etc/evil.bin", ['starts with "/"']),
    ("path", "a\0b", ["control character"]),
])
@pytest.mark.parametrize("command", ["lock", "prefetch"])
def test_a_listing_with_impossible_fields_fails_with_one_line(hub: MockHub, tmp_path: Path,
                                                              field, value, words, command):
    hub.add_repo(REPO, FILES)

    def hook(items: list[dict]) -> list[dict]:
        items = [dict(e) for e in items]
        target = next(e for e in items if e["path"] == "model.safetensors")
        target[field] = value
        return items

    hub.tree_hook = hook
    lock_file = tmp_path / "model-repo.lock.json"
    args = (["lock", "m", REPO, "--lock-file", str(lock_file)] if command == "lock"
            else ["prefetch", REPO])
    failed(cli(hub, tmp_path, *args), 3, *words)
    assert not lock_file.exists()
    assert not (tmp_path / "evil.bin").exists()


def test_stdout_closed_early_exits_quietly(hub: MockHub, tmp_path: Path):
    hub.add_repo(REPO, {f"f{i:04}.json": b"{}\n" for i in range(300)})
    proc = subprocess.Popen([sys.executable, "-m", "activate", "ls", REPO], cwd=ROOT,
                            env=cli_env(hub, tmp_path), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # `| head -0`: the reader is gone before the listing is printed
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141, err
    assert err == ""


# -- finding 7: nothing runs forever


def test_an_endless_listing_stops(hub: MockHub, tmp_path: Path):
    hub.add_repo(REPO, FILES)
    hub.endless_pages = True  # a next page past the end, forever
    t = time.monotonic()
    for args in (["ls", REPO], ["lock", "m", REPO, "--lock-file", str(tmp_path / "l.json")]):
        failed(cli(hub, tmp_path, *args), 3, "empty page")
    assert time.monotonic() - t < 60
    assert len(hub.seen("hub", "GET")) < 20


def test_a_listing_that_repeats_itself_stops(hub: MockHub, tmp_path: Path):
    hub.add_repo(REPO, FILES)
    hub.endless_pages = True
    hub.tree_hook = lambda items: items * 50_000  # pages full of the same names
    failed(cli(hub, tmp_path, "ls", REPO), 3, "twice")


def test_an_endless_file_body_is_read_to_its_listed_size_plus_one(hub: MockHub,
                                                                   tmp_path: Path):
    hub.add_repo(REPO, FILES)
    hub.file_hook["config.json"] = endless_body
    t = time.monotonic()
    failed(cli(hub, tmp_path, "prefetch", REPO, "--per-file"), 3, "config.json",
           "more than 9 bytes")
    assert time.monotonic() - t < 60
    assert hub.bytes_sent < 64 << 20  # the client left after a few chunks


def test_a_trickling_file_meets_the_per_file_deadline(hub: MockHub, tmp_path: Path):
    hub.add_repo(REPO, {**FILES, "tokenizer.json": b" " * 500})
    hub.file_hook["tokenizer.json"] = trickle(1.0)  # 1 byte a second, 100 announced
    t = time.monotonic()
    line = failed(cli(hub, tmp_path, "prefetch", REPO, "--per-file",
                      MODEL_REPO_FILE_TIMEOUT="3"), 3, "tokenizer.json", "3 s")
    assert "MODEL_REPO_FILE_TIMEOUT" in line
    assert time.monotonic() - t < 30


def test_the_command_deadline_ends_a_command_blocked_anywhere(hub: MockHub, tmp_path: Path):
    hub.add_repo(REPO, FILES)
    hub.rate_limited["api"] = 10**6
    hub.retry_after = "100000"  # huggingface_hub would sleep that long
    t = time.monotonic()
    line = failed(cli(hub, tmp_path, "ls", REPO, MODEL_REPO_HUB_TIMEOUT="4"), 3, "429")
    assert "MODEL_REPO_HUB_TIMEOUT" in line
    assert time.monotonic() - t < 30


@pytest.mark.parametrize("value", ["0", "-1", "soon", "nan", "inf"])
def test_a_bad_timeout_setting_is_named(hub: MockHub, tmp_path: Path, value: str):
    failed(cli(hub, tmp_path, "ls", REPO, MODEL_REPO_HUB_TIMEOUT=value), 2,
           "MODEL_REPO_HUB_TIMEOUT")
    assert hub.requests == []


# -- rate limits: 429 with Retry-After is waited out, 5xx retried


def test_a_lock_of_many_small_files_survives_rate_limits(hub: MockHub, tmp_path: Path):
    files = {f"f{i:02}.json": f'{{"i": {i}}}\n'.encode() for i in range(12)}
    hub.add_repo(REPO, files)
    for p in list(files)[:6]:
        hub.rate_limited[p] = 1  # each of these answers 429 once
    hub.rate_limited["api"] = 1
    hub.retry_after = "1"
    lock_file = tmp_path / "model-repo.lock.json"
    p = cli(hub, tmp_path, "lock", "m", REPO, "--lock-file", str(lock_file))
    assert p.returncode == 0, p.stderr
    entry = json.loads(lock_file.read_text())["models"]["m"]
    assert sorted(entry["files"]) == sorted(files)
    assert all(v == 0 for v in hub.rate_limited.values())


# -- finding 14: names from the Hub cannot drive the terminal


def test_control_characters_in_names_are_escaped_on_the_terminal(hub: MockHub,
                                                                  tmp_path: Path):
    evil = "evil\x1b[2K\rok.json"
    hub.add_repo(REPO, {**FILES, evil: b"{}\n", "bidi\u202etxt.json": b"{}\n"})
    p = cli(hub, tmp_path, "ls", REPO)
    # the path rule refuses a control character; what is printed is escaped either way
    for out in (p.stdout, p.stderr):
        assert "\x1b" not in out and "\r" not in out and "\u202e" not in out, out
    assert "\\x1b" in p.stdout + p.stderr or "\\u001b" in p.stdout + p.stderr


def test_escape_helper_escapes_control_characters_only():
    from activate.hub.api import printable

    assert printable("onnx/model ü.onnx") == "onnx/model ü.onnx"
    assert printable("a\x1b[31mb\nc\td") == "a\\x1b[31mb\\nc\\td"
    assert printable("x\u202ey\u200bz") == "x\\u202ey\\u200bz"
    assert printable("\udc80") == "\\udc80"


def test_a_hub_that_lists_otherwise_for_the_download_fails_with_one_line(tmp_path: Path):
    """huggingface_hub's snapshot_download lists the repo's files again itself (its
    own ``list_repo_tree`` in 2.x, the info's ``siblings`` in 0.x): a Hub that answers
    that second time with a path outside the folder (after clean first answers) ends
    the snapshot prefetch with exit 3 and one line, nothing written outside the
    download folder."""
    evil = "../../../escaped.json"
    with MockHub(page_size=50) as hub:
        hub.add_repo(REPO, FILES)
        trees: list[int] = []
        infos: list[int] = []

        def tree(items: list[dict]) -> list[dict]:
            trees.append(1)
            return items if len(trees) == 1 else [*items, {**items[0], "path": evil}]

        def info(doc: dict) -> dict:
            infos.append(1)
            return doc if len(infos) == 1 else {
                **doc, "siblings": [*doc["siblings"], {"rfilename": evil}]}

        hub.tree_hook, hub.info_hook = tree, info
        p = cli(hub, tmp_path, "prefetch", REPO)
        assert len(trees) + len(infos) >= 3  # huggingface_hub asked again
        failed(p, 3, "downloading the files")
        assert not list(tmp_path.parent.rglob("escaped.json"))


def test_an_endless_body_in_a_snapshot_prefetch_stops_near_the_listed_size(hub: MockHub,
                                                                           tmp_path: Path):
    hub.add_repo(REPO, FILES)
    hub.file_hook["config.json"] = lambda h: endless_body(h, limit=2 << 30)
    t = time.monotonic()
    p = cli(hub, tmp_path, "prefetch", REPO)
    failed(p, 3, "more than")
    assert time.monotonic() - t < 60
    assert hub.bytes_sent < 512 << 20  # of 2 GiB offered: the guard stopped the download
    dl = tmp_path / "cache" / "model-repo" / "prefetch"
    assert not [d for d in dl.iterdir() if d.is_dir()]  # nothing kept, nothing half-done
