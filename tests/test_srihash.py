"""The SRI hash rule: activate/srihash.py and lib/srihash.nix agree, case by case and
message by message, on a table of values (and on generated ones); the lock file's JSON
Schema pattern accepts exactly what the rule accepts.

All Nix cases go in ONE nix-instantiate call, each read from a file of its bytes.
"""

from __future__ import annotations

import base64
import hashlib
import os
import tempfile
from typing import Annotated

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import Field, TypeAdapter, ValidationError

from activate.srihash import SRI_PATTERN, sri_hash_error

from nixeval import lib_expr, nix_eval, nix_string

S256 = "sha256-" + base64.b64encode(hashlib.sha256(b"").digest()).decode()
S512 = "sha512-" + base64.b64encode(hashlib.sha512(b"").digest()).decode()
HEX = hashlib.sha256(b"").hexdigest()
NIX32 = "0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73"  # sha256 of "" in Nix base-32
B64_256 = S256[len("sha256-"):]
B64_512 = S512[len("sha512-"):]

NOT_B64 = 'holds a character that is not base64 (A-Z a-z 0-9 + /, and "=" only at the end)'
NO_ALGO = 'does not start with "sha256-" or "sha512-"'
SPACE = "holds whitespace (copy the hash alone, without spaces or newlines)"
TOO_LONG = "is longer than any SRI hash (at most 95 characters, a sha512 one)"
BARE = ("is a bare sha256 digest, not SRI; convert it with "
        "`nix hash convert --hash-algo sha256 --to sri <digest>`")


_PATTERN = TypeAdapter(Annotated[str, Field(pattern=SRI_PATTERN)])


def colon(algo: str) -> str:
    return (f'is in Nix\'s "{algo}:<digest>" form, not SRI; convert it with '
            f"`nix hash convert --to sri {algo}:<digest>`")


TABLE: list[tuple[str, str | None]] = [
    (S256, None),
    (S512, None),
    ("sha256-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", None),
    ("sha256-" + "/" * 42 + "w=", None),
    ("sha512-" + "+" * 85 + "g==", None),
    ("", "is empty"),
    # wrong length
    ("sha256-" + B64_256[:-2] + "=", "has 42 base64 characters before the padding, a sha256 digest has 43"),
    ("sha256-A" + B64_256, "has 44 base64 characters before the padding, a sha256 digest has 43"),
    ("sha512-" + B64_512[:-3] + "==", "has 85 base64 characters before the padding, a sha512 digest has 86"),
    ("sha256-" + B64_512, 'ends in 2 "=", a sha256 digest in base64 ends in one "="'),
    ("sha512-" + B64_256, 'ends in 1 "=", a sha512 digest in base64 ends in two "=" ("==")'),
    ("sha256-", 'ends in 0 "=", a sha256 digest in base64 ends in one "="'),
    # missing / extra padding
    (S256[:-1], 'ends in 0 "=", a sha256 digest in base64 ends in one "="'),
    (S256 + "=", 'ends in 2 "=", a sha256 digest in base64 ends in one "="'),
    (S512[:-2], 'ends in 0 "=", a sha512 digest in base64 ends in two "=" ("==")'),
    (S512[:-1], 'ends in 1 "=", a sha512 digest in base64 ends in two "=" ("==")'),
    (S512 + "=", TOO_LONG),
    (S512[:-3] + "===", 'ends in 3 "=", a sha512 digest in base64 ends in two "=" ("==")'),
    # not canonical: the bits after the digest are not zero
    ("sha256-" + B64_256[:42] + "V=",
     "is not the canonical base64 of a sha256 digest (the last character before the "
     "padding must be one of AEIMQUYcgkosw048)"),
    ("sha512-" + B64_512[:85] + "h==",
     "is not the canonical base64 of a sha512 digest (the last character before the "
     "padding must be one of AQgw)"),
    # bad base64 characters
    ("sha256-" + B64_256[:10] + "_" + B64_256[11:], NOT_B64),  # base64url
    ("sha256-" + B64_256[:10] + "-" + B64_256[11:], NOT_B64),
    ("sha256-" + B64_256[:10] + "=" + B64_256[11:], NOT_B64),  # "=" inside
    ("sha256-" + B64_256[:10] + "\u00e9" + B64_256[12:], NOT_B64),
    ("sha256-" + B64_256[:10] + "\x1b" + B64_256[11:], NOT_B64),
    ("sha256-" + B64_256[:-1] + ".", NOT_B64),
    # Nix's other forms
    ("sha256:" + HEX, colon("sha256")),
    ("sha256:" + NIX32, colon("sha256")),
    ("sha1:" + HEX[:40], colon("sha1")),
    ("md5:" + HEX[:32], colon("md5")),
    (HEX, BARE),
    (HEX.upper(), BARE),
    (NIX32, BARE),
    ("sha512:" + HEX * 2, TOO_LONG),
    # algorithms
    ("sha1-" + base64.b64encode(hashlib.sha1(b"").digest()).decode(),
     'uses sha1, which has known collisions; use a "sha256-" hash'),
    ("md5-" + base64.b64encode(hashlib.md5(b"").digest()).decode(),
     'uses md5, which has known collisions; use a "sha256-" hash'),
    ("SHA256-" + B64_256, NO_ALGO),
    ("sha384-" + B64_256, NO_ALGO),
    ("sha-256-" + B64_256, NO_ALGO),
    (B64_256, NO_ALGO),
    ("sha256", NO_ALGO),
    ("-" + B64_256, NO_ALGO),
    # leading / trailing junk, whitespace
    ("junk " + S256 + " junk", SPACE),
    ("junk" + S256, NO_ALGO),
    (S256 + "junk", NOT_B64),
    (S256 + "\n", SPACE),
    (" " + S256, SPACE),
    ("\t", SPACE),
    ("sha256- " + B64_256[1:], SPACE),
    (S256 + "\x0b", SPACE),
    (S256 + "\x0c", SPACE),
    (S256 + "\r", SPACE),
    (S256 + "x" * 60, TOO_LONG),
    ("x" * 96, TOO_LONG),
    ("\u00e9" * 48, TOO_LONG),  # 96 bytes of UTF-8
]


def nix_errors(cases: list[str]) -> list[str | None]:
    """lib/srihash.nix's answer for each case, read from a file of its UTF-8 bytes."""
    with tempfile.TemporaryDirectory(prefix="model-repo-srihash-") as d:
        files = []
        for i, value in enumerate(cases):
            p = os.path.join(d, str(i))
            with open(p, "wb") as fh:
                fh.write(value.encode("utf-8", "surrogatepass"))
            files.append(p)
        paths = " ".join(nix_string(p) for p in files)
        expr = f"""
          let s = import ./lib/srihash.nix {{ lib = {lib_expr()}; }};
          in map (f: s.sriHashError (builtins.readFile f)) [ {paths} ]
        """
        return nix_eval(expr)


def test_table_python():
    for value, want in TABLE:
        assert sri_hash_error(value) == want, value


def test_non_strings_and_nul_python():
    assert sri_hash_error(None) == "is not a string"
    assert sri_hash_error(b"sha256-") == "is not a string"
    # A Nix string cannot hold a NUL (a lock file's "\u0000" is refused on its text).
    assert sri_hash_error(S256 + "\x00") == NOT_B64


def test_table_nix_equals_python():
    got = nix_errors([value for value, _ in TABLE])
    for (value, want), nix in zip(TABLE, got):
        assert nix == want, value


def test_nix_non_strings():
    assert nix_eval(f"""
      let s = import ./lib/srihash.nix {{ lib = {lib_expr()}; }};
      in [ (s.sriHashError null) (s.sriHashError 1) (s.isSriHash "{S256}") ]
    """) == ["is not a string", "is not a string", True]


def pattern_accepts(value: str) -> bool:
    """SRI_PATTERN as the lock file's readers apply it: pydantic (Rust regex) and JSON
    Schema (ECMAScript), where "$" is the end of the text. (Python's re would also take a
    final newline before "$".)"""
    try:
        _PATTERN.validate_python(value)
    except ValidationError:
        return False
    return True


def test_pattern_accepts_exactly_what_the_rule_accepts():
    for value, want in TABLE:
        assert pattern_accepts(value) == (want is None), value


B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


@st.composite
def near_sri(draw) -> str:
    """Mostly well-formed hashes with a few mutations: the edges of the rule."""
    algo = draw(st.sampled_from(["sha256", "sha512", "sha1", "md5", "sha384", "", "SHA256"]))
    n = draw(st.integers(0, 90))
    data = draw(st.text(alphabet=B64 + "=-_ .:\n\u00e9", min_size=n, max_size=n))
    pad = "=" * draw(st.integers(0, 3))
    sep = draw(st.sampled_from(["-", "-", ":", ""]))
    return draw(st.sampled_from(["", " "])) + algo + sep + data + pad


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(
    near_sri(),
    st.binary(min_size=32, max_size=32).map(lambda b: "sha256-" + base64.b64encode(b).decode()),
    st.binary(min_size=64, max_size=64).map(lambda b: "sha512-" + base64.b64encode(b).decode()),
    st.text(max_size=20),
), min_size=30, max_size=60))
def test_generated_nix_equals_python(batch):
    batch = [v for v in batch if "\x00" not in v]
    got = nix_errors(batch)
    for value, nix in zip(batch, got):
        py = sri_hash_error(value)
        assert nix == py, value
        assert pattern_accepts(value) == (py is None), value


@settings(max_examples=20, deadline=None)
@given(st.binary(min_size=32, max_size=32), st.binary(min_size=64, max_size=64))
def test_what_model_repo_prints_follows_the_rule(d256: bytes, d512: bytes):
    # The writers (prefetch's NAR hash, per-file pins and lock files from the Hub's LFS
    # sha256, persist's narinfo NarHash) print only hashes the rule accepts, canonical.
    from activate.hub.binarycache import narinfo_hash, nix_base32
    from activate.hub.nar import sri
    from activate.hub.pin import hex_from_sri, sri_from_hex

    printed = [sri(d256), sri(d512, "sha512"), sri_from_hex(d256.hex()),
               narinfo_hash({"NarHash": "sha256:" + nix_base32(d256), "NarSize": "1"})[0]]
    for h in printed:
        assert sri_hash_error(h) is None, h
    assert printed[0] == printed[2] == printed[3]
    assert hex_from_sri(printed[0]) == d256.hex()


def test_nix_fast_path_is_the_schema_pattern():
    got = nix_eval(f"(import ./lib/srihash.nix {{ lib = {lib_expr()}; }}).validRegex")
    assert "^(" + got + ")$" == SRI_PATTERN
