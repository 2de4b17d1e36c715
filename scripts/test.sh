#!/usr/bin/env bash
# The whole test suite, on a fresh machine: install what it needs, then run pytest with
# the given arguments (`bash scripts/test.sh -k linking -x`).
#
# The Nix evaluation tests need the sources of nixpkgs' lib, Home Manager and devenv. For
# each of them whose variable (MODEL_REPO_TEST_NIXPKGS_LIB, MODEL_REPO_TEST_HOME_MANAGER,
# MODEL_REPO_TEST_DEVENV) is not set, the pinned archive <name>.tar.xz from
# $MODEL_REPO_TEST_INPUTS (default: ../shared/test-inputs, relative to the repository
# root) is extracted once into $MODEL_REPO_TEST_CACHE (default:
# ${XDG_CACHE_HOME:-~/.cache}/model-repo-tests/inputs), in a folder named after the
# archive's SHA-256, and the variable is exported. A missing archive is reported here;
# the tests then skip, or fail when CI=true.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

say() { printf 'test: %s\n' "$*" >&2; }

inputs="$(realpath -m -- "${MODEL_REPO_TEST_INPUTS:-../shared/test-inputs}")"
cache="${MODEL_REPO_TEST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/model-repo-tests/inputs}"
for spec in nixpkgs-lib:MODEL_REPO_TEST_NIXPKGS_LIB:lib/default.nix \
            home-manager:MODEL_REPO_TEST_HOME_MANAGER:modules/modules.nix \
            devenv:MODEL_REPO_TEST_DEVENV:src/modules/top-level.nix; do
  IFS=: read -r name var marker <<< "$spec"
  [ -z "${!var:-}" ] || continue  # given by the caller
  archive="$inputs/$name.tar.xz"
  if [ ! -f "$archive" ]; then
    say "no $archive: set $var to a $name source tree, or MODEL_REPO_TEST_INPUTS to the folder of the pinned archives"
    continue
  fi
  digest="$(sha256sum "$archive" | cut -c1-64)"
  dest="$cache/$name-$digest"
  if [ ! -f "$dest/$name/$marker" ]; then
    say "extracting $archive into $dest"
    mkdir -p "$cache"
    tmp="$(mktemp -d "$cache/.extract-$name-XXXXXX")"
    tar -xJf "$archive" -C "$tmp"
    if [ ! -f "$tmp/$name/$marker" ]; then
      rm -rf -- "$tmp"
      say "$archive does not unpack to $name/$marker: replace it with the pinned archive"
      exit 1
    fi
    # Another run may have finished the same folder meanwhile: keep the first one.
    mv -T -- "$tmp" "$dest" 2>/dev/null || rm -rf -- "$tmp"
    if [ ! -f "$dest/$name/$marker" ]; then
      say "$dest is incomplete (no $name/$marker): remove it and run again"
      exit 1
    fi
  fi
  export "$var=$dest/$name"
done

venv=.venv
[ -z "${MODEL_REPO_OLDEST:-}" ] || venv=.venv-oldest  # scripts/test-oldest.sh
exec "$venv/bin/python" -m pytest "$@"
