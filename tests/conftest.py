"""Shared fixtures: real store paths (Debian's nix-bin), manifests, the CLI in-process."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
from contextlib import contextmanager, redirect_stderr
from dataclasses import dataclass
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings
from nixeval import in_ci, missing_input

# Hypothesis: with CI=true every property test and state machine draws the same examples
# on every run and keeps no example database (a saved failure must not make one clone red
# and another green); locally the default profile explores new examples each run.
# `pytest --hypothesis-profile=ci` selects it by hand. Per-test @settings inherit it.
settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
settings.load_profile("ci" if in_ci() else "default")

ROOT = Path(__file__).resolve().parent.parent
TINY_BERT = ROOT / "examples" / "tiny-bert"
TINY_BERT_REPO = "model-repo-example/tiny-bert"
COMMIT_A = "a" * 40
COMMIT_B = "b" * 40

NIX_MISSING = "Debian's nix-bin is not installed (apt-get install -y nix-bin): no nix-store"

#: The first huggingface_hub whose cache tools keep to the hub cache (read from its
#: utils/_cache_manager.py and cli/cache.py, and run against this suite): before it,
#: ``delete_revisions`` resolves a snapshot's links fully (its blobs are the store files
#: a partial snapshot links to, deleted as root on a writable store), fails on a whole
#: snapshot with "Cannot call rmtree on a symbolic link", and ``hf cache rm`` takes no
#: file URI. README, "Supported dependency versions".
HUB_CACHE_TOOLS_SAFE = (1, 32, 0)


def _hub_version() -> tuple[str, tuple[int, ...]] | None:
    """The installed huggingface_hub's version (text, first three numbers), or None."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        text = version("huggingface_hub")
    except PackageNotFoundError:
        return None
    return text, tuple(int(n) for n in re.findall(r"\d+", text)[:3])


def _needs_safe_cache_tools() -> pytest.MarkDecorator:
    """Skip (before any fixture runs, so nothing is linked or deleted) unless the installed
    huggingface_hub's ``delete_revisions`` / ``hf cache rm`` keep the first link hop."""
    need = ".".join(map(str, HUB_CACHE_TOOLS_SAFE))
    found = _hub_version()
    reason = (f"needs huggingface_hub >= {need} (installed: "
              f"{found[0] if found else 'none'}): before {need} its delete_revisions "
              "resolves links fully and, as root, deletes the store files a partial snapshot "
              "links to (on a whole snapshot: 'Cannot call rmtree on a symbolic link'), and "
              "`hf cache rm` takes no file URI; run this test with .venv, not .venv-oldest")
    return pytest.mark.skipif(found is None or found[1] < HUB_CACHE_TOOLS_SAFE, reason=reason)


#: Marks a test that runs huggingface_hub's own cache tools on what the activator linked.
needs_safe_cache_tools = _needs_safe_cache_tools()


def need_nix() -> str:
    """Path of nix-store, or skip saying how to get it (with CI=true: fail)."""
    exe = shutil.which("nix-store")
    if not exe:
        missing_input(NIX_MISSING)
    return exe


#: Skip reasons that say a Nix tool or Nix test input is missing, whichever test file
#: wrote them (some call pytest.skip themselves rather than the helpers above).
_NIX_SKIP = re.compile(r"nix-bin|nix-(store|build|instantiate)\b.*not found|source tree missing|"
                       r"MODEL_REPO_TEST_(NIXPKGS_LIB|HOME_MANAGER|DEVENV)")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> object:
    """With CI=true, a test skipped for a missing Nix tool or Nix test input fails: CI
    must run every Nix test (the project's rule); other skips stay skips."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and in_ci() and isinstance(report.longrepr, tuple):
        reason = str(report.longrepr[2])
        if _NIX_SKIP.search(reason):
            report.outcome = "failed"
            report.longrepr = f"CI=true and a Nix test input is missing: {reason}"


_added: dict[str, str] = {}


def nix_store_add(directory: Path) -> str:
    """Add ``directory`` to the real Nix store (read-only, root-owned) and return the
    store path. Cached per directory for the session."""
    key = str(directory)
    if key not in _added:
        out = subprocess.run([need_nix(), "--add", key], check=True, capture_output=True,
                             text=True).stdout.strip()
        _added[key] = out
    return _added[key]


@pytest.fixture(scope="session")
def tiny_bert_store_path() -> str:
    """The bundled tiny BERT as a real store path."""
    return nix_store_add(TINY_BERT)


@pytest.fixture(scope="session")
def second_store_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Another real store path (a different flat model dir)."""
    d = tmp_path_factory.mktemp("second") / "second-model"
    d.mkdir()
    (d / "config.json").write_text('{"model_type": "bert", "note": "second"}\n')
    return nix_store_add(d)


def manifest(models: dict[str, dict], *, profile: str = "test", offline: bool = True,
             cache_dir: str | None = None, store_dir: str | None = None) -> dict:
    """A manifest dict (version 1)."""
    m: dict = {"version": 1, "profile": profile, "cacheDir": cache_dir, "offline": offline,
               "models": models}
    if store_dir is not None:
        m["storeDir"] = store_dir
    return m


def model(path: str, repo_id: str = TINY_BERT_REPO, revision: str = COMMIT_A, **extra) -> dict:
    return {"repoId": repo_id, "revision": revision, "path": path, **extra}


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str

    def env(self) -> dict[str, str]:
        return json.loads(self.stdout)


@dataclass
class Workspace:
    """A hub dir, a state dir and a place for manifests, plus the CLI in-process."""

    root: Path

    @property
    def hub(self) -> Path:
        return self.root / "hub"

    @property
    def state(self) -> Path:
        return self.root / "state"

    def write_manifest(self, data: dict, name: str = "manifest.json") -> Path:
        path = self.root / name
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, path)  # a new inode, as a new store path would be
        return path

    def run(self, *args: str, environ: dict[str, str] | None = None) -> CliResult:
        from activate.cli import main

        out = io.BytesIO()
        err = io.StringIO()

        stdout = io.TextIOWrapper(out, encoding="utf-8")
        old = sys.stdout
        sys.stdout = stdout
        try:
            with redirect_stderr(err):
                code = main(list(args), environ=environ if environ is not None else
                            {"HOME": str(self.root / "home")})
        finally:
            stdout.flush()
            sys.stdout = old
        return CliResult(code, out.getvalue().decode(), err.getvalue())

    def activate(self, data: dict, *extra: str, fmt: str = "json", name: str = "manifest.json",
                 **kw) -> CliResult:
        path = self.write_manifest(data, name)
        return self.run("activate", "--manifest", str(path), "--cache-dir", str(self.hub),
                        "--state-dir", str(self.state), "--format", fmt, *extra, **kw)


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    return Workspace(tmp_path)


def tree(root: Path) -> dict[str, tuple]:
    """Every entry under ``root`` with what it is (for 'nothing changed' checks):
    link target, file bytes, or 'dir', plus mtime_ns of files and dirs."""
    out: dict[str, tuple] = {}
    if not root.exists():
        return out
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            st = p.lstat()
            if p.is_symlink():
                out[rel] = ("link", os.readlink(p))
            elif p.is_dir():
                out[rel] = ("dir", st.st_mtime_ns, oct(st.st_mode))
            else:
                out[rel] = ("file", p.read_bytes(), st.st_mtime_ns, oct(st.st_mode))
    return out


_HOLDER = re.compile(r"(/refs/model-repo-kept/)[0-9a-f]{12}(?=/|$)")


def shape(root: Path, skip: str = ".locks") -> dict[str, str]:
    """Kind and content of every entry under ``root`` (no times): ``dir``,
    ``link:<target>``, ``file:<text>``; entries under ``skip`` are left out. The holder of
    a repo folder's kept refs (``refs/model-repo-kept/<holder>/``, a hash of the state
    file's path: activate.linking.kept_holder) reads as ``<holder>`` when it is the only
    one there, so caches made with state dirs at other paths compare equal."""
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for n in dirs + files:
            p = Path(dirpath) / n
            rel = str(p.relative_to(root))
            if rel == skip or rel.startswith(skip + "/"):
                continue
            if p.is_symlink():
                out[rel] = "link:" + os.readlink(p)
            elif p.is_dir():
                out[rel] = "dir"
            else:
                out[rel] = "file:" + p.read_bytes().decode("utf-8", "backslashreplace")
    holders: dict[str, set[str]] = {}
    for rel in out:
        if m := _HOLDER.search(rel):
            holders.setdefault(rel[:m.start()], set()).add(m.group(0))
    single = {folder for folder, found in holders.items() if len(found) == 1}
    return {(_HOLDER.sub(r"\1<holder>", rel) if (m := _HOLDER.search(rel))
             and rel[:m.start()] in single else rel): v for rel, v in out.items()}


WHOLE_SKIP = ("the whole-link layout needs a store mounted read-only (activate.tree.file_by_file): "
              "run as root with mount(8) (a read-only bind mount is made), or on a store that "
              "is mounted read-only (NixOS)")


@dataclass(frozen=True)
class WholeStore:
    """The store as a read-only mount, where the layout rule links whole snapshots
    (:func:`activate.tree.file_by_file` is False): ``store_dir`` and the store paths of
    the session's fixtures seen through it."""

    store_dir: str

    def path(self, store_path: str) -> str:
        """``store_path`` (of the real store) as a path under :attr:`store_dir`."""
        return os.path.join(self.store_dir, os.path.basename(store_path))

    def manifest(self, models: dict[str, dict], **kw) -> dict:
        """:func:`manifest` with ``storeDir`` this store."""
        return manifest(models, store_dir=self.store_dir, **kw)


@pytest.fixture(scope="session")
def whole_store(tiny_bert_store_path: str,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[WholeStore]:
    """A :class:`WholeStore`: the real store itself when it is mounted read-only, else a
    read-only bind mount of it (root and mount(8)), unmounted at the end of the session;
    skips with :data:`WHOLE_SKIP` when neither can be had."""
    store_dir = os.path.dirname(tiny_bert_store_path)
    if os.statvfs(store_dir).f_flag & os.ST_RDONLY:
        yield WholeStore(store_dir)
        return
    with read_only_bind(store_dir, tmp_path_factory.mktemp("ro-store"), WHOLE_SKIP) as mnt:
        yield WholeStore(str(mnt))


@contextmanager
def read_only_bind(source: str, mnt: Path, skip: str) -> Iterator[Path]:
    """``source`` bind-mounted read-only at the existing folder ``mnt`` (what NixOS's
    /nix/store is: the kernel refuses writes with EROFS, root's too), unmounted at the
    end (lazily if busy). Skips with ``skip`` and mount(8)'s words when not root, without
    mount(8), or when the kernel refuses (no CAP_SYS_ADMIN)."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip(reason=skip)
    bind = subprocess.run(["mount", "--bind", source, str(mnt)], capture_output=True,
                          text=True)
    if bind.returncode != 0:
        pytest.skip(reason=f"{skip} ({bind.stderr.strip()})")
    try:
        ro = subprocess.run(["mount", "-o", "remount,ro,bind", str(mnt)], capture_output=True,
                            text=True)
        if ro.returncode != 0:
            pytest.skip(reason=f"{skip} (remount,ro: {ro.stderr.strip()})")
        assert os.statvfs(mnt).f_flag & os.ST_RDONLY, f"{mnt} is not mounted read-only"
        yield mnt
    finally:
        if subprocess.run(["umount", str(mnt)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "--lazy", str(mnt)], check=True)


def assert_serves(snapshot: Path, store_path: str) -> None:
    """``snapshot`` is linked to ``store_path`` in the form the layout rule picks
    (:func:`activate.tree.file_by_file`): one link to it, or a real directory through
    which every file of it resolves to that file of it."""
    from activate.tree import file_by_file, store_files

    if not file_by_file(store_path):
        assert os.readlink(snapshot) == store_path
        return
    assert snapshot.is_dir() and not snapshot.is_symlink(), snapshot
    files = store_files(store_path)
    assert files, store_path
    for f in files:
        assert os.path.realpath(snapshot / f) == os.path.realpath(os.path.join(store_path, f)), f


# ------------------------------------------------- another user of a group-shared cache

DEFAULT_TEST_USER = "model-repo-test"
SHARE_GROUP = "model-repo-share"



@dataclass
class Member:
    """A real unprivileged member of the cache group ``model-repo-share`` (what a 2775
    NixOS cache lets write): ``name``, ``uid``, ``gid`` and ``group`` (the share group's
    gid)."""

    name: str
    uid: int
    gid: int
    group: int

    def run(self, *args: str, home: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """The CLI as this user (umask 002, as the NixOS module's services run)."""
        code = ("import os, sys; os.umask(0o002); from activate.cli import main; "
                "sys.exit(main(sys.argv[1:]))")
        return subprocess.run(
            ["runuser", "-u", self.name, "--", "env", "-i", "PATH=/usr/bin:/bin",
             f"HOME={home}", f"PYTHONPATH={ROOT}", sys.executable, "-c", code, *args],
            capture_output=True, text=True, timeout=timeout)

    def spawn(self, source: str, *args: str) -> subprocess.Popen[str]:
        """Python ``source`` run as this user in the background."""
        return subprocess.Popen(
            ["runuser", "-u", self.name, "--", "env", "-i", "PATH=/usr/bin:/bin",
             sys.executable, "-c", source, *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def cache_group_member() -> tuple[Member | None, str]:
    """The member (``MODEL_REPO_TEST_USER``, default ``model-repo-test``, created with
    useradd as the e2e tests do, added to the group ``model-repo-share``), or None and
    what to provide: root (runuser starts it), runuser (util-linux), the sources readable
    by it."""
    import grp
    import pwd

    name = os.environ.get("MODEL_REPO_TEST_USER") or DEFAULT_TEST_USER
    if os.geteuid() != 0:
        return None, (f"needs root: the tests run model-repo as root against the "
                      f"unprivileged user {name} (runuser); run pytest as root")
    if shutil.which("runuser") is None:
        return None, "runuser is missing: install util-linux (apt-get install -y util-linux)"
    try:
        pw = pwd.getpwnam(name)
    except KeyError:
        if name != DEFAULT_TEST_USER:
            return None, f"MODEL_REPO_TEST_USER={name} does not exist: create it or unset it"
        subprocess.run(["useradd", "--system", "--no-create-home", name], capture_output=True)
        pw = pwd.getpwnam(name)
    assert pw.pw_uid != 0, f"{name} must be an unprivileged user"
    try:
        grp.getgrnam(SHARE_GROUP)
    except KeyError:
        subprocess.run(["groupadd", "--system", SHARE_GROUP], capture_output=True)
    group = grp.getgrnam(SHARE_GROUP)
    if name not in group.gr_mem:
        subprocess.run(["usermod", "-a", "-G", SHARE_GROUP, name], check=True, capture_output=True)
    check = subprocess.run(["runuser", "-u", name, "--", "env", "-i", f"PYTHONPATH={ROOT}",
                            sys.executable, "-c", "import activate.cli"],
                           capture_output=True, text=True)
    if check.returncode != 0:
        return None, (f"{name} cannot run {sys.executable} with the sources in {ROOT} "
                      f"(make them readable by it): {check.stderr.strip()[-300:]}")
    return Member(name, pw.pw_uid, pw.pw_gid, group.gr_gid), ""
