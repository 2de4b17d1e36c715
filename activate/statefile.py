"""Where profile states live (standard library only: the no-op path uses this without
paying for the typed records of :mod:`activate.state`).

One JSON file per (hub dir, profile) in the state dir: ``--state-dir`` >
``$MODEL_REPO_STATE_DIR`` > platformdirs' ``user_state_dir("model-repo")``
(``$XDG_STATE_HOME/model-repo`` or ``~/.local/state/model-repo`` on Linux). The modules
pass the dir explicitly (Home Manager: ``xdg.stateHome``; devenv: its state dir; NixOS:
``/var/lib/model-repo``), which also keeps platformdirs off the no-op path.
"""

from __future__ import annotations

import os

# The no-op path must not import typing or collections (~10 ms): annotations are
# strings (PEP 563) and these names exist only for type checkers.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

STATE_VERSION = 1


def state_dir(flag: str | None, environ: Mapping[str, str]) -> str:
    """The directory holding profile states (see the module docstring for precedence)."""
    if flag:
        return os.path.abspath(flag)
    override = environ.get("MODEL_REPO_STATE_DIR")
    if override:
        return os.path.abspath(override)
    import platformdirs  # only here: it costs ~15 ms, a third of the no-op path's budget

    return platformdirs.user_state_dir("model-repo", appauthor=False)


def state_file(directory: str, hub_dir: str, profile: str) -> str:
    """Path of the state of ``profile`` for ``hub_dir``: ``<dir>/<sha256[:32]>.json``."""
    import hashlib

    key = hashlib.sha256(f"{hub_dir}\0{profile}".encode()).hexdigest()[:32]
    return os.path.join(directory, f"{key}.json")
