"""``ORG/NAME:QUANT`` in the Hub commands (``prefetch``, ``ls``, ``lock``): the argument's
quantization tag, ``--mmproj``, and the files they select from the Hub's listing by the
rule of :mod:`activate.gguf` (the same as ``lib/gguf.nix``).

The tag becomes exact files (``--file``): what prefetch downloads and pins, what the
printed pin lists in ``files`` and a lock entry in ``exactFiles``; the printed
``source.huggingface.repo`` keeps ``:QUANT`` (nixpkgs' ``modelRef``), from which the Nix
side finds the model file and the mmproj among those files by the same rule.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from .api import EXIT_BAD_INPUT, Failure, Resolved

#: ``--mmproj none``: no projector.
NO_MMPROJ = "none"


def split_arg(arg: str) -> tuple[str, str | None]:
    """The repo argument without its ``:QUANT`` and the tag (None: none given);
    :func:`activate.gguf.split_model_ref`."""
    from ..gguf import split_model_ref

    return split_model_ref(arg) if isinstance(arg, str) else (arg, None)


def gguf_fields(args: Any, quant: str | None, *, files: Any, include: Any,
                exclude: Any) -> dict[str, Any]:
    """The ``quant`` and ``mmproj`` fields of a :class:`activate.hub.commands.Selection`
    (``mmproj``: ``"auto"``, None for ``--mmproj none``, or a path). Raises
    :class:`Failure` (exit 2) when a tag comes with ``--file``/``--include``/``--exclude``
    (a tag selects the files itself), or ``--mmproj`` without a tag."""
    given = getattr(args, "mmproj", None)
    if quant is None:
        if given is not None:
            raise Failure(EXIT_BAD_INPUT, f"--mmproj {given!r} goes with a quantization tag: "
                          "write ORG/NAME:QUANT (e.g. ORG/NAME-GGUF:Q4_K_M), or pick the "
                          "file with --file")
        return {}
    if files or include or exclude:
        raise Failure(EXIT_BAD_INPUT, f"the quantization tag :{quant} selects the .gguf "
                      "file(s) and the mmproj itself: leave out --file/--include/--exclude, "
                      "or drop the tag and list the files")
    mmproj = "auto" if given is None else None if given == NO_MMPROJ else given
    return {"quant": quant, "mmproj": mmproj}


def with_gguf(res: Resolved, sel: Any) -> Any:
    """``sel`` with its quantization tag turned into exact files (the model's part(s),
    then the mmproj) chosen among ``res.files``; ``sel`` itself when it has no tag.
    Raises :class:`Failure` (exit 2) with the rule's message (no match, several, a
    missing split part, an ambiguous mmproj)."""
    if getattr(sel, "quant", None) is None:
        return sel
    from ..gguf import GgufError, select_gguf

    try:
        picked = select_gguf([f.path for f in res.files], sel.quant, sel.mmproj)
    except GgufError as exc:
        raise Failure(EXIT_BAD_INPUT, f"{res.repo_id} at {res.commit}: {exc} "
                      f"(`model-repo ls {res.repo_id}` lists its files)") from None
    return dataclasses.replace(sel, files=picked.files, gguf=picked)


def model_ref(repo_id: str, sel: Any) -> str:
    """``ORG/NAME:QUANT`` when ``sel`` has a tag, else ``repo_id``: what a pin prints as
    ``source.huggingface.repo``."""
    quant = getattr(sel, "quant", None)
    return repo_id if quant is None else f"{repo_id}:{quant}"


def role(sel: Any, path: str) -> str:
    """What ``path`` is in ``sel``'s GGUF selection, for ``ls``: ``"gguf model"``,
    ``"gguf part K/N"``, ``"mmproj"``, or ``""``."""
    picked = getattr(sel, "gguf", None)
    if picked is None:
        return ""
    if path == picked.mmproj:
        return "mmproj"
    if path in picked.parts:
        n = len(picked.parts)
        return "gguf model" if n == 1 else f"gguf part {picked.parts.index(path) + 1}/{n}"
    return ""


def json_of(sel: Any) -> dict[str, Any] | None:
    """``{quant, main, parts, mmproj}`` of ``sel``'s GGUF selection, or None."""
    picked = getattr(sel, "gguf", None)
    if picked is None:
        return None
    return {"quant": picked.quant, "main": picked.main, "parts": list(picked.parts),
            "mmproj": picked.mmproj}
