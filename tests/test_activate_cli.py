"""The command line: exit codes, output channels, formats, env, status, schema."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import COMMIT_A, ROOT, WholeStore, Workspace, manifest, model, tree

from activate.tree import file_by_file


def test_python_dash_m_is_the_same_program(ws: Workspace, tiny_bert_store_path: str) -> None:
    path = ws.write_manifest(manifest({"m": model(tiny_bert_store_path)}))
    done = subprocess.run(
        [sys.executable, "-m", "activate", "activate", "--manifest", str(path), "--cache-dir",
         str(ws.hub), "--state-dir", str(ws.state), "--format", "json"],
        capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["MODEL_REPO_M"] == tiny_bert_store_path
    assert done.stderr == ""  # a quiet, successful run logs nothing


def test_bad_manifest_exits_2_with_the_field(ws: Workspace) -> None:
    path = ws.write_manifest({"version": 1, "profile": "p", "models": {"m": {"repoId": "x"}}})
    res = ws.run("activate", "--manifest", str(path), "--cache-dir", str(ws.hub),
                 "--state-dir", str(ws.state))
    assert res.code == 2
    assert "models.m.revision" in res.stderr and "models.m.path" in res.stderr
    assert res.stdout == ""
    assert not ws.hub.exists()


def test_missing_manifest_file_exits_2(ws: Workspace) -> None:
    res = ws.run("activate", "--manifest", str(ws.root / "nope.json"), "--state-dir", str(ws.state))
    assert res.code == 2 and "cannot read the manifest" in res.stderr


def test_unwritable_cache_exits_3(ws: Workspace, tiny_bert_store_path: str) -> None:
    if os.geteuid() == 0:
        # root ignores permission bits; a path under a regular file fails for everyone.
        (ws.root / "file").write_text("")
        hub = ws.root / "file" / "hub"
    else:
        (ws.root / "ro").mkdir(mode=0o555)
        hub = ws.root / "ro" / "hub"
    path = ws.write_manifest(manifest({"m": model(tiny_bert_store_path)}))
    res = ws.run("activate", "--manifest", str(path), "--cache-dir", str(hub),
                 "--state-dir", str(ws.state))
    assert res.code == 3
    assert "cannot create the hub cache" in res.stderr and "--cache-dir" in res.stderr


def test_env_file_and_formats(ws: Workspace, tiny_bert_store_path: str) -> None:
    data = manifest({"m": model(tiny_bert_store_path)})
    out = ws.root / "env.sh"
    res = ws.activate(data, "--env-file", str(out), fmt="sh")
    assert res.code == 0 and res.stdout == ""
    text = out.read_text()
    assert f"export MODEL_REPO_M='{tiny_bert_store_path}'\n" in text
    assert "export HF_HUB_OFFLINE='1'\n" in text
    assert [p.name for p in ws.root.iterdir() if p.name.startswith(".env")] == []
    fish = ws.activate(data, fmt="fish")
    assert f"set -gx MODEL_REPO_M '{tiny_bert_store_path}'\n" in fish.stdout
    devenv = ws.activate(data, fmt="devenv")
    assert devenv.stdout.startswith("HF_DATASETS_OFFLINE\0MQ==\0HF_HUB_CACHE\0")


def test_a_models_file_is_exported_as_model_repo_name_file(
        ws: Workspace, tiny_bert_store_path: str) -> None:
    """A manifest entry's ``file`` (the Nix side writes it for a single-file GGUF model)
    gives ``MODEL_REPO_<NAME>_FILE`` = <path>/<file> in every format, as the modules'
    environment does; the ``env`` command and the no-op path print it too; a file
    variable taken by another model's name is refused (exit 2)."""
    data = manifest({"tiny-gguf": model(tiny_bert_store_path, file="config.json"),
                     "other": model(tiny_bert_store_path)})
    want = f"{tiny_bert_store_path}/config.json"
    res = ws.activate(data, fmt="sh")
    assert res.code == 0, res.stderr
    assert f"export MODEL_REPO_TINY_GGUF_FILE='{want}'\n" in res.stdout
    assert f"export MODEL_REPO_TINY_GGUF='{tiny_bert_store_path}'\n" in res.stdout
    assert "MODEL_REPO_OTHER_FILE" not in res.stdout
    env = ws.activate(data, fmt="json").env()  # the no-op path: the same variables
    assert env["MODEL_REPO_TINY_GGUF_FILE"] == want and "MODEL_REPO_OTHER_FILE" not in env
    path = ws.write_manifest(data)
    res = ws.run("env", "--manifest", str(path), "--cache-dir", str(ws.hub), "--state-dir",
                 str(ws.state), "--format", "json")
    assert res.env()["MODEL_REPO_TINY_GGUF_FILE"] == want
    clash = manifest({"x": model(tiny_bert_store_path, file="config.json"),
                      "x_file": model(tiny_bert_store_path)})
    res = ws.activate(clash)
    assert res.code == 2 and "MODEL_REPO_X_FILE" in res.stderr, res.stderr
    res = ws.activate(manifest({"x": model(tiny_bert_store_path, file="../etc/passwd")}))
    assert res.code == 2 and "models.x.file" in res.stderr.replace("'", ""), res.stderr


def test_env_command_changes_nothing(ws: Workspace, tiny_bert_store_path: str) -> None:
    path = ws.write_manifest(manifest({"m": model(tiny_bert_store_path)}))
    args = ("env", "--manifest", str(path), "--cache-dir", str(ws.hub), "--state-dir",
            str(ws.state), "--format", "json")
    before = ws.run(*args)
    assert before.code == 0
    # Not linked yet: the model variable, but no offline pair.
    assert before.env() == {"HF_HUB_CACHE": str(ws.hub), "MODEL_REPO_M": tiny_bert_store_path}
    assert not ws.hub.exists() and not ws.state.exists()
    assert ws.run("activate", *args[1:]).code == 0
    snapshot = tree(ws.root)
    after = ws.run(*args)
    assert after.env()["HF_HUB_OFFLINE"] == "1"
    assert tree(ws.root) == snapshot


def test_offline_false_never_emits_offline_pair(ws: Workspace, tiny_bert_store_path: str) -> None:
    res = ws.activate(manifest({"m": model(tiny_bert_store_path)}, offline=False))
    assert res.code == 0
    assert "HF_HUB_OFFLINE" not in res.env()


def test_default_cache_dir_follows_environment(ws: Workspace, tiny_bert_store_path: str) -> None:
    path = ws.write_manifest(manifest({"m": model(tiny_bert_store_path)}))
    env = {"HOME": str(ws.root / "home"), "HF_HOME": str(ws.root / "hf")}
    res = ws.run("activate", "--manifest", str(path), "--state-dir", str(ws.state),
                 "--format", "json", environ=env)
    assert res.code == 0, res.stderr
    assert (ws.root / "hf" / "hub" / "models--model-repo-example--tiny-bert").is_dir()
    assert "HF_HUB_CACHE" not in res.env()  # huggingface_hub finds it on its own


def test_state_dir_from_environment(ws: Workspace, tiny_bert_store_path: str) -> None:
    path = ws.write_manifest(manifest({"m": model(tiny_bert_store_path)}))
    env = {"HOME": str(ws.root / "home"), "MODEL_REPO_STATE_DIR": str(ws.root / "st")}
    res = ws.run("activate", "--manifest", str(path), "--cache-dir", str(ws.hub), environ=env)
    assert res.code == 0
    assert len(list((ws.root / "st").glob("*.json"))) == 1


def test_status_reports_profiles(ws: Workspace, tiny_bert_store_path: str) -> None:
    assert ws.activate(manifest({"m": model(tiny_bert_store_path)}, profile="home-manager")).code == 0
    res = ws.run("status", "--json", "--state-dir", str(ws.state), "--cache-dir", str(ws.hub))
    assert res.code == 0
    (prof,) = json.loads(res.stdout)
    assert prof["profile"] == "home-manager" and prof["upToDate"]
    kinds = sorted((e["kind"], e["status"]) for e in prof["entries"])
    form = "tree" if file_by_file(tiny_bert_store_path) else "snapshot"  # the layout rule
    assert kinds == [("ref", "ok"), (form, "ok")]
    human = ws.run("status", "--state-dir", str(ws.state))
    assert "profile home-manager" in human.stdout and f"snapshots/{COMMIT_A}" in human.stdout
    (ws.hub / "models--model-repo-example--tiny-bert" / "refs" / "main").write_text("b" * 40)
    changed = ws.run("status", "--json", "--state-dir", str(ws.state))
    assert changed.code == 1
    assert any(e["status"] == "changed" for e in json.loads(changed.stdout)[0]["entries"])


def test_json_logs(ws: Workspace, tiny_bert_store_path: str) -> None:
    res = ws.activate(manifest({"m": model(tiny_bert_store_path)}), "--verbose", "--log-format", "json")
    lines = [json.loads(line) for line in res.stderr.splitlines()]
    assert any(rec["event"] == "activated" and rec["level"] == "info" for rec in lines)
    assert all("timestamp" in rec for rec in lines)
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z", rec["timestamp"])
               for rec in lines)


def test_console_logs_have_no_timestamp(ws: Workspace, tiny_bert_store_path: str) -> None:
    res = ws.activate(manifest({"m": model(tiny_bert_store_path)}), "--verbose")
    lines = res.stderr.splitlines()
    assert any(line.startswith("[info") and "activated" in line for line in lines), res.stderr
    assert all(line.startswith("[") for line in lines), res.stderr
    assert not re.search(r"\d{4}-\d\d-\d\dT\d\d:\d\d", res.stderr), res.stderr


def test_schema_command(ws: Workspace) -> None:
    res = ws.run("schema")
    assert res.code == 0
    assert json.loads(res.stdout) == json.loads((ROOT / "schemas" / "manifest.schema.json").read_text())


def test_help_lists_commands_and_exit_codes() -> None:
    done = subprocess.run([sys.executable, "-m", "activate", "--help"], capture_output=True,
                          text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert done.returncode == 0
    for word in ("activate", "env", "status", "deactivate", "schema", "3 environment"):
        assert word in done.stdout


def test_manifest_change_is_seen_by_the_noop_path(ws: Workspace, tiny_bert_store_path: str,
                                                  second_store_path: str) -> None:
    assert ws.activate(manifest({"m": model(tiny_bert_store_path)})).code == 0
    res = ws.activate(manifest({"m": model(second_store_path)}))
    assert res.code == 0
    assert res.env()["MODEL_REPO_M"] == second_store_path
    link = ws.hub / "models--model-repo-example--tiny-bert" / "snapshots" / COMMIT_A
    assert os.path.realpath(link / "config.json") == f"{second_store_path}/config.json"


def test_repair_after_someone_removes_a_link(ws: Workspace, tiny_bert_store_path: str,
                                             whole_store: WholeStore) -> None:
    tiny_bert_store_path = whole_store.path(tiny_bert_store_path)
    data = whole_store.manifest({"m": model(tiny_bert_store_path)})
    assert ws.activate(data).code == 0
    link = ws.hub / "models--model-repo-example--tiny-bert" / "snapshots" / COMMIT_A
    link.unlink()
    path = ws.root / "manifest.json"  # same file: the no-op check must notice the gap
    res = ws.run("activate", "--manifest", str(path), "--cache-dir", str(ws.hub),
                 "--state-dir", str(ws.state), "--format", "json")
    assert res.code == 0
    assert os.readlink(link) == tiny_bert_store_path


def test_dry_run_on_existing_cache_lists_removals(ws: Workspace, tiny_bert_store_path: str) -> None:
    assert ws.activate(manifest({"m": model(tiny_bert_store_path)})).code == 0
    before = tree(ws.root / "hub")
    res = ws.activate(manifest({}), "--dry-run")
    assert res.code == 0
    assert "would unlink" in res.stderr and "would rmdir" in res.stderr
    assert tree(ws.root / "hub") == before
    assert Path(ws.hub / "models--model-repo-example--tiny-bert").is_dir()


def test_tilde_in_cache_dir_means_the_same_dir_for_every_command(
        ws: Workspace, tiny_bert_store_path: str) -> None:
    env = {"HOME": str(ws.root / "home")}
    path = ws.write_manifest(manifest({"m": model(tiny_bert_store_path)}, profile="p"))
    common = ("--cache-dir", "~/hub", "--state-dir", str(ws.state))
    assert ws.run("activate", "--manifest", str(path), *common, environ=env).code == 0
    assert (ws.root / "home" / "hub" / "models--model-repo-example--tiny-bert").is_dir()
    status = ws.run("status", "--json", *common, environ=env)
    assert len(json.loads(status.stdout)) == 1
    assert ws.run("deactivate", "--profile", "p", *common, environ=env).code == 0
    assert sorted(os.listdir(ws.root / "home" / "hub")) == [".locks"]


# -- the command line reads like its docs ----------------------------------------------


def _subparsers() -> dict:
    import argparse

    from activate.cli import _parser

    (sub,) = [a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


def test_every_command_has_a_description_in_help() -> None:
    for name, sub in _subparsers().items():
        assert sub.description and len(sub.description.split()) >= 4, name  # a sentence
        text = sub.format_help()
        first_words = " ".join(sub.description.split()[:4])
        assert first_words in " ".join(text.split()), (name, text)


_SYNOPSIS = re.compile(r"^model-repo ([a-z][a-z-]*)\b(.*)$")
_OPTION = re.compile(r"(?<![\w-])(--?[a-z][a-z0-9-]*)")
_CHOICES = re.compile(r"(--[a-z][a-z0-9-]*) ([a-z0-9]+(?:\|[a-z0-9]+)+)")


def _readme_synopses() -> dict[str, str]:
    """Every ``model-repo COMMAND ...`` line (with its indented continuation lines) in
    README's fenced blocks without a language: command -> the rest of the synopsis."""
    out: dict[str, str] = {}
    fence: str | None = None  # the opening line of the fenced block we are in
    current: str | None = None
    for line in (ROOT / "README.md").read_text().splitlines():
        if line.startswith("```"):
            fence = line if fence is None else None
            current = None
            continue
        if fence != "```":
            continue
        m = _SYNOPSIS.match(line)
        if m:
            current = m.group(1)
            assert current not in out, f"README gives two synopses of {current}"
            out[current] = m.group(2)
        elif current and line[:1].isspace():
            out[current] += " " + line.strip()
        else:
            current = None
    return out


#: Every command of ``model-repo``; a test below holds this list to the parser.
COMMANDS = ("activate", "env", "status", "deactivate", "schema", "prefetch", "ls", "lock",
            "update", "export", "import", "store", "prepare-dataset")


def test_readme_has_one_synopsis_per_command() -> None:
    assert sorted(_subparsers()) == sorted(COMMANDS)
    assert sorted(_readme_synopses()) == sorted(COMMANDS), (
        "README needs one synopsis line `model-repo COMMAND ...` per command, in a fenced "
        "block without a language")


@pytest.mark.parametrize("name", COMMANDS)
def test_readme_flag_list_matches_the_parser(name: str) -> None:
    """README's synopsis of the command names exactly the options argparse accepts
    (each option by one of its spellings), with the same choices; README's command table
    names only options the command accepts."""
    sub = _subparsers()[name]
    synopsis = _readme_synopses().get(name)
    assert synopsis is not None, f"README has no synopsis `model-repo {name} ...`"
    actions = [a for a in sub._actions if a.option_strings and "-h" not in a.option_strings]
    spelled = set(_OPTION.findall(synopsis))
    known = {opt for a in actions for opt in a.option_strings}
    assert spelled <= known, f"README lists {sorted(spelled - known)} for {name}: remove them"
    missing = [a.option_strings[-1] for a in actions if not spelled & set(a.option_strings)]
    assert not missing, f"README's synopsis of {name} lacks {missing}: add them"
    for opt, choices in _CHOICES.findall(synopsis):
        (action,) = [a for a in actions if opt in a.option_strings]
        assert choices.split("|") == list(action.choices), (name, opt, action.choices)
    section = (ROOT / "README.md").read_text().split("## Command line", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `model-repo ([a-z][a-z-]*)([^`]*)` \|", section, re.M)
    assert name in [n for n, _ in rows], f"README's command table lacks {name}"
    for row_name, rest in rows:
        if row_name == name:
            assert set(_OPTION.findall(rest)) <= known, (name, rest)


def test_status_for_an_unknown_profile_lists_the_profiles(
        ws: Workspace, tiny_bert_store_path: str) -> None:
    empty = ws.run("status", "--profile", "nixos", "--state-dir", str(ws.state))
    assert empty.code == 2 and empty.stdout == ""
    assert "no profile has one yet" in empty.stderr, empty.stderr
    data = manifest({"m": model(tiny_bert_store_path)}, profile="home-manager")
    assert ws.activate(data).code == 0
    assert ws.activate({**data, "profile": "devenv:/p"}, name="other.json").code == 0
    for extra in ((), ("--json",), ("--cache-dir", str(ws.hub))):
        res = ws.run("status", "--profile", "nixos", "--state-dir", str(ws.state), *extra)
        assert res.code == 2 and res.stdout == "", res
        assert "profile 'nixos' has no state" in res.stderr
        assert f"'devenv:/p' (hub cache {ws.hub})" in res.stderr, res.stderr
        assert f"'home-manager' (hub cache {ws.hub})" in res.stderr
    elsewhere = ws.run("status", "--profile", "home-manager", "--state-dir", str(ws.state),
                       "--cache-dir", str(ws.root / "other-hub"))
    assert elsewhere.code == 2 and f"for the hub cache {ws.root / 'other-hub'}" in elsewhere.stderr
    known = ws.run("status", "--profile", "home-manager", "--json", "--state-dir", str(ws.state))
    assert known.code == 0 and [p["profile"] for p in json.loads(known.stdout)] == ["home-manager"]


#: A valid argument list of each command, before the unknown flag is added.
_ARGS = {"activate": ["--manifest", "m.json"], "env": ["--manifest", "m.json"],
         "deactivate": ["--profile", "p"], "prefetch": ["o/n"], "ls": ["o/n"],
         "lock": ["m", "o/n"], "export": ["o/n"], "store": ["ls"],
         "prepare-dataset": ["d", "--repo-id", "o/n", "--revision", "0" * 40, "--out", "o"]}


@pytest.mark.parametrize("name", COMMANDS)
def test_an_unknown_flag_prints_the_subcommands_usage(name: str) -> None:
    """``model-repo COMMAND … --bogus`` exits 2 with COMMAND's usage (``store ls``: the
    nested one's), not the top-level ``usage: model-repo [-h] [--version] COMMAND``."""
    done = subprocess.run([sys.executable, "-m", "activate", name, *_ARGS.get(name, []),
                           "--bogus"], capture_output=True, text=True, cwd=ROOT,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))
    full = f"{name} ls" if name == "store" else name
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith(f"usage: model-repo {full} "), done.stderr
    assert f"model-repo {full}: error: unrecognized arguments: --bogus" in done.stderr


def _stderr_on_a_terminal(args: list[str], env: dict[str, str]) -> bytes:
    """Run ``model-repo ARGS`` (which must exit 2) with stderr on a pseudo-terminal
    (:func:`test_prefetch.on_terminal`); what it wrote there."""
    from test_prefetch import on_terminal

    code, _, term = on_terminal(env, *args)
    assert code == 2, term
    return term


def test_no_color_and_the_color_flag(ws: Workspace) -> None:
    """Console logs are coloured on a terminal by default, not with ``NO_COLOR`` set
    (no-color.org) nor ``--color never``; ``--color always`` colours a pipe too."""
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR")}
    env["PYTHONPATH"] = str(ROOT)
    args = ["activate", "--manifest", str(ws.root / "nope.json"), "--state-dir", str(ws.state)]
    esc = b"\x1b["
    coloured = _stderr_on_a_terminal(args, env)
    assert b"cannot read the manifest" in coloured and esc in coloured, coloured
    for plain in (_stderr_on_a_terminal(args, {**env, "NO_COLOR": "1"}),
                  _stderr_on_a_terminal([*args, "--color", "never"], env),
                  _stderr_on_a_terminal([*args, "--color=never"], env)):
        assert b"cannot read the manifest" in plain and esc not in plain, plain
    # An empty NO_COLOR does not count (no-color.org); --color always wins over it.
    assert esc in _stderr_on_a_terminal(args, {**env, "NO_COLOR": ""})
    assert esc in _stderr_on_a_terminal([*args, "--color", "always"], {**env, "NO_COLOR": "1"})
    piped = subprocess.run([sys.executable, "-m", "activate", *args, "--color", "always"],
                           capture_output=True, env=env, cwd=ROOT)
    assert piped.returncode == 2 and esc.decode() in piped.stderr.decode()
    piped = subprocess.run([sys.executable, "-m", "activate", *args], capture_output=True,
                           env=env, cwd=ROOT)
    assert esc.decode() not in piped.stderr.decode()


def _readme_demo_block() -> list[str]:
    """The lines of README's fenced block that shows the demo's output."""
    text = (ROOT / "README.md").read_text()
    start = text.index("```\n$ model-repo activate --manifest /tmp/model-repo-demo-")
    return text[start + 4:text.index("\n```", start + 4)].splitlines()


def test_the_demo_prints_what_readme_shows_and_leaves_no_folder(tmp_path: Path) -> None:
    """``examples/demo.py`` (what ``scripts/demo.sh`` runs after setup): its stdout is
    README's block line for line (``…`` stands for any text), and its temporary folder
    is gone afterwards."""
    pytest.importorskip("torch", reason="pip install torch (the demo loads the model)")
    pytest.importorskip("transformers", reason="pip install transformers (the demo)")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("HF_", "HUGGINGFACE_", "TRANSFORMERS_"))}
    env.update(TMPDIR=str(tmp_path), PYTHONPATH=str(ROOT), HF_HOME=str(tmp_path / "hf"))
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env["TMPDIR"] = str(tmp)
    done = subprocess.run([sys.executable, str(ROOT / "examples" / "demo.py")],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    got = done.stdout.splitlines()
    want = _readme_demo_block()
    assert len(got) == len(want), (got, want)
    for g, w in zip(got, want):
        pattern = ".*".join(re.escape(part) for part in w.replace("/tmp/", f"{tmp}/")
                            .split("…"))
        assert re.fullmatch(pattern, g), (g, w)
    assert re.search(r"did (link|tree) ", done.stderr), done.stderr  # either form
    assert [p.name for p in tmp.iterdir() if p.name.startswith("model-repo-demo-")] == []


@pytest.mark.parametrize("name", ["export", "import", "store"])
def test_each_persist_command_lists_its_own_exit_codes(name: str) -> None:
    """``store --help`` and ``export --help`` do not list ``import``'s exit codes
    (``import --all``, a declined confirmation); ``store`` gives its own exit 1."""
    text = " ".join(_subparsers()[name].format_help().split())
    assert "Exit codes: 0 ok" in text
    assert ("import --all" in text) == (name == "import"), text
    assert ("1 store ls: an entry is broken" in text) == (name == "store"), text


def test_the_flake_outputs_table_names_every_command() -> None:
    """docs/nix.md's flake-outputs row of the package lists every subcommand."""
    docs = (ROOT / "docs" / "nix.md").read_text()
    (row,) = [ln for ln in docs.splitlines() if ln.startswith("| `packages.<system>.default`")]
    listed = re.findall(r"`([a-z][a-z-]*)`", row.split("every subcommand", 1)[1].split(")", 1)[0])
    assert sorted(listed) == sorted(COMMANDS), row


def _first_model_section() -> str:
    text = (ROOT / "README.md").read_text()
    first = text.index("\n## ")
    assert text[first:].startswith("\n## Your first model\n"), "README opens with the user's path"
    return text[first:text.index("\n## ", first + 1)]


def test_readme_first_model_commands_parse() -> None:
    """Each ``model-repo …`` command of README's "Your first model" is accepted by the
    parser, the ``nix run`` alias names the flakes feature a default Nix needs, and the
    pip way installs from a checkout (no unpublished PyPI package)."""
    import shlex

    from activate.cli import _parser

    section = _first_model_section()
    lines = [ln.strip() for ln in section.splitlines() if ln.strip().startswith("model-repo ")]
    lines += re.findall(r"`(model-repo [^`]+)`", section)
    commands = {ln.split("#")[0].strip() for ln in lines}
    assert {c.split()[1] for c in commands} >= {"prefetch", "lock", "status"}, commands
    for cmd in commands:
        _parser().parse_args(shlex.split(cmd)[1:])
    assert "--extra-experimental-features 'nix-command flakes' run github:" in section
    assert "pip install './model-repo[hub]'" in section and "pip install model-repo" not in section
    for step in ("prefetch", "programs.model-repo", "switch", "from_pretrained"):
        assert step in section


def test_readme_first_model_snippet_works_pasted() -> None:
    """The Home Manager snippet of "Your first model", with a hash in place of ``…``,
    evaluates in the real Home Manager module set and gives ``MODEL_REPO_MINILM``."""
    from nixeval import hm_eval

    section = _first_model_section()
    start = section.index("   programs.model-repo = {")
    end = section.index("\n   };\n", start) + len("\n   };\n")
    snippet = section[start:end].replace("sha256-…", "sha256-" + "A" * 43 + "=")
    r = hm_eval("{ " + snippet + " }")
    assert r["failedAssertions"] == [], r["failedAssertions"]
    assert r["manifest"]["models"]["minilm"]["repoId"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert r["sessionVariables"]["MODEL_REPO_MINILM"] == r["modelPaths"]["minilm"]
