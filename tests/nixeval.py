"""Helpers for the Nix tests (tests/test_nix_*.py): find Nix and the test inputs,
evaluate an expression in one nix-instantiate call.

Inputs are found through environment variables (``scripts/test.sh`` sets them from the
pinned archives in ``../shared/test-inputs``), falling back to
``~/.cache/model-repo-tests/<name>``:

- ``MODEL_REPO_TEST_NIXPKGS_LIB``: a folder holding nixpkgs' ``lib/`` (e.g. a
  checkout of nix-community/nixpkgs.lib, or of nixpkgs itself).
- ``MODEL_REPO_TEST_HOME_MANAGER``: a Home Manager source tree.
- ``MODEL_REPO_TEST_DEVENV``: a devenv source tree.

A test that lacks one of them skips with a reason naming the variable and how to get
it; with ``CI=true`` it fails with that reason instead (:func:`missing_input`). A test
never skips for any other reason than a missing tool or input.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import NoReturn

import pytest

REPO = Path(__file__).resolve().parent.parent
NIX_DIR = REPO / "tests" / "nix"
CACHE = Path.home() / ".cache" / "model-repo-tests"

INPUTS = {
    "nixpkgs-lib": (
        "MODEL_REPO_TEST_NIXPKGS_LIB",
        "fetch github nix-community/nixpkgs.lib and extract it there "
        "(`git archive HEAD | tar -x -C ~/.cache/model-repo-tests/nixpkgs-lib`); "
        "the folder must contain lib/default.nix",
        "lib/default.nix",
    ),
    "home-manager": (
        "MODEL_REPO_TEST_HOME_MANAGER",
        "fetch github nix-community/home-manager and extract it there",
        "modules/modules.nix",
    ),
    "devenv": (
        "MODEL_REPO_TEST_DEVENV",
        "fetch github cachix/devenv and extract it there",
        "src/modules/top-level.nix",
    ),
}

# The revision and hash the scenarios use (their values never reach a network).
REV = "c9745ed1d9f207416be6d2e6f8de32d1f16199bf"
REV2 = "1111111111111111111111111111111111111111"
HASH = "sha256-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="


def in_ci(environ: Mapping[str, str] = os.environ) -> bool:
    """True when ``CI`` is set to ``true``/``1``/``yes`` (any case), as CI services do."""
    return environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def missing_input(reason: str) -> NoReturn:
    """Stop a test that lacks a Nix tool or test input: a skip saying ``reason`` (what to
    provide), or with ``CI=true`` a failure, since CI must run every Nix test."""
    if in_ci():
        pytest.fail(f"CI=true and a Nix test input is missing: {reason}", pytrace=False)
    pytest.skip(reason=reason)


def require_nix() -> str:
    exe = shutil.which("nix-instantiate")
    if exe is None:
        missing_input(
            "nix-instantiate not found: install Debian's nix-bin "
            "(apt-get install -y nix-bin) or any Nix >= 2.8"
        )
    return exe


def require_input(name: str) -> Path:
    """The folder of test input ``name`` (a key of :data:`INPUTS`): ``$<VAR>`` if set,
    else ``~/.cache/model-repo-tests/<name>``; skips (CI: fails) when its marker file is
    missing, saying what to provide."""
    var, how, marker = INPUTS[name]
    raw = os.environ.get(var)
    path = Path(raw).expanduser() if raw else CACHE / name
    if not (path / marker).is_file():
        where = f"${var}={raw}" if raw else f"{path} (default; set ${var} to use another)"
        missing_input(f"{name} source tree missing at {where}: {how}; `bash scripts/test.sh` "
                      "extracts the pinned archives of ../shared/test-inputs "
                      "(or $MODEL_REPO_TEST_INPUTS) and sets the variables")
    return path


def nix_string(s: str | os.PathLike) -> str:
    """A Nix string literal."""
    return json.dumps(str(s), ensure_ascii=False).replace("${", "\\${")


def nix_value(v) -> str:
    """Python data -> a Nix expression (strings, numbers, bools, None, lists, dicts)."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return json.dumps(v)
    if isinstance(v, (str, os.PathLike)):
        return nix_string(v)
    if isinstance(v, (list, tuple)):
        return "[ " + " ".join(nix_value(x) for x in v) + " ]"
    if isinstance(v, dict):
        return "{ " + " ".join(f"{nix_string(k)} = {nix_value(x)};" for k, x in v.items()) + " }"
    raise TypeError(type(v))


class NixError(Exception):
    def __init__(self, stderr: str):
        super().__init__(stderr)
        self.stderr = stderr


def nix_eval(expr: str, *, strict: bool = True, read_write: bool = False) -> object:
    """Evaluate ``expr`` (cwd: the repository root) and return it as JSON data.
    ``read_write``: files the evaluation writes (``builtins.toFile``, the stub
    ``writeText`` with real store paths) are really added to the store."""
    exe = require_nix()
    args = [exe, "--eval", "--json", "-E", expr]
    if strict:
        args.insert(2, "--strict")
    if read_write:
        args.insert(2, "--read-write-mode")
    proc = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise NixError(proc.stderr)
    return json.loads(proc.stdout)


def nix_eval_error(expr: str) -> str:
    """Evaluate ``expr``, which must fail; return the error text."""
    try:
        value = nix_eval(expr)
    except NixError as e:
        return e.stderr
    raise AssertionError(f"evaluation succeeded but should have failed: {value!r}")


_PKGS_PATH: Path | None = None


def pkgs_path() -> Path:
    """A folder like nixpkgs' root as far as Home Manager uses it: ``lib`` (linked to
    the nixpkgs lib input) and our stubs of ``nixos/modules/misc/{assertions,meta}.nix``."""
    global _PKGS_PATH
    if _PKGS_PATH is None:
        lib = require_input("nixpkgs-lib") / "lib"
        d = Path(tempfile.mkdtemp(prefix="model-repo-pkgs-path-"))
        (d / "lib").symlink_to(lib)
        (d / "nixos").symlink_to(NIX_DIR / "stubs" / "nixpkgs-path" / "nixos")
        _PKGS_PATH = d
    return _PKGS_PATH


def hf_model(repo: str = "sentence-transformers/all-MiniLM-L6-v2", rev: str = REV, **extra) -> str:
    """Nix text of a model definition with a Hub source."""
    hf = {"repo": repo, "revision": rev}
    hf.update(extra.pop("huggingface", {}))
    body = {"source": {"huggingface": hf}, "hash": HASH}
    body.update(extra)
    return nix_value(body)


def lib_expr() -> str:
    return f"(import {nix_string(require_input('nixpkgs-lib') / 'lib')})"


def hm_eval(user_module: str, *, system: str = "x86_64-linux", shared: bool = False,
            fetch_results: dict | None = None, real_store_paths: bool = False) -> dict:
    expr = f"""import ./tests/nix/home-manager.nix {{
      nixpkgsLib = {nix_string(require_input('nixpkgs-lib') / 'lib')};
      homeManager = {nix_string(require_input('home-manager'))};
      pkgsPath = {nix_string(pkgs_path())};
      system = {nix_string(system)};
      viaSharedModules = {nix_value(shared)};
      fetchResults = {nix_value(fetch_results or {})};
      realStorePaths = {nix_value(real_store_paths)};
      userModule = {user_module};
    }}"""
    return nix_eval(expr, read_write=real_store_paths)


def devenv_eval(user_module: str, *, cli_version: str | None = "2.0.5",
                root: str = "/home/alice/project", fetch_results: dict | None = None,
                real_store_paths: bool = False, host_coreutils: bool = False) -> dict:
    expr = f"""import ./tests/nix/devenv.nix {{
      nixpkgsLib = {nix_string(require_input('nixpkgs-lib') / 'lib')};
      devenv = {nix_string(require_input('devenv'))};
      cliVersion = {nix_value(cli_version)};
      root = {nix_string(root)};
      fetchResults = {nix_value(fetch_results or {})};
      realStorePaths = {nix_value(real_store_paths)};
      hostCoreutils = {nix_value(host_coreutils)};
      userModule = {user_module};
    }}"""
    return nix_eval(expr, read_write=real_store_paths)


def nixos_eval(user_module: str, *, fetch_results: dict | None = None,
               real_store_paths: bool = False) -> dict:
    expr = f"""import ./tests/nix/nixos.nix {{
      nixpkgsLib = {nix_string(require_input('nixpkgs-lib') / 'lib')};
      fetchResults = {nix_value(fetch_results or {})};
      realStorePaths = {nix_value(real_store_paths)};
      userModule = {user_module};
    }}"""
    return nix_eval(expr, read_write=real_store_paths)
