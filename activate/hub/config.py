"""The persistence settings: ``persist_dir`` and ``auto_persist``.

Read from the config file ``$XDG_CONFIG_HOME/model-repo/config`` (else
``~/.config/model-repo/config``; while it does not exist, nix-hug's ``…/nix-hug/config``:
:func:`activate.persistdir.config_file`) in nix-hug's ``key=value`` format (seed 003,
"Persistent Storage"; parsing in :func:`activate.persistdir.read_config`), overridden by
environment variables; nix-hug's names are accepted too, so a nix-hug user's
environment keeps working:

- ``persist_dir``: ``MODEL_REPO_PERSIST_DIR``, then ``NIX_HUG_PERSIST_DIR``, then the
  file; default ``$XDG_DATA_HOME/model-repo/persist`` (``~/.local/share/…``);
- ``auto_persist``: ``MODEL_REPO_AUTO_PERSIST``, then ``NIX_HUG_AUTO_PERSIST``, then the
  file; default ``false``.

``--persist-dir DIR`` on a command beats all of them. ``auto_persist`` takes ``true``/
``false`` (also ``1``/``0``, ``yes``/``no``, ``on``/``off``, any case); with it,
``model-repo prefetch --add-to-store`` restores a persisted copy instead of downloading
and exports what it added (:mod:`activate.hub.persist`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ..persistdir import CONFIG_KEYS, ConfigError, config_file, persist_dir, read_config

__all__ = ["Config", "ConfigError", "load_config", "parse_bool"]

_TRUE = frozenset(("true", "1", "yes", "on"))
_FALSE = frozenset(("false", "0", "no", "off", ""))


@dataclass(frozen=True)
class Config:
    """The effective settings. ``*_source`` says where each came from: ``--persist-dir``,
    a variable's name, ``<config file>:<line>``, or ``default``. ``unknown_keys``: keys
    of the config file that model-repo does not know (reported, not fatal)."""

    persist_dir: str
    persist_dir_source: str
    auto_persist: bool
    auto_persist_source: str
    config_file: str
    unknown_keys: tuple[str, ...] = ()


def parse_bool(value: str, setting: str) -> bool:
    """``value`` as a boolean (see the module docstring). Raises :class:`ConfigError`
    naming ``setting`` and the accepted values."""
    low = value.strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise ConfigError(f"{setting}: expected true or false, got {value!r}")


def load_config(environ: Mapping[str, str], *, persist_flag: str | None = None) -> Config:
    """The settings for this environment (precedence in the module docstring). Raises
    :class:`ConfigError` for a malformed config file, a relative or unusable
    ``persist_dir`` and a non-boolean ``auto_persist``."""
    directory, dir_source = persist_dir(persist_flag, environ)
    path = config_file(environ)
    settings = read_config(path)
    auto, auto_source = False, "default"
    for var in ("MODEL_REPO_AUTO_PERSIST", "NIX_HUG_AUTO_PERSIST"):
        if environ.get(var, ""):
            auto, auto_source = parse_bool(environ[var], var), var
            break
    else:
        if "auto_persist" in settings:
            value, line = settings["auto_persist"]
            auto_source = f"{path}:{line}"
            auto = parse_bool(value, f"auto_persist ({auto_source})")
    unknown = tuple(sorted(k for k in settings if k not in CONFIG_KEYS))
    return Config(directory, dir_source, auto, auto_source, path, unknown)
