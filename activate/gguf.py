"""GGUF quantization tags: ``ORG/NAME:QUANT`` picks a repo's ``.gguf`` file(s) and its
``mmproj`` file, the words of nixpkgs' ``fetchFromHuggingFaceGGUF`` (``modelRef =
"ORG/NAME:Q4_K_M"``) and of ``llama-server -hf ORG/NAME:Q4_K_M``.

Standard library only (the Hub commands and anything else may import it). The Nix side
(``lib/gguf.nix``) is the same rule; ``tests/test_gguf.py`` holds the two equal on a
table of real llama.cpp file names.

The rule, on the repo's file paths (as the Hub lists them, or the pinned ones):

1. The tag is ``[A-Za-z0-9._+-]+`` (nixpkgs' ``validQuant``): llama.cpp's quantization
   names (``tools/quantize/quantize.cpp`` ``QUANT_OPTIONS``: ``Q4_0`` … ``Q4_K_M``,
   ``IQ2_XXS``, ``TQ1_0``, ``MXFP4_MOE``, ``F16``, ``BF16``, ``F32``) and the names
   uploaders add (unsloth's ``UD-Q4_K_XL``).
2. Candidates: files whose name ends in ``.gguf``; a name starting with ``mmproj`` is a
   multimodal projector, never a model candidate. Comparisons ignore ASCII case
   (``q4_k_m`` files exist; nixpkgs compares case-sensitively).
3. A split file ``<stem>-00001-of-00003.gguf`` (llama.cpp's ``gguf-split`` naming,
   ``%s-%05d-of-%05d.gguf``) belongs to the group (folder, stem, total); other files
   are groups of one whose stem is the name without ``.gguf``.
4. A group matches when its stem is the tag, or ends in ``-<tag>``, ``.<tag>`` or
   ``_<tag>`` (nixpkgs' four ``case`` patterns): the tag must end the stem, so ``Q4_K``
   does not match ``Model-Q4_K_M`` and ``Q4_K_M`` does not match ``Model-IQ4_K_M``...
   but ``K_M`` would (as in nixpkgs).
5. Exactly one group must match: none, or several (``Q4_K_M.gguf`` and
   ``Q4_K_M/Model-Q4_K_M-00001-of-00002.gguf``; ``x-Q4_K_M.gguf`` and ``x-q4_k_m.gguf``),
   is an error listing what was found. A split group must have every part 1..N; a
   missing part is an error naming it.
6. The mmproj (``mmproj="auto"``): among the ``mmproj*.gguf`` files, those in the
   model's folder if any, else all; then the first of these keys that some match
   decides: the tag itself, ``F16`` (nixpkgs' default ``mmproj-F16.gguf``), ``BF16``,
   ``F32`` (by rule 4), exactly one such file or an error; when no key matches, the
   only mmproj file, none when there is none, else an error listing them. ``mmproj=None``
   takes none; a path takes that file (it must be listed and end in ``.gguf``).

The model's main file is the first part (llama.cpp loads the other parts beside it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: nixpkgs' ``validQuant`` (pkgs/build-support/fetchhuggingface/gguf.nix).
QUANT_RE = r"[A-Za-z0-9._+-]+"
#: llama.cpp's split naming (``gguf-split``: ``%s-%05d-of-%05d.gguf``), on the name
#: lower-cased.
_SPLIT = re.compile(r"(.*)-([0-9]{5})-of-([0-9]{5})\.gguf", re.DOTALL)
#: The mmproj preference after the tag itself (rule 6).
MMPROJ_PREFERENCE = ("F16", "BF16", "F32")

_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


class GgufError(ValueError):
    """No file, or more than one, matches a quantization tag, a split group misses a
    part, or the mmproj choice is ambiguous. ``kind`` is one of ``"bad-quant"``,
    ``"no-match"``, ``"ambiguous"``, ``"missing-part"``, ``"mmproj-ambiguous"``,
    ``"mmproj-missing"`` (the same kinds ``lib/gguf.nix`` reports)."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class GgufSelection:
    """What a tag selects: ``quant`` the tag as given; ``parts`` the model's file paths
    (one, or the parts of a split group in order); ``mmproj`` the projector's path or
    None."""

    quant: str
    parts: tuple[str, ...]
    mmproj: str | None

    @property
    def main(self) -> str:
        """The path llama.cpp is given (``-m``): the only file, or the first part."""
        return self.parts[0]

    @property
    def files(self) -> tuple[str, ...]:
        """Every selected path: the parts, then the mmproj."""
        return self.parts + ((self.mmproj,) if self.mmproj else ())


def _lower(s: str) -> str:
    return s.translate(_ASCII_LOWER)


def quant_error(quant: object) -> str | None:
    """Why ``quant`` is not a quantization tag (rule 1), or None."""
    if not isinstance(quant, str) or re.fullmatch(QUANT_RE, quant) is None:
        return ("must be letters, digits, '.', '_', '+' and '-' (a llama.cpp "
                "quantization such as Q4_K_M, IQ4_XS, Q8_0, F16, or an uploader's tag "
                "such as UD-Q4_K_XL)")
    return None


def split_model_ref(arg: str) -> tuple[str, str | None]:
    """``"ORG/NAME:QUANT"`` -> ``("ORG/NAME", "QUANT")``; anything else -> ``(arg, None)``.

    The tag is what follows the last ``:`` when that text is a tag (rule 1) and the text
    before it holds a ``/`` after its own last ``:``; so ``hf:gpt2``, URLs and
    ``https://host:443/x`` are left alone, and ``hf://ORG/NAME:Q4_K_M`` or
    ``ORG/NAME@REV:Q8_0`` split as expected.
    """
    head, colon, tail = arg.rpartition(":")
    if not colon or quant_error(tail) is not None:
        return arg, None
    if "/" not in head.rpartition(":")[2]:
        return arg, None
    return head, tail


def _ends_with_tag(stem: str, tag: str) -> bool:
    """Rule 4 on lower-cased ``stem`` and ``tag``."""
    return stem == tag or any(stem.endswith(sep + tag) for sep in "-._")


def _basename(path: str) -> str:
    return path.rpartition("/")[2]


def _dirname(path: str) -> str:
    return path.rpartition("/")[0]


def _is_gguf(path: str) -> bool:
    return _lower(_basename(path)).endswith(".gguf")


def _is_mmproj(path: str) -> bool:
    return _is_gguf(path) and _lower(_basename(path)).startswith("mmproj")


def _groups(paths: list[str]) -> dict[tuple[str, str, int], dict[int, str]]:
    """Model candidates by (folder, stem as written, total parts; 0 for a single file)
    -> {part number: path} (rule 3)."""
    groups: dict[tuple[str, str, int], dict[int, str]] = {}
    for p in sorted(paths):
        if not _is_gguf(p) or _is_mmproj(p):
            continue
        name = _basename(p)
        m = _SPLIT.fullmatch(_lower(name))
        if m is not None and 1 <= int(m.group(2)) <= int(m.group(3)):
            # ASCII lower-casing keeps lengths: the stem as written groups the parts.
            key = (_dirname(p), name[: m.end(1)], int(m.group(3)))
            groups.setdefault(key, {})[int(m.group(2))] = p
        else:
            groups.setdefault((_dirname(p), name[: -len(".gguf")], 0), {})[0] = p
    return groups


def _shown(paths: list[str], limit: int = 20) -> str:
    out = ", ".join(paths[:limit])
    return out + (f", … ({len(paths)} in all)" if len(paths) > limit else "")


def select_gguf(paths: list[str], quant: str, mmproj: str | None = "auto") -> GgufSelection:
    """Select the model file(s) and the mmproj for ``quant`` among ``paths`` (repo file
    paths) by the module docstring's rule. ``mmproj``: ``"auto"`` (rule 6), None (no
    mmproj) or a repo file path. Raises :class:`GgufError` (its ``kind`` and a message
    naming the tag, the matches or the missing part, and the fix)."""
    why = quant_error(quant)
    if why is not None:
        raise GgufError("bad-quant", f"quantization tag {quant!r} {why}")
    tag = _lower(quant)
    paths = list(paths)
    groups = _groups(paths)
    matched = sorted((k for k in groups if _ends_with_tag(_lower(k[1]), tag)),
                     key=lambda k: min(groups[k].values()))
    if not matched:
        models = sorted(p for g in groups.values() for p in g.values())
        raise GgufError("no-match", f"no .gguf file matches the quantization tag {quant!r}"
                        f" (its name must end in -{quant}, .{quant} or _{quant}, any case, "
                        "before .gguf or a -0000K-of-0000N split suffix); the .gguf files "
                        f"are: {_shown(models) if models else 'none'}")
    if len(matched) > 1:
        shown = [(g := groups[k])[min(g)] + (f" ({k[2]} parts)" if k[2] else "")
                 for k in matched]
        raise GgufError("ambiguous", f"the quantization tag {quant!r} matches several "
                        f".gguf files: {_shown(shown)}; give a longer tag that ends only "
                        "one of them (or list the files: --file, source.huggingface.files)")
    key = matched[0]
    group = groups[key]
    if key[2]:
        missing = [n for n in range(1, key[2] + 1) if n not in group]
        if missing:
            first = group[min(group)]
            raise GgufError("missing-part", f"the split model {first} has {key[2]} parts "
                            f"but part(s) {_shown([f'{n:05d}' for n in missing], 10)} are "
                            "not in the repo: all parts are needed (a partly uploaded "
                            "model? pin another commit)")
        parts = tuple(group[n] for n in range(1, key[2] + 1))
    else:
        parts = (group[0],)
    return GgufSelection(quant, parts, _mmproj(paths, quant, tag, key[0], mmproj))


def _mmproj(paths: list[str], quant: str, tag: str, folder: str,
            choice: str | None) -> str | None:
    """Rule 6."""
    if choice is None:
        return None
    if choice != "auto":
        if choice not in paths or not _is_gguf(choice):
            raise GgufError("mmproj-missing", f"mmproj {choice!r} is not a .gguf file of "
                            "the repo (give a listed path, \"auto\", or none: --mmproj none; mmproj = "
                            "null)")
        return choice
    found = sorted(p for p in paths if _is_mmproj(p))
    here = [p for p in found if _dirname(p) == folder]
    pool = here or found
    for key in (tag,) + tuple(_lower(k) for k in MMPROJ_PREFERENCE):
        hits = [p for p in pool if _ends_with_tag(_lower(_basename(p))[: -len(".gguf")], key)]
        if len(hits) == 1:
            return hits[0]
        if hits:
            pool = hits
            break
    else:
        if len(pool) <= 1:
            return pool[0] if pool else None
    raise GgufError("mmproj-ambiguous", f"several mmproj files could go with {quant!r}: "
                    f"{_shown(pool)}; choose one (--mmproj PATH; source.huggingface.mmproj "
                    "= \"PATH\"), or none (--mmproj none; mmproj = null)")
