"""The repo file path rule: activate/repopath.py and lib/repopath.nix agree, case by case
and message by message, on a table of paths (and on generated ones).

Each path reaches Nix as the raw bytes of a file (``builtins.readFile``), so invalid
UTF-8 and control characters arrive as they are; all cases go in ONE nix-instantiate call.
"""

from __future__ import annotations

import os
import tempfile

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from activate.repopath import repo_path_error

from nixeval import lib_expr, nix_eval, nix_string

DRV = 'ends in ".drv", a name Nix refuses for a fetched file'
TABLE: list[tuple[bytes, str | None]] = [
    (b"config.json", None),
    (b"a/b/c.safetensors", None),
    (b"--help", None),
    (b"-n.json", None),
    (b"sub/-x", None),
    (".gitattributes".encode(), None),
    ("caf\u00e9/\u65e5\u672c.bin".encode(), None),
    ("\U0001F600.txt".encode(), None),
    (b"a b/with space", None),
    (b"x" * 255, None),
    (b"x.drv/inside", None),
    (b"model.drvx", None),
    (b"", "is empty"),
    (b"/etc/evil.bin", 'starts with "/" (a path from the repo root has none)'),
    (b"dir/", 'ends with "/"'),
    (b"a//b.bin", 'has an empty segment ("//")'),
    (b"./dot.bin", 'has a "." segment'),
    (b"a/./b", 'has a "." segment'),
    (b"../../evil.bin", 'has a ".." segment'),
    (b"a/..", 'has a ".." segment'),
    (b"x" * 256, "has a segment longer than 255 bytes"),
    (b"ok/" + "\u00e9".encode() * 128, "has a segment longer than 255 bytes"),
    (b"a\xffb", "is not UTF-8"),
    (b"a\xc3", "is not UTF-8"),
    (b"\xed\xa0\x80", "is not UTF-8"),  # an encoded surrogate
    (b"\xc0\xaf", "is not UTF-8"),  # an overlong "/"
    (b"a\x01b", "holds a control character"),
    (b"a\nb", "holds a control character"),
    (b"a\tb", "holds a control character"),
    (b"\x1b[31mred", "holds a control character"),
    (b"a\x7fb", "holds a control character"),
    ("a\u0085b".encode(), "holds a control character"),
    ("\u009b31m".encode(), "holds a control character"),
    (b"evil.drv", DRV),
    (b"sub/x.drv", DRV),
    (b"../x.drv", 'has a ".." segment'),
]


def nix_errors(cases: list[bytes]) -> list[str | None]:
    """lib/repopath.nix's answer for each case, read from a file of its bytes."""
    with tempfile.TemporaryDirectory(prefix="model-repo-repopath-") as d:
        files = []
        for i, raw in enumerate(cases):
            p = os.path.join(d, str(i))
            with open(p, "wb") as fh:
                fh.write(raw)
            files.append(p)
        paths = " ".join(nix_string(p) for p in files)
        expr = f"""
          let r = import ./lib/repopath.nix {{ lib = {lib_expr()}; }};
          in map (f: r.repoPathError (builtins.readFile f)) [ {paths} ]
        """
        return nix_eval(expr)


def test_table_python():
    for raw, want in TABLE:
        assert repo_path_error(raw) == want, raw
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = raw.decode("utf-8", "surrogateescape")
        assert repo_path_error(text) == want, raw


def test_nul_and_non_strings_python():
    assert repo_path_error("a\x00b") == "holds a control character"
    assert repo_path_error(b"a\x00b") == "holds a control character"
    assert repo_path_error("\udc80") == "is not UTF-8"  # a JSON "\udc80"
    assert repo_path_error(None) == "is not a string"


def test_table_nix_equals_python():
    got = nix_errors([raw for raw, _ in TABLE])
    for (raw, want), nix in zip(TABLE, got):
        assert nix == want, raw


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(
    st.binary(max_size=12),
    st.lists(st.sampled_from([b"", b".", b"..", b"a", b"-", b"\xc3\xa9", b"\xff", b"\x00",
                              b"\x1b", b"\xc2\x85", b".drv", b"x" * 200]),
             max_size=4).map(b"/".join),
    st.text(max_size=10).map(lambda s: s.encode("utf-8", "surrogatepass")),
), min_size=30, max_size=60))
def test_generated_nix_equals_python(batch):
    # Nix strings end at a NUL (a C string): such cases are Python-only (the lock file
    # reader refuses a "\u0000" on its text, see test_nix_lib).
    batch = [b for b in batch if b"\x00" not in b]
    got = nix_errors(batch)
    for raw, nix in zip(batch, got):
        assert nix == repo_path_error(raw), raw


URL_NAMES = ["config.json", "a b.txt", "\u00e9.bin", "\u65e5\u672c/\u8a9e.json", "\U0001F600",
             "x%y", "a+b=c&d?e#f", "--help", "~tilde_-.", "sub/dir/file", "quote'\"",
             "back\\slash", "[brackets]{}", "semi;colon:at@", "caf\u00e9/na\u00efve.txt",
             "e\u0301", "\u00a0nbsp", "\U0010FFFF", "\ufeffbom", "\u07ff\u0800\uffff\ud7ff\ue000",
             "\U00040000\U00080000\U000C0000\U00100000"]


def nix_urls(names: list[str], *, old_lib: bool) -> list[str]:
    """lib/fetchers/hub-files.nix fileUrl for each name (read from a file of its bytes);
    ``old_lib``: a nixpkgs lib without strings.escapeURL (before 23.11)."""
    with tempfile.TemporaryDirectory(prefix="model-repo-url-") as d:
        files = []
        for i, name in enumerate(names):
            p = os.path.join(d, str(i))
            with open(p, "wb") as fh:
                fh.write(name.encode("utf-8"))
            files.append(p)
        lib = lib_expr()
        if old_lib:
            lib = (f"(let l = {lib}; in l // {{ escapeURL = null; "
                   "strings = builtins.removeAttrs l.strings [ \"escapeURL\" ]; })")
        expr = f"""
          let lib = {lib}; h = import ./lib/fetchers/hub-files.nix {{ inherit lib; }};
              hf = t: {{ endpoint = "https://huggingface.co"; repoType = t;
                        repo = "org/name"; revision = "{'c' * 40}"; }};
          in builtins.concatMap (f: let p = builtins.readFile f; in
               [ (h.fileUrl (hf "model") p) (h.fileUrl (hf "dataset") p) ])
             [ {" ".join(nix_string(p) for p in files)} ]
        """
        return nix_eval(expr)


def hf_urls(names: list[str]) -> list[str]:
    from huggingface_hub import hf_hub_url

    return [hf_hub_url("org/name", n, repo_type=t, revision="c" * 40,
                       endpoint="https://huggingface.co")
            for n in names for t in ("model", "dataset")]


def test_file_urls_equal_hf_hub_url():
    assert all(repo_path_error(n) is None for n in URL_NAMES)
    want = hf_urls(URL_NAMES)
    assert nix_urls(URL_NAMES, old_lib=False) == want
    assert nix_urls(URL_NAMES, old_lib=True) == want


@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")),
                        min_size=1, max_size=12), min_size=20, max_size=40))
def test_generated_file_urls_equal_hf_hub_url(names):
    names = [n for n in names if repo_path_error(n) is None]
    assert nix_urls(names, old_lib=False) == hf_urls(names)
