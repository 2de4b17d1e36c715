"""Environment output: every format round-trips arbitrary values byte for byte through
the real consumer (bash, zsh, fish, python-dotenv, devenv's base64 pairs, JSON)."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from activate.envout import environment, render

# Any character an environment can carry (no NUL, no lone surrogates).
values = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
    max_size=40,
)
envs = st.lists(values, min_size=1, max_size=6).map(
    lambda vs: {f"MODEL_REPO_V{i}": v for i, v in enumerate(vs)}
)


def shell(name: str, apt: str) -> str:
    exe = shutil.which(name)
    if not exe:
        pytest.skip(reason=f"{name} is not installed: apt-get install -y {apt}")
    return exe


def _read_back(cmd: list[str], script: bytes, names: list[str]) -> dict[str, str]:
    done = subprocess.run(cmd, input=script, capture_output=True, check=True,
                          env={"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8"})
    # Each value is printed NUL-terminated, so newlines inside values survive.
    parts = done.stdout.split(b"\0")[:-1]
    assert len(parts) == len(names), done.stderr
    return {n: p.decode() for n, p in zip(names, parts)}


@pytest.mark.parametrize(("sh", "apt"), [("bash", "bash"), ("zsh", "zsh"), ("dash", "dash")])
@settings(max_examples=150, deadline=None)
@given(env=envs)
def test_sh_format_round_trips(sh: str, apt: str, env: dict[str, str]) -> None:
    exe = shell(sh, apt)
    script = render(env, "sh") + b"".join(
        f'printf "%s\\0" "${n}"\n'.encode() for n in env)
    assert _read_back([exe, "-s"], script, list(env)) == env


@settings(max_examples=150, deadline=None)
@given(env=envs)
def test_fish_format_round_trips(env: dict[str, str]) -> None:
    exe = shell("fish", "fish")
    script = render(env, "fish") + b"".join(
        f'printf "%s\\0" "${n}"\n'.encode() for n in env)
    assert _read_back([exe, "--no-config", "-c", "source -"], script, list(env)) == env


@settings(max_examples=200, deadline=None)
@given(env=envs)
def test_dotenv_format_round_trips_through_python_dotenv(env: dict[str, str]) -> None:
    dotenv = pytest.importorskip("dotenv", reason="pip install python-dotenv (test extra)")
    import io

    parsed = dotenv.dotenv_values(stream=io.StringIO(render(env, "dotenv").decode()),
                                  interpolate=False)
    assert parsed == env


@settings(max_examples=200)
@given(env=envs)
def test_devenv_and_json_formats_round_trip(env: dict[str, str]) -> None:
    raw = render(env, "devenv").split(b"\0")
    assert raw[-1] == b""
    pairs = raw[:-1]
    back = {pairs[i].decode(): base64.b64decode(pairs[i + 1]).decode() for i in range(0, len(pairs), 2)}
    assert back == env
    assert json.loads(render(env, "json")) == env


def test_nul_is_refused() -> None:
    with pytest.raises(ValueError, match="NUL"):
        render({"X": "a\0b"}, "sh")


def test_environment_contents() -> None:
    env = environment({"b": "/nix/store/b", "a.x": "/nix/store/a"}, hub_dir=None, offline=False)
    assert env == {"MODEL_REPO_A_X": "/nix/store/a", "MODEL_REPO_B": "/nix/store/b"}
    env = environment({}, hub_dir="/h", offline=True)
    assert env == {"HF_DATASETS_OFFLINE": "1", "HF_HUB_CACHE": "/h", "HF_HUB_OFFLINE": "1",
                   "TRANSFORMERS_OFFLINE": "1"}
    env = environment({}, hub_dir=None, offline=False, datasets_dir="/d")
    assert env == {"HF_DATASETS_CACHE": "/d"}
    env = environment({"tiny.gguf": "/nix/store/t", "b": "/nix/store/b"}, hub_dir=None,
                      offline=False, model_files={"tiny.gguf": "Q8_0/t-00001-of-00002.gguf"})
    assert env == {"MODEL_REPO_B": "/nix/store/b", "MODEL_REPO_TINY_GGUF": "/nix/store/t",
                   "MODEL_REPO_TINY_GGUF_FILE": "/nix/store/t/Q8_0/t-00001-of-00002.gguf"}
    assert list(env) == sorted(env)
