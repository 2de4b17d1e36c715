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
