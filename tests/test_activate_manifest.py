"""The manifest contract: validation messages, the schema file, naming rules held to
huggingface_hub's own code, and hub dir resolution held to huggingface_hub.constants."""

from __future__ import annotations

import json
import os
import string
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest
from conftest import COMMIT_A, ROOT
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from activate.cachedir import default_hub_cache
from activate.manifest import ManifestError, parse_manifest, render_schema, validate_manifest
from activate.naming import env_var_name, repo_folder_name, repo_id_error

STORE = "/nix/store/" + "0" * 32 + "-model"


def good(**models: dict) -> dict:
    return {"version": 1, "profile": "p", "cacheDir": None, "offline": True,
            "models": models or {"m": {"repoId": "org/name", "revision": COMMIT_A, "path": STORE}}}


def error_of(raw: object) -> str:
    with pytest.raises(ManifestError) as exc:
        validate_manifest(raw)
    return str(exc.value)


def test_minimal_manifest_and_defaults() -> None:
    m = validate_manifest(good())
    model = m.models["m"]
    assert (m.store_dir, model.repo_type, model.refs, model.link) == ("/nix/store", "model", ["main"], True)
    assert model.folder == "models--org--name"


@pytest.mark.parametrize(
    ("patch", "field", "words"),
    [
        ({"version": 2}, "version", "not supported"),
        ({"extra": 1}, "extra", "unknown field"),
        ({"cacheDir": "relative/hub"}, "cacheDir", "absolute"),
        ({"storeDir": "/nix/store/"}, "storeDir", "canonical"),
        ({"profile": ""}, "profile", "at least 1"),
        ({"offline": "yes"}, "offline", "boolean"),
    ],
)
def test_top_level_errors_name_the_field(patch: dict, field: str, words: str) -> None:
    msg = error_of({**good(), **patch})
    assert field in msg and words in msg


@pytest.mark.parametrize(
    ("model_patch", "field", "words"),
    [
        ({"revision": "main"}, "revision", "prefetch"),
        ({"revision": COMMIT_A.upper()}, "revision", "commit"),
        ({"repoId": "a/b/c"}, "repoId", "at most one"),
        ({"repoId": "../etc"}, "repoId", "repo id"),
        ({"repoId": "org/na--me"}, "repoId", "--"),
        ({"repoType": "space"}, "repoType", "model"),
        ({"refs": ["../x"]}, "refs", "segments"),
        ({"refs": [COMMIT_A]}, "refs", "commit id"),
        ({"refs": []}, "models.m", "at least one ref"),
        ({"refs": ["main", "main"]}, "refs", "twice"),
        ({"path": "/nix/store/" + "0" * 32 + "-model/sub"}, "models.'m'.path", "directly under"),
        ({"path": "/nix/store/../etc"}, "path", "directly under"),
        ({"path": "/tmp/x"}, "path", "directly under"),
        ({"path": "/nix/store/short-model"}, "path", "store path name"),
        ({"unknown": True}, "models.m.unknown", "unknown field"),
    ],
)
def test_model_errors_name_the_field(model_patch: dict, field: str, words: str) -> None:
    base = {"repoId": "org/name", "revision": COMMIT_A, "path": STORE}
    msg = error_of(good(m={**base, **model_patch}))
    assert field in msg, msg
    assert words in msg, msg


def test_names_mapping_to_one_variable_are_an_error() -> None:
    base = {"repoId": "org/name", "revision": COMMIT_A, "path": STORE, "link": False}
    msg = error_of(good(**{"bert-base": base, "bert.base": base}))
    assert "MODEL_REPO_BERT_BASE" in msg and "rename" in msg


def test_conflicting_refs_and_snapshots_are_errors() -> None:
    other = "/nix/store/" + "1" * 32 + "-other"
    a = {"repoId": "org/name", "revision": COMMIT_A, "path": STORE}
    assert "different revisions" in error_of(good(a=a, b={**a, "revision": "b" * 40}))
    assert "different store paths" in error_of(good(a=a, b={**a, "path": other, "refs": ["v2"]}))


def test_invalid_model_name() -> None:
    base = {"repoId": "org/name", "revision": COMMIT_A, "path": STORE}
    assert "model name" in error_of(good(**{"has space": base}))


def test_several_mistakes_are_reported_at_once() -> None:
    """Field errors (checked by pydantic) and the rules across fields and models (which
    pydantic skips once a field is invalid) come in one message, one line each."""
    other = "/nix/store/" + "1" * 32 + "-other"
    raw = {**good(), "offline": "yes", "extra": 1, "models": {
        "a": {"repoId": "org/a", "revision": "main", "path": STORE},
        "bad name": {"repoId": "org/b", "revision": COMMIT_A, "path": STORE},
        "c": {"repoId": "org/c", "revision": COMMIT_A, "path": "/tmp/x"},
        "d": {"repoId": "org/d", "revision": "zz", "refs": [], "path": "/tmp/y"},
        "e": 5,
        "f": {"repoId": "org/f", "revision": COMMIT_A, "path": STORE},
        "g": {"repoId": "org/f", "revision": "b" * 40, "path": other},
    }}
    for msg in (error_of(raw), _parse_error(json.dumps(raw))):
        lines = msg.splitlines()
        assert lines[0] == "invalid manifest:"
        expected = [
            ("offline:", "boolean"),
            ("extra:", "unknown field"),
            ("models.a.revision:", "prefetch"),
            ("models.d.revision:", "not a commit"),
            ("models.d:", "refs is empty"),
            ("models.e:", ""),
            ("models.'bad name':", "model name must match"),
            ("models.'c'.path:", "directly under"),
            ("models.'d'.path:", "directly under"),
            ("models.'g' and models.'f'", "different revisions"),
        ]
        for field, words in expected:
            assert any(line.strip().startswith(field) and words in line for line in lines), (
                field, msg)
        assert len(lines) == 1 + len(expected), msg
        assert "(top level)" not in msg


def test_cross_model_rules_alone_are_one_line_each() -> None:
    base = {"repoId": "org/name", "revision": COMMIT_A, "path": "/tmp/x"}
    msg = error_of(good(**{"a b": {**base, "path": STORE}, "m": base}))
    assert msg.splitlines()[1:] == [
        "  models.'a b': a model name must match ^[A-Za-z0-9_][A-Za-z0-9_.+-]{0,99}$ "
        "(letters, digits, '_', '.', '+', '-'; at most 100 characters)",
        "  models.'m'.path: '/tmp/x' must be a store path directly under '/nix/store' "
        "(like /nix/store/<hash>-<name>, no sub-directory, no '..' or trailing '/')",
    ]


def test_unsupported_version_is_reported_alone() -> None:
    msg = error_of({**good(), "version": 2, "offline": "yes", "extra": 1})
    assert msg == ("version: 2 is not supported; this activator reads version 1 (upgrade "
                   "model-repo, or regenerate the manifest)")


def _parse_error(text: str) -> str:
    with pytest.raises(ManifestError) as exc:
        parse_manifest(text)
    return str(exc.value)


def test_not_json() -> None:
    with pytest.raises(ManifestError, match="not valid JSON"):
        parse_manifest(b"{nope")


def test_schema_file_matches_the_models() -> None:
    committed = (ROOT / "schemas" / "manifest.schema.json").read_text()
    assert committed == render_schema(), (
        "schemas/manifest.schema.json is stale: run `model-repo schema > "
        "schemas/manifest.schema.json`"
    )


def test_schema_accepts_what_the_models_accept() -> None:
    jsonschema = pytest.importorskip("jsonschema", reason="pip install jsonschema (test extra)")
    schema = json.loads(render_schema())
    jsonschema.validate(good(), schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**good(), "bogus": 1}, schema)


# -- naming rules -------------------------------------------------------------------


def test_env_var_examples() -> None:
    assert env_var_name("bert-base") == "MODEL_REPO_BERT_BASE"
    assert env_var_name("all.MiniLM") == "MODEL_REPO_ALL_MINILM"
    assert env_var_name("x_1+y") == "MODEL_REPO_X_1_Y"
    assert repo_folder_name("org/name", "dataset") == "datasets--org--name"


_repo_chars = string.ascii_letters + string.digits + "-_./" + "é\n-"


@settings(max_examples=1500, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(
    st.text(alphabet=_repo_chars, min_size=0, max_size=12),
    st.text(min_size=0, max_size=6),
    st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,98}[A-Za-z0-9](/[A-Za-z0-9][A-Za-z0-9._-]{0,98}[A-Za-z0-9])?", fullmatch=True),
))
def test_repo_id_rule_agrees_with_huggingface_hub(repo_id: str) -> None:
    """Our rule is huggingface_hub's (1.x: ASCII only, each part at most 96 characters).
    Older releases (0.x, the floor in pyproject.toml) matched with Unicode ``\\w``, no
    namespace limit and ``$`` (a trailing newline passes): ids only they accept must be
    refused by us, and every other id is judged the same."""
    import re

    from huggingface_hub.utils import HFValidationError, validate_repo_id
    from huggingface_hub.utils._validators import REPO_ID_REGEX

    legacy = not REPO_ID_REGEX.flags & re.ASCII
    if legacy and (not repo_id.isascii() or "\n" in repo_id
                   or ("/" in repo_id and len(repo_id.split("/")[0]) > 96)):
        assert repo_id_error(repo_id) is not None, repo_id
        return
    try:
        validate_repo_id(repo_id)
        theirs = True
    except HFValidationError:
        theirs = False
    assert (repo_id_error(repo_id) is None) == theirs, repo_id


# -- hub dir resolution ---------------------------------------------------------------

_path_parts = st.sampled_from(["/a", "/b/c", "~", "~/x", "$HOME/y", "${XDG_CACHE_HOME}/z", "", "rel",
                                "/", "$NOPE/q", "~root/w", "~no-such-user-xyz/v", "~x"])
_env = st.fixed_dictionaries({}, optional={
    "HF_HUB_CACHE": _path_parts, "HUGGINGFACE_HUB_CACHE": _path_parts, "HF_HOME": _path_parts,
    "XDG_CACHE_HOME": _path_parts, "HOME": st.sampled_from(["/home/u", "/", "/home/u/", ""]),
})
#: This process's own HOME while our side runs: neither the passwd home nor any generated
#: value, so an environment without HOME shows whether ``~`` comes from the passwd entry
#: (huggingface_hub: os.path.expanduser in a process without HOME) or leaks from here.
_PROCESS_HOME = "/process-home-not-in-passwd"


@settings(max_examples=60, deadline=None)
@given(st.lists(_env, min_size=20, max_size=20))
def test_hub_dir_matches_huggingface_hub_constants(envs: list[dict[str, str]]) -> None:
    """Each environment is given to a fresh interpreter importing huggingface_hub; its
    constants.HF_HUB_CACHE must equal ours (20 environments per interpreter). Ours runs
    with this process's HOME set to a value no environment uses, so an environment
    without HOME must resolve ``~`` from the password database, as huggingface_hub does."""
    script = (
        "import json, os, sys, importlib\n"
        "out = []\n"
        "for env in json.loads(sys.stdin.read()):\n"
        "    os.environ.clear(); os.environ.update(env)\n"
        "    import huggingface_hub.constants as c\n"
        "    importlib.reload(c)\n"
        "    out.append(c.HF_HUB_CACHE)\n"
        "print(json.dumps(out))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], input=json.dumps(envs), text=True,
                          capture_output=True, check=True, env={"PATH": os.environ.get("PATH", "")})
    theirs = json.loads(done.stdout)
    with mock.patch.dict(os.environ, {"HOME": _PROCESS_HOME}):
        ours = [default_hub_cache(env) for env in envs]
    assert ours == theirs


def test_tilde_without_home_is_the_passwd_home() -> None:
    """``~`` in an environment without HOME: the current uid's passwd entry, whatever
    this process's HOME says (the suite must pass when $HOME differs from it)."""
    import pwd

    passwd_home = pwd.getpwuid(os.getuid()).pw_dir.rstrip("/") or ""
    with mock.patch.dict(os.environ, {"HOME": _PROCESS_HOME}):
        assert default_hub_cache({}) == f"{passwd_home}/.cache/huggingface/hub"
        assert default_hub_cache({"HOME": ""}) == "/.cache/huggingface/hub"
        assert default_hub_cache({"HF_HOME": "~/hf"}) == f"{passwd_home}/hf/hub"


def test_cache_dir_flag_beats_manifest_and_environment(tmp_path: Path) -> None:
    from activate.cachedir import resolve_hub_dir

    env = {"HF_HUB_CACHE": "/from/env", "HOME": "/home/u"}
    assert resolve_hub_dir(str(tmp_path), "/from/manifest", env) == (str(tmp_path), True)
    assert resolve_hub_dir(None, "/from/manifest", env) == ("/from/manifest", True)
    assert resolve_hub_dir(None, None, env) == ("/from/env", False)
    assert resolve_hub_dir(None, None, {"HOME": "/home/u"}) == ("/home/u/.cache/huggingface/hub", False)
    assert resolve_hub_dir(None, None, {"HOME": "/h", "HF_HOME": "/hf"}) == ("/hf/hub", False)
