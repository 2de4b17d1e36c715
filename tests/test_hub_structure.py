"""The activation path imports nothing of the Hub-facing side (``activate/hub/``).

Two checks: the import statements of the activation path's modules (static, every
branch), and ``sys.modules`` after real runs of activate (full path and no-op path),
env, status and deactivate on a real store path, in a fresh interpreter.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import COMMIT_A, ROOT, assert_serves, manifest, model

#: Every module of the activator (activate/*.py, outside activate/hub/): the activation
#: path (cli, activation, linking, state, hubfs, noop, envout, cachedir, naming,
#: manifest) and what it uses.
ACTIVATION_PATH = sorted(p.stem for p in (ROOT / "activate").glob("*.py"))

#: The only imports of activate.hub the activation path may hold: the parser
#: registration (argparse only) and the hand-over of the Hub commands.
ALLOWED = {("cli", "_parser", "activate.hub.cli", "add_parsers"),
           ("cli", "main", "activate.hub.cli", "run")}


def _imports(module: str) -> list[tuple[str, str, str]]:
    """(enclosing top-level function or "", imported module, imported name) of every
    import statement in activate/<module>.py."""
    tree = ast.parse((ROOT / "activate" / f"{module}.py").read_text())
    out = []
    for top in tree.body:
        func = top.name if isinstance(top, (ast.FunctionDef, ast.AsyncFunctionDef)) else ""
        for node in ast.walk(top):
            if isinstance(node, ast.Import):
                out += [(func, a.name, "") for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = "activate" if module != "__init__" or node.level == 1 else ""
                    mod = base + ("." + node.module if node.module else "")
                else:
                    mod = node.module or ""
                out += [(func, mod, a.name) for a in node.names]
    return out


def test_activation_path_modules_import_nothing_of_the_hub_side():
    assert {"cli", "activation", "linking", "state", "hubfs", "noop", "envout", "cachedir",
            "naming", "manifest"} <= set(ACTIVATION_PATH)
    found = []
    for module in ACTIVATION_PATH:
        for func, mod, name in _imports(module):
            hubby = (mod in ("activate.hub", "huggingface_hub")
                     or mod.startswith(("activate.hub.", "huggingface_hub."))
                     or (mod == "activate" and name == "hub"))
            if hubby and (module, func, mod, name) not in ALLOWED:
                found.append(f"activate/{module}.py: {func or '<module>'}: {mod} {name}")
    assert found == []
    # The allowed ones exist (the check above would pass vacuously otherwise).
    cli = _imports("cli")
    for _, func, mod, name in ALLOWED:
        assert (func, mod, name) in cli


def test_hub_parser_registration_imports_argparse_only():
    code = ("import sys, activate.hub.cli; "
            "print(sorted(m for m in sys.modules if m.startswith(('activate', 'huggingface_hub'))))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=str(ROOT)), check=True).stdout
    assert out.strip() == "['activate', 'activate.hub', 'activate.hub.cli']"


_RUN = """
import json, sys
from activate.cli import main
rc = main(sys.argv[2:], environ={"HOME": sys.argv[1]})
sys.stdout.flush()
mods = sorted(m for m in sys.modules if m.split(".")[:2] == ["activate", "hub"]
              or m.split(".")[0] == "huggingface_hub")
sys.stderr.write("\\nMODULES " + json.dumps([rc, mods]) + "\\n")
"""


def _run(tmp: Path, *args: str) -> tuple[int, list[str]]:
    proc = subprocess.run([sys.executable, "-c", _RUN, str(tmp / "home"), *args], cwd=ROOT,
                          capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))
    line = [ln for ln in proc.stderr.splitlines() if ln.startswith("MODULES ")]
    assert line, proc.stderr
    rc, mods = json.loads(line[-1][len("MODULES "):])
    return rc, mods


def test_activation_runs_load_no_hub_module(tmp_path: Path, tiny_bert_store_path: str):
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(manifest({"m": model(tiny_bert_store_path, revision=COMMIT_A)})))
    common = ["--cache-dir", str(tmp_path / "hub"), "--state-dir", str(tmp_path / "state")]
    # The lazy parser registration (argparse only): prefetch/ls, then export/import/store.
    parser_only = ["activate.hub", "activate.hub.cli", "activate.hub.persistcli"]
    # First activation: the full path (argparse parser built, hub parsers registered).
    assert _run(tmp_path, "activate", "--manifest", str(path), *common, "-v") == (0, parser_only)
    assert_serves(tmp_path / "hub" / "models--model-repo-example--tiny-bert" / "snapshots"
                  / COMMIT_A, tiny_bert_store_path)
    # Second: the no-op path builds no parser at all.
    assert _run(tmp_path, "activate", "--manifest", str(path), *common) == (0, [])
    assert _run(tmp_path, "env", "--manifest", str(path), *common) == (0, parser_only)
    assert _run(tmp_path, "status", *common) == (0, parser_only)
    assert _run(tmp_path, "deactivate", "--profile", "test", *common) == (0, parser_only)
    assert not (tmp_path / "hub" / "models--model-repo-example--tiny-bert").exists()


def _hub_import_graph() -> dict[str, set[str]]:
    """Module → the modules of activate/hub/ it imports (every import statement, at
    module level or inside a function: a lazy import is still a dependency)."""
    hub = ROOT / "activate" / "hub"
    names = {p.stem for p in hub.glob("*.py")}
    graph: dict[str, set[str]] = {}
    for p in hub.glob("*.py"):
        deps: set[str] = set()
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                deps |= {node.module.split(".")[0]} if node.module else {
                    a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and \
                    (node.module or "").startswith("activate.hub."):
                deps.add(node.module.split(".")[2])
            elif isinstance(node, ast.Import):
                deps |= {a.name.split(".")[2] for a in node.names
                         if a.name.startswith("activate.hub.")}
        graph[p.stem] = deps & names
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of ``graph`` with more than one module (or a
    module importing itself), each sorted (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in graph[v]:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(out)


def test_cycle_finder_finds_cycles():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}}) == [
        ["a", "b", "c"], ["e"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles_in_the_hub_side():
    graph = _hub_import_graph()
    # The persist modules (split by concern) exist and are seen by the graph.
    assert {"persist", "persistcli", "persistexport", "persistimport", "persistmanifest",
            "binarycache", "nixstore", "prefetch"} <= set(graph)
    assert "persistimport" in graph["prefetch"] and "persistexport" in graph["persist"]
    assert _cycles(graph) == []
