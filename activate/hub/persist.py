"""Models that survive garbage collection: ``model-repo export``, ``import``, ``store ls``,
``store path``.

The persist folder (:func:`activate.persistdir.persist_dir`: ``--persist-dir`` >
``MODEL_REPO_PERSIST_DIR`` > ``NIX_HUG_PERSIST_DIR`` > ``persist_dir=`` in the config file
> ``$XDG_DATA_HOME/model-repo/persist``) is a Nix binary cache: ``nix copy --to
file://DIR?compression=none`` writes ``nix-cache-info``, ``<hash>.narinfo`` and
``nar/<file hash>.nar`` for a store path, and ``nix copy --from file://DIR`` puts it back
with no network. Beside them, a manifest records what each path is. A folder nix-hug
filled is read too (its ``nix-hug-manifest.json``, never written).

The modules, by concern:

- :mod:`activate.hub.binarycache`: the binary-cache format (narinfo, Nix base-32, the
  store path of a content-addressed path); :mod:`activate.hub.nar` the NAR itself;
- :mod:`activate.hub.persistmanifest`: the manifests, ours and nix-hug's;
- :mod:`activate.hub.nixstore`: the Nix store calls;
- :mod:`activate.hub.persistexport`: ``export``; :mod:`activate.hub.persistimport`:
  ``import``; this module: the commands' entry point and ``store ls``/``store path``.

Exit codes: 0 ok; 1 partial (``import --all`` with some entries not imported, or the
confirmation declined); 2 bad input (bad repo argument or setting, nothing recorded or
found for it, an unsigned import without a terminal or ``--yes``); 3 environment (Nix
missing, a corrupt persist folder, ``nix copy`` failing, folder not writable); 70
internal error.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    import argparse

from ..persistdir import ConfigError
from .api import EXIT_OK, exit_status
from .nixstore import Nix
from .persistimport import EXIT_PARTIAL, run_import, status_of
from .persistexport import run_export
from .persistmanifest import read_all

def run(args: argparse.Namespace, environ: Mapping[str, str], *,
        stdin: TextIO | None = None) -> int:
    """Run ``export``, ``import`` or ``store`` (``args.command``); returns the exit status.
    ``environ`` supplies ``PATH`` (Nix), the persist settings, ``MODEL_REPO_STATE_DIR``,
    ``NIX_STORE_DIR``. Output on stdout, logs on stderr."""
    from ..log import Log

    from .progress import configure
    from .signals import on_interrupt

    configure(quiet=args.quiet)  # bars on a terminal only, never with -q
    level = "debug" if args.verbose else "error" if args.quiet else "info"
    log = Log(level, args.log_format, color=getattr(args, "color", "auto"),
              environ=environ)
    on_interrupt.install()  # SIGINT = SIGTERM: Nix stopped, nothing half-made left, exit
    try:
        return exit_status(lambda: _run(args, environ, log,
                                        stdin if stdin is not None else sys.stdin),
                           log, bad_input=(ConfigError,))
    finally:
        on_interrupt.uninstall()


def _run(args: argparse.Namespace, environ: Mapping[str, str], log: Any, stdin: TextIO) -> int:
    from .config import load_config

    cfg = load_config(environ, persist_flag=args.persist_dir)
    for key in cfg.unknown_keys:
        log.warning(f"{cfg.config_file}: unknown setting {key!r} ignored (model-repo reads "
                    "persist_dir and auto_persist)")
    directory, source = cfg.persist_dir, cfg.persist_dir_source
    if args.command == "store":
        if args.store_command == "path":
            log.debug("persist folder", dir=directory, source=source)
            sys.stdout.write(directory + "\n")
            return EXIT_OK
        return store_ls(args, environ, directory)
    nix = Nix.find(environ)
    if args.command == "export":
        return run_export(args, environ, log, nix, directory)
    return run_import(args, environ, log, nix, directory, stdin)


def _visible(text: str) -> str:
    """``text`` with control characters (C0, DEL, C1: a manifest from a folder others
    can write may hold terminal escapes or newlines) shown as ``\\xNN``."""
    return "".join(f"\\x{ord(c):02x}" if ord(c) < 0x20 or 0x7f <= ord(c) < 0xa0 else
                   f"\\u{ord(c):04x}" if 0xd800 <= ord(c) < 0xe000 else c for c in text)


def store_ls(args: argparse.Namespace, environ: Mapping[str, str], directory: str) -> int:
    """``model-repo store ls``: each entry of ``directory`` (ours, then nix-hug's) with
    its state, as a table or ``--json``. Returns 1 when one is broken, else 0."""
    entries = read_all(directory)
    nix = Nix.find(environ)
    states = status_of(nix, directory, entries)
    rows = [{**e.to_json(), "status": st, "problem": why or None}
            for e, (st, why) in zip(entries, states)]
    if args.json:
        sys.stdout.write(json.dumps({"persistDir": directory, "entries": rows}, indent=2) + "\n")
    elif not rows:
        sys.stdout.write(f"# {directory}: nothing persisted (model-repo export ORG/NAME)\n")
    else:
        from .prefetch import human_size

        lines = [f"# {directory}"]
        width = max(len(e.repo_id) + 1 + 12 for e in entries) if entries else 0
        for e, (st, why) in zip(entries, states):
            lines.append(f"{st:<9} {(e.repo_id + '@' + e.revision[:12]):<{width}}  "
                         f"{e.repo_type:<7} {human_size(e.nar_size):>10}  {e.store_path}"
                         + (f"  ({why})" if why else ""))
        sys.stdout.write("\n".join(_visible(ln) for ln in lines) + "\n")
    return EXIT_PARTIAL if any(st == "broken" for st, _ in states) else EXIT_OK
