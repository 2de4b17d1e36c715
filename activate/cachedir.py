"""Where the hub cache is: the one place that decides the hub dir.

Standard library only (the no-op path imports it).
"""

from __future__ import annotations

import os

# The no-op path must not import typing or collections (~10 ms): annotations are
# strings (PEP 563) and these names exist only for type checkers.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping


def default_hub_cache(environ: Mapping[str, str]) -> str:
    """Return the hub cache huggingface_hub would use in ``environ``, as it spells it.

    Mirrors huggingface_hub ``constants.HF_HUB_CACHE`` exactly, first set wins:
    ``HF_HUB_CACHE`` > ``HUGGINGFACE_HUB_CACHE`` > ``$HF_HOME/hub`` >
    ``$XDG_CACHE_HOME/huggingface/hub`` > ``~/.cache/huggingface/hub`` (on macOS too: no
    platform branch). ``~`` and ``$VAR`` are expanded as ``os.path.expanduser`` and
    ``os.path.expandvars`` do, against ``environ``. A variable set to the empty string
    counts as set, as in huggingface_hub. The result may be relative (only if a variable
    is); :func:`resolve_hub_dir` makes it absolute.
    """

    def expand(path: str) -> str:
        return _expandvars(_expanduser(path, environ), environ)

    default_home = os.path.join(_expanduser("~", environ), ".cache")
    hf_home = expand(
        environ.get(
            "HF_HOME",
            os.path.join(environ.get("XDG_CACHE_HOME", default_home), "huggingface"),
        )
    )
    legacy = environ.get("HUGGINGFACE_HUB_CACHE", os.path.join(hf_home, "hub"))
    return expand(environ.get("HF_HUB_CACHE", legacy))


def resolve_hub_dir(
    flag: str | None, manifest_cache_dir: str | None, environ: Mapping[str, str]
) -> tuple[str, bool]:
    """Return ``(hub dir, explicit)``: the absolute, normalised hub cache to link into.

    Precedence: the ``--cache-dir`` flag, then the manifest's ``cacheDir``, then
    :func:`default_hub_cache`. ``explicit`` is True when the flag or the manifest chose
    it (the environment output then carries ``HF_HUB_CACHE`` so every program finds it).
    A relative flag resolves against the working directory, as huggingface_hub would
    resolve a relative variable. Symlinks in the path are kept (a user may point
    ``~/.cache/huggingface`` elsewhere on purpose).
    """
    if flag:
        return flag_hub_dir(flag, environ), True
    if manifest_cache_dir:
        return os.path.normpath(manifest_cache_dir), True
    return os.path.abspath(default_hub_cache(environ)), False


def flag_hub_dir(flag: str, environ: Mapping[str, str]) -> str:
    """The absolute hub dir a ``--cache-dir`` value names (``~`` expanded with
    ``environ``'s HOME, relative to the working directory); every command uses this."""
    return os.path.abspath(_expanduser(flag, environ))


def _expanduser(path: str, environ: Mapping[str, str]) -> str:
    """``os.path.expanduser`` with ``environ`` standing in for ``os.environ``.

    posixpath's rules, which huggingface_hub's constants go through: ``~`` and ``~/...``
    take ``HOME`` from ``environ`` when it is set (even to ``""``); when it is not set,
    the home directory of the current uid in the password database (never this
    process's own ``HOME``); when that uid has no entry, the path is returned unchanged.
    ``~user`` always reads the password database; a path without a leading ``~`` is
    returned as is. A trailing ``/`` of the home is dropped; an empty result is ``/``.
    """
    if path != "~" and not path.startswith("~/"):
        return os.path.expanduser(path)  # no "~", or "~user": the password database
    home = environ.get("HOME")
    if home is None:
        try:
            import pwd
        except ImportError:  # pragma: no cover - not on POSIX
            return path
        try:
            home = pwd.getpwuid(os.getuid()).pw_dir
        except KeyError:  # a uid without a passwd entry: unchanged, as posixpath does
            return path
    return (home.rstrip("/") + path[1:]) or "/"


#: ``os.path.expandvars``'s pattern (posixpath), compiled on first use: the no-op path
#: resolves hub dirs and must not pay for importing ``re`` when no ``$`` appears.
_VAR_PATTERN = r"\$(\w+|\{[^}]*\})"


def _expandvars(path: str, environ: Mapping[str, str]) -> str:
    """``os.path.expandvars`` reading ``environ`` (posixpath's rules: unknown names stay)."""
    if "$" not in path:
        return path

    import re

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name.startswith("{") and name.endswith("}"):
            name = name[1:-1]
        return environ.get(name, match.group(0))

    return re.sub(_VAR_PATTERN, value, path, flags=re.ASCII)


def default_datasets_cache(environ: Mapping[str, str]) -> str:
    """Return the cache the ``datasets`` library prepares datasets in, for ``environ``.

    Mirrors ``datasets.config.HF_DATASETS_CACHE`` (datasets 2.x to 5.x) exactly, first set
    wins: ``HF_DATASETS_CACHE`` > ``$HF_HOME/datasets`` >
    ``$XDG_CACHE_HOME/huggingface/datasets`` > ``~/.cache/huggingface/datasets``. Unlike
    huggingface_hub, ``datasets`` expands no ``$VAR``; it expands ``~`` of ``HF_HOME``
    (with the ``XDG_CACHE_HOME`` fallback joined in) and, where it reads the cache
    (``os.path.expanduser(str(config.HF_DATASETS_CACHE))``), of the final value, which
    goes through ``pathlib.Path`` (``//`` and ``.`` components and a trailing ``/``
    dropped, ``..`` kept). An empty variable counts as set. The result may be relative
    (only if a variable is); :func:`resolve_datasets_dir` makes it absolute.
    """
    from pathlib import PurePosixPath

    xdg = environ.get("XDG_CACHE_HOME", "~/.cache")
    hf_home = _expanduser(environ.get("HF_HOME", os.path.join(xdg, "huggingface")), environ)
    value = environ.get("HF_DATASETS_CACHE", os.path.join(hf_home, "datasets"))
    return _expanduser(str(PurePosixPath(value)), environ)


def resolve_datasets_dir(
    flag: str | None, manifest_dir: str | None, environ: Mapping[str, str]
) -> tuple[str, bool]:
    """Return ``(datasets cache dir, explicit)``, absolute and normalised, as
    :func:`resolve_hub_dir` does for the hub dir: the ``--datasets-cache-dir`` flag, then
    the manifest's ``datasetsCacheDir``, then :func:`default_datasets_cache`. ``explicit``:
    the environment output then carries ``HF_DATASETS_CACHE``."""
    if flag:
        return flag_hub_dir(flag, environ), True
    if manifest_dir:
        return os.path.normpath(manifest_dir), True
    return os.path.abspath(default_datasets_cache(environ)), False
