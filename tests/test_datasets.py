"""``datasets.load_dataset("org/name")`` offline, from a dataset linked with
``repoType = "dataset"`` and a prepared arrow cache (issue 16).

The real ``datasets`` library prepares a parquet dataset the test writes (pyarrow), the
result goes into the real Nix store (``nix-store --add``), the activator links it into
the datasets cache, and fresh processes load it by repo id, with a config name and a
split, with only the environment the activator printed. Then the threat model's actors
for what is new: the user's own datasets cache entries, another profile, interrupted
runs (a fault before every write), and the store (``Dataset.map`` writes its cache
beside the dataset: in the user's cache, never in the store).

Tests that need ``datasets`` skip with the reason when it is not installed
(``scripts/setup.sh`` installs it).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from activate import datasets_link
from activate.cachedir import default_datasets_cache
from activate.datasets_link import Prepared, cache_folder
from conftest import Workspace, manifest, nix_store_add, shape, tree

REPO_ID = "Org/TinySet"
FOLDER = "Org___tiny_set"
COMMIT = "5d7f3c2a1b0e9d8c7b6a5f4e3d2c1b0a9f8e7d6c"
DATASETS_MISSING = ("needs the `datasets` package (pip install 'datasets>=2.16'; "
                    "scripts/setup.sh installs it)")


def need_datasets() -> None:
    try:
        import datasets  # noqa: F401
    except ImportError:
        pytest.skip(DATASETS_MISSING)


def write_snapshot(root: Path) -> Path:
    """A dataset repo's files as the Hub serves them: parquet shards under data/ and a
    dataset card whose YAML declares two configs."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    (root / "data").mkdir(parents=True)
    (root / "extra").mkdir()
    pq.write_table(pa.table({"text": ["a", "bb", "ccc"], "label": [0, 1, 0]}),
                   root / "data" / "train-00000-of-00001.parquet")
    pq.write_table(pa.table({"text": ["t"], "label": [1]}),
                   root / "data" / "test-00000-of-00001.parquet")
    pq.write_table(pa.table({"q": ["x", "y"]}), root / "extra" / "train.parquet")
    (root / "README.md").write_text(
        "---\nconfigs:\n- config_name: default\n  data_files:\n  - split: train\n"
        "    path: data/train-*.parquet\n  - split: test\n    path: data/test-*.parquet\n"
        "- config_name: extra\n  data_files:\n  - split: train\n    path: extra/train.parquet\n"
        "---\n# tiny\n")
    return root


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """``(snapshot store path, prepared store path)``, both real store paths."""
    need_datasets()
    from activate.datasets_prepare import prepare_dataset

    base = tmp_path_factory.mktemp("ds")
    snap = nix_store_add(write_snapshot(base / "tiny-set"))
    out = base / "tiny-set-prepared"
    rels = prepare_dataset(snap, REPO_ID, COMMIT, str(out))
    assert rels == [f"default/0.0.0/{COMMIT}", f"extra/0.0.0/{COMMIT}"]
    assert not [p for p in out.rglob("*") if p.name.endswith(".lock")]
    return snap, nix_store_add(out)


def plain_snapshot(root: Path) -> Path:
    """A dataset repo's files that need no pyarrow to write (for the linking tests)."""
    root.mkdir(parents=True)
    (root / "data.csv").write_text("text,label\na,0\n")
    return root


def fake_prepared(root: Path, commit: str = COMMIT) -> str:
    """A directory laid out as a prepared dataset (contents not loadable): for the
    linking tests that need no ``datasets``."""
    leaf = root / "default" / "0.0.0" / commit
    leaf.mkdir(parents=True)
    (leaf / "dataset_info.json").write_text('{"config_name": "default"}')
    (leaf / "tiny_set-train.arrow").write_bytes(b"arrow")
    return str(root)


LOADER = r"""
import json, os, sys
import datasets
out = {}
out["train"] = datasets.load_dataset(sys.argv[1], "default", split="train")[:]["text"]
out["test"] = datasets.load_dataset(sys.argv[1], "default", split="test")[:]["text"]
out["extra"] = datasets.load_dataset(sys.argv[1], "extra", split="train")[:]["q"]
dd = datasets.load_dataset(sys.argv[1], "default")
out["splits"] = sorted(dd)
m = dd["train"].map(lambda r: {"n": len(r["text"])})
out["mapped"] = m[:]["n"]
out["map_cache"] = [f["filename"] for f in m.cache_files]
print(json.dumps(out))
"""


def load(env: dict[str, str], home: Path) -> dict:
    full = {"HOME": str(home), "PATH": os.environ.get("PATH", ""), **env}
    res = subprocess.run([sys.executable, "-c", LOADER, REPO_ID], env=full,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout.splitlines()[-1])


def dataset_model(snap: str, prep: str) -> dict:
    return {"repoId": REPO_ID, "repoType": "dataset", "revision": COMMIT, "path": snap,
            "prepared": prep}


@pytest.mark.parametrize("env", [
    {}, {"HF_HOME": "~/hf"}, {"HF_HOME": ""}, {"XDG_CACHE_HOME": "/x//y/"},
    {"HF_DATASETS_CACHE": "~/d/./e//"}, {"HF_DATASETS_CACHE": "$HOME/a"},
    {"HF_HOME": "/h/", "XDG_CACHE_HOME": "/x"}, {"HF_DATASETS_CACHE": ""},
    {"XDG_CACHE_HOME": "~/c/../d"}, {"HOME": "/home/u/"},
])
def test_datasets_cache_dir_mirrors_datasets_config(env: dict[str, str]) -> None:
    """cachedir.default_datasets_cache gives what datasets.config reads, per environment."""
    need_datasets()
    full = {k: v for k, v in os.environ.items()
            if k not in ("HF_HOME", "XDG_CACHE_HOME", "HF_DATASETS_CACHE")}
    full.update(env)
    real = subprocess.run(
        [sys.executable, "-c", "import os, datasets.config as c; "
         "print(os.path.expanduser(str(c.HF_DATASETS_CACHE)))"],
        env=full, capture_output=True, text=True, check=True).stdout.strip()
    assert default_datasets_cache(full) == real


def test_cache_folder_mirrors_datasets() -> None:
    need_datasets()
    from datasets.naming import camelcase_to_snakecase

    for repo_id in ("Org/TinySet", "org/HTTPServerLogs", "name", "a-b/C.d_E2F"):
        parts = repo_id.split("/")
        parts[-1] = camelcase_to_snakecase(parts[-1])
        assert cache_folder(repo_id) == "___".join(parts)


def test_load_dataset_by_repo_id_offline(ws: Workspace, prepared: tuple[str, str]) -> None:
    """The CLI links the prepared dataset into the datasets cache the environment names;
    load_dataset by repo id (config, split, whole DatasetDict) works offline; map writes
    its cache into the user's cache, not the store; the user's own entries survive
    activation and deactivation; the store is unchanged."""
    snap, prep = prepared
    home = ws.root / "home"
    dcache = home / ".cache" / "huggingface" / "datasets"
    # The user's own datasets cache: an earlier prepared copy of the same dataset (its
    # own hash) and another dataset.
    own = dcache / FOLDER / "default" / "0.0.0" / "0123456789abcdef"
    own.mkdir(parents=True)
    (own / "dataset_info.json").write_text('{"config_name": "default"}')
    (dcache / "other___thing" / "default").mkdir(parents=True)
    (dcache / "other___thing" / "default" / "mine.txt").write_text("mine")
    before_user = tree(dcache)
    before_store = tree(Path(prep)), tree(Path(snap))

    res = ws.activate(manifest({"tiny": dataset_model(snap, prep)}, profile="p1"))
    assert res.code == 0, res.stderr
    env = res.env()
    assert env["HF_DATASETS_OFFLINE"] == "1" and env["HF_HUB_OFFLINE"] == "1"
    assert "HF_DATASETS_CACHE" not in env  # the default: nothing to export
    leaf = dcache / FOLDER / "default" / "0.0.0" / COMMIT
    assert leaf.is_dir() and not leaf.is_symlink()
    assert os.readlink(leaf / "tiny_set-train.arrow") == f"{prep}/default/0.0.0/{COMMIT}/tiny_set-train.arrow"

    got = load(env, home)
    assert got["train"] == ["a", "bb", "ccc"] and got["test"] == ["t"]
    assert got["extra"] == ["x", "y"] and got["splits"] == ["test", "train"]
    assert got["mapped"] == [1, 2, 3]
    assert [os.path.dirname(f) for f in got["map_cache"]] == [str(leaf)]
    assert (tree(Path(prep)), tree(Path(snap))) == before_store

    # The hub side: the dataset's snapshot is linked as usual.
    assert (ws.hub / "datasets--Org--TinySet" / "snapshots" / COMMIT).is_symlink()

    assert ws.run("deactivate", "--profile", "p1", "--state-dir", str(ws.state)).code == 0
    after = tree(dcache)
    for rel, what in before_user.items():  # directories gained or lost our names only
        assert after[rel][0] == what[0] and (what[0] == "dir" or after[rel] == what), rel
    # Our links are gone; the commit dir stays only for the user's map cache file.
    assert sorted(p.name for p in leaf.iterdir()) == [os.path.basename(got["map_cache"][0])]
    assert not (dcache / FOLDER / "extra").exists()
    assert not list((ws.state / "datasets").glob("*.json"))


def test_explicit_datasets_cache_dir_is_exported(ws: Workspace, prepared: tuple[str, str]) -> None:
    snap, prep = prepared
    dcache = ws.root / "dcache"
    m = manifest({"tiny": dataset_model(snap, prep)}, profile="p2")
    m["datasetsCacheDir"] = str(dcache)
    res = ws.activate(m)
    assert res.code == 0, res.stderr
    assert res.env()["HF_DATASETS_CACHE"] == str(dcache)
    assert load(res.env(), ws.root / "home")["extra"] == ["x", "y"]


def test_users_own_entry_blocks_and_is_kept(ws: Workspace, tmp_path: Path) -> None:
    """A directory of the user's where our commit dir goes: exit 1, the offline
    variables withheld, the entry untouched by activation and deactivation."""
    prep = nix_store_add(Path(fake_prepared(tmp_path / "prep-a")))
    snap = nix_store_add(plain_snapshot(tmp_path / "snap-a"))
    dcache = ws.root / "home" / ".cache" / "huggingface" / "datasets"
    theirs = dcache / FOLDER / "default" / "0.0.0" / COMMIT
    theirs.mkdir(parents=True)
    (theirs / "dataset_info.json").write_text("theirs")
    before = tree(dcache)
    res = ws.activate(manifest({"tiny": dataset_model(snap, prep)}, profile="p3"))
    assert res.code == 1
    assert str(theirs) in res.stderr and "HF_DATASETS_OFFLINE" not in res.env()
    assert tree(dcache) == before | {k: v for k, v in tree(dcache).items() if k == ".model-repo.lock"}
    ws.run("deactivate", "--profile", "p3", "--state-dir", str(ws.state))
    assert {k: v for k, v in tree(dcache).items() if k in before} == before


def test_manifest_rules_for_prepared(ws: Workspace, tmp_path: Path) -> None:
    snap = nix_store_add(plain_snapshot(tmp_path / "snap-m"))
    bad = dataset_model(snap, snap)
    bad["repoType"] = "model"
    res = ws.activate(manifest({"tiny": bad}))
    assert res.code == 2 and "prepared is set but repoType is not 'dataset'" in res.stderr
    res = ws.activate(manifest({"tiny": dataset_model(snap, "/tmp/prepared")}))
    assert res.code == 2 and "models.'tiny'.prepared" in res.stderr
    m = manifest({"tiny": dataset_model(snap, snap)})
    m["datasetsCacheDir"] = "relative/dir"
    res = ws.activate(m)
    assert res.code == 2 and "datasetsCacheDir" in res.stderr


def test_two_profiles_co_own_and_drop_in_any_order(tmp_path: Path) -> None:
    prep = fake_prepared(tmp_path / "prep")
    want = [Prepared("tiny", REPO_ID, prep)]
    for order in (("a", "b"), ("b", "a")):
        cache, state = tmp_path / f"c-{order[0]}", tmp_path / f"s-{order[0]}"
        cache.mkdir()
        for profile in ("a", "b"):
            res = datasets_link.sync(str(cache), profile, str(state), want)
            assert not res.problems
        full = shape(cache)
        assert datasets_link.sync(str(cache), order[0], str(state), []).problems == []
        assert shape(cache) == full  # the other profile still links it
        assert datasets_link.sync(str(cache), order[1], str(state), []).problems == []
        assert shape(cache) == {".model-repo.lock": "file:"}


def test_a_changed_link_is_kept(tmp_path: Path) -> None:
    """Someone replaces one of our links: the drop keeps it (and its record)."""
    prep = fake_prepared(tmp_path / "prep")
    cache, state = tmp_path / "c", tmp_path / "s"
    cache.mkdir()
    datasets_link.sync(str(cache), "a", str(state), [Prepared("tiny", REPO_ID, prep)])
    link = cache / FOLDER / "default" / "0.0.0" / COMMIT / "tiny_set-train.arrow"
    link.unlink()
    link.symlink_to("/elsewhere")
    res = datasets_link.sync(str(cache), "a", str(state), [])
    assert res.problems and os.readlink(link) == "/elsewhere"


class Fault(Exception):
    pass


def test_interrupted_runs_converge(tmp_path: Path) -> None:
    """A fault before the k-th write of a link run and of a drop run, for every k: the
    next run converges to the same result, and the final drop leaves only the user's."""
    prep = fake_prepared(tmp_path / "prep")
    want = [Prepared("tiny", REPO_ID, prep)]
    ref_cache, ref_state = tmp_path / "ref", tmp_path / "ref-state"
    ref_cache.mkdir()
    datasets_link.sync(str(ref_cache), "a", str(ref_state), want)
    linked = shape(ref_cache)
    k = 0
    while True:
        cache, state = tmp_path / f"c{k}", tmp_path / f"s{k}"
        (cache / FOLDER).mkdir(parents=True)  # the user's folder, already there
        (cache / FOLDER / "mine").write_text("mine")
        calls = []

        def hook(what: str, k: int = k) -> None:
            calls.append(what)
            if len(calls) == k + 1:
                raise Fault(what)

        try:
            datasets_link.sync(str(cache), "a", str(state), want, before_write=hook)
            faulted = False
        except Fault:
            faulted = True
        datasets_link.sync(str(cache), "a", str(state), want)
        assert shape(cache) == linked | {f"{FOLDER}/mine": "file:mine"}
        # and a drop interrupted at the same step
        calls.clear()
        try:
            datasets_link.sync(str(cache), "a", str(state), [], before_write=hook)
        except Fault:
            pass
        datasets_link.sync(str(cache), "a", str(state), [])
        assert shape(cache) == {".model-repo.lock": "file:", FOLDER: "dir",
                                f"{FOLDER}/mine": "file:mine"}
        if not faulted:
            break
        k += 1
    assert k >= 5


def test_prepare_rejects_bad_input(tmp_path: Path) -> None:
    need_datasets()
    from activate.datasets_prepare import PrepareError, prepare_dataset

    snap = write_snapshot(tmp_path / "snap")
    with pytest.raises(PrepareError, match="not a commit"):
        prepare_dataset(str(snap), REPO_ID, "main", str(tmp_path / "o1"))
    with pytest.raises(PrepareError, match="config 'nope' is not in the dataset card"):
        prepare_dataset(str(snap), REPO_ID, COMMIT, str(tmp_path / "o2"), configs=["nope"])
    (tmp_path / "o3").mkdir()
    with pytest.raises(PrepareError, match="exists"):
        prepare_dataset(str(snap), REPO_ID, COMMIT, str(tmp_path / "o3"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o3", "snap"]
