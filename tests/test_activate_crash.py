"""Crash safety: stop the activator at every write step in turn (cache and state), check
the cache is valid at that instant, re-run, and compare with an uninterrupted run."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import COMMIT_A, COMMIT_B, manifest, model, shape

from activate import activation, hubfs
from activate.activation import request_of, run_activate
from activate.log import Log
from activate.manifest import validate_manifest

USER_COMMIT = "c" * 40
COMMIT_D = "d" * 40


class Stop(BaseException):
    """Stands for a kill: not an OSError, so nothing in the activator handles it."""


def _setup_user_download(hub: Path) -> None:
    repo = hub / "models--org--x"
    (repo / "snapshots" / USER_COMMIT).mkdir(parents=True)
    (repo / "snapshots" / USER_COMMIT / "config.json").write_text("{}")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(USER_COMMIT)


def _manifests(a: str, b: str) -> tuple[dict, dict]:
    first = manifest({
        "x": model(a, repo_id="org/x", revision=COMMIT_A, refs=["main", "v1"]),
        "y": model(a, repo_id="org/y", revision=COMMIT_A, refs=["main", "refs/pr/1"]),
        "w": model(b, repo_id="org/w", revision=COMMIT_B),
    })
    second = manifest({
        "x": model(a, repo_id="org/x", revision=COMMIT_B, refs=["main"]),
        "w": model(a, repo_id="org/w", revision=COMMIT_B),  # same commit, new store path
        "z": model(b, repo_id="org/z", revision=COMMIT_D, refs=["main", "stable"]),
    })
    return first, second


def _run(root: Path, data: dict, fault_at: int | None = None) -> int:
    """Activate ``data``; raise Stop before write number ``fault_at``. Returns writes."""
    count = [0]

    def before(_what: str) -> None:
        if fault_at is not None and count[0] == fault_at:
            raise Stop
        count[0] += 1

    original_save = activation._save_state

    def save(p: str, st: object) -> None:
        before("state")
        original_save(p, st)  # type: ignore[arg-type]

    activation._save_state = save  # type: ignore[assignment]
    fds = _open_fds()
    try:
        run_activate(
            request_of(validate_manifest(data)), hub_dir=str(root / "hub"), explicit_hub=True,
            state_dir=str(root / "state"),
            log=Log("error"), before_write=before,
        )
    finally:
        activation._save_state = original_save  # type: ignore[assignment]
        # A run stopped anywhere (its cleanup stopped too) leaves no descriptor open: a
        # long-lived caller would run out of them.
        leaked = _open_fds() - fds
        assert not leaked, f"descriptors left open: {sorted(leaked)}"
    return count[0]


def _open_fds() -> set[str]:
    """This process's open descriptors (Linux's /proc/self/fd, else /dev/fd)."""
    return set(os.listdir("/proc/self/fd" if os.path.isdir("/proc/self/fd") else "/dev/fd"))


def _invariants(hub: Path) -> None:
    """Every ref names an existing snapshot; no temporary name where huggingface_hub reads."""
    for repo in hub.iterdir():
        if repo.name == ".locks":
            continue
        snapshots = repo / "snapshots"
        for dirpath, _dirs, files in os.walk(repo / "refs"):
            for f in files:
                assert not f.startswith(hubfs.TEMP_PREFIX), f"temporary name in refs: {f}"
                commit = (Path(dirpath) / f).read_text()
                assert os.path.lexists(snapshots / commit), f"{repo.name} ref {f} -> missing {commit}"
        if snapshots.is_dir():
            for s in snapshots.iterdir():
                assert not s.name.startswith(hubfs.TEMP_PREFIX)


def test_fault_at_every_write_step(tmp_path: Path, tiny_bert_store_path: str,
                                   second_store_path: str) -> None:
    first, second = _manifests(tiny_bert_store_path, second_store_path)
    clean = tmp_path / "clean"
    clean.mkdir()
    _setup_user_download(clean / "hub")
    _run(clean, first)
    steps = _run(clean, second)
    expected = shape(clean / "hub")
    _run(clean, manifest({}))
    expected_empty = shape(clean / "hub")
    assert steps >= 15, steps  # the transition really exercises many writes
    assert expected_empty == {
        "models--org--x": "dir", "models--org--x/refs": "dir",
        "models--org--x/refs/main": f"file:{USER_COMMIT}",
        "models--org--x/snapshots": "dir", f"models--org--x/snapshots/{USER_COMMIT}": "dir",
        f"models--org--x/snapshots/{USER_COMMIT}/config.json": "file:{}",
    }
    for fault_at in range(steps):
        root = tmp_path / f"f{fault_at}"
        root.mkdir()
        _setup_user_download(root / "hub")
        _run(root, first)
        with pytest.raises(Stop):
            _run(root, second, fault_at=fault_at)
        _invariants(root / "hub")
        _run(root, second)
        _invariants(root / "hub")
        assert shape(root / "hub") == expected, f"after a stop at write {fault_at}"
        _run(root, manifest({}))
        assert shape(root / "hub") == expected_empty, f"prune after a stop at write {fault_at}"


def test_fault_during_first_activation_then_removal(tmp_path: Path, tiny_bert_store_path: str) -> None:
    data = manifest({"x": model(tiny_bert_store_path, repo_id="org/x", refs=["main", "v1"])})
    probe = tmp_path / "probe"
    probe.mkdir()
    steps = _run(probe, data)
    for fault_at in range(steps):
        root = tmp_path / f"f{fault_at}"
        root.mkdir()
        with pytest.raises(Stop):
            _run(root, data, fault_at=fault_at)
        _invariants(root / "hub")
        # Whatever was half made is ours: dropping the model leaves an empty hub dir.
        _run(root, manifest({}))
        assert shape(root / "hub") == {}, f"leftovers after a stop at write {fault_at}"


# -- a model changing form (partial <-> whole) at one commit, stopped at every write --

@pytest.fixture(scope="module")
def form_paths(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A whole store path and a partial one (a file in a sub-folder) of one commit."""
    from conftest import nix_store_add

    out = {}
    for name, files in {"whole": {"config.json": '{"w": 1}', "vocab.txt": "v"},
                        "part": {"config.json": '{"p": 1}', "sub/tok.json": "{}"}}.items():
        d = tmp_path_factory.mktemp(name) / f"form-{name}"
        for rel, text in files.items():
            (d / rel).parent.mkdir(parents=True, exist_ok=True)
            (d / rel).write_text(text)
        out[name] = nix_store_add(d)
    return out


def every_file_reachable(hub: Path, folder: str, commit: str, store_path: str) -> list[str]:
    """The files of ``store_path`` that ``snapshots/<commit>`` does not serve."""
    from activate.tree import store_files

    snap = hub / folder / "snapshots" / commit
    return [f for f in store_files(store_path) if not (snap / f).is_file()]


def _outcome(root: Path, data: dict, fault_at: int | None = None) -> activation.Outcome:
    count = [0]

    def before(_what: str) -> None:
        if fault_at is not None and count[0] == fault_at:
            raise Stop
        count[0] += 1

    original_save = activation._save_state

    def save(p: str, st: object) -> None:
        before("state")
        original_save(p, st)  # type: ignore[arg-type]

    activation._save_state = save  # type: ignore[assignment]
    try:
        return run_activate(
            request_of(validate_manifest(data)), hub_dir=str(root / "hub"), explicit_hub=True,
            state_dir=str(root / "state"), log=Log("error"), before_write=before)
    finally:
        activation._save_state = original_save  # type: ignore[assignment]


@pytest.mark.parametrize("forms", [("whole", "part"), ("part", "whole"),
                                   ("whole", "part", "whole"), ("part", "whole", "part")])
def test_change_of_form_stopped_at_every_write(tmp_path: Path, form_paths: dict[str, str],
                                               forms: tuple[str, ...]) -> None:
    """Partial <-> whole at one commit (and back), the run stopped before each of its
    writes, the intent included (issue 13, finding 1): the next run finishes the change
    (exit 0 only with every file of the store path served), and the drop gives back the
    user's cache exactly."""
    def data(form: str) -> dict:
        return manifest({"x": model(form_paths[form], repo_id="org/x", revision=COMMIT_A,
                                    refs=["main"], partial=form == "part")})

    probe = tmp_path / "probe"
    _setup_user_download(probe / "hub")
    original = shape(probe / "hub")
    _outcome(probe, data(forms[0]))
    steps = [0] * len(forms)
    for i in range(1, len(forms)):
        steps[i] = _run(probe, data(forms[i]))
    assert all(s >= 2 for s in steps[1:]), steps
    target = forms[-1]
    expected = shape(probe / "hub")
    # Stop the change runs: every write of the first one; for two changes, the second
    # at every write after the first stopped at each write (all pairs).
    cases = [(k,) for k in range(steps[1])] if len(forms) == 2 else [
        (k1, k2) for k1 in range(steps[1]) for k2 in range(steps[2])]
    stops = 0
    for case in cases:
        root = tmp_path / ("f" + "-".join(map(str, case)))
        _setup_user_download(root / "hub")
        _outcome(root, data(forms[0]))
        for i, (form, k) in enumerate(zip(forms[1:], case)):
            try:
                _outcome(root, data(form), fault_at=k)
            except Stop:
                stops += 1
            else:  # after an earlier stop a run may need fewer writes than the probe's
                assert i > 0, case
            snap = root / "hub/models--org--x/snapshots" / COMMIT_A
            if os.path.lexists(snap):  # the window README admits: between the two forms
                _invariants(root / "hub")
        out = _outcome(root, data(target))
        assert not out.plan.problems, (case, [p.message() for p in out.plan.problems])
        assert out.complete and out.env.get("HF_HUB_OFFLINE") == "1", case
        assert every_file_reachable(root / "hub", "models--org--x", COMMIT_A,
                                    form_paths[target]) == [], case
        assert shape(root / "hub") == expected, case
        out = _outcome(root, manifest({}))
        assert not out.plan.problems, (case, [p.message() for p in out.plan.problems])
        assert shape(root / "hub") == original, f"the drop after stops at {case}"
    assert stops >= len(cases), (stops, len(cases))
