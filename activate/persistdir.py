"""Where the persist folder is, and whether a store path is kept there (standard library only).

The persist folder is a Nix binary cache (``nix copy --to file://DIR``) that
``model-repo export`` fills and ``model-repo import`` restores from, so a model survives
``nix-collect-garbage`` without a download. This module is the part the activation path
may use (``activate``/``status`` say ``model-repo import …`` for a dangling link whose
store path is persisted); it never imports :mod:`activate.hub`. The rest (export,
import, the config's other keys) lives in :mod:`activate.hub.persist` and
:mod:`activate.hub.config`.

The folder, first match wins:

1. ``--persist-dir DIR`` (the commands that take it);
2. ``$MODEL_REPO_PERSIST_DIR``, then nix-hug's ``$NIX_HUG_PERSIST_DIR``;
3. ``persist_dir=`` in the config file, ``$XDG_CONFIG_HOME/model-repo/config`` (else
   ``~/.config/model-repo/config``, on macOS too; while it does not exist, nix-hug's
   ``…/nix-hug/config``);
4. ``$XDG_DATA_HOME/model-repo/persist`` (else ``~/.local/share/model-repo/persist``).

The config file has nix-hug's format (seed 003, "Persistent Storage"; nix-hug's
``load_config`` in ``cli/lib/common.sh``): one ``key=value`` per line, split at the
first ``=``, key and value trimmed of whitespace; blank lines and lines whose first
non-blank character is ``#`` are skipped. Beyond nix-hug: a value wrapped in one pair of
matching quotes loses them, a leading ``~/`` is the home directory, and a line without
``=`` is an error naming the file and line rather than being skipped silently.

Whether a store path is persisted is a file test in the binary cache layout: Nix writes
``<DIR>/<hash part of the store path>.narinfo`` for every path it copies there.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

CONFIG_KEYS = ("persist_dir", "auto_persist")
#: Characters a persist folder's path may hold: Nix takes ``file://DIR`` literally (no
#: percent-decoding) and stops at whitespace, ``?`` and ``#`` (measured with Nix 2.8).
_URL_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
                      "/._~+-=@,:")


class ConfigError(ValueError):
    """A bad setting; the message names the setting (variable, or file and line) and the fix."""


def _home(environ: Mapping[str, str]) -> str:
    home = environ.get("HOME")
    if home:
        return home
    import pwd

    return pwd.getpwuid(os.getuid()).pw_dir


def config_file(environ: Mapping[str, str]) -> str:
    """Path of the config file: ``$XDG_CONFIG_HOME/model-repo/config`` when
    ``XDG_CONFIG_HOME`` is an absolute path, else ``~/.config/model-repo/config``. When
    that file does not exist but nix-hug's (``…/nix-hug/config``, same format) does,
    nix-hug's, so a nix-hug user's settings carry over until they write their own."""
    xdg = environ.get("XDG_CONFIG_HOME", "")
    base = xdg if os.path.isabs(xdg) else os.path.join(_home(environ), ".config")
    ours = os.path.join(base, "model-repo", "config")
    theirs = os.path.join(base, "nix-hug", "config")
    return theirs if not os.path.exists(ours) and os.path.isfile(theirs) else ours


def read_config(path: str) -> dict[str, tuple[str, int]]:
    """The settings of the config file at ``path`` as ``{key: (value, line number)}``;
    ``{}`` when the file does not exist. Keys outside :data:`CONFIG_KEYS` are returned
    too (callers decide what to say about them). Raises :class:`ConfigError` for a line
    without ``=`` or an empty key, and when the file exists but cannot be read."""
    try:
        with open(path, encoding="utf-8") as fh:
            lines = fh.read().splitlines()
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the config file {path}: {exc}") from exc
    out: dict[str, tuple[str, int]] = {}
    for number, line in enumerate(lines, 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        key, eq, value = text.partition("=")
        key, value = key.strip(), value.strip()
        if not eq or not key:
            raise ConfigError(f"{path}:{number}: expected key=value (e.g. "
                              f"persist_dir=/persist/models), got {line!r}")
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        out[key] = (value, number)
    return out


def check_dir(value: str, setting: str, environ: Mapping[str, str]) -> str:
    """``value`` as an absolute, normalised persist folder path (``~/`` expanded).
    ``setting`` names where it came from, for the message. Raises :class:`ConfigError`
    for a relative path or characters Nix cannot take in a ``file://`` store URL."""
    if value == "~" or value.startswith("~/"):
        value = _home(environ) + value[1:]
    if not os.path.isabs(value):
        raise ConfigError(f"{setting}: the persist folder must be an absolute path, got "
                          f"{value!r} (e.g. /persist/models)")
    value = os.path.normpath(value)
    bad = sorted({c for c in value if c not in _URL_SAFE})
    if bad:
        raise ConfigError(f"{setting}: {value!r} holds {''.join(bad)!r}, which Nix cannot "
                          "take in a file:// binary cache URL; choose a folder whose path "
                          "has only letters, digits and /._~+-=@,:")
    return value


def persist_dir(flag: str | None, environ: Mapping[str, str]) -> tuple[str, str]:
    """The persist folder and where it came from (``--persist-dir``, the variable's
    name, ``<config file>:<line>``, or ``default``), by the precedence in the module
    docstring. Raises :class:`ConfigError` for a bad value or config file."""
    if flag:
        return check_dir(flag, "--persist-dir", environ), "--persist-dir"
    for var in ("MODEL_REPO_PERSIST_DIR", "NIX_HUG_PERSIST_DIR"):
        value = environ.get(var, "")
        if value:
            return check_dir(value, var, environ), var
    path = config_file(environ)
    settings = read_config(path)
    if "persist_dir" in settings and settings["persist_dir"][0]:
        value, line = settings["persist_dir"]
        where = f"{path}:{line}"
        return check_dir(value, f"persist_dir ({where})", environ), where
    xdg = environ.get("XDG_DATA_HOME", "")
    base = xdg if os.path.isabs(xdg) else os.path.join(_home(environ), ".local", "share")
    return check_dir(os.path.join(base, "model-repo", "persist"), "the default persist "
                     "folder", environ), "default"


def narinfo_path(directory: str, store_path: str) -> str:
    """``<directory>/<hash part>.narinfo``: where a Nix binary cache describes
    ``store_path`` (``/nix/store/<32-char hash>-<name>``)."""
    base = os.path.basename(store_path.rstrip("/"))
    return os.path.join(directory, base.split("-", 1)[0] + ".narinfo")


def persisted_in(store_path: str, environ: Mapping[str, str] | None = None) -> str | None:
    """The persist folder holding ``store_path``'s narinfo, or None (not persisted, or
    no usable persist folder configured). Never raises: this runs while reporting
    another problem."""
    environ = os.environ if environ is None else environ
    try:
        directory, _ = persist_dir(None, environ)
    except (ConfigError, OSError, KeyError):
        return None
    return directory if os.path.isfile(narinfo_path(directory, store_path)) else None


def import_hint(store_path: str, environ: Mapping[str, str] | None = None) -> str | None:
    """The fix for a missing ``store_path`` that the persist folder holds
    (``restore it without a download: model-repo import <store path>``), or None when
    it is not persisted there."""
    directory = persisted_in(store_path, environ)
    if directory is None:
        return None
    return (f"restore it from the persist folder {directory} without a download: "
            f"model-repo import {store_path}")
