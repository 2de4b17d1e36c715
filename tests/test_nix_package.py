"""lib/package.nix evaluated with nixpkgs' lib and tests/nix/stubs/python.nix, whose
buildPythonApplication does with its arguments what nixpkgs' mk-python-derivation.nix does
(format, hooks, check phase as install check, python mismatch): the package runs the tests
that need neither Nix nor network in its build, checks the imports of every entry point,
huggingface_hub included, and relaxes no version bound."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from nixeval import NixError, lib_expr, nix_eval

ROOT = Path(__file__).resolve().parent.parent


def _env(extra: str = "") -> str:
    # lib.fileset needs Nix >= 2.14 (builtins.readFileType): record what is selected.
    return f"""
      nixLib = {lib_expr()};
      lib = nixLib // {{ fileset = {{ unions = xs: xs; maybeMissing = p: p; toSource = a: a.fileset; }}; }};
      py = import ./tests/nix/stubs/python.nix {{ inherit lib; {extra} }};
    """


def _package(extra: str = "") -> dict:
    return nix_eval(f"""
      let
        {_env(extra)}
        pkg = import ./lib/package.nix {{ inherit lib; python3Packages = py; installShellFiles = "installShellFiles"; }};
        names = map (d: d.name or d);
      in {{
        inherit (pkg) name doCheck doInstallCheck enabledTestPaths disabledTests pythonImportsCheck outputs;
        nativeBuildInputs = names pkg.nativeBuildInputs;
        nativeInstallCheckInputs = names pkg.nativeInstallCheckInputs;
        propagatedBuildInputs = map (d: d.pname or d.name) pkg.propagatedBuildInputs;
        relax = pkg.pythonRelaxDeps or [ ];
        src = map toString pkg.src;
        hasDependenciesAttr = pkg ? dependencies;
      }}""")


def test_package_checks_its_tests_and_imports_and_relaxes_nothing() -> None:
    pkg = _package()
    # The check phase is the install check, with pytest and the test extra.
    assert pkg["doCheck"] is False and pkg["doInstallCheck"] is True
    assert {"pytest-check-hook", "python3.12-hypothesis-6.131.0"} <= set(pkg["nativeInstallCheckInputs"])
    test_extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]["test"]
    for spec in test_extra:
        name = re.match(r"[A-Za-z0-9_.-]+", spec)[0].lower().replace("_", "-")
        if name in ("pytest", "huggingface-hub"):
            continue  # pytestCheckHook brings pytest; huggingface_hub is a runtime dependency
        assert any(f"-{name}-" in d for d in pkg["nativeInstallCheckInputs"]), name
    # The selected test files exist and are in the package's source.
    src = {Path(p).name for p in pkg["src"]}
    assert "tests" in src and "schemas" in src
    for path in pkg["enabledTestPaths"]:
        assert (ROOT / path).is_file(), path
        assert "nix" not in Path(path).name.split("_")[1], f"{path}: a Nix test in the build"
    for name in pkg["disabledTests"]:
        assert re.search(rf"^def {name}\b", "".join(
            (ROOT / p).read_text() for p in pkg["enabledTestPaths"]), re.M), name
    # Runtime dependencies checked as declared, nothing relaxed.
    assert "python-runtime-deps-check-hook" in pkg["nativeBuildInputs"]
    assert "python-relax-deps-hook" not in pkg["nativeBuildInputs"] and pkg["relax"] == []
    assert pkg["propagatedBuildInputs"] == ["pydantic", "platformdirs", "filelock", "structlog",
                                           "huggingface-hub", "python3-3.12"]
    assert not pkg["hasDependenciesAttr"] and "dist" in pkg["outputs"]
    # Imports: every module an entry point reaches, huggingface_hub itself too.
    imports = pkg["pythonImportsCheck"]
    assert "python-imports-check-hook" in pkg["nativeBuildInputs"]
    assert {"activate.cli", "activate.hub.cli", "huggingface_hub"} <= set(imports)
    for mod in imports:
        if mod.startswith("activate"):
            base = ROOT / mod.replace(".", "/")
            assert base.with_suffix(".py").is_file() or (base / "__init__.py").is_file(), mod


def test_stub_does_what_nixpkgs_does_with_bad_arguments() -> None:
    """The stub refuses what nixpkgs refuses: no format, both pyproject and format, a
    dependency built for another interpreter, pytestFlagsArray; a function of finalAttrs
    is accepted."""
    def err(body: str) -> str:
        with pytest.raises(NixError) as exc:
            nix_eval(f"let {_env()} in ({body}).outPath")
        return str(exc.value)

    assert "does not configure a `format`" in err(
        'py.buildPythonApplication { pname = "x"; version = "1"; }')
    assert "assert" in err(
        'py.buildPythonApplication { pname = "x"; version = "1"; pyproject = true; format = "setuptools"; }')
    assert "Python version mismatch" in err(
        'py.buildPythonApplication { pname = "x"; version = "1"; pyproject = true; '
        'dependencies = [ py.forOtherPython.pydantic ]; }')
    assert "pytestFlagsArray" in err(
        'py.buildPythonApplication { pname = "x"; version = "1"; pyproject = true; '
        'pytestFlagsArray = [ "tests/a.py" ]; }')
    ok = nix_eval(f"""let {_env()} ok = (py.buildPythonApplication (final: {{
        pname = "x"; version = "1"; pyproject = true; pythonRelaxDeps = [ "pydantic" ];
      }})).nativeBuildInputs; in map (d: d.name) ok""")
    assert "python-relax-deps-hook" in ok
