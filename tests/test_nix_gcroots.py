"""GC roots from ``integration.mkLinkScript { gcRootsDir = …; }``: the generated POSIX
script, run for real, links the models and registers an indirect root per store path
(Nix lists it in ``nix-store --query --roots``); a second run changes nothing. No garbage
is collected: ``nix-store --gc --print-dead`` only lists."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from test_nix_lib import nix_eval, nix_string, sh, with_lib
from test_nix_lib import url_model  # noqa: F401


def test_mk_link_script_registers_gc_roots(url_model, tmp_path: Path) -> None:  # noqa: F811
    m = url_model
    script = nix_eval(with_lib(
        f"mr.integration.mkLinkScript {{ models = [ {m['url_nix']} {m['hf_nix']} ]; "
        f"gcRootsDir = {nix_string('$HOME/roots')}; }}",
        fetchResults=m["results"], realStorePaths=True))
    home = tmp_path / "home"
    env = {"HF_HOME": str(tmp_path / "hf"), "PATH": os.environ["PATH"]}
    p = sh(script, home, **env)
    assert p.returncode == 0 and p.stdout == "after=0\n", p.stderr
    roots = home / "roots"
    expected = {m["path"], m["hf_path"]}
    assert {os.readlink(roots / n) for n in os.listdir(roots)} == expected
    for path in expected:
        q = subprocess.run(["nix-store", "--query", "--roots", path], capture_output=True,
                           text=True, check=True).stdout
        assert str(roots / os.path.basename(path)) in q
    dead = subprocess.run(["nix-store", "--gc", "--print-dead"], capture_output=True,
                          text=True, check=True).stdout.split()
    assert not expected & set(dead)
    before = {n: (roots / n).lstat().st_ino for n in os.listdir(roots)}
    p = sh(script, home, **env)
    assert p.returncode == 0 and p.stdout == "after=0\n", p.stderr
    assert {n: (roots / n).lstat().st_ino for n in os.listdir(roots)} == before
    # Without nix-store on PATH the script says so and fails (links are still made).
    for n in os.listdir(roots):
        (roots / n).unlink()
    tools = tmp_path / "bin"
    tools.mkdir()
    for tool in ("mkdir", "ln", "mv", "rm", "readlink", "cat", "dirname"):
        found = shutil.which(tool)
        assert found, tool
        (tools / tool).symlink_to(found)
    p = sh(script, home, HF_HOME=str(tmp_path / "hf2"), PATH=str(tools))
    assert "after=1" in p.stdout and "nix-store not found" in p.stderr
    assert (tmp_path / "hf2/hub/models--model-repo-test--tiny/refs/main").exists()


# ------------------------------------- the activator's --gc-roots (issue 13, findings 9, 10)

def _fresh_store_path(tmp_path: Path, tag: str) -> tuple[Path, str]:
    from conftest import nix_store_add

    d = tmp_path / f"gc-{tag}"
    d.mkdir()
    (d / "config.json").write_text('{"gc": "%s"}' % os.urandom(8).hex())  # a fresh path
    return d, nix_store_add(d)


def _forget_added(d: Path, store: str) -> None:
    import conftest

    conftest._added.pop(str(d), None)
    subprocess.run(["nix-store", "--delete", store], capture_output=True)


def _rooted(store: str) -> bool:
    out = subprocess.run(["nix-store", "--gc", "--print-dead"], capture_output=True,
                         text=True, check=True).stdout
    return store not in set(out.split())


def test_a_blocked_model_still_exported_keeps_its_gc_root(ws, tmp_path: Path) -> None:
    """A model blocked by something in the way is still exported (MODEL_REPO_X names its
    store path), so its root stays: nix-store --delete must refuse the path."""
    from conftest import COMMIT_A, manifest, model

    d, store = _fresh_store_path(tmp_path, "blocked")
    try:
        data = manifest({"x": model(store, repo_id="org/x")})
        assert ws.activate(data, "--gc-roots").code == 0
        assert _rooted(store)
        snap = ws.hub / "models--org--x" / "snapshots" / COMMIT_A
        if snap.is_symlink():
            snap.unlink()
        else:
            shutil.rmtree(snap)
        snap.symlink_to(tmp_path)  # not ours: blocks the model
        res = ws.activate(data, "--gc-roots")
        assert res.code == 1, res.stderr
        assert res.env()["MODEL_REPO_X"] == store
        assert _rooted(store)
        refused = subprocess.run(["nix-store", "--delete", store], capture_output=True, text=True)
        assert refused.returncode != 0 and "alive" in refused.stderr
        snap.unlink()
        assert ws.run("deactivate", "--profile", "test", "--state-dir", str(ws.state)).code == 0
        assert not _rooted(store)
    finally:
        _forget_added(d, store)


def test_gc_roots_move_with_a_moved_cache_and_go_with_forget(ws, tmp_path: Path) -> None:
    """A cache renamed: its state is taken over, and its roots with it (none stay filed
    under the old hub dir). `deactivate --forget` of a removed cache drops its roots."""
    from conftest import manifest, model

    d, store = _fresh_store_path(tmp_path, "moved")
    try:
        data = manifest({"x": model(store, repo_id="org/x")})
        assert ws.activate(data, "--gc-roots").code == 0
        (old_roots,) = (ws.state / "gcroots").iterdir()
        moved = tmp_path / "moved-hub"
        os.rename(ws.hub, moved)
        path = ws.write_manifest(data)
        res = ws.run("activate", "--manifest", str(path), "--cache-dir", str(moved),
                     "--state-dir", str(ws.state), "--format", "json")
        assert res.code == 0, res.stderr
        assert "taking over" in res.stderr
        assert not old_roots.exists()
        (new_roots,) = (ws.state / "gcroots").iterdir()
        assert os.readlink(new_roots / os.path.basename(store)) == store
        assert _rooted(store)
        # The cache is removed on purpose: --forget drops the state and its roots.
        shutil.rmtree(moved)
        res = ws.run("deactivate", "--profile", "test", "--state-dir", str(ws.state),
                     "--cache-dir", str(moved), "--forget")
        assert res.code == 0, res.stderr
        assert not new_roots.exists()
        assert not _rooted(store)
    finally:
        _forget_added(d, store)
