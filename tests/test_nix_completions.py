"""Shell completions shipped with the package (completions/): in step with the CLI's
parser, and completing for real in bash, zsh and fish."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import tempfile

import pytest

from nixeval import REPO

DIR = REPO / "completions"


def _generator():
    spec = importlib.util.spec_from_file_location("completions_generate", DIR / "generate.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def _shell(name: str) -> str:
    exe = shutil.which(name)
    if exe is None:
        pytest.skip(reason=f"{name} not found: install Debian's {name} (apt-get install -y {name}); "
                           "scripts/setup.sh does")
    return exe


def test_scripts_match_the_parser():
    gen = _generator()
    for name, text in gen.render_all().items():
        assert (DIR / name).read_text() == text, (
            f"completions/{name} is not what the CLI's parser gives: run `python completions/generate.py`")
    # Every subcommand of the CLI is in the tree, nested ones too.
    cmds = {c.path: c for c in gen.commands()}
    assert {"activate", "env", "status", "deactivate", "schema", "prefetch", "ls"} <= set(cmds[""].subcommands)
    assert cmds["activate"].valued["--format"] == ["sh", "fish", "json", "dotenv", "devenv"]


CASES = [
    # (words typed, the word being completed) -> what must be offered / must not
    (["activate"], "", None, None),
    ([], "ac", {"activate"}, {"env", "status"}),
    ([], "", {"activate", "env", "status", "deactivate", "schema", "prefetch", "ls"}, None),
    (["activate"], "--f", {"--format"}, {"--profile"}),
    (["activate", "--format"], "", {"sh", "fish", "json", "dotenv", "devenv"}, {"--manifest"}),
    (["deactivate"], "--p", {"--profile"}, {"--manifest"}),
]

# An empty folder to complete in, so that file names never look like commands.
EMPTY = tempfile.mkdtemp(prefix="model-repo-completions-")


def _bash(words: list[str], cur: str) -> set[str]:
    script = (f"source {DIR / 'model-repo.bash'}\n"
              'COMP_WORDS=(model-repo "$@"); COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))\n'
              '_model_repo; printf "%s\\n" "${COMPREPLY[@]}"\n')
    out = subprocess.run([_shell("bash"), "-c", script, "bash", *words, cur], capture_output=True, text=True,
                         check=True, cwd=EMPTY).stdout
    return set(out.split())


def _fish(words: list[str], cur: str) -> set[str]:
    line = " ".join(["model-repo", *words, cur])
    out = subprocess.run([_shell("fish"), "--no-config", "-c",
                          f"source {DIR / 'model-repo.fish'}; complete -C {_quote_fish(line)}"],
                         capture_output=True, text=True, check=True, cwd=EMPTY).stdout
    return {ln.split("\t")[0] for ln in out.splitlines() if ln}


def _quote_fish(s: str) -> str:
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"


# zsh's completion widgets cannot run outside the line editor: the builtins our
# function calls are replaced by ones that print what they were given (with the
# prefix filtering zsh itself would do), and the function is called as compsys would.
ZSH_HARNESS = r"""
compdef() { :; }
_describe() { local n; for n in "${(@)${(@P)4}%%:*}"; do [[ $n == ${PREFIX}* ]] && print -r -- $n; done; return 0; }
compadd() { local n; for n in "${(@P)2}"; do [[ $n == ${PREFIX}* ]] && print -r -- $n; done; return 0; }
_files() { print -r -- FILES; }
source "$1"; shift
words=(model-repo "$@"); CURRENT=$#words; PREFIX=${words[CURRENT]}
_model-repo
"""


def _zsh(words: list[str], cur: str) -> set[str]:
    out = subprocess.run([_shell("zsh"), "-f", "-c", ZSH_HARNESS, "zsh", str(DIR / "_model-repo"), *words, cur],
                         capture_output=True, text=True, check=True, cwd=EMPTY).stdout
    return set(out.split())


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
@pytest.mark.parametrize("words,cur,must,must_not", CASES)
def test_completes(shell, words, cur, must, must_not):
    got = {"bash": _bash, "zsh": _zsh, "fish": _fish}[shell](words, cur)
    if must is None:
        # `activate ""`: no subcommand below, no positional: files (bash, zsh) or nothing (fish).
        assert not got & {"activate", "env", "status"}
        return
    assert must <= got, got
    if must_not:
        assert not (must_not & got), got


def test_nested_subcommands_and_option_values_are_skipped():
    """`store ls` is a path of its own; an option's value that spells a command name
    (`deactivate --profile ls`) is not taken for one."""
    gen = _generator()
    nested = [c for c in gen.commands() if " " in c.path]
    if not nested:
        pytest.skip(reason="the CLI has no nested subcommand today (model-repo store ls/path adds one)")
    parent, child = nested[0].path.split(" ", 1)
    for fn in (_bash, _zsh, _fish):
        assert child in fn([parent], ""), fn.__name__
    assert "--profile" in _bash(["deactivate", "--profile", "ls"], "--") and "--include" not in _bash(
        ["deactivate", "--profile", "ls"], "--")
    assert "--include" not in _fish(["deactivate", "--profile", "ls"], "--")
    assert "--include" not in _zsh(["deactivate", "--profile", "ls"], "--")


def test_package_installs_the_scripts():
    """lib/package.nix, evaluated with nixpkgs' lib and a buildPythonApplication that
    returns its arguments: the source holds the scripts, postInstall installs all
    three with installShellCompletion, huggingface_hub is a dependency (one package,
    every subcommand)."""
    from nixeval import lib_expr, nix_eval

    r = nix_eval(f"""
      let
        nixLib = {lib_expr()};
        # lib.fileset needs Nix >= 2.14 (builtins.readFileType): record what is selected.
        lib = nixLib // {{ fileset = {{ unions = xs: xs; maybeMissing = p: p; toSource = a: a.fileset; }}; }};
        # nixpkgs' buildPythonApplication as tests/nix/stubs/python.nix mirrors it.
        py = import ./tests/nix/stubs/python.nix {{ inherit lib; }};
        pkg = import ./lib/package.nix {{ inherit lib; python3Packages = py; installShellFiles = "installShellFiles"; }};
      in {{
        inherit (pkg) postInstall pythonImportsCheck;
        dependencies = map (d: d.pname or d.name) pkg.propagatedBuildInputs;
        nativeBuildInputs = map (d: d.name or d) pkg.nativeBuildInputs;
        mainProgram = pkg.meta.mainProgram;
        inSource = map (f: builtins.elem ./completions pkg.src && builtins.pathExists (./completions + "/${{f}}")) [ "model-repo.bash" "_model-repo" "model-repo.fish" ];
      }}""")
    assert r["inSource"] == [True, True, True]
    assert "installShellCompletion --cmd model-repo" in r["postInstall"]
    for flag, name in (("--bash", "model-repo.bash"), ("--zsh", "_model-repo"), ("--fish", "model-repo.fish")):
        assert f"{flag} completions/{name}" in r["postInstall"]
    assert "huggingface-hub" in r["dependencies"] and "installShellFiles" in r["nativeBuildInputs"]
    assert r["mainProgram"] == "model-repo" and "activate.hub" in r["pythonImportsCheck"]


# The real compsys: an interactive zsh on a pseudo-terminal (zsh/zpty), compinit with
# completions/ on $fpath, a line typed and TAB pressed; what zsh draws is read back.
ZPTY_DRIVER = r"""
dir=$1 input=$2; shift 2
zmodload zsh/zpty
zpty -b z 'zsh -f -i'
zpty -w z "PS1='> '; fpath=(${(q)dir} \$fpath); autoload -U compinit; compinit -u -D; unsetopt beep; LISTMAX=10000"
zpty -w z 'print -r -- RE""ADY'
acc=""
for i in {1..200}; do
  while zpty -r -t z line; do acc+=$line; done
  [[ $acc == *READY* ]] && break
  sleep 0.1
done
zpty -w -n z "$input"$'\t'
acc=""
for i in {1..200}; do
  while zpty -r -t z line; do acc+=$line; done
  ok=1
  for w in "$@"; do [[ $acc == *$w* ]] || ok=0; done
  (( ok )) && break
  sleep 0.1
done
print -r -- "$acc"
zpty -d z
"""


@pytest.mark.parametrize("line,expected", [
    ("model-repo ", ["activate", "deactivate", "schema", "prefetch", "link the manifest"]),
    ("model-repo activate --format ", ["devenv", "dotenv", "fish", "json", "sh"]),
    ("model-repo activate --man", ["--manifest"]),
    ("model-repo deactivate --profile ls --", ["--profile", "--state-dir"]),
])
def test_zsh_completes_through_compsys(line, expected):
    import re

    proc = subprocess.run([_shell("zsh"), "-f", "-c", ZPTY_DRIVER, "zsh", str(DIR), line, *expected],
                          capture_output=True, text=True, timeout=60, cwd=EMPTY)
    if "zpty" in proc.stderr and "module" in proc.stderr:
        pytest.skip(reason=f"zsh without the zsh/zpty module: {proc.stderr.strip()}")
    screen = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", proc.stdout).replace("\r", "\n")
    after = screen.split(line.rstrip().rsplit(" ", 1)[0], 1)[-1]  # what follows the typed words
    for word in expected:
        assert word in after, screen
    if "deactivate --profile ls" in line:
        assert "--include" not in after  # `ls` there is --profile's value, not the ls command
