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
from conftest import Workspace, assert_serves, manifest, nix_store_add, shape, tree

REPO_ID = "Org/TinySet"
FOLDER = "Org___tiny_set"
COMMIT = "5d7f3c2a1b0e9d8c7b6a5f4e3d2c1b0a9f8e7d6c"
DATASETS_MISSING = ("needs the `datasets` package: pip install 'datasets>=3.0' (the "
                    "floor in pyproject.toml's datasets extra), or run scripts/setup.sh, "
                    "which installs it")


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
    """``(snapshot store path, prepared store path)``, both real store paths; prepared
    by ``model-repo prepare-dataset`` (what lib/datasets.nix's builder runs) from the
    read-only store path, with HOME unwritable (as in the Nix sandbox)."""
    need_datasets()
    base = tmp_path_factory.mktemp("ds")
    snap = nix_store_add(write_snapshot(base / "tiny-set"))
    out = base / "tiny-set-prepared"
    res = prepare_cli(snap, str(out))
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == [f"default/0.0.0/{COMMIT}", f"extra/0.0.0/{COMMIT}"]
    assert not [p for p in out.rglob("*") if p.name.endswith(".lock")]
    again = base / "again"
    assert prepare_cli(snap, str(again)).returncode == 0
    assert tree_bytes(again) == tree_bytes(out)  # the same bytes every build
    return snap, nix_store_add(out)


def prepare_cli(snap: str, out: str, *extra: str) -> subprocess.CompletedProcess:
    env = {"PATH": os.environ.get("PATH", ""), "HOME": "/homeless-shelter",
           "PYTHONPATH": os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", "activate", "prepare-dataset", snap,
                           "--repo-id", REPO_ID, "--revision", COMMIT, "--out", out, *extra],
                          env=env, capture_output=True, text=True, timeout=300)


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


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
# the user's own clean-up of map caches: removes its cache-*.arrow, never our links
dd["train"].map(lambda r: {"m": 0})
out["cleaned"] = dd["train"].cleanup_cache_files()
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
    assert got["mapped"] == [1, 2, 3] and got["cleaned"] == 1
    assert [os.path.dirname(f) for f in got["map_cache"]] == [str(leaf)]
    assert sorted(p.name for p in leaf.iterdir() if p.is_symlink()) == [
        "dataset_info.json", "tiny_set-test.arrow", "tiny_set-train.arrow"]
    assert (tree(Path(prep)), tree(Path(snap))) == before_store

    # The hub side: the dataset's snapshot is linked as usual (the layout rule's form).
    assert_serves(ws.hub / "datasets--Org--TinySet" / "snapshots" / COMMIT, snap)

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
    (theirs / "cache-0123.arrow").write_text("their map cache")
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
    """Someone replaces one of our links: the drop keeps it, says so, and forgets it."""
    prep = fake_prepared(tmp_path / "prep")
    cache, state = tmp_path / "c", tmp_path / "s"
    cache.mkdir()
    datasets_link.sync(str(cache), "a", str(state), [Prepared("tiny", REPO_ID, prep)])
    link = cache / FOLDER / "default" / "0.0.0" / COMMIT / "tiny_set-train.arrow"
    link.unlink()
    link.symlink_to("/elsewhere")
    res = datasets_link.sync(str(cache), "a", str(state), [])
    assert os.readlink(link) == "/elsewhere" and not res.problems
    assert any("not ours" in line for line in res.done)
    assert not datasets_link.has_state(str(state), "a")


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
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(PrepareError, match="datasets cannot read"):
        prepare_dataset(str(empty), REPO_ID, COMMIT, str(tmp_path / "o4"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "o3", "snap"]
    res = prepare_cli(str(snap), str(tmp_path / "o5"), "--config", "nope")
    assert res.returncode == 2 and "config 'nope' is not in the dataset card" in res.stderr
    assert not (tmp_path / "o5").exists()


def test_prepare_dataset_derivation_builds_for_real(ws: Workspace, tmp_path: Path) -> None:
    """lib/datasets.nix's prepareDataset, built with nix-build (the stub runCommand: a
    real derivation over /bin/sh, as nixpkgs' runs its script), with this Python (and
    the real datasets) standing in for pkgs.python3.withPackages: the output is what
    `model-repo prepare-dataset` writes, the activator links it, load_dataset reads it."""
    need_datasets()
    import shutil

    from nixeval import lib_expr, missing_input, nix_string

    if shutil.which("nix-build") is None:
        missing_input("nix-build not found: install Debian's nix-bin (apt-get install -y nix-bin)")
    snap = nix_store_add(write_snapshot(tmp_path / "tiny-set"))
    # A python for the builder: this interpreter with the worktree on PYTHONPATH.
    py = tmp_path / "python-env"
    (py / "bin").mkdir(parents=True)
    root = Path(__file__).resolve().parent.parent
    (py / "bin" / "python").write_text(
        f"#!/bin/sh\nPYTHONPATH={root} exec {sys.executable} \"$@\"\n")
    (py / "bin" / "python").chmod(0o755)
    py_path = nix_store_add(py)
    expr = (f"let lib = {lib_expr()}; ds = import ./lib/datasets.nix {{ inherit lib; }}; "
            "pkgs = import ./tests/nix/stubs/pkgs.nix { inherit lib; }; in "
            f"ds.prepareDataset pkgs {{ snapshot = builtins.storePath {nix_string(snap)}; "
            f"repoId = {nix_string(REPO_ID)}; revision = {nix_string(COMMIT)}; "
            f"configs = [ \"extra\" ]; python = builtins.storePath {nix_string(py_path)}; }}")
    res = subprocess.run(["nix-build", "--no-out-link", "--option", "substituters", "",
                          "-E", expr], cwd=root, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    out = res.stdout.strip().splitlines()[-1]
    assert out.endswith("-Org-TinySet-datasets-prepared")
    assert sorted(str(p.relative_to(out)) for p in Path(out).rglob("*") if p.is_file()) == [
        f"extra/0.0.0/{COMMIT}/dataset_info.json", f"extra/0.0.0/{COMMIT}/tiny_set-train.arrow"]
    m = manifest({"tiny": dataset_model(snap, out)}, profile="nix")
    act = ws.activate(m)
    assert act.code == 0, act.stderr
    code = ("import datasets, sys; print(datasets.load_dataset(sys.argv[1], split='train')[:]['q'])")
    env = {"HOME": str(ws.root / "home"), **act.env()}
    got = subprocess.run([sys.executable, "-c", code, REPO_ID], env=env, capture_output=True,
                         text=True, timeout=300)
    assert got.returncode == 0 and got.stdout.strip() == "['x', 'y']", got.stderr[-2000:]


def test_prepare_dataset_rejects_bad_pins() -> None:
    from nixeval import lib_expr, nix_eval_error

    base = (f"let lib = {lib_expr()}; ds = import ./lib/datasets.nix {{ inherit lib; }}; "
            "pkgs = import ./tests/nix/stubs/pkgs.nix { inherit lib; }; in "
            "(ds.prepareDataset pkgs { snapshot = \"/x\"; python = \"/p\"; ")
    err = nix_eval_error(base + f"repoId = \"{REPO_ID}\"; revision = \"main\"; }}).drvPath")
    assert "revision \"main\" is not a commit" in err
    err = nix_eval_error(base + f"repoId = \"a--b/c\"; revision = \"{COMMIT}\"; }}).drvPath")
    assert "repoId \"a--b/c\" is not a Hub repo id" in err


def _dataset_module_model(enable: bool = True, repo_type: str = "dataset") -> str:
    from nixeval import hf_model

    return hf_model(REPO_ID, huggingface={"repoType": repo_type},
                    integration={"datasets": {"enable": enable, "configs": ["default"]}})


def _check_prepared_manifest(m: dict, datasets_dir: str | None) -> None:
    from activate.manifest import validate_manifest

    entry = m["models"]["tiny"]
    assert entry["repoType"] == "dataset"
    assert entry["prepared"].endswith("-Org-TinySet-datasets-prepared")
    assert m.get("datasetsCacheDir") == datasets_dir
    validate_manifest(m)  # what the activator reads


def test_home_manager_module_prepares_and_exports() -> None:
    from nixeval import hm_eval

    r = hm_eval(f"""{{ programs.model-repo = {{ enable = true;
        integration.huggingface.cacheDir = "/home/alice/.hf";
        models.tiny = {_dataset_module_model()}; }}; }}""")
    assert r["failedAssertions"] == []
    _check_prepared_manifest(r["manifest"], "/home/alice/.hf/datasets")
    env = r["sessionVariables"]
    assert env["HF_DATASETS_CACHE"] == "/home/alice/.hf/datasets"
    assert env["HF_DATASETS_OFFLINE"] == "1" and env["HF_HUB_OFFLINE"] == "1"
    # Without cacheDir the activator resolves the datasets cache as datasets does.
    r = hm_eval(f"{{ programs.model-repo = {{ enable = true; models.tiny = {_dataset_module_model()}; }}; }}")
    _check_prepared_manifest(r["manifest"], None)
    assert "HF_DATASETS_CACHE" not in r["sessionVariables"]


def test_devenv_module_prepares_and_exports() -> None:
    from nixeval import devenv_eval

    r = devenv_eval(f"{{ services.model-repo = {{ enable = true; models.tiny = {_dataset_module_model()}; }}; }}")
    assert r["failedAssertions"] == []
    datasets_dir = r["manifest"]["datasetsCacheDir"]
    assert datasets_dir.startswith("/home/alice/project/") and datasets_dir.endswith("/datasets")
    _check_prepared_manifest(r["manifest"], datasets_dir)
    assert r["env"]["HF_DATASETS_CACHE"] == datasets_dir
    assert r["env"]["HF_DATASETS_OFFLINE"] == "1"


def test_nixos_module_prepares_and_exports() -> None:
    from nixeval import nixos_eval

    r = nixos_eval(f"{{ services.model-repo = {{ enable = true; models.tiny = {_dataset_module_model()}; }}; }}")
    _check_prepared_manifest(r["manifest"], "/var/cache/huggingface/datasets")
    assert "d /var/cache/huggingface/datasets 2775 root model-repo - -" in r["tmpfiles"]
    assert r["environment"]["HF_DATASETS_CACHE"] == "/var/cache/huggingface/datasets"
    assert r["environment"]["HF_DATASETS_OFFLINE"] == "1"
    # Nothing prepared: no datasets entries at all.
    r = nixos_eval(f"{{ services.model-repo = {{ enable = true; models.tiny = {_dataset_module_model(False)}; }}; }}")
    assert "prepared" not in r["manifest"]["models"]["tiny"]
    assert "datasetsCacheDir" not in r["manifest"] and "HF_DATASETS_CACHE" not in r["environment"]
    assert len(r["tmpfiles"]) == 2


def test_module_refuses_datasets_on_a_model() -> None:
    from nixeval import hm_eval

    r = hm_eval(f"{{ programs.model-repo = {{ enable = true; models.tiny = {_dataset_module_model(True, 'model')}; }}; }}")
    assert any("integration.datasets.enable is set, but the model is not a Hub dataset" in m
               for m in r["failedAssertions"])


def test_group_shared_cache_gets_group_writable_dirs(tmp_path: Path) -> None:
    """In a 2775 cache (the NixOS module's), every directory we make is group rwx with
    setgid whatever the umask, so the group's users can write map caches there."""
    prep = fake_prepared(tmp_path / "prep")
    cache = tmp_path / "shared"
    cache.mkdir()
    cache.chmod(0o2775)
    old = os.umask(0o022)
    try:
        res = datasets_link.sync(str(cache), "nixos", str(tmp_path / "s"),
                                 [Prepared("tiny", REPO_ID, prep)])
    finally:
        os.umask(old)
    assert not res.problems
    dirs = [p for p in cache.rglob("*") if p.is_dir() and not p.is_symlink()]
    assert len(dirs) == 4
    for d in dirs:
        assert d.stat().st_mode & 0o2070 == 0o2070, (d, oct(d.stat().st_mode))
    private = tmp_path / "private"
    private.mkdir()
    private.chmod(0o755)
    old = os.umask(0o022)
    try:
        datasets_link.sync(str(private), "hm", str(tmp_path / "s2"),
                           [Prepared("tiny", REPO_ID, prep)])
    finally:
        os.umask(old)
    assert (private / FOLDER).stat().st_mode & 0o070 == 0o050


def test_env_command_withholds_offline_until_linked(ws: Workspace, tmp_path: Path) -> None:
    """`model-repo env` changes nothing and exports the offline variables only when the
    prepared dataset is already linked."""
    prep = nix_store_add(Path(fake_prepared(tmp_path / "prep-env")))
    snap = nix_store_add(plain_snapshot(tmp_path / "snap-env"))
    path = ws.write_manifest(manifest({"tiny": dataset_model(snap, prep)}, profile="pe"))
    args = ("--manifest", str(path), "--cache-dir", str(ws.hub), "--state-dir", str(ws.state),
            "--format", "json")
    dcache = ws.root / "home" / ".cache" / "huggingface" / "datasets"
    before = ws.run("env", *args)
    assert before.code == 0 and "HF_DATASETS_OFFLINE" not in before.env()
    assert not dcache.exists()
    assert ws.run("activate", *args).code == 0
    assert ws.run("env", *args).env()["HF_DATASETS_OFFLINE"] == "1"


def test_gc_roots_keep_the_prepared_path(ws: Workspace, tmp_path: Path) -> None:
    prep = nix_store_add(Path(fake_prepared(tmp_path / "prep-gc")))
    snap = nix_store_add(plain_snapshot(tmp_path / "snap-gc"))
    res = ws.activate(manifest({"tiny": dataset_model(snap, prep)}, profile="gc"), "--gc-roots")
    assert res.code == 0, res.stderr
    rooted = {os.readlink(p) for p in (ws.state / "gcroots").rglob("*") if p.is_symlink()}
    assert {snap, prep} <= rooted
    assert ws.run("deactivate", "--profile", "gc", "--state-dir", str(ws.state)).code == 0
    assert not [p for p in (ws.state / "gcroots").rglob("*") if p.is_symlink()]


def test_planted_symlink_blocks_and_nothing_is_written_through_it(tmp_path: Path) -> None:
    """Another user of a shared cache replaces a folder on our way with a symlink to a
    directory of theirs (or of root's): the dataset is blocked, nothing is created or
    removed through the link."""
    prep = fake_prepared(tmp_path / "prep")
    want = [Prepared("tiny", REPO_ID, prep)]
    cache, state, elsewhere = tmp_path / "c", tmp_path / "s", tmp_path / "elsewhere"
    cache.mkdir()
    elsewhere.mkdir()
    (cache / FOLDER).symlink_to(elsewhere)
    res = datasets_link.sync(str(cache), "a", str(state), want)
    assert res.blocked == {"tiny"} and list(elsewhere.iterdir()) == []
    # Swapped in after we linked: the drop removes nothing through it either.
    (cache / FOLDER).unlink()
    assert not datasets_link.sync(str(cache), "a", str(state), want).problems
    real = cache / "moved"
    (cache / FOLDER).rename(real)
    (cache / FOLDER).symlink_to(elsewhere)
    (elsewhere / "default").mkdir()
    res = datasets_link.sync(str(cache), "a", str(state), [])
    assert (elsewhere / "default").is_dir() and (cache / FOLDER).is_symlink()
    assert res.problems  # what it could not check stays recorded


def test_unprivileged_user_activates_and_loads(prepared: tuple[str, str]) -> None:
    """The user (not root) runs the activator for its own caches and loads by repo id
    offline with only the printed environment; map writes into its own cache."""
    import pwd
    import shutil
    import tempfile

    name = os.environ.get("MODEL_REPO_TEST_USER") or "model-repo-test"
    if os.geteuid() != 0 or shutil.which("runuser") is None:
        pytest.skip(f"needs to run as root with runuser on PATH (apt-get install -y util-linux) "
                    f"to start the loader as the unprivileged user {name}")
    try:
        pw = pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", name], capture_output=True)
        pw = pwd.getpwnam(name)
    assert pw.pw_uid != 0
    snap, prep = prepared
    base = Path(tempfile.mkdtemp(prefix="model-repo-ds-", dir="/tmp"))
    try:
        base.chmod(0o755)
        home = base / "home"
        home.mkdir()
        os.chown(home, pw.pw_uid, pw.pw_gid)
        m = base / "manifest.json"
        m.write_text(json.dumps(manifest({"tiny": dataset_model(snap, prep)}, profile="u")))
        root = Path(__file__).resolve().parent.parent

        def as_user(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
            extra = [f"{k}={v}" for k, v in (env or {}).items()]
            return subprocess.run(["runuser", "-u", name, "--", "env", "-i", "PATH=/usr/bin:/bin",
                                   f"HOME={home}", f"PYTHONPATH={root}", *extra, sys.executable,
                                   *args], capture_output=True, text=True, timeout=300)

        act = as_user("-m", "activate", "activate", "--manifest", str(m), "--format", "json")
        assert act.returncode == 0, act.stderr
        env = json.loads(act.stdout)
        got = as_user("-c", LOADER, REPO_ID, env=env)
        assert got.returncode == 0, got.stderr[-3000:]
        out = json.loads(got.stdout.splitlines()[-1])
        assert out["train"] == ["a", "bb", "ccc"] and out["extra"] == ["x", "y"]
        cache_file = Path(out["map_cache"][0])
        assert str(cache_file).startswith(str(home / ".cache" / "huggingface" / "datasets"))
        assert cache_file.stat().st_uid == pw.pw_uid
        assert as_user("-m", "activate", "deactivate", "--profile", "u").returncode == 0
        assert cache_file.exists()  # the user's own map cache survives the drop
    finally:
        shutil.rmtree(base, ignore_errors=True)


# --- the threat model's actors, in sequences ------------------------------------------

from hypothesis import HealthCheck, Phase, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule  # noqa: E402

OTHER_REPO = "Org/OtherSet"


class DatasetsCampaign(RuleBasedStateMachine):
    """Two profiles linking one or two prepared datasets into one datasets cache,
    interrupted before any write, dropping in any order; the user plants files where
    our entries go and runs ``map`` (a ``cache-*.arrow`` in a linked commit dir).
    Always: the user's files survive byte for byte, the prepared dirs (the store) are
    unchanged; after a clean run every wanted link is in place unless a file of the
    user's is on its way; once every profile dropped cleanly, only the user's files,
    the folders holding them and our lock remain."""

    def __init__(self) -> None:
        super().__init__()
        import tempfile

        self.root = Path(tempfile.mkdtemp(prefix="model-repo-ds-campaign-"))
        self.cache, self.state = self.root / "cache", self.root / "state"
        self.cache.mkdir()
        self.preps = {
            "one": Prepared("one", REPO_ID, fake_prepared(self.root / "prep-one")),
            "two": Prepared("two", OTHER_REPO, fake_prepared(self.root / "prep-two", COMMIT[::-1])),
        }
        self.store_before = {k: tree(Path(p.path)) for k, p in self.preps.items()}
        self.wants: dict[str, frozenset[str] | None] = {"a": frozenset(), "b": frozenset()}
        self.user: dict[str, str] = {}  # relative path -> content

    def _entries(self, name: str) -> list[tuple[str, str, str | None, str]]:
        return datasets_link.wanted([self.preps[name]])[0]

    def _sync(self, profile: str, names: frozenset[str], fault: int | None) -> None:
        calls = []

        def hook(what: str) -> None:
            calls.append(what)
            if fault is not None and len(calls) == fault + 1:
                raise Fault(what)

        try:
            datasets_link.sync(str(self.cache), profile, str(self.state),
                               [self.preps[n] for n in sorted(names)], before_write=hook)
            self.wants[profile] = names
        except Fault:
            self.wants[profile] = None  # unknown until the next clean run

    @rule(profile=st.sampled_from(["a", "b"]),
          names=st.frozensets(st.sampled_from(["one", "two"])),
          fault=st.none() | st.integers(0, 8))
    def activate(self, profile: str, names: frozenset[str], fault: int | None) -> None:
        self._sync(profile, names, fault)

    @rule(profile=st.sampled_from(["a", "b"]), fault=st.none() | st.integers(0, 8))
    def drop(self, profile: str, fault: int | None) -> None:
        self._sync(profile, frozenset(), fault)

    @rule(name=st.sampled_from(["one", "two"]), index=st.integers(0, 6))
    def user_plants(self, name: str, index: int) -> None:
        """The user's own file where one of our entries goes (if free)."""
        entries = self._entries(name)
        rel = entries[index % len(entries)][0]
        path = self.cache / rel
        if os.path.lexists(path) or any(
                (self.cache / p).is_symlink() or (self.cache / p).is_file()
                for p in [rel.rsplit("/", i)[0] for i in range(1, rel.count("/") + 1)]):
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"user {rel}")
        self.user[rel] = f"user {rel}"

    @rule(name=st.sampled_from(["one", "two"]))
    def user_maps(self, name: str) -> None:
        """Dataset.map's cache file in a linked commit dir."""
        leaf = [e[0] for e in self._entries(name) if e[1] == "dir"][-1]
        path = self.cache / leaf
        if path.is_dir() and not path.is_symlink() and (path / "dataset_info.json").is_symlink():
            rel = f"{leaf}/cache-{len(self.user)}.arrow"
            (self.cache / rel).write_text("map")
            self.user[rel] = "map"

    @invariant()
    def users_and_store_intact(self) -> None:
        for rel, content in self.user.items():
            assert (self.cache / rel).read_text() == content, rel
        assert {k: tree(Path(p.path)) for k, p in self.preps.items()} == self.store_before

    @invariant()
    def wanted_links_in_place(self) -> None:
        for names in self.wants.values():
            for name in names or ():
                entries = self._entries(name)
                if any(rel in self.user for rel, *_ in entries):
                    continue  # a file of the user's on its way blocks the dataset
                for rel, kind, value, _ in entries:
                    path = self.cache / rel
                    if kind == "link":
                        assert os.readlink(path) == value, rel
                    else:
                        assert path.is_dir() and not path.is_symlink(), rel

    @invariant()
    def all_dropped_leaves_only_the_users(self) -> None:
        if any(w != frozenset() for w in self.wants.values()):
            return
        keep = {".model-repo.lock"} | set(self.user)
        for rel in self.user:
            parts = rel.split("/")
            keep |= {"/".join(parts[:i]) for i in range(1, len(parts))}
        left = {str(p.relative_to(self.cache)) for p in self.cache.rglob("*")}
        assert left <= keep, sorted(left - keep)
        assert not list((self.state / "datasets").glob("*.json")) if (self.state / "datasets").exists() else True

    def teardown(self) -> None:
        import shutil

        shutil.rmtree(self.root, ignore_errors=True)


DatasetsCampaign.TestCase.settings = settings(
    max_examples=int(os.environ.get("MODEL_REPO_DS_CAMPAIGN_EXAMPLES", "60")),
    stateful_step_count=12, deadline=None, derandomize=True, database=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],
    suppress_health_check=[HealthCheck.too_slow])
test_datasets_campaign = DatasetsCampaign.TestCase


def test_a_new_datasets_cache_takes_the_links_with_it(ws: Workspace, tmp_path: Path) -> None:
    """HF_DATASETS_CACHE changes between activations: the links move to the new cache
    and the old one is emptied of ours; a missing old cache keeps its state."""
    prep = nix_store_add(Path(fake_prepared(tmp_path / "prep-mv")))
    snap = nix_store_add(plain_snapshot(tmp_path / "snap-mv"))
    path = ws.write_manifest(manifest({"tiny": dataset_model(snap, prep)}, profile="mv"))
    args = ("activate", "--manifest", str(path), "--cache-dir", str(ws.hub),
            "--state-dir", str(ws.state), "--format", "json")
    old, new = ws.root / "old", ws.root / "new"
    home = str(ws.root / "home")
    assert ws.run(*args, environ={"HOME": home, "HF_DATASETS_CACHE": str(old)}).code == 0
    assert (old / FOLDER / "default" / "0.0.0" / COMMIT / "dataset_info.json").is_symlink()
    res = ws.run(*args, environ={"HOME": home, "HF_DATASETS_CACHE": str(new)})
    assert res.code == 0, res.stderr
    assert (new / FOLDER / "default" / "0.0.0" / COMMIT / "dataset_info.json").is_symlink()
    assert sorted(p.name for p in old.iterdir()) == [".model-repo.lock"]
    assert [c for _, c in datasets_link.profile_states(str(ws.state), "mv")] == [str(new)]
    assert ws.run("deactivate", "--profile", "mv", "--state-dir", str(ws.state)).code == 0
    assert sorted(p.name for p in new.iterdir()) == [".model-repo.lock"]
    assert not datasets_link.has_state(str(ws.state), "mv")


def test_a_newer_datasets_state_is_refused(ws: Workspace, tmp_path: Path) -> None:
    """A rollback: this activator meets a datasets state of a newer version: exit 3,
    nothing changed in the datasets cache, the state kept."""
    prep = nix_store_add(Path(fake_prepared(tmp_path / "prep-new")))
    snap = nix_store_add(plain_snapshot(tmp_path / "snap-new"))
    m = manifest({"tiny": dataset_model(snap, prep)}, profile="nv")
    assert ws.activate(m).code == 0
    ((spath, cache),) = datasets_link.profile_states(str(ws.state), "nv")
    data = json.loads(Path(spath).read_text())
    data["version"] = 2
    Path(spath).write_text(json.dumps(data))
    before = tree(Path(cache))
    res = ws.run("deactivate", "--profile", "nv", "--state-dir", str(ws.state))
    assert res.code == 3 and "upgrade model-repo" in res.stderr
    assert tree(Path(cache)) == before and json.loads(Path(spath).read_text())["version"] == 2
    res = ws.activate(manifest({}, profile="nv"))
    assert res.code == 3 and "upgrade model-repo" in res.stderr
    assert tree(Path(cache)) == before


def test_status_reports_the_datasets_links(ws: Workspace, tmp_path: Path) -> None:
    prep = nix_store_add(Path(fake_prepared(tmp_path / "prep-st")))
    snap = nix_store_add(plain_snapshot(tmp_path / "snap-st"))
    assert ws.activate(manifest({"tiny": dataset_model(snap, prep)}, profile="st")).code == 0
    res = ws.run("status", "--profile", "st", "--json", "--state-dir", str(ws.state))
    assert res.code == 0, res.stderr
    items = [i for i in json.loads(res.stdout) if "datasetsCacheDir" in i]
    assert len(items) == 1 and len(items[0]["entries"]) == 2
    assert {e["status"] for e in items[0]["entries"]} == {"ok"}
    link = Path(items[0]["entries"][0]["path"])
    link.unlink()
    res = ws.run("status", "--profile", "st", "--state-dir", str(ws.state))
    assert res.code == 1 and f"missing  link     {link}" in res.stdout
    assert "-> datasets cache " in res.stdout


def test_an_unreadable_datasets_state_blocks_only_that_cache(ws: Workspace, tmp_path: Path) -> None:
    """A corrupt datasets state: profiles without datasets activate as before; linking
    into a datasets cache refuses (exit 3: it cannot tell what that state owns)."""
    from conftest import model

    (ws.state / "datasets").mkdir(parents=True)
    (ws.state / "datasets" / ("0" * 32 + ".json")).write_text("{not json")
    plain = ws.activate(manifest({"m": model(nix_store_add(plain_snapshot(tmp_path / "m")))},
                                 profile="plain"))
    assert plain.code == 0, plain.stderr
    prep = nix_store_add(Path(fake_prepared(tmp_path / "prep-bad")))
    snap = nix_store_add(plain_snapshot(tmp_path / "snap-bad"))
    res = ws.activate(manifest({"tiny": dataset_model(snap, prep)}, profile="ds"))
    assert res.code == 3 and "is unreadable" in res.stderr


def test_group_member_loads_and_maps_from_a_system_cache(prepared: tuple[str, str]) -> None:
    """The NixOS layout: root activates into a 2775 datasets cache of a group (umask 022);
    a member of the group, not root, loads by repo id and its map cache lands in the
    commit dir root made (group rwx), the store untouched."""
    import grp
    import pwd
    import shutil
    import tempfile

    name = os.environ.get("MODEL_REPO_TEST_USER") or "model-repo-test"
    group = "model-repo-share"
    if os.geteuid() != 0 or shutil.which("runuser") is None:
        pytest.skip(f"needs to run as root with runuser on PATH (apt-get install -y util-linux) "
                    f"to act as the cache group's member {name}")
    try:
        pw = pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", name], capture_output=True)
        pw = pwd.getpwnam(name)
    try:
        gr = grp.getgrnam(group)
    except KeyError:
        subprocess.run(["groupadd", "--system", group], capture_output=True)
        gr = grp.getgrnam(group)
    if name not in gr.gr_mem:
        subprocess.run(["usermod", "-a", "-G", group, name], check=True, capture_output=True)
    snap, prep = prepared
    store_before = tree(Path(prep))
    base = Path(tempfile.mkdtemp(prefix="model-repo-ds-sys-", dir="/tmp"))
    try:
        base.chmod(0o755)
        dcache = base / "huggingface" / "datasets"
        dcache.mkdir(parents=True)
        for d in (dcache.parent, dcache):
            os.chown(d, 0, gr.gr_gid)
            d.chmod(0o2775)
        m = manifest({"tiny": dataset_model(snap, prep)}, profile="nixos",
                     cache_dir=str(base / "huggingface" / "hub"))
        m["datasetsCacheDir"] = str(dcache)
        (base / "m.json").write_text(json.dumps(m))
        root = Path(__file__).resolve().parent.parent
        code = ("import os, sys; os.umask(0o022); from activate.cli import main; "
                "sys.exit(main(sys.argv[1:]))")
        act = subprocess.run([sys.executable, "-c", code, "activate", "--manifest",
                              str(base / "m.json"), "--state-dir", str(base / "state"),
                              "--format", "json"], capture_output=True, text=True,
                             env={"PATH": "/usr/bin:/bin", "HOME": str(base), "PYTHONPATH": str(root)})
        assert act.returncode == 0, act.stderr
        env = json.loads(act.stdout)
        assert env["HF_DATASETS_CACHE"] == str(dcache)
        home = base / "home"
        home.mkdir()
        os.chown(home, pw.pw_uid, pw.pw_gid)
        extra = [f"{k}={v}" for k, v in env.items()]
        got = subprocess.run(["runuser", "-u", name, "--", "env", "-i", "PATH=/usr/bin:/bin",
                              f"HOME={home}", *extra, sys.executable, "-c", LOADER, REPO_ID],
                             capture_output=True, text=True, timeout=300)
        assert got.returncode == 0, got.stderr[-3000:]
        out = json.loads(got.stdout.splitlines()[-1])
        cache_file = Path(out["map_cache"][0])
        assert cache_file.parent == dcache / FOLDER / "default" / "0.0.0" / COMMIT
        assert cache_file.stat().st_uid == pw.pw_uid and cache_file.parent.stat().st_uid == 0
        assert tree(Path(prep)) == store_before
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_flake_check_of_datasets_evaluates() -> None:
    """tests/nix/checks.nix's datasets-load-offline (run by `nix flake check` in ./dev
    with real nixpkgs) evaluates; its prepare step is lib.prepareDataset, built for real
    above."""
    from nixeval import lib_expr, nix_eval

    expr = (f"let lib = {lib_expr()}; pkgs = import ./tests/nix/stubs/pkgs.nix {{ inherit lib; }}; "
            "act = { type = \"derivation\"; name = \"model-repo-0.1\"; "
            "outPath = \"/nix/store/00000000000000000000000000000000-model-repo-0.1\"; "
            "meta.mainProgram = \"model-repo\"; }; "
            "c = import ./tests/nix/checks.nix { inherit pkgs; system = \"x86_64-linux\"; "
            "nixpkgsLib = lib; pkgsPath = null; homeManager = null; devenv = null; "
            "activator = act; }; in c.datasets-load-offline.drvPath")
    assert str(nix_eval(expr)).endswith("-model-repo-check-datasets.drv")


def test_root_refuses_a_datasets_cache_behind_another_users_folder(ws: Workspace,
                                                                    tmp_path: Path) -> None:
    """Root never writes through a folder another user owns (they could swap it for a
    link anywhere): a datasets cache under one is refused, exit 3, nothing written."""
    import pwd

    name = os.environ.get("MODEL_REPO_TEST_USER") or "model-repo-test"
    if os.geteuid() != 0:
        pytest.skip("needs to run as root (sudo bash scripts/test.sh): the rule it tests "
                    "applies to root, refusing a folder of another user on the cache's way")
    try:
        pw = pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", name], capture_output=True)
        pw = pwd.getpwnam(name)
    theirs = ws.root / "theirs"
    (theirs / "datasets").mkdir(parents=True)
    os.chown(theirs, pw.pw_uid, pw.pw_gid)
    prep = nix_store_add(Path(fake_prepared(tmp_path / "prep-unsafe")))
    snap = nix_store_add(plain_snapshot(tmp_path / "snap-unsafe"))
    m = manifest({"tiny": dataset_model(snap, prep)}, profile="unsafe")
    m["datasetsCacheDir"] = str(theirs / "datasets")
    res = ws.activate(m)
    assert res.code == 3 and "datasets cache" in res.stderr, res.stderr
    assert list((theirs / "datasets").iterdir()) == []


def test_repeat_activation_restores_a_removed_datasets_link(ws: Workspace, tmp_path: Path) -> None:
    """The quick repeat path (a receipt) checks hub entries only: with prepared datasets
    no receipt is written, so a repeat run with the same manifest file puts back a
    datasets link the user removed."""
    prep = nix_store_add(Path(fake_prepared(tmp_path / "prep-rep")))
    snap = nix_store_add(plain_snapshot(tmp_path / "snap-rep"))
    path = ws.write_manifest(manifest({"tiny": dataset_model(snap, prep)}, profile="rep"))
    args = ("activate", "--manifest", str(path), "--cache-dir", str(ws.hub),
            "--state-dir", str(ws.state), "--format", "json")
    assert ws.run(*args).code == 0
    link = (ws.root / "home" / ".cache" / "huggingface" / "datasets" / FOLDER / "default"
            / "0.0.0" / COMMIT / "tiny_set-train.arrow")
    link.unlink()
    again = ws.run(*args)
    assert again.code == 0 and again.env()["HF_DATASETS_OFFLINE"] == "1"
    assert link.is_symlink()
    assert not list(ws.state.glob("receipt-*"))
