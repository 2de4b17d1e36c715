"""Running ``prefetch`` and ``ls``: parse the repo argument, resolve it on the Hub, select
the files, then list them or hand them to :mod:`activate.hub.prefetch`."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .api import (DEFAULT_REF, EXIT_BAD_INPUT, EXIT_ENVIRONMENT, EXIT_OK, GATED_NO_TOKEN,
                  Failure, HubSession, RemoteFile, Resolved, exit_status)
from .ggufsel import gguf_fields, json_of, model_ref, role, split_arg, with_gguf
from .prefetch import human_size
from .sparse import sparse_patterns, sparse_select


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
    from .signals import on_interrupt

    on_interrupt.install()  # SIGINT/SIGTERM: one line, temporary folders removed, exit now
    try:
        return exit_status(lambda: _run(args, environ, log), log)
    finally:
        on_interrupt.uninstall()


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
    session = HubSession(environ, log)
    res = session.resolve(sel.repo_id, sel.repo_type, sel.revision)
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


@dataclass(frozen=True)
class Selection:
    """What a Hub command's arguments ask for: ``repo_type`` None means "ask the Hub"
    (a bare id); ``revision`` the ref or commit to resolve; ``files`` exact paths;
    ``include``/``exclude`` git sparse-checkout patterns; ``patterns`` the pattern list
    the Nix fetcher will use for them (:func:`activate.hub.sparse.sparse_patterns`)."""

    repo_id: str
    repo_type: str | None
    revision: str
    files: tuple[str, ...]
    include: tuple[str, ...]
    exclude: tuple[str, ...]
    #: ``ORG/NAME:QUANT``'s tag, the ``--mmproj`` choice ("auto", None: none, a path) and,
    #: once resolved, the GGUF selection (:mod:`activate.hub.ggufsel`).
    quant: str | None = None
    mmproj: str | None = "auto"
    gguf: Any = None

    @property
    def patterns(self) -> list[str]:
        return sparse_patterns(self.include, self.exclude, self.files)


def selection(args: argparse.Namespace, environ: Mapping[str, str]) -> Selection:
    """The :class:`Selection` of parsed arguments (``repo``, ``revision``, ``files``,
    ``include``, ``exclude``, ``dataset``; :func:`activate.hub.cli.add_repo_arguments`).

    A URL's ``/tree/REV`` or ``/blob/REV/FILE`` gives the revision (and file) unless
    ``--revision`` names another one (exit 2: they disagree); ``--dataset`` with a form
    that says "model" is an error. ``ORG/NAME:QUANT`` sets ``quant`` (and ``--mmproj``
    ``mmproj``): :func:`activate.hub.ggufsel.with_gguf` turns them into exact files once
    the listing is known. Raises :class:`Failure` (exit 2) naming the argument.
    """
    from .repoarg import RepoArgError, parse_repo

    try:
        repo_arg, quant = split_arg(args.repo)
        ref = parse_repo(repo_arg, endpoint=environ.get("HF_ENDPOINT"))
    except RepoArgError as exc:
        raise Failure(EXIT_BAD_INPUT, str(exc)) from None
    repo_type = ref.repo_type
    if args.dataset:
        if repo_type == "model":
            raise Failure(EXIT_BAD_INPUT, f"--dataset, but {args.repo!r} names a model repo: "
                          "write datasets/ORG/NAME (or drop --dataset)")
        repo_type = "dataset"
    revision = args.revision
    if revision is not None and ref.revision is not None and revision != ref.revision:
        raise Failure(EXIT_BAD_INPUT, f"--revision {revision!r} and the URL's revision "
                      f"{ref.revision!r} disagree: give one of them")
    revision = revision if revision is not None else ref.revision or DEFAULT_REF
    if not revision:
        raise Failure(EXIT_BAD_INPUT, "--revision must not be empty (e.g. main)")
    files = list(args.files or [])
    if ref.file is not None and ref.file not in files:
        files.append(ref.file)
    for f in files:
        bad = (not f or f.startswith("/") or f.endswith("/")
               or any(seg in ("", ".", "..") for seg in f.split("/")))
        if bad:
            raise Failure(EXIT_BAD_INPUT, f"--file {f!r}: give a file's path from the repo "
                          "root, such as config.json or onnx/model.onnx (no leading or "
                          "trailing '/', no '.' or '..')")
    return Selection(ref.repo_id, repo_type, revision, tuple(files),
                     tuple(args.include or ()), tuple(args.exclude or ()),
                     **gguf_fields(args, quant, files=files, include=args.include,
                                   exclude=args.exclude))


def select_files(res: Resolved, sel: Selection) -> list[RemoteFile]:
    """The files of ``res`` that ``sel`` selects (git sparse-checkout rules); raises
    :class:`Failure` (exit 2) when a ``--file`` is not in the repo at that commit."""
    paths = {f.path for f in res.files}
    missing = [f for f in sel.files if f not in paths]
    if missing:
        raise Failure(EXIT_BAD_INPUT, f"--file {', '.join(missing)}: not in {res.repo_id} at "
                      f"{res.commit} (`model-repo ls {res.repo_id}` lists its files)")
    selected = set(sparse_select([f.path for f in res.files], sel.patterns))
    chosen = [f for f in res.files if f.path in selected]
    check_repo_paths(res, chosen)
    return chosen


def check_repo_paths(res: Resolved, files: list[RemoteFile]) -> None:
    """Refuse (exit 3) a Hub listing whose file path breaks the repo file path rule
    (:func:`activate.repopath.repo_path_error`: no "..", ".", empty or absolute paths,
    no control characters, ...): nothing is pinned, printed or written for it."""
    from ..repopath import repo_path_error, shown

    for f in files:
        why = repo_path_error(f.path)
        if why is not None:
            raise Failure(EXIT_ENVIRONMENT, f"the Hub lists a file of {res.repo_id} at "
                          f"{res.commit} whose path {shown(f.path)} {why}: it is not a "
                          "repo file path model-repo can pin or fetch (leave it out with "
                          "--exclude, or check HF_ENDPOINT)")


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
                    f"other files ({what}), so this hash would not reproduce there: write "
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
    lines = [f"# {res.repo_id} ({res.repo_type}) at {at}"]
    if res.gated:
        lines.append("# gated: downloading needs HF_TOKEN (or `hf auth login`) with access")
    width = max([len(str(f.size)) for f in chosen] + [4])
    if sel.gguf is not None:
        lines.append(f"# {model_ref(res.repo_id, sel)}: llama.cpp loads {sel.gguf.main}"
                     + (f" (mmproj {sel.gguf.mmproj})" if sel.gguf.mmproj else ""))
    for f in chosen:
        mark = role(sel, f.path)
        lines.append(f"{f.size:>{width}}  {f.path}" + ("  (lfs)" if f.lfs_sha256 else "")
                     + (f"  [{mark}]" if mark else ""))
    summary = f"{len(chosen)} files, {total} bytes ({human_size(total)})"
    if len(chosen) != len(res.files):
        all_total = sum(f.size for f in res.files)
        summary += f" selected of {len(res.files)} files, {all_total} bytes"
    lines.append(summary)
    sys.stdout.write("\n".join(lines) + "\n")


