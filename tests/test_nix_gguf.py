"""GGUF quantizations in the Nix options: ``source.huggingface.repo = "ORG/NAME:QUANT"``
gives the model ``modelRef``, ``modelPath`` (the model file, or a split model's first
part), ``mmprojPath`` and ``MODEL_REPO_<NAME>_FILE``; wired into ``services.llama-cpp``
(NixOS, with nixpkgs' module logic: tests/nix/stubs/llama-cpp.nix) and into a
llama-server in the real Home Manager and devenv module sets; a lock entry written for
``ORG/NAME:QUANT`` is accepted, a stale one refused; ``nix-build`` of a locked GGUF
model from the mock Hub gives a loadable layout."""

from __future__ import annotations

import json
import os
from pathlib import Path

from nixeval import (HASH, REV, devenv_eval, hm_eval, lib_expr, nix_eval, nix_eval_error,
                     nix_string, nix_value, nixos_eval)

PARTS = ["Q8_0/Tiny-Q8_0-00001-of-00002.gguf", "Q8_0/Tiny-Q8_0-00002-of-00002.gguf"]
GGUF_MODEL = nix_value({"source": {"huggingface": {
    "repo": "o/Tiny-GGUF:Q8_0", "revision": REV,
    "files": PARTS + ["mmproj-F16.gguf"]}}, "hash": HASH})
PROBE_OPTION = "options.probe = lib.mkOption { type = lib.types.anything; };"


def fetch(args: str) -> dict:
    return nix_eval(f"""let lib = {lib_expr()}; mr = import ./lib {{ inherit lib; }};
      pkgs = import ./tests/nix/stubs/pkgs.nix {{ inherit lib; }};
      m = mr.fetchModel pkgs ({args}); in
      {{ out = "${{m}}"; inherit (m) modelRef modelPath mmprojPath file gguf repoId; }}""")


def test_model_ref_gives_model_path_mmproj_and_alias():
    r = fetch(f'{GGUF_MODEL} // {{ name = "tiny"; }}')
    assert r["repoId"] == "o/Tiny-GGUF" and r["modelRef"] == "o/Tiny-GGUF:Q8_0"
    assert r["modelPath"] == r["file"] == f"{r['out']}/{PARTS[0]}"
    assert r["mmprojPath"] == f"{r['out']}/mmproj-F16.gguf"
    assert r["gguf"] == {"quant": "Q8_0", "main": PARTS[0], "parts": PARTS,
                         "mmproj": "mmproj-F16.gguf"}
    # quant given on its own, mmproj null
    r = fetch('{ name = "t"; hash = "%s"; source.huggingface = { repo = "o/Tiny-GGUF"; '
              'quant = "q8_0"; mmproj = null; revision = "%s"; files = %s; }; }'
              % (HASH, REV, nix_value(PARTS + ["mmproj-F16.gguf"])))
    assert r["modelRef"] == "o/Tiny-GGUF:q8_0" and r["mmprojPath"] is None


def test_errors_name_the_model_and_the_fix():
    base = ('{ name = "t"; hash = "%s"; source.huggingface = { repo = "o/Tiny-GGUF:%s"; '
            'revision = "%s"; %s }; }')
    err = nix_eval_error(f"""let lib = {lib_expr()}; mr = import ./lib {{ inherit lib; }};
      pkgs = import ./tests/nix/stubs/pkgs.nix {{ inherit lib; }};
      in (mr.fetchModel pkgs ({base % (HASH, "Q8_0", REV, "")})).modelPath""")
    assert "none are listed: run `model-repo prefetch o/Tiny-GGUF:Q8_0`" in err, err
    err = nix_eval_error(f"""let lib = {lib_expr()}; mr = import ./lib {{ inherit lib; }};
      pkgs = import ./tests/nix/stubs/pkgs.nix {{ inherit lib; }};
      in (mr.fetchModel pkgs ({base % (HASH, "Q8_0", REV, 'files = [ "' + PARTS[0] + '" ];')})).modelPath""")
    assert 'model "t"' in err and "part(s) 00002 are not in the repo" in err, err
    err = nix_eval_error(f"""let lib = {lib_expr()}; mr = import ./lib {{ inherit lib; }};
      pkgs = import ./tests/nix/stubs/pkgs.nix {{ inherit lib; }};
      in (mr.fetchModel pkgs ({base % (HASH, "Q8_0", REV, 'quant = "Q4_K_M";')})).modelPath""")
    assert 'names the quantization "Q8_0" but quant = "Q4_K_M"' in err, err


def test_nixos_services_llama_cpp_reads_the_model():
    r = nixos_eval(f"""{{ config, lib, ... }}: {{
      imports = [ ./tests/nix/stubs/llama-cpp.nix ];
      config = {{
        _module.args.utils = import ./tests/nix/stubs/systemd-utils.nix {{ inherit lib; }};
        services.model-repo = {{ enable = true; models.tiny = {GGUF_MODEL}; }};
        services.llama-cpp = {{
          enable = true;
          package = config.services.model-repo.package;
          model = config.services.model-repo.modelPaths.tiny;
        }};
      }};
    }}""")
    out = r["modelPaths"]["tiny"]
    exec_start = r["services"]["llama-cpp"]["serviceConfig"]["ExecStart"]
    assert exec_start.endswith(
        f'/bin/llama-server "--host" "127.0.0.1" "--port" "8080" "-m" "{out}/{PARTS[0]}" '
        f'"--mmproj" "{out}/mmproj-F16.gguf" "--alias" "o/Tiny-GGUF:Q8_0"'), exec_start
    assert r["environment"]["MODEL_REPO_TINY_FILE"] == f"{out}/{PARTS[0]}"
    assert r["environment"]["MODEL_REPO_TINY"] == out
    assert r["failedAssertions"] == []


def test_nixos_llama_cpp_flags_switch_off_mmproj_and_alias():
    r = nixos_eval(f"""{{ config, lib, ... }}: {{
      imports = [ ./tests/nix/stubs/llama-cpp.nix ];
      config = {{
        _module.args.utils = import ./tests/nix/stubs/systemd-utils.nix {{ inherit lib; }};
        services.model-repo = {{ enable = true; models.tiny = {GGUF_MODEL}; }};
        services.llama-cpp = {{
          enable = true;
          package = config.services.model-repo.package;
          model = config.services.model-repo.modelPaths.tiny;
          extraFlags = [ "--no-mmproj" "--alias=tiny" ];
        }};
      }};
    }}""")
    exec_start = r["services"]["llama-cpp"]["serviceConfig"]["ExecStart"]
    assert "--mmproj\"" not in exec_start and '"--alias" ' not in exec_start
    assert exec_start.endswith('"--no-mmproj" "--alias=tiny"'), exec_start


def test_file_variable_collides_with_another_models_name():
    r = nixos_eval(f"""{{ services.model-repo = {{ enable = true;
      models.tiny = {GGUF_MODEL};
      models.tiny-file = {GGUF_MODEL.replace("o/Tiny-GGUF:Q8_0", "o/Other-GGUF:Q8_0")}; }}; }}""")
    assert any('"tiny", "tiny-file" map to the same environment variable MODEL_REPO_TINY_FILE'
               in m for m in r["failedAssertions"]), r["failedAssertions"]


def docs_snippet(first_line: str) -> str:
    """The ```nix block of docs/nix.md that starts with ``first_line``, with nixpkgs'
    llama-cpp package replaced by a stub package (the test's pkgs have none)."""
    docs = (Path(__file__).resolve().parent.parent / "docs" / "nix.md").read_text()
    start = docs.index("```nix\n" + first_line) + len("```nix\n")
    return docs[start:docs.index("```", start)].replace("pkgs.llama-cpp", "llama")


def test_home_manager_llama_server_user_service():
    """docs/nix.md's Home Manager snippet: a systemd user service running llama-server on
    the model file, in the real Home Manager module set; systemd's own quoting."""
    r = hm_eval(f"""{{ config, lib, pkgs, ... }}: let llama = config.programs.model-repo.package; in {{
      {PROBE_OPTION}
      config = {{
        programs.model-repo = {{ enable = true; models.llama = {GGUF_MODEL}; }};
        {docs_snippet("systemd.user.services.llama-server")}
        probe = config.systemd.user.services.llama-server.Service.ExecStart;
      }};
    }}""")
    out = r["modelPaths"]["llama"]
    assert f'/bin/llama-server -m "{out}/{PARTS[0]}" --mmproj "{out}/mmproj-F16.gguf" ' \
           '--alias "o/Tiny-GGUF:Q8_0" --port 8080' in r["probe"][0], r["probe"]
    assert "llama-server" in r["systemdUserUnits"]
    assert r["sessionVariables"]["MODEL_REPO_LLAMA_FILE"] == f"{out}/{PARTS[0]}"


def test_devenv_llama_server_process():
    """docs/nix.md's devenv snippet: a devenv process running llama-server, in the real
    devenv module set."""
    r = devenv_eval(f"""{{ config, lib, ... }}: let llama = config.services.model-repo.package; in {{
      {PROBE_OPTION}
      config = {{
        services.model-repo = {{ enable = true; models.llama = {GGUF_MODEL}; }};
        {docs_snippet("processes.llama-server.exec")}
        probe = config.processes.llama-server.exec;
      }};
    }}""")
    out = r["modelPaths"]["llama"]
    assert r["probe"].endswith(f"/bin/llama-server -m {out}/{PARTS[0]} --port 8080")
    assert r["env"]["MODEL_REPO_LLAMA_FILE"] == f"{out}/{PARTS[0]}"


def _lock(tmp: Path, exact: list[str], files: list[str]) -> Path:
    entry = {"repo": "o/Tiny-GGUF", "repoType": "model", "ref": "main", "commit": REV,
             "exactFiles": exact, "include": [], "exclude": [],
             "files": {p: {"size": 1, "hash": "sha256-" + "A" * 43 + "=", "lfs": True}
                       for p in files}}
    p = tmp / "model-repo.lock.json"
    p.write_text(json.dumps({"version": 1, "models": {"tiny": entry}}))
    return p


def test_lock_entry_of_a_tag(tmp_path: Path):
    files = PARTS + ["mmproj-F16.gguf"]
    lockp = _lock(tmp_path, files, files)
    r = fetch(f'{{ name = "tiny"; lockFile = {nix_string(lockp)}; '
              'source.huggingface.repo = "o/Tiny-GGUF:Q8_0"; }')
    assert r["modelPath"] == f"{r['out']}/{PARTS[0]}" and r["mmprojPath"].endswith("/mmproj-F16.gguf")
    # an entry pinned with other files than the tag selects is stale
    lockp = _lock(tmp_path, PARTS, PARTS)
    err = nix_eval_error(f"""let lib = {lib_expr()}; mr = import ./lib {{ inherit lib; }};
      pkgs = import ./tests/nix/stubs/pkgs.nix {{ inherit lib; }};
      in (mr.fetchModel pkgs {{ name = "tiny"; lockFile = {nix_string(lockp)};
        source.huggingface = {{ repo = "o/Tiny-GGUF:Q8_0"; mmproj = "mmproj-F16.gguf"; }}; }}).outPath""")
    assert "mmproj \"mmproj-F16.gguf\" is not a .gguf file of the repo" in err, err
    lockp = _lock(tmp_path, [PARTS[0]], PARTS)
    err = nix_eval_error(f"""let lib = {lib_expr()}; mr = import ./lib {{ inherit lib; }};
      pkgs = import ./tests/nix/stubs/pkgs.nix {{ inherit lib; }};
      in (mr.fetchModel pkgs {{ name = "tiny"; lockFile = {nix_string(lockp)};
        source.huggingface.repo = "o/Tiny-GGUF:Q8_0"; }}).outPath""")
    assert "run `model-repo lock tiny o/Tiny-GGUF:Q8_0`" in err, err


def test_the_tag_and_mmproj_come_from_the_lock_entry_alone(tmp_path: Path):
    """A model giving only the repo id takes the entry's ``quant`` and ``mmproj``
    (``model-repo lock NAME ORG/NAME:QUANT --mmproj none`` writes them): ``modelRef``,
    ``modelPath`` and ``MODEL_REPO_<NAME>_FILE`` come out as with the tag written; a
    model naming another tag than the entry's is refused."""
    lockp = _lock(tmp_path, PARTS, PARTS + ["mmproj-F16.gguf"])
    data = json.loads(lockp.read_text())
    data["models"]["tiny"].update(quant="Q8_0", mmproj="none")
    lockp.write_text(json.dumps(data))
    r = fetch(f'{{ name = "tiny"; lockFile = {nix_string(lockp)}; '
              'source.huggingface.repo = "o/Tiny-GGUF"; }')
    assert r["modelRef"] == "o/Tiny-GGUF:Q8_0" and r["mmprojPath"] is None
    assert r["modelPath"] == r["file"] == f"{r['out']}/{PARTS[0]}"
    r = hm_eval(f"""{{ ... }}: {{ programs.model-repo = {{ enable = true;
      models.tiny = {{ lockFile = {nix_string(lockp)};
        source.huggingface.repo = "o/Tiny-GGUF"; }}; }}; }}""")
    assert r["sessionVariables"]["MODEL_REPO_TINY_FILE"] == f"{r['modelPaths']['tiny']}/{PARTS[0]}"
    err = nix_eval_error(f"""let lib = {lib_expr()}; mr = import ./lib {{ inherit lib; }};
      pkgs = import ./tests/nix/stubs/pkgs.nix {{ inherit lib; }};
      in (mr.fetchModel pkgs {{ name = "tiny"; lockFile = {nix_string(lockp)};
        source.huggingface.repo = "o/Tiny-GGUF:Q4_K_M"; }}).outPath""")
    assert 'locked with the quantization tag "Q8_0", the model says "Q4_K_M"' in err, err


def test_lock_then_nix_build_a_split_gguf_from_the_mock_hub(tmp_path: Path):
    """mock Hub -> `model-repo lock tiny ORG/NAME:Q8_0` -> lib.fetchModel { lockFile;
    repo = "ORG/NAME:Q8_0"; } -> nix-build: modelPath is the first part and the second
    lies beside it (llama.cpp opens <prefix>-00002-of-00002.gguf next to the first)."""
    import uuid

    from mockhub import MockHub
    from test_hub_build import PKGS, build, cli, need_nix_build

    need_nix_build()
    nonce = uuid.uuid4().hex[:12]
    files = {p: b"GGUF\x03\x00\x00\x00" + f"{nonce}-{p}".encode() for p in
             PARTS + ["mmproj-F16.gguf", "Tiny-Q4_K_M.gguf"]}
    repo = f"model-repo-test/gguf-{nonce}"
    with MockHub(page_size=50) as hub:
        hub.add_repo(repo, files)
        lockp = tmp_path / "model-repo.lock.json"
        p = cli(hub, tmp_path, "lock", "tiny", f"{repo}:Q8_0", "--lock-file", str(lockp), "-q")
        assert p.returncode == 0, p.stderr
        model = (f'mr.fetchModel pkgs {{ name = "tiny"; lockFile = {nix_string(lockp)}; '
                 f'source.huggingface = {{ repo = "{repo}:Q8_0"; endpoint = "{hub.url}"; }}; }}')
        paths = nix_eval(f"let lib = {lib_expr()}; mr = import ./lib {{ inherit lib; }}; "
                         f"{PKGS} m = {model}; in {{ inherit (m) modelPath mmprojPath; }}")
        p = build(model)
        assert p.returncode == 0, p.stderr
    out = Path(p.stdout.strip())
    assert paths["modelPath"] == f"{out}/{PARTS[0]}"
    first = Path(paths["modelPath"])
    assert first.read_bytes() == files[PARTS[0]]
    assert (first.parent / "Tiny-Q8_0-00002-of-00002.gguf").read_bytes() == files[PARTS[1]]
    assert Path(paths["mmprojPath"]).read_bytes() == files["mmproj-F16.gguf"]
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*") if not p.is_dir()) == \
        sorted(PARTS + ["mmproj-F16.gguf"])
    assert not os.path.exists(out / "Tiny-Q4_K_M.gguf")


ODD = "we ird'$(touch pwned)%n\"-Q8_0.gguf"  # allowed by the repo file path rule


def test_an_odd_file_name_reaches_llama_server_as_one_argument(tmp_path: Path):
    """The Hub actor's odd (but valid) .gguf name: the devenv snippet's
    lib.escapeShellArg gives bash one argument, nothing run; NixOS's ExecStart quotes it
    for systemd (JSON-quoted, % doubled)."""
    import subprocess

    model = nix_value({"source": {"huggingface": {"repo": "o/Odd-GGUF:Q8_0", "revision": REV,
                                                  "files": [ODD]}}, "hash": HASH})
    r = devenv_eval(f"""{{ config, lib, ... }}: {{
      {PROBE_OPTION}
      config = {{
        services.model-repo = {{ enable = true; models.odd = {model}; }};
        processes.llama-server.exec = let m = config.services.model-repo.modelPaths.odd; in
          "printf '%s\\\\n' -m ${{lib.escapeShellArg m.modelPath}}";
        probe = config.processes.llama-server.exec;
      }};
    }}""")
    out = subprocess.run(["bash", "-c", r["probe"]], cwd=tmp_path, capture_output=True,
                         text=True, check=True).stdout
    assert out.splitlines() == ["-m", f"{r['modelPaths']['odd']}/{ODD}"]
    assert not (tmp_path / "pwned").exists()

    r = nixos_eval(f"""{{ config, lib, ... }}: {{
      imports = [ ./tests/nix/stubs/llama-cpp.nix ];
      config = {{
        _module.args.utils = import ./tests/nix/stubs/systemd-utils.nix {{ inherit lib; }};
        services.model-repo = {{ enable = true; models.odd = {model}; }};
        services.llama-cpp = {{ enable = true; package = config.services.model-repo.package;
          model = config.services.model-repo.modelPaths.odd; }};
      }};
    }}""")
    exec_start = r["services"]["llama-cpp"]["serviceConfig"]["ExecStart"]
    quoted = json.dumps(f"{r['modelPaths']['odd']}/{ODD}").replace("%", "%%").replace("$", "$$")
    assert f'"-m" {quoted} ' in exec_start, exec_start


def test_hints_carry_the_tag(tmp_path: Path):
    err = nix_eval_error(f"""let lib = {lib_expr()}; mr = import ./lib {{ inherit lib; }};
      pkgs = import ./tests/nix/stubs/pkgs.nix {{ inherit lib; }};
      in (mr.fetchModel pkgs {{ name = "t"; source.huggingface.repo = "o/Tiny-GGUF:Q8_0"; }}).outPath""")
    assert "Run `model-repo prefetch o/Tiny-GGUF:Q8_0` to print it" in err, err
    err = nix_eval_error(f"""let lib = {lib_expr()}; mr = import ./lib {{ inherit lib; }};
      pkgs = import ./tests/nix/stubs/pkgs.nix {{ inherit lib; }};
      in (mr.fetchModel pkgs {{ name = "t"; hash = "{HASH}"; source.huggingface.repo = "o/Tiny-GGUF:Q8_0"; }}).outPath""")
    assert "model-repo prefetch o/Tiny-GGUF:Q8_0\n" in err, err
    lockp = tmp_path / "model-repo.lock.json"
    lockp.write_text('{"version": 1, "models": {}}')
    err = nix_eval_error(f"""let lib = {lib_expr()}; mr = import ./lib {{ inherit lib; }};
      pkgs = import ./tests/nix/stubs/pkgs.nix {{ inherit lib; }};
      in (mr.fetchModel pkgs {{ name = "t"; lockFile = {nix_string(lockp)};
        source.huggingface.repo = "o/Tiny-GGUF:Q8_0"; }}).outPath""")
    assert "run `model-repo lock t o/Tiny-GGUF:Q8_0 --ref main`" in err, err


def test_a_hostile_lock_entry_fails_on_its_path_before_the_tag(tmp_path: Path):
    """The lock-file actor: an entry of a tagged model whose file path breaks the repo
    file path rule is refused for that path (the selection never sees it)."""
    evil = "../../evil-Q8_0.gguf"
    lockp = _lock(tmp_path, [evil], [evil])
    err = nix_eval_error(f"""let lib = {lib_expr()}; mr = import ./lib {{ inherit lib; }};
      pkgs = import ./tests/nix/stubs/pkgs.nix {{ inherit lib; }};
      in (mr.fetchModel pkgs {{ name = "tiny"; lockFile = {nix_string(lockp)};
        source.huggingface.repo = "o/Tiny-GGUF:Q8_0"; }}).modelPath""")
    assert 'has the file path "../../evil-Q8_0.gguf", which has a ".." segment' in err, err


def test_lib_exposes_the_rule():
    r = nix_eval(f"""let lib = {lib_expr()}; mr = import ./lib {{ inherit lib; }}; in
      [ (mr.gguf.select {{ paths = {nix_value(PARTS + ["mmproj-F16.gguf"])}; quant = "q8_0"; }}).main
        (mr.gguf.splitModelRef "o/Tiny-GGUF:Q8_0").quant ]""")
    assert r == [PARTS[0], "Q8_0"]
