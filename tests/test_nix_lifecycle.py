"""A Nix user's whole cycle in each module, run for real: generation 1 links models
over a user's own download (its ``refs/main`` and real snapshot), generation 2 drops
every model (``models = { }``), generation 3 disables the module. What runs is what the
modules generate (the Home Manager activation entry under Home Manager's ``set -eu -o
pipefail`` with its echo helpers, the devenv task's ``status`` then ``exec`` as devenv
runs them, the NixOS unit's ``ExecStart`` after its ``Condition*``), with the module's
``package`` pointing at a wrapper of this checkout's activator that records each call.
Afterwards the user's ref and snapshot are byte-identical to before generation 1 and
our links are gone.
"""

from __future__ import annotations

import glob
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import assert_serves
from nixeval import REPO, REV, devenv_eval, hf_model, hm_eval, missing_input, nix_string, nixos_eval

REPO_ID = "model-repo-test/tiny-bert"
OTHER_ID = "model-repo-test/other"
URL = f"https://huggingface.co/{REPO_ID}"
OTHER_URL = f"https://huggingface.co/{OTHER_ID}"
USER_REV = "a" * 40  # the commit of the user's own download
FOLDER = "models--model-repo-test--tiny-bert"
OTHER_FOLDER = "models--model-repo-test--other"

# Home Manager's activation script runs every entry under these options, with these
# helpers defined (modules/home-environment.nix, modules/lib-bash/activation-init.sh).
HM_PRELUDE = """set -eu -o pipefail
noteEcho() { echo "note: $*"; }
warnEcho() { echo "warning: $*" >&2; }
errorEcho() { echo "error: $*" >&2; }
verboseEcho() { :; }
VERBOSE_ARG=
"""


def _add(tmp: Path, name: str, files: dict[str, str]) -> str:
    d = tmp / name
    for rel, text in files.items():
        (d / rel).parent.mkdir(parents=True, exist_ok=True)
        (d / rel).write_text(text)
    return subprocess.run(["nix-store", "--add", str(d)], check=True, capture_output=True,
                          text=True).stdout.strip()


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> dict[str, str]:
    """Two models as real store paths (nix-store --add)."""
    if shutil.which("nix-store") is None:
        missing_input("nix-store not found: install Debian's nix-bin (apt-get install -y nix-bin)")
    tmp = tmp_path_factory.mktemp("store")
    return {
        URL: _add(tmp, "tiny-bert", {"config.json": '{"model_type": "bert"}', "vocab.txt": "[PAD]\n"}),
        OTHER_URL: _add(tmp, "other", {"config.json": '{"model_type": "other"}'}),
    }


class Activator:
    """A stand-in for the module's ``package``: bin/model-repo runs this checkout's
    activator with the test's Python and appends its arguments to ``calls``."""

    def __init__(self, tmp: Path):
        self.dir = tmp / "model-repo-pkg"
        self.log = tmp / "activator-calls"
        (self.dir / "bin").mkdir(parents=True)
        exe = self.dir / "bin" / "model-repo"
        exe.write_text(
            "#!/bin/sh\n"
            f"printf '%s\\n' \"$*\" >> {shlex.quote(str(self.log))}\n"
            f"PYTHONPATH={shlex.quote(str(REPO))} exec {shlex.quote(sys.executable)} -m activate \"$@\"\n")
        exe.chmod(0o755)

    @property
    def nix(self) -> str:
        return (f'{{ type = "derivation"; name = "model-repo-test"; outPath = {nix_string(self.dir)}; '
                f'meta.mainProgram = "model-repo"; }}')

    def calls(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []


def user_download(hub: Path) -> None:
    """The user's own snapshot_download of REPO_ID: a blob, a snapshot linking to it,
    refs/main naming its commit (no newline)."""
    repo = hub / FOLDER
    (repo / "blobs").mkdir(parents=True)
    (repo / "blobs" / "0123abcd").write_text('{"model_type": "bert", "user": true}')
    (repo / "snapshots" / USER_REV).mkdir(parents=True)
    os.symlink("../../blobs/0123abcd", repo / "snapshots" / USER_REV / "config.json")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_bytes(USER_REV.encode())


def tree(hub: Path) -> dict[str, object]:
    """Everything under the hub cache but the activators' lock folder: links with their
    targets, files with their bytes and modes, folders."""
    out: dict[str, object] = {}
    for dirpath, dirnames, filenames in os.walk(hub):
        rel_dir = os.path.relpath(dirpath, hub)
        if rel_dir == ".locks" or rel_dir.startswith(".locks/"):
            continue
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = os.path.normpath(os.path.join(rel_dir, name))
            if rel == ".locks":
                continue
            if p.is_symlink():
                out[rel] = ("link", os.readlink(p))
            elif p.is_dir():
                out[rel] = ("dir",)
            else:
                out[rel] = ("file", p.read_bytes(), p.stat().st_mode)
    return out


def clean_env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_", "MODEL_REPO_", "XDG_"))}
    env["HOME"] = str(tmp / "home")
    return env


def models_nix(*which: str) -> str:
    parts = {"tiny": f"tiny = {hf_model(REPO_ID)};", "other": f"other = {hf_model(OTHER_ID)};"}
    return "{ " + " ".join(parts[w] for w in which) + " }"


def assert_linked(hub: Path, store: dict[str, str]) -> None:
    assert_serves(hub / FOLDER / "snapshots" / REV, store[URL])
    assert (hub / FOLDER / "refs" / "main").read_bytes() == REV.encode()
    assert_serves(hub / OTHER_FOLDER / "snapshots" / REV, store[OTHER_URL])
    # The user's own snapshot is untouched while ours is linked beside it.
    assert os.readlink(hub / FOLDER / "snapshots" / USER_REV / "config.json") == "../../blobs/0123abcd"


# --- Home Manager ---------------------------------------------------------------------


def hm_generation(tmp: Path, act: Activator, store, *, enable: bool, models: str) -> str:
    r = hm_eval(f"""{{
      xdg.stateHome = {nix_string(tmp / "state")};
      programs.model-repo = {{
        enable = {str(enable).lower()};
        package = {act.nix};
        integration.huggingface.cacheDir = {nix_string(tmp / "hf")};
        models = {models};
      }};
    }}""", fetch_results=store, real_store_paths=True)
    assert r["failedAssertions"] == [] and r["warnings"] == []
    assert r["activation"]["after"] == ["linkGeneration"]
    return r["activation"]["data"]


def run_hm(data: str, tmp: Path, **extra_env: str) -> subprocess.CompletedProcess:
    env = clean_env(tmp) | extra_env
    p = subprocess.run(["bash", "-c", HM_PRELUDE + data], env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    return p


@pytest.mark.parametrize("through_empty", [True, False], ids=["drop-then-disable", "disable"])
def test_home_manager_generations_prune_and_restore(store, tmp_path, through_empty):
    act = Activator(tmp_path)
    hub = tmp_path / "hf" / "hub"
    user_download(hub)
    before = tree(hub)

    gen1 = hm_generation(tmp_path, act, store, enable=True, models=models_nix("tiny", "other"))
    run_hm(gen1, tmp_path)
    assert_linked(hub, store)

    if through_empty:
        gen2 = hm_generation(tmp_path, act, store, enable=True, models="{ }")
        run_hm(gen2, tmp_path, DRY_RUN="")  # set but empty: a dry run, as in Home Manager
        assert_linked(hub, store)
        run_hm(gen2, tmp_path)
        assert tree(hub) == before

    gen3 = hm_generation(tmp_path, act, store, enable=False, models=models_nix("tiny", "other"))
    n = len(act.calls())
    run_hm(gen3, tmp_path, DRY_RUN="")
    assert len(act.calls()) == n + 1 and "--dry-run" in act.calls()[-1]
    if not through_empty:
        assert_linked(hub, store)
    run_hm(gen3, tmp_path)
    assert act.calls()[-1].startswith("deactivate --profile home-manager --state-dir ")
    assert tree(hub) == before
    assert (hub / FOLDER / "refs" / "main").read_bytes() == USER_REV.encode()
    assert not (hub / OTHER_FOLDER).exists()
    assert glob.glob(str(tmp_path / "state" / "model-repo" / "*.json")) == []

    # The next switch with the module still disabled starts no Python.
    n = len(act.calls())
    run_hm(gen3, tmp_path)
    assert len(act.calls()) == n and tree(hub) == before


def test_home_manager_disabled_without_state_starts_nothing(tmp_path):
    act = Activator(tmp_path)
    data = hm_eval(f"""{{ xdg.stateHome = {nix_string(tmp_path / "state")};
      programs.model-repo.package = {act.nix}; }}""")["activation"]["data"]
    run_hm(data, tmp_path)
    (tmp_path / "state" / "model-repo").mkdir(parents=True)
    (tmp_path / "state" / "model-repo" / "receipt-1234").write_text("")  # not a state file
    run_hm(data, tmp_path)
    assert act.calls() == []


# --- devenv ---------------------------------------------------------------------------


def devenv_generation(tmp: Path, act: Activator, store, *, enable: bool, models: str,
                      cli_version: str | None = "2.0.5") -> dict:
    r = devenv_eval(f"""{{ services.model-repo = {{
        enable = {str(enable).lower()};
        package = {act.nix};
        cacheDir = {nix_string(tmp / "hf")};
        models = {models};
      }}; }}""", root=str(tmp / "project"), fetch_results=store, real_store_paths=True, host_coreutils=True,
        cli_version=cli_version)
    assert r["failedAssertions"] == [] and r["warnings"] == []
    return r["task"] if cli_version else r


def enter_shell(task: dict, tmp: Path) -> subprocess.CompletedProcess | None:
    """As devenv runs a task: ``status`` (bash) first; exit 0 skips ``exec`` (bash with
    ``set -e``). Returns the exec's result, or None when skipped."""
    env = clean_env(tmp)
    if subprocess.run(["bash", "-c", task["status"]], env=env, timeout=60).returncode == 0:
        return None
    p = subprocess.run(["bash", "-c", "set -e\n" + task["exec"]], env=env, capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr
    return p


@pytest.mark.parametrize("through_empty", [True, False], ids=["drop-then-disable", "disable"])
def test_devenv_generations_prune_and_restore(store, tmp_path, through_empty):
    act = Activator(tmp_path)
    hub = tmp_path / "hf" / "hub"
    user_download(hub)
    before = tree(hub)

    gen1 = devenv_generation(tmp_path, act, store, enable=True, models=models_nix("tiny", "other"))
    assert enter_shell(gen1, tmp_path) is not None
    assert_linked(hub, store)
    n = len(act.calls())
    assert enter_shell(gen1, tmp_path) is None and len(act.calls()) == n  # repeat entry: no Python

    if through_empty:
        gen2 = devenv_generation(tmp_path, act, store, enable=True, models="{ }")
        assert enter_shell(gen2, tmp_path) is not None  # the manifest changed: the task runs
        assert tree(hub) == before
        assert enter_shell(gen2, tmp_path) is None

    gen3 = devenv_generation(tmp_path, act, store, enable=False, models=models_nix("tiny", "other"))
    assert enter_shell(gen3, tmp_path) is not None
    assert act.calls()[-1].startswith(f"deactivate --profile devenv:{tmp_path / 'project'} ")
    assert tree(hub) == before
    assert not (hub / OTHER_FOLDER).exists()
    n = len(act.calls())
    assert enter_shell(gen3, tmp_path) is None and len(act.calls()) == n


def test_devenv_enter_shell_fallback_prunes_and_restores(store, tmp_path):
    """Older CLIs and the flakes integration: what the module adds to enterShell, run
    in the user's bash (twice per entry, as devenv 2.x does) with `set -e` and a
    positional parameter that must survive."""
    act = Activator(tmp_path)
    hub = tmp_path / "hf" / "hub"
    user_download(hub)
    before = tree(hub)

    def enter(r: dict) -> None:
        assert r["linkVia"] == "enterShell"
        shell = "set -e\nset -- keep\n" + r["enterShellFallback"] * 2 + '[ "$1" = keep ] && echo SHELL-OPEN\n'
        p = subprocess.run(["bash", "-c", shell], env=clean_env(tmp_path), capture_output=True, text=True, timeout=120)
        assert p.returncode == 0 and p.stdout.endswith("SHELL-OPEN\n"), p.stderr

    enter(devenv_generation(tmp_path, act, store, enable=True, models=models_nix("tiny", "other"), cli_version=None))
    assert_linked(hub, store)
    n = len(act.calls())
    enter(devenv_generation(tmp_path, act, store, enable=True, models="{ }", cli_version=None))
    assert tree(hub) == before and len(act.calls()) == n + 1
    enter(devenv_generation(tmp_path, act, store, enable=False, models="{ }", cli_version=None))
    assert tree(hub) == before and act.calls()[-1].startswith("deactivate ")
    n = len(act.calls())
    enter(devenv_generation(tmp_path, act, store, enable=False, models="{ }", cli_version=None))
    assert len(act.calls()) == n


def test_devenv_partial_link_opens_the_shell_and_retries(store, tmp_path):
    """Exit 1 (one model blocked by the user's own file) is a warning: the task
    succeeds, the other model is linked, and the next shell entry tries again."""
    act = Activator(tmp_path)
    hub = tmp_path / "hf" / "hub"
    blocker = hub / OTHER_FOLDER / "snapshots" / REV
    blocker.parent.mkdir(parents=True)
    blocker.write_text("mine")
    task = devenv_generation(tmp_path, act, store, enable=True, models=models_nix("tiny", "other"))
    p = enter_shell(task, tmp_path)
    assert "some models could not be linked" in p.stderr
    assert_serves(hub / FOLDER / "snapshots" / REV, store[URL])
    assert blocker.read_text() == "mine"
    n = len(act.calls())
    assert enter_shell(task, tmp_path) is not None and len(act.calls()) == n + 1
    blocker.unlink()
    enter_shell(task, tmp_path)
    assert enter_shell(task, tmp_path) is None


# --- NixOS ----------------------------------------------------------------------------


def nixos_generation(tmp: Path, act: Activator, store, *, enable: bool, models: str) -> dict:
    r = nixos_eval(f"""{{ services.model-repo = {{
        enable = {str(enable).lower()};
        package = {act.nix};
        integration.huggingface.cacheDir = {nix_string(tmp / "hf")};
        models = {models};
      }}; }}""", fetch_results=store, real_store_paths=True)
    assert r["failedAssertions"] == [] and r["warnings"] == []
    unit = r["services"]["model-repo"]
    assert unit["wantedBy"] == ["multi-user.target"]
    return unit


def start_unit(unit: dict, tmp: Path) -> int | None:
    """As systemd starts the oneshot: its conditions, then ExecStart (no shell) with the
    unit's environment; StateDirectory's /var/lib/model-repo is a folder of the test.
    Returns the exit status, or None when a condition skipped it."""
    state = str(tmp / "var-lib-model-repo")
    env = clean_env(tmp) | {k: v.replace("/var/lib/model-repo", state) for k, v in unit["environment"].items()}
    pattern = unit["unitConfig"].get("ConditionPathExistsGlob")
    if pattern is not None and not glob.glob(pattern.replace("/var/lib/model-repo", state)):
        return None
    p = subprocess.run(shlex.split(unit["serviceConfig"]["ExecStart"]), env=env, capture_output=True, text=True,
                       timeout=120)
    ok = {"0"} | set(str(unit["serviceConfig"].get("SuccessExitStatus", "")).split())
    assert str(p.returncode) in ok, p.stderr
    return p.returncode


@pytest.mark.parametrize("through_empty", [True, False], ids=["drop-then-disable", "disable"])
def test_nixos_generations_prune_and_restore(store, tmp_path, through_empty):
    act = Activator(tmp_path)
    hub = tmp_path / "hf" / "hub"
    user_download(hub)
    before = tree(hub)

    assert start_unit(nixos_generation(tmp_path, act, store, enable=True, models=models_nix("tiny", "other")),
                      tmp_path) == 0
    assert_linked(hub, store)

    if through_empty:
        assert start_unit(nixos_generation(tmp_path, act, store, enable=True, models="{ }"), tmp_path) == 0
        assert tree(hub) == before

    gen3 = nixos_generation(tmp_path, act, store, enable=False, models=models_nix("tiny", "other"))
    assert gen3["unitConfig"] == {"ConditionPathExistsGlob": "/var/lib/model-repo/*.json"}
    assert start_unit(gen3, tmp_path) == 0
    assert act.calls()[-1] == "deactivate --profile nixos --log-format json"
    assert tree(hub) == before
    n = len(act.calls())
    assert start_unit(gen3, tmp_path) is None and len(act.calls()) == n  # no state: not started


def test_nixos_partial_link_still_starts_dependents(store, tmp_path):
    """Exit 1 is a success exit status of the unit: services that require it start;
    the blocked model is reported in the journal (stderr), the other is linked."""
    act = Activator(tmp_path)
    hub = tmp_path / "hf" / "hub"
    blocker = hub / OTHER_FOLDER / "snapshots" / REV
    blocker.parent.mkdir(parents=True)
    blocker.write_text("mine")
    unit = nixos_generation(tmp_path, act, store, enable=True, models=models_nix("tiny", "other"))
    assert unit["serviceConfig"]["SuccessExitStatus"] == "1"
    assert start_unit(unit, tmp_path) == 1
    assert_serves(hub / FOLDER / "snapshots" / REV, store[URL])
    assert blocker.read_text() == "mine"
