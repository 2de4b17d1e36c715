"""The hostile-Hub fuzz campaign (tests/hubfuzz.py), derandomized in CI by the 'ci'
hypothesis profile (tests/conftest.py) and kept modest here; bench/hub_fuzz.py runs it
at size and prints its figures.

Property, for ``ls``, ``lock``, ``update`` and ``prefetch --per-file`` against a mock Hub
that lies or never ends (and a hand-edited lock file): a correct pin, or exit 2/3 with
one clear line — never exit 70, a hang past the deadline, a write outside the target,
a token to another host, a control character on the terminal.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hubfuzz import run_scenario, scenarios
from mockhub import MockHub

pytest.importorskip("huggingface_hub", reason="pip install huggingface_hub (test extra)")


@pytest.fixture(scope="module")
def hub():
    with MockHub() as h:
        yield h


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(sc=scenarios())
def test_hostile_hub_gives_a_correct_pin_or_one_clear_error(hub: MockHub, sc):
    tmp = Path(tempfile.mkdtemp(prefix="hubfuzz-"))
    try:
        run_scenario(hub, sc, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
