"""The rule for an SRI hash model-repo accepts: in a lock file's ``hash``, a model's
``hash``, ``source.huggingface.fileHashes`` values and ``source.url`` files' ``hash``.

Standard library only (the lock file model and ``activate.hub`` import it). The Nix side
(``lib/srihash.nix``) is the same rule with the same messages, checked in the same order;
``tests/test_srihash.py`` holds the two equal on a table of cases.

An SRI hash (W3C Subresource Integrity, as Nix prints it) is ``<algorithm>-<base64>``:

- the algorithm is ``sha256`` or ``sha512``. Nix also takes ``sha1`` and ``md5``
  (``Hash::parseAnyPrefixed``), and nixpkgs' ``fetchurl`` passes them on, but both have
  known collisions: a pin must name its bytes alone, so they are refused;
- the base64 is the standard alphabet (``A-Z a-z 0-9 + /``) with its padding, exactly
  the length of the digest: sha256 (32 bytes) is 43 characters and one ``=`` (44 in
  all), sha512 (64 bytes) 86 characters and ``==`` (88 in all);
- canonical: the bits after the digest's last byte are zero (the last character before
  the padding is one of ``AEIMQUYcgkosw048`` for sha256, ``AQgw`` for sha512), so one
  digest has one spelling and a rewritten lock file keeps its bytes;
- nothing before or after it, no whitespace anywhere.

Nix's ``<algorithm>:<hex or base-32>`` form and a bare digest (64 hex characters, 52 of
Nix base-32) are refused with the command converting them: the lock file format and the
options promise SRI, and one spelling per digest keeps diffs and comparisons plain.
"""

from __future__ import annotations

import json
import re

#: Base64 characters of the digest (before the padding) and the padding, per algorithm.
ALGORITHMS: dict[str, tuple[int, int, str]] = {
    # name: (characters before the padding, "=" count, allowed last characters)
    "sha256": (43, 1, "AEIMQUYcgkosw048"),
    "sha512": (86, 2, "AQgw"),
}
#: The longest SRI hash accepted ("sha512-" and 88 characters).
MAX_LENGTH = 95
#: An anchored pattern of exactly the accepted hashes, for JSON Schema (ECMAScript) and
#: pydantic (Rust regex), where "$" is the end of the text. Not for Python's :mod:`re`,
#: whose "$" also matches before a final newline: use :func:`sri_hash_error` there.
SRI_PATTERN = (r"^(sha256-[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]="
               r"|sha512-[A-Za-z0-9+/]{85}[AQgw]==)$")

_CONVERT = "convert it with `nix hash convert --hash-algo sha256 --to sri <digest>`"
_SPACE = " \t\n\v\f\r"


def sri_hash_error(value: object) -> str | None:
    """Why ``value`` is not an SRI hash model-repo accepts (module docstring), or None
    when it is one. The reason is a phrase to follow the value, e.g. ``is empty``; the
    first broken rule wins, in the order ``lib/srihash.nix`` checks them: not a string,
    empty, too long, whitespace, Nix's ``algo:`` form, a bare digest, the algorithm,
    characters, padding, length, canonical last character."""
    if not isinstance(value, str):
        return "is not a string"
    h = value
    if h == "":
        return "is empty"
    if len(h.encode("utf-8", "surrogatepass")) > MAX_LENGTH:
        return (f"is longer than any SRI hash (at most {MAX_LENGTH} characters, "
                "a sha512 one)")
    if any(c in _SPACE for c in h):
        return "holds whitespace (copy the hash alone, without spaces or newlines)"
    m = re.fullmatch(r"(md5|sha1|sha256|sha512):(.*)", h, re.DOTALL)
    if m:
        return (f'is in Nix\'s "{m.group(1)}:<digest>" form, not SRI; '
                f"convert it with `nix hash convert --to sri {m.group(1)}:<digest>`")
    if re.fullmatch(r"[0-9a-fA-F]{64}|[0-9a-df-np-sv-z]{52}", h):
        return f"is a bare sha256 digest, not SRI; {_CONVERT}"
    algo, dash, body = h.partition("-")
    if algo in ("md5", "sha1") and dash:
        return f'uses {algo}, which has known collisions; use a "sha256-" hash'
    if not dash or algo not in ALGORITHMS:
        return 'does not start with "sha256-" or "sha512-"'
    chars, pads, last = ALGORITHMS[algo]
    m = re.fullmatch(r"([A-Za-z0-9+/]*)(=*)", body)
    if m is None:
        return ('holds a character that is not base64 (A-Z a-z 0-9 + /, and "=" '
                "only at the end)")
    data, pad = m.group(1), m.group(2)
    if len(pad) != pads:
        want = 'one "="' if pads == 1 else 'two "=" ("==")'
        return f"ends in {len(pad)} \"=\", a {algo} digest in base64 ends in {want}"
    if len(data) != chars:
        return (f"has {len(data)} base64 characters before the padding, "
                f"a {algo} digest has {chars}")
    if data[-1] not in last:
        return (f"is not the canonical base64 of a {algo} digest (the last character "
                f"before the padding must be one of {last})")
    return None


def shown(value: object) -> str:
    """``value`` quoted for a message: JSON with every non-ASCII and control character
    escaped, so that a hostile value prints as one plain line."""
    return json.dumps(value if isinstance(value, str) else repr(value), ensure_ascii=True)
