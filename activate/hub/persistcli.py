"""The argument parsers of ``model-repo export``, ``import`` and ``store`` (``ls``,
``path``): argparse only, because ``activate.cli`` builds the whole parser for every
command but the no-op activation; :func:`activate.hub.cli.run` imports
:mod:`activate.hub.persist`, which does the work, only when one of them runs.

Each parser sets ``hub_command=True`` (``activate.cli`` hands it to
:func:`activate.hub.cli.run`) and ``persist_command=True`` (which hands it to
:func:`activate.hub.persist.run`).
"""

from __future__ import annotations

import argparse

# The no-op path must not import typing or collections: annotations are strings.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

COMMANDS = ("export", "import", "store")
#: NAR compressions offered for the binary cache; see :mod:`activate.hub.persistexport` for
#: the measurements behind the default.
COMPRESSIONS = ("none", "zstd", "xz")


def add_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``export``, ``import`` and ``store`` (``ls``, ``path``) on ``sub``
    (argparse only)."""

    def common(p: argparse.ArgumentParser) -> None:
        p.set_defaults(hub_command=True, persist_command=True)
        p.add_argument("--persist-dir", metavar="DIR",
                       help="the persist folder (default: $MODEL_REPO_PERSIST_DIR, "
                       "$NIX_HUG_PERSIST_DIR, persist_dir= in $XDG_CONFIG_HOME/model-repo/"
                       "config, else ~/.local/share/model-repo/persist)")
        level = p.add_mutually_exclusive_group()
        level.add_argument("-v", "--verbose", "--debug", dest="verbose", action="store_true",
                           help="log more (stderr)")
        level.add_argument("-q", "--quiet", action="store_true",
                           help="log errors only; no progress bars")
        p.add_argument("--log-format", choices=("console", "json"), default="console",
                       help="stderr log format (default: console)")
        from ..log import add_color_argument

        add_color_argument(p)

    def repo_args(p: argparse.ArgumentParser, required: bool) -> None:
        p.add_argument("repo", metavar="REPO", nargs=None if required else "?",
                       help="ORG/NAME (also hf:…, datasets/…, a Hub URL), a store path, "
                       "or a model's name in your configuration (models.<name>)")
        p.add_argument("-r", "--revision", "--ref", dest="revision", metavar="REF",
                       help="commit (or a prefix of 7+ hex digits), or a ref the "
                       "activated profiles record (e.g. main)")
        p.add_argument("--dataset", action="store_true", help="the repo is a dataset")

    def codes(partial: str, environment: str) -> str:
        """The exit codes of one command (each its own: ``store --help`` does not list
        ``import``'s)."""
        return (f"Exit codes: 0 ok, {partial}2 bad input, 3 environment ({environment}), "
                "70 internal error.")

    epilog = codes("1 partial (import --all: some not imported; confirmation declined), ",
                   "Nix missing, corrupt persist folder, nix copy failed")
    exp = sub.add_parser(
        "export", epilog=codes("", "Nix missing, an unreadable persist folder "
                                      "manifest, nix copy or nix-store --dump failed"),
        help="copy a model's store path into the persist folder (a Nix binary cache)",
        description="Copy the store path of REPO (fetched by Nix, or added by `prefetch "
        "--add-to-store`) into the persist folder, a Nix binary cache, and record it there, "
        "so `model-repo import` restores it after garbage collection without a download.")
    repo_args(exp, True)
    exp.add_argument("--store-path", metavar="PATH",
                     help="export this store path (when several hold the repo)")
    exp.add_argument("--file", dest="files", action="append", default=[], metavar="PATH",
                     help="the exact files the model was fetched with (recorded)")
    exp.add_argument("--include", action="append", default=[], metavar="PATTERN",
                     help="the include patterns the model was fetched with (recorded, "
                     "so auto-persist finds it for the same prefetch)")
    exp.add_argument("--exclude", action="append", default=[], metavar="PATTERN",
                     help="the exclude patterns it was fetched with (recorded)")
    exp.add_argument("--compression", choices=COMPRESSIONS, default="none",
                     help="NAR compression in the binary cache (default: none; weights "
                     "barely compress and xz is ~100x slower)")
    exp.add_argument("--state-dir", metavar="DIR",
                     help="profile states to find linked models in (default: "
                     "$MODEL_REPO_STATE_DIR, else ~/.local/state/model-repo)")
    exp.add_argument("--json", action="store_true", help="print the manifest entry as JSON")
    common(exp)

    imp = sub.add_parser(
        "import", epilog=epilog,
        help="restore persisted models into the Nix store, without network",
        description="Restore REPO (or every entry with --all) from the persist folder "
        "into the Nix store. Content-addressed paths (fixed-output fetches) are verified by "
        "Nix; others are unsigned and need a confirmation, or --yes.")
    repo_args(imp, False)
    imp.add_argument("--all", action="store_true", help="every entry of the persist folder")
    imp.add_argument("-y", "--yes", "--no-check-sigs", dest="yes", action="store_true",
                     help="import unsigned paths without asking (required without a terminal)")
    common(imp)

    store = sub.add_parser("store", help="the persist folder: ls, path",
                           description="Inspect the persist folder: `store ls` lists what it "
                           "holds and in which state, `store path` prints where it is.",
                           epilog=codes("1 store ls: an entry is broken, ",
                                        "Nix missing, an unreadable persist folder "
                                        "manifest"))
    store.set_defaults(hub_command=True, persist_command=True)
    ssub = store.add_subparsers(dest="store_command", required=True, metavar="ACTION")
    sls = ssub.add_parser("ls", help="each persisted entry: valid / persisted / broken",
                          description="List each store path the persist folder records "
                          "(by model-repo or nix-hug) with its state: valid (in the store), "
                          "persisted (only in the folder: importable) or broken (with the "
                          "reason). Exit 1 when one is broken.")
    sls.add_argument("--json", action="store_true", help="machine-readable output")
    common(sls)
    spath = ssub.add_parser("path", help="print the persist folder",
                            description="Print the persist folder: --persist-dir, else "
                            "MODEL_REPO_PERSIST_DIR, NIX_HUG_PERSIST_DIR, persist_dir= in "
                            "the config file, else the default (-v logs which).")
    common(spath)


def repo_of(args: argparse.Namespace, environ: Mapping[str, str]) -> tuple[str | None, str | None,
                                                                         str | None, str | None]:
    """``(repo id, repo type or None, revision or None, store path or None)`` of the
    REPO argument of ``export``/``import`` (``args.repo``, ``args.revision``,
    ``args.dataset``). Raises :class:`activate.hub.api.Failure` (exit 2) for a bad
    repo argument, a store path that is not one, or a file argument."""
    from .api import EXIT_BAD_INPUT, Failure
    from .nixstore import check_store_path

    arg: str = args.repo
    revision = args.revision
    if arg.startswith("/"):
        path = check_store_path(arg, "REPO")
        return None, "dataset" if args.dataset else None, revision, path
    from .repoarg import RepoArgError, parse_repo

    try:
        ref = parse_repo(arg, endpoint=environ.get("HF_ENDPOINT") or None)
    except RepoArgError as exc:
        raise Failure(EXIT_BAD_INPUT, str(exc)) from exc
    if ref.file is not None:
        raise Failure(EXIT_BAD_INPUT, f"{arg!r} names one file; export and import work on "
                      "a repo's store path: give the repo (ORG/NAME)")
    repo_type = "dataset" if args.dataset else ref.repo_type
    return ref.repo_id, repo_type, revision or ref.revision, None
