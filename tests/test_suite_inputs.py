"""The suite's own plumbing: scripts/test.sh extracting the pinned Nix test inputs, the
CI=true rule (a missing Nix test input fails instead of skipping), and scripts/setup.sh
skipping pip when its stamp matches."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

from conftest import ROOT

#: name -> (variable, marker file), as in tests/nixeval.py and scripts/test.sh.
INPUTS = {
    "nixpkgs-lib": ("MODEL_REPO_TEST_NIXPKGS_LIB", "lib/default.nix"),
    "home-manager": ("MODEL_REPO_TEST_HOME_MANAGER", "modules/modules.nix"),
    "devenv": ("MODEL_REPO_TEST_DEVENV", "src/modules/top-level.nix"),
}


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("MODEL_REPO_TEST_") and k not in ("CI", "PYTEST_ADDOPTS")}
    env.update(extra)
    return env


def _archives(folder: Path, tag: str) -> None:
    """Small stand-ins of the pinned archives: <name>.tar.xz unpacking to <name>/<marker>."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, (_, marker) in INPUTS.items():
        src = folder / "src" / name
        (src / marker).parent.mkdir(parents=True, exist_ok=True)
        (src / marker).write_text(f"# {tag}\n")
        with tarfile.open(folder / f"{name}.tar.xz", "w:xz") as tar:
            tar.add(src, arcname=name)


_PROBE = textwrap.dedent('''
    import json, os
    def test_probe():
        names = %r
        out = {v: os.environ.get(v) for v in names}
        with open(os.environ["PROBE_OUT"], "w") as fh:
            json.dump(out, fh)
''')


def _run_test_sh(tmp_path: Path, inputs: Path, cache: Path, **extra: str) -> tuple[dict, str]:
    import json

    probe = tmp_path / "test_probe.py"
    probe.write_text(_PROBE % ([v for v, _ in INPUTS.values()],))
    out = tmp_path / "probe.json"
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "test.sh"), str(probe), "-q", "-p", "no:cacheprovider",
         "--rootdir", str(tmp_path)],
        env=_clean_env(MODEL_REPO_TEST_INPUTS=str(inputs), MODEL_REPO_TEST_CACHE=str(cache),
                       PROBE_OUT=str(out), **extra),
        capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(out.read_text()), done.stderr


def test_test_sh_extracts_the_pinned_inputs_once(tmp_path: Path) -> None:
    inputs, cache = tmp_path / "inputs", tmp_path / "cache"
    _archives(inputs, "v1")
    seen, err = _run_test_sh(tmp_path, inputs, cache)
    for name, (var, marker) in INPUTS.items():
        path = Path(seen[var])
        assert path.parent.parent == cache and path.name == name, seen
        assert (path / marker).read_text() == "# v1\n"
        assert f"extracting {inputs}/{name}.tar.xz" in err
    assert not [p for p in cache.iterdir() if p.name.startswith(".")]  # no leftovers
    again, err2 = _run_test_sh(tmp_path, inputs, cache)
    assert again == seen and "extracting" not in err2
    # A new archive (another pin) gets its own folder; a given variable wins.
    _archives(inputs, "v2")
    given = tmp_path / "given"
    newer, err3 = _run_test_sh(tmp_path, inputs, cache, MODEL_REPO_TEST_DEVENV=str(given))
    assert newer["MODEL_REPO_TEST_DEVENV"] == str(given)
    assert newer["MODEL_REPO_TEST_NIXPKGS_LIB"] != seen["MODEL_REPO_TEST_NIXPKGS_LIB"]
    assert (Path(newer["MODEL_REPO_TEST_NIXPKGS_LIB"]) / "lib/default.nix").read_text() == "# v2\n"
    assert "devenv.tar.xz" not in err3


def test_test_sh_reports_missing_archives(tmp_path: Path) -> None:
    seen, err = _run_test_sh(tmp_path, tmp_path / "nowhere", tmp_path / "cache")
    assert seen == {v: None for v, _ in INPUTS.values()}
    assert f"no {tmp_path}/nowhere/home-manager.tar.xz: set MODEL_REPO_TEST_HOME_MANAGER" in err


_NEEDS_INPUT = textwrap.dedent('''
    import pytest
    from nixeval import require_input

    def test_helper():
        require_input("home-manager")

    def test_own_skip():  # a test file that skips by itself, as some do
        pytest.skip(reason="nix-store not found: install Debian's nix-bin")

    def test_other_skip():
        pytest.skip(reason="python-dotenv is not installed")
''')


def test_missing_nix_input_fails_with_ci_true_and_skips_otherwise(tmp_path: Path) -> None:
    tests = tmp_path / "tests"
    tests.mkdir()
    for helper in ("conftest.py", "nixeval.py"):
        (tests / helper).write_text((ROOT / "tests" / helper).read_text())
    (tests / "test_needs.py").write_text(_NEEDS_INPUT)
    empty = tmp_path / "empty"
    empty.mkdir()
    cmd = [sys.executable, "-m", "pytest", "-q", "-rfs", "-p", "no:cacheprovider",
           "--rootdir", str(tmp_path), str(tests)]
    env = _clean_env(MODEL_REPO_TEST_HOME_MANAGER=str(empty), PYTHONPATH=str(ROOT))
    local = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert local.returncode == 0, local.stdout
    assert "3 skipped" in local.stdout, local.stdout
    assert f"home-manager source tree missing at $MODEL_REPO_TEST_HOME_MANAGER={empty}" in local.stdout
    ci = subprocess.run(cmd, env={**env, "CI": "true"}, capture_output=True, text=True,
                        timeout=300)
    assert ci.returncode == 1, ci.stdout
    assert "2 failed, 1 skipped" in ci.stdout, ci.stdout
    assert "FAILED" in ci.stdout and "CI=true and a Nix test input is missing" in ci.stdout


def test_second_setup_skips_pip_and_says_nothing() -> None:
    env = _clean_env(MODEL_REPO_SETUP_SKIP_APT="1")
    first = subprocess.run(["bash", str(ROOT / "scripts" / "setup.sh")], env=env,
                           capture_output=True, text=True, timeout=1800)
    assert first.returncode == 0, first.stderr
    # Every step it took said so, one line each.
    assert all(line.startswith(("setup: ", "WARNING", "  ")) for line in first.stderr.splitlines()), first.stderr
    second = subprocess.run(["bash", str(ROOT / "scripts" / "setup.sh")], env=env,
                            capture_output=True, text=True, timeout=1800)
    assert second.returncode == 0 and second.stderr == "" and second.stdout == "", second.stderr
    assert (ROOT / ".venv" / ".model-repo-setup").read_text().strip() != ""
