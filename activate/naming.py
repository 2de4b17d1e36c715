"""Names: environment variables, hub folder names, and the validity rules for the
identifiers a manifest carries.

Pure functions, standard library only: the no-op activation path imports this module
and must stay cheap. The Nix side (``lib/naming.nix``) implements the same rules; a test
holds the two together on generated names.
"""

from __future__ import annotations

import re

ENV_PREFIX = "MODEL_REPO_"

#: A model name (a key of the manifest's ``models``): ASCII only so that Nix (which works
#: on bytes) and Python (which works on code points) map it to the same variable.
MODEL_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]{0,99}$")

#: Mirrors huggingface_hub 2.x ``utils._validators.REPO_ID_REGEX`` (ASCII ``\w``, each
#: part 1-96 characters, used with ``fullmatch``), plus the other checks of
#: ``validate_repo_id``.
_REPO_ID_RE = re.compile(r"(\b[\w\-.]{1,96}\b/)?\b[\w\-.]{1,96}\b", re.ASCII)

#: A full commit id as huggingface_hub's ``REGEX_COMMIT_HASH`` (40 lowercase hex).
COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")

#: One ``/``-separated segment of a ref name.
_REF_SEGMENT_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]*$")

#: Repo types the hub cache knows, with the folder prefix huggingface_hub gives them
#: (``constants.REPO_TYPES`` and ``file_download.repo_folder_name``).
REPO_TYPES = ("model", "dataset")


def env_var_name(name: str) -> str:
    """Return the variable that carries model ``name``'s store path.

    ``MODEL_REPO_`` + ``name`` with ASCII ``a-z`` upper-cased and every character
    outside ``A-Z0-9_`` replaced by ``_``: ``bert-base`` -> ``MODEL_REPO_BERT_BASE``,
    ``all.MiniLM`` -> ``MODEL_REPO_ALL_MINILM``. Only ASCII letters change case, as
    Nix's ``lib.toUpper`` does, so both sides agree on every input.
    """
    out = []
    for ch in name:
        if "a" <= ch <= "z":
            out.append(chr(ord(ch) - 32))
        elif "A" <= ch <= "Z" or "0" <= ch <= "9" or ch == "_":
            out.append(ch)
        else:
            out.append("_")
    return ENV_PREFIX + "".join(out)


def file_var_name(name: str) -> str:
    """Return the variable that carries model ``name``'s one file (a GGUF model's file
    or first part, a ``source.url`` main file): :func:`env_var_name` + ``_FILE``, as
    ``modules/common.nix`` names it (``bert`` -> ``MODEL_REPO_BERT_FILE``)."""
    return env_var_name(name) + "_FILE"


def repo_id_error(repo_id: str) -> str | None:
    """Return why ``repo_id`` is not a valid Hub repo id, or None when it is valid.

    Mirrors huggingface_hub ``utils.validate_repo_id``: at most one ``/``, the
    ``REPO_ID_REGEX`` pattern (ASCII word characters, ``-``, ``.``; each part starts and
    ends with a word character and has at most 96 characters), no ``--`` or ``..``, no
    ``.git`` suffix. A test holds this to huggingface_hub's own function.
    """
    if not isinstance(repo_id, str):
        return "must be a string like 'org/name'"
    if repo_id.count("/") > 1:
        return "must be 'name' or 'org/name' (at most one '/')"
    if not _REPO_ID_RE.fullmatch(repo_id):
        return (
            "may contain only ASCII letters, digits, '-', '_' and '.', must start and end "
            "each part with a letter, digit or '_', and each part may not exceed 96 "
            "characters"
        )
    if "--" in repo_id or ".." in repo_id:
        return "may not contain '--' or '..'"
    if repo_id.endswith(".git"):
        return "may not end with '.git'"
    return None


def ref_error(ref: str) -> str | None:
    """Return why ``ref`` cannot name a ref file in the hub cache, or None.

    A ref is a branch or tag name such as ``main`` or ``v1.0``, possibly with ``/``
    (``refs/pr/1``, stored by huggingface_hub as nested files under ``refs/``). Each
    segment starts with a letter, digit or ``_`` (so no ``.``/``..`` and no hidden
    names); a full 40-hex commit id is not a ref (huggingface_hub never reads a ref
    file for it).
    """
    if not isinstance(ref, str) or not ref:
        return "must be a non-empty string such as 'main'"
    if len(ref) > 255:
        return "may not exceed 255 characters"
    if COMMIT_RE.match(ref):
        return "is a commit id, not a ref name (list branch or tag names such as 'main')"
    for segment in ref.split("/"):
        if not _REF_SEGMENT_RE.match(segment):
            return (
                "segments separated by '/' must be non-empty, start with a letter, digit "
                "or '_', and contain only letters, digits, '_', '.', '+' and '-'"
            )
    return None


def repo_folder_name(repo_id: str, repo_type: str) -> str:
    """Return the hub cache folder of a repo: ``models--org--name``/``datasets--org--name``.

    Mirrors huggingface_hub ``file_download.repo_folder_name``
    (``f"{repo_type}s--{repo_id}".replace("/", "--")``). ``repo_id`` must be valid.
    """
    return f"{repo_type}s--{repo_id}".replace("/", "--")
