"""The persist-folder fuzz campaign in CI (issue 14): a derandomized handful of
hypothesis-built persist folders another user could have written (tests/persist_fuzz.py
says what is built and the property: exit 0/1/2/3 with a clear line, never 70; nothing
but a content-addressed path imported without --yes; nothing written outside). The same
at size, with figures: bench/persist_fuzz.py."""

from __future__ import annotations

import os
import shutil
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

from conftest import need_nix
from nixeval import missing_input
from persist_fuzz import Materials, folders, run_example

EXAMPLES = int(os.environ.get("MODEL_REPO_PERSIST_FUZZ_EXAMPLES", "12"))


@pytest.fixture(scope="module")
def materials(tmp_path_factory: pytest.TempPathFactory) -> Materials:
    nix_store = need_nix()
    if not shutil.which("nix"):
        missing_input("Debian's nix-bin is not installed (apt-get install -y nix-bin): no nix")
    return Materials.make(nix_store, Path(tmp_path_factory.mktemp("persist-fuzz")))


def test_hostile_persist_folders(materials: Materials) -> None:
    counts: Counter[str] = Counter()

    @settings(max_examples=EXAMPLES, deadline=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(folders())
    def check(plan: dict) -> None:
        run_example(plan, materials, counts)

    check()
    assert counts["examples"] >= min(EXAMPLES, 5)
    # The campaign reaches both outcomes, not only refusals.
    assert any(k.startswith("import --all -> 0") or k.startswith("import --all -> 1")
               for k in counts), counts
