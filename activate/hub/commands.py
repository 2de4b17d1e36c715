"""Running ``prefetch`` and ``ls``: parse the repo argument, resolve it on the Hub, select
the files, then list them or hand them to :mod:`activate.hub.prefetch`."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections.abc import Mapping
from typing import Any

from .api import (DEFAULT_PREFETCH_TIMEOUT, DEFAULT_TIMEOUT, EXIT_BAD_INPUT, EXIT_ENVIRONMENT,
                  EXIT_OK, GATED_NO_TOKEN, TIMEOUT_ENV, Failure, HubSession, RemoteFile,
                  Resolved, Watchdog, exit_status, printable, timeout_setting)
from .ggufsel import gguf_fields, json_of, model_ref, role, split_arg, with_gguf
from .prefetch import human_size
from .selection import Selection, select_files, selection


def run_command(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    """Run ``prefetch`` or ``ls`` (``args.command``); returns the exit status.

    ``environ`` supplies ``HF_ENDPOINT``, ``HF_TOKEN`` (else huggingface_hub's stored
    token), ``HF_HUB_OFFLINE`` (ignored, with a note), ``MODEL_REPO_PREFETCH_DIR`` /
    ``XDG_CACHE_HOME`` (the resumable download folder) and ``PATH`` (for ``nix-store``).
    Output goes to stdout, logs to stderr.
    """
    from ..log import Log

    default = "info" if args.command == "prefetch" else "warning"
    level = "debug" if args.verbose else "error" if args.quiet else default
    log = Log(level, args.log_format, color=getattr(args, "color", "auto"),
              environ=environ)
    from . import progress
    from .signals import on_interrupt

    progress.configure(quiet=args.quiet)  # bars on a terminal only, never with -q

    on_interrupt.install()  # SIGINT/SIGTERM: one line, temporary folders removed, exit now
    try:
        return exit_status(lambda: _run_bounded(args, environ, log), log)
    finally:
        on_interrupt.uninstall()


def command_timeout(args: argparse.Namespace, environ: Mapping[str, str]) -> float:
    """The command's deadline in seconds: ``MODEL_REPO_HUB_TIMEOUT``, else
    :data:`activate.hub.api.DEFAULT_PREFETCH_TIMEOUT` for a snapshot ``prefetch`` (it
    downloads the model) and :data:`activate.hub.api.DEFAULT_TIMEOUT` for the others.
    Raises :class:`Failure` (exit 2) for a value that is not a number > 0."""
    snapshot = args.command == "prefetch" and not getattr(args, "per_file", False)
    return timeout_setting(environ, TIMEOUT_ENV,
                           DEFAULT_PREFETCH_TIMEOUT if snapshot else DEFAULT_TIMEOUT)


def _run_bounded(args: argparse.Namespace, environ: Mapping[str, str], log: Any) -> int:
    """:func:`_run` under a :class:`activate.hub.api.Watchdog` of the command's deadline."""
    with Watchdog(command_timeout(args, environ), f"{TIMEOUT_ENV}=SECONDS"):
        return _run(args, environ, log)


def _run(args: argparse.Namespace, environ: Mapping[str, str], log: Any) -> int:
    """Validate the input, check for nix-store when needed (before any network), resolve
    and list, then print the listing (``ls``) or prefetch. Raises :class:`Failure`."""
    if args.command in ("lock", "update"):
        from .update import run_lock, run_update

        return (run_lock if args.command == "lock" else run_update)(args, environ, log)
    sel = selection(args, environ)
    if getattr(args, "per_file", False) and getattr(args, "add_to_store", False):
        raise Failure(EXIT_BAD_INPUT, "--per-file and --add-to-store: a per-file pin has no "
                      "snapshot hash to add under; the build fetches each file (leave out "
                      "one of them)")
    nix_store = None
    if getattr(args, "add_to_store", False):
        nix_store = shutil.which("nix-store", path=environ.get("PATH", os.defpath))
        if nix_store is None:
            raise Failure(EXIT_ENVIRONMENT, "--add-to-store needs nix-store, which is not "
                          "on PATH: install Nix (https://nixos.org/download; on Debian "
                          "`apt-get install nix-bin`), or leave out --add-to-store")
    session = HubSession(environ, log, timeout=command_timeout(args, environ))
    # A per-file pin fetches each file by URL: the exact files are all it needs to know
    # (paths-info, one request). A snapshot is a git sparse checkout, whose case
    # folding on darwin (_warn_case) needs the whole tree, as `ls` shows it.
    per_file = bool(getattr(args, "per_file", False))
    res = session.resolve(sel.repo_id, sel.repo_type, sel.revision,
                          paths=sel.only_files if per_file else ())
    log.info("resolved", repo=res.repo_id, repoType=res.repo_type, revision=sel.revision,
             commit=res.commit)
    if args.command == "prefetch" and "/" not in res.repo_id:
        raise Failure(EXIT_BAD_INPUT, f"invalid repo id {res.repo_id!r}: the Nix options "
                      "take a full repo id ORG/NAME, and the Hub gave no other name for it")
    sel = with_gguf(res, sel)  # ORG/NAME:QUANT -> the .gguf file(s) and mmproj
    chosen = select_files(res, sel)
    _warn_case(log, res, sel)
    if args.command == "ls":
        _print_ls(args, res, sel, chosen)
        return EXIT_OK
    if not chosen:
        raise Failure(EXIT_BAD_INPUT, f"no file of {res.repo_id} at {res.commit} matches "
                      f"--include {sel.include} --exclude {sel.exclude} "
                      f"(`model-repo ls {res.repo_id}` lists them)")
    if any(f.path == ".cache/huggingface" or f.path.startswith(".cache/huggingface/")
           for f in chosen):
        raise Failure(EXIT_BAD_INPUT, f"{res.repo_id} has files under .cache/huggingface/, "
                      "the folder huggingface_hub keeps its download state in: leave them "
                      "out with --exclude /.cache/huggingface/")
    if res.gated and not session.has_token:
        raise Failure(EXIT_BAD_INPUT, f"{GATED_NO_TOKEN}; then accept its conditions on "
                      f"{session.page(res.repo_id, res.repo_type)}")
    if getattr(args, "per_file", False):
        return _print_per_file(args, res, sel, pin_files_of(session, res, chosen, log))
    from .prefetch import prefetch

    return prefetch(args, sel, environ, log, session, res, chosen, nix_store)


def pin_files_of(session: HubSession, res: Resolved, chosen: list[RemoteFile],
                 log: Any) -> list:
    """:func:`activate.hub.pin.pin_files` (LFS files by the Hub's sha256, the others
    downloaded and hashed)."""
    from .pin import pin_files

    return pin_files(session, res, chosen, log)


def _print_per_file(args: argparse.Namespace, res: Resolved, sel: Selection,
                    pinned: list) -> int:
    """Print a per-file pin: the model definition with ``fileHashes`` (Nix; ``files``,
    ``include``, ``exclude`` record the selection), or with ``--json`` ``{repo, repoType,
    revision, ref, date, exactFiles, include, exclude, files: [{path, size, hash, lfs}]}``."""
    import datetime

    from .pin import render_per_file_nix

    date = datetime.datetime.now(datetime.timezone.utc).date().isoformat()
    if args.json:
        import json

        doc = {"repo": res.repo_id, "repoType": res.repo_type, "revision": res.commit,
               "ref": res.ref, "date": date, "exactFiles": list(sel.files),
               "include": list(sel.include), "exclude": list(sel.exclude),
               "files": [{"path": p.path, "size": p.size, "hash": p.hash, "lfs": p.lfs}
                         for p in pinned]}
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
    else:
        sys.stdout.write(render_per_file_nix(repo_id=model_ref(res.repo_id, sel),
                                             repo_type=res.repo_type,
                                             commit=res.commit, ref=res.ref, date=date,
                                             include=sel.include, exclude=sel.exclude,
                                             exact=sel.files, files=pinned))
    return EXIT_OK


def _warn_case(log: Any, res: Resolved, sel: Selection) -> None:
    """Warn when darwin's case-insensitive git (``core.ignorecase=true``) would select
    other files with these patterns: the pinned hash would not reproduce there."""
    from .sparse import case_differences

    added, dropped = case_differences([f.path for f in res.files], sel.patterns)
    if added or dropped:
        what = "; ".join(x for x in (
            ("adds " + ", ".join(added[:5]) + (" …" if len(added) > 5 else "")) if added else "",
            ("leaves out " + ", ".join(dropped[:5]) + (" …" if len(dropped) > 5 else ""))
            if dropped else "") if x)
        log.warning("on a darwin builder (git core.ignorecase=true) these patterns select "
                    f"other files ({printable(what)}), so this hash would not reproduce "
                    "there: write "
                    "patterns that match only the files you mean whatever their case")


def _print_ls(args: argparse.Namespace, res: Resolved, sel: Selection,
              chosen: list[RemoteFile]) -> None:
    """Print the selected files with their sizes (bytes) and a total, or JSON."""
    total = sum(f.size for f in chosen)
    if args.json:
        import json

        doc = {
            "repo": res.repo_id, "repoType": res.repo_type, "revision": res.commit,
            "ref": res.ref, "gated": bool(res.gated),
            "include": list(sel.include), "exclude": list(sel.exclude),
            "exactFiles": list(sel.files),
            "files": [{"path": f.path, "size": f.size, "lfs": f.lfs_sha256 is not None}
                      for f in chosen],
            "totalSize": total,
        }
        if sel.gguf is not None:
            doc["gguf"] = json_of(sel)
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
        return
    at = f"{res.ref} = {res.commit}" if res.ref else res.commit
    lines = [f"# {res.repo_id} ({res.repo_type}) at {printable(at)}"]
    if res.gated:
        lines.append("# gated: downloading needs HF_TOKEN (or `hf auth login`) with access")
    width = max([len(str(f.size)) for f in chosen] + [4])
    if sel.gguf is not None:
        lines.append(f"# {model_ref(res.repo_id, sel)}: llama.cpp loads {sel.gguf.main}"
                     + (f" (mmproj {sel.gguf.mmproj})" if sel.gguf.mmproj else ""))
    for f in chosen:
        mark = role(sel, f.path)
        lines.append(f"{f.size:>{width}}  {printable(f.path)}"
                     + ("  (lfs)" if f.lfs_sha256 else "") + (f"  [{mark}]" if mark else ""))
    summary = f"{len(chosen)} files, {total} bytes ({human_size(total)})"
    if len(chosen) != len(res.files):
        all_total = sum(f.size for f in res.files)
        summary += f" selected of {len(res.files)} files, {all_total} bytes"
    lines.append(summary)
    sys.stdout.write("\n".join(lines) + "\n")


