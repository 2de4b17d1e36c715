"""What a Hub command's arguments select: the repo, the revision and the files
(``--file``, ``--include``, ``--exclude``), and the files of a resolved repo they pick."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .api import DEFAULT_REF, EXIT_BAD_INPUT, EXIT_ENVIRONMENT, Failure, RemoteFile, Resolved
from .sparse import sparse_patterns, sparse_select


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

    @property
    def only_files(self) -> tuple[str, ...]:
        """The exact files when they are the whole selection (no ``include`` or
        ``exclude``): the Hub is then asked about those paths only (paths-info), not
        for the whole tree. Empty otherwise."""
        return () if self.include or self.exclude else self.files


def selection(args: argparse.Namespace, environ: Mapping[str, str]) -> Selection:
    """The :class:`Selection` of parsed arguments (``repo``, ``revision``, ``files``,
    ``include``, ``exclude``, ``dataset``; :func:`activate.hub.cli.add_repo_arguments`).

    A URL's ``/tree/REV`` or ``/blob/REV/FILE`` gives the revision (and file) unless
    ``--revision`` names another one (exit 2: they disagree); ``--dataset`` with a form
    that says "model" is an error. ``ORG/NAME:QUANT`` sets ``quant`` (and ``--mmproj``
    ``mmproj``): :func:`activate.hub.ggufsel.with_gguf` turns them into exact files once
    the listing is known. Raises :class:`Failure` (exit 2) naming the argument.
    """
    from .ggufsel import gguf_fields, split_arg
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
