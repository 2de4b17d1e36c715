#!/usr/bin/env bash
# The whole test suite on the oldest supported dependencies: the floors of pyproject.toml,
# pinned in .ci/oldest-constraints.txt (README, "Supported dependency versions"), in their
# own venv .venv-oldest; torch is the same 2.13.0 as in .venv. Arguments go to pytest, as
# with scripts/test.sh (`bash scripts/test-oldest.sh -k linking -x`).
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL_REPO_OLDEST=1 exec bash scripts/test.sh "$@"
