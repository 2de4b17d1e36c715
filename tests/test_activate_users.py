"""The activator against other users and other versions (issue 13): a member of a
group-shared cache racing and replacing what it can write, a state dir another user
cannot read, a state written by a newer model-repo (a rollback), and read-only commands
that must change nothing.

The other user is real: ``model-repo-test`` (``MODEL_REPO_TEST_USER``), created as
tests/test_activate_e2e.py does, started through runuser; its group is
``model-repo-share``. Tests needing it skip (with how to run them) when pytest is not
root.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import Workspace, manifest, model, nix_store_add, tree

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_USER = "model-repo-test"
SHARE_GROUP = "model-repo-share"


@dataclass
class Member:
    name: str
    uid: int
    gid: int
    group: int  # gid of SHARE_GROUP, which the member belongs to

    def run(self, *args: str, home: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """The CLI as this user (umask 002, as the NixOS module's services run)."""
        code = ("import os, sys; os.umask(0o002); from activate.cli import main; "
                "sys.exit(main(sys.argv[1:]))")
        return subprocess.run(
            ["runuser", "-u", self.name, "--", "env", "-i", "PATH=/usr/bin:/bin",
             f"HOME={home}", f"PYTHONPATH={ROOT}", sys.executable, "-c", code, *args],
            capture_output=True, text=True, timeout=timeout)

    def spawn(self, source: str, *args: str) -> subprocess.Popen[str]:
        """Python ``source`` run as this user in the background."""
        return subprocess.Popen(
            ["runuser", "-u", self.name, "--", "env", "-i", "PATH=/usr/bin:/bin",
             sys.executable, "-c", source, *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def member() -> Member:
    """The unprivileged member of the cache group (created if missing, as the e2e tests
    do)."""
    name = os.environ.get("MODEL_REPO_TEST_USER") or DEFAULT_USER
    if os.geteuid() != 0:
        pytest.skip(reason=f"needs root: the tests run model-repo as root against the "
                    f"unprivileged user {name} (runuser); run pytest as root")
    if shutil.which("runuser") is None:
        pytest.skip(reason="runuser is missing: install util-linux (apt-get install -y util-linux)")
    try:
        pw = pwd.getpwnam(name)
    except KeyError:
        if name != DEFAULT_USER:
            pytest.skip(reason=f"MODEL_REPO_TEST_USER={name} does not exist: create it or unset it")
        subprocess.run(["useradd", "--system", "--no-create-home", name], capture_output=True)
        pw = pwd.getpwnam(name)
    assert pw.pw_uid != 0, f"{name} must be an unprivileged user"
    try:
        grp.getgrnam(SHARE_GROUP)
    except KeyError:
        subprocess.run(["groupadd", "--system", SHARE_GROUP], capture_output=True)
    group = grp.getgrnam(SHARE_GROUP)
    if name not in group.gr_mem:
        subprocess.run(["usermod", "-a", "-G", SHARE_GROUP, name], check=True, capture_output=True)
    check = subprocess.run(["runuser", "-u", name, "--", "env", "-i", f"PYTHONPATH={ROOT}",
                            sys.executable, "-c", "import activate.cli"],
                           capture_output=True, text=True)
    if check.returncode != 0:
        pytest.skip(reason=f"{name} cannot run {sys.executable} with the sources in {ROOT} "
                    f"(make them readable by it): {check.stderr.strip()[-300:]}")
    return Member(name, pw.pw_uid, pw.pw_gid, group.gr_gid)


@pytest.fixture
def shared(member: Member) -> Iterator[Path]:
    """A folder other users can traverse (pytest's base temp is 0700), removed after."""
    root = Path(tempfile.mkdtemp(prefix="model-repo-users-"))
    root.chmod(0o755)
    yield root
    shutil.rmtree(root)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    d = tmp_path_factory.mktemp("users") / "users-model"
    d.mkdir()
    (d / "config.json").write_text('{"model_type": "bert", "note": "users"}\n')
    return nix_store_add(d)


# ------------------------------------------------- read-only commands, rollbacks


def test_status_on_a_state_dir_it_cannot_read_exits_3(shared: Path, member: Member,
                                                      store: str) -> None:
    """Finding 13: status as a user who may not read the (root-owned, 0700) state dir
    says so and exits 3 instead of "no profile has linked anything"."""
    ws = Workspace(shared)
    assert ws.activate(manifest({"x": model(store, repo_id="org/x")})).code == 0
    ws.state.chmod(0o700)
    res = member.run("status", "--state-dir", str(ws.state), home=shared)
    assert res.returncode == 3, (res.stdout, res.stderr)
    assert "cannot read" in res.stderr and str(ws.state) in res.stderr
    assert "no profile" not in res.stdout


def _newer(ws: Workspace, store: str) -> Path:
    """A state as a newer model-repo would leave it (state version 3)."""
    assert ws.activate(manifest({"x": model(store, repo_id="org/x")})).code == 0
    (state_file,) = [p for p in ws.state.iterdir() if p.suffix == ".json"]
    head, _, rest = state_file.read_text().partition("\n")
    data = json.loads(head)
    data["version"] = 3
    data["somethingNew"] = {"a": 1}
    state_file.write_text(json.dumps(data) + "\n" + rest)
    return state_file


def test_a_state_of_a_newer_version_is_refused_and_left_untouched(tmp_path: Path,
                                                                  store: str) -> None:
    """Finding 8: what a rollback to an older generation meets. activate, env, status
    and deactivate exit 3 naming the versions and the fix; nothing is renamed or
    written, in the state dir or the cache."""
    ws = Workspace(tmp_path)
    state_file = _newer(ws, store)
    before = (tree(ws.state), tree(ws.hub))
    other = manifest({"x": model(store, repo_id="org/x"), "y": model(store, repo_id="org/y")})
    for res in (
        ws.activate(other),
        ws.activate(other, "--dry-run"),
        ws.run("env", "--manifest", str(ws.write_manifest(other)), "--cache-dir", str(ws.hub),
               "--state-dir", str(ws.state)),
        ws.run("status", "--state-dir", str(ws.state)),
        ws.run("deactivate", "--profile", "test", "--state-dir", str(ws.state)),
    ):
        assert res.code == 3, res.stderr
        assert "newer model-repo" in res.stderr and "state version 3" in res.stderr
        assert str(state_file) in res.stderr and "remove the file" in res.stderr
        assert (tree(ws.state), tree(ws.hub)) == before


def test_status_and_env_never_write(tmp_path: Path, store: str) -> None:
    """status and env change nothing, not even a corrupt state (kept where it is: only a
    writing run moves it aside), and exit 3 for status, which cannot report it."""
    ws = Workspace(tmp_path)
    data = manifest({"x": model(store, repo_id="org/x")})
    assert ws.activate(data).code == 0
    (ws.state / ("f" * 32 + ".json")).write_text('{"version": 2, "profile": "other"')
    before = (tree(ws.state), tree(ws.hub))
    status = ws.run("status", "--state-dir", str(ws.state))
    assert status.code == 3 and "unreadable" in status.stderr and "left in place" in status.stderr
    env = ws.run("env", "--manifest", str(ws.root / "manifest.json"), "--cache-dir",
                 str(ws.hub), "--state-dir", str(ws.state), "--format", "json")
    assert env.code == 0 and env.env()["MODEL_REPO_X"] == store
    assert (tree(ws.state), tree(ws.hub)) == before
