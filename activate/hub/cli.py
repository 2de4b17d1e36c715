"""The Hub-facing commands (``model-repo prefetch``, ``ls``, ``lock``, ``update``): their
argument parsers and the entry point that runs them.

:func:`add_parsers` imports nothing but argparse, because ``activate.cli`` builds the
whole parser (its no-op activation path never does); :func:`run` imports the rest
(:mod:`activate.hub.commands`, huggingface_hub) only when a Hub command runs.
Each parser sets ``hub_command=True``: ``activate.cli.main`` hands those to :func:`run`.

Exit codes: 0 ok; 2 bad input (invalid repo argument, unknown repo or revision, gated
repo without access, patterns that select nothing); 3 environment (huggingface_hub or
Nix missing, network or Hub failure, not enough disk space, download that does not
match the Hub's checksums); 70 internal error; 130/143 interrupted by SIGINT/SIGTERM
(:mod:`activate.hub.signals`).
"""

from __future__ import annotations

import argparse

# The no-op path must not import typing or collections: annotations are strings.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

REPO_HELP = ("ORG/NAME or NAME (model or dataset, asked of the Hub), hf:ORG/NAME (model), "
             "datasets/ORG/NAME or hf-datasets:ORG/NAME (dataset), or a Hub URL: "
             "https://huggingface.co/[datasets/]ORG/NAME[/tree/REV | /blob/REV/FILE]; "
             "ORG/NAME:QUANT selects a GGUF quantization (Q4_K_M: its .gguf file(s) and "
             "mmproj)")


def add_repo_arguments(p: argparse.ArgumentParser) -> None:
    """The repo selection every Hub command takes: ``REPO`` (:mod:`activate.hub.repoarg`),
    ``-r/--revision/--ref``, ``--file`` (repeatable, exact paths), ``--include``,
    ``--exclude`` (git sparse-checkout patterns, the Nix options of the same names) and
    ``--dataset``. Sets ``repo``, ``revision`` (None: not given), ``files``, ``include``,
    ``exclude``, ``dataset``."""
    p.add_argument("repo", metavar="REPO", help=REPO_HELP)
    p.add_argument("-r", "--revision", "--ref", dest="revision", metavar="REF", default=None,
                   help="branch, tag or commit to resolve (default: main, or the one a "
                   "/tree/REV URL names); --ref is nix-hug's name for it")
    p.add_argument("--file", dest="files", action="append", default=[], metavar="PATH",
                   help="exactly this file, a path from the repo root (repeatable; the "
                   "Nix option files)")
    p.add_argument("--include", action="append", default=[], metavar="PATTERN",
                   help="only files matching this git sparse-checkout pattern "
                   "(repeatable; same meaning as the Nix option include)")
    p.add_argument("--exclude", action="append", default=[], metavar="PATTERN",
                   help="leave out files matching this pattern (repeatable; the Nix "
                   "option exclude)")
    p.add_argument("--dataset", action="store_true",
                   help="the repo is a dataset (skips asking the Hub for a bare ORG/NAME)")
    p.add_argument("--mmproj", metavar="PATH", default=None,
                   help="with ORG/NAME:QUANT: this mmproj file instead of the one the tag "
                   "picks (mmproj-F16.gguf, ...), or 'none'")


def add_log_arguments(p: argparse.ArgumentParser) -> None:
    """``-v/--verbose/--debug``, ``-q/--quiet``, ``--log-format`` and ``--color``."""
    level = p.add_mutually_exclusive_group()
    level.add_argument("-v", "--verbose", "--debug", dest="verbose", action="store_true",
                       help="log more: each step and Hub request (stderr); --debug is "
                       "nix-hug's name for it")
    level.add_argument("-q", "--quiet", action="store_true",
                       help="log errors only; no progress bars")
    p.add_argument("--log-format", choices=("console", "json"), default="console",
                   help="stderr log format (default: console)")
    from ..log import add_color_argument

    add_color_argument(p)


def add_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register the Hub commands (``prefetch``, ``ls``, ``lock``, ``update``) on ``sub``;
    argparse only, no other import. Each sets ``hub_command=True`` for :func:`run`."""

    def common(p: argparse.ArgumentParser) -> None:
        add_repo_arguments(p)
        p.add_argument("--json", action="store_true", help="machine-readable output")
        add_log_arguments(p)
        p.set_defaults(hub_command=True)

    epilog = ("Exit codes: 0 ok, 2 bad input (invalid repo argument, unknown repo or "
              "revision, gated repo without access), 3 environment (huggingface_hub or Nix "
              "missing, network or Hub failure, disk space), 70 internal error, 130/143 "
              "interrupted (SIGINT/SIGTERM; a rerun resumes). HF_ENDPOINT and HF_TOKEN are "
              "honoured.")
    pre = sub.add_parser(
        "prefetch",
        help="resolve a ref to a commit, download the files and print the Nix pin (revision + hash)",
        description="Resolve REF to a commit, download the repo's files at that commit, "
        "verify them against the Hub's checksums and print the attribute set to paste into "
        "a model definition: source.huggingface.{repo,revision} and the SRI hash the Nix "
        "fetcher will produce.",
        epilog=epilog,
    )
    common(pre)
    pre.add_argument("--add-to-store", action="store_true",
                     help="register the files as the fetcher's fixed-output store path "
                     "(nix-store --add-fixed), so the next build does not download them again")
    pre.add_argument("--per-file", action="store_true",
                     help="pin each file by its own hash instead of the snapshot's NAR hash: "
                     "LFS files by the sha256 the Hub publishes (not downloaded), the others "
                     "downloaded and hashed; prints source.huggingface.fileHashes")

    ls = sub.add_parser("ls", help="list a repo's files and sizes at a ref, without downloading",
                        description="List the files of REPO at REF with their sizes and a "
                        "total, without downloading them. --include/--exclude show what "
                        "prefetch (and the Nix fetcher) would select.",
                        epilog=epilog)
    common(ls)

    lock_help = ("the lock file (default: model-repo.lock.json in the working directory; "
                 "the Nix option lockFile)")
    lk = sub.add_parser(
        "lock", help="pin a repo per file into the lock file (model-repo.lock.json)",
        description="Resolve REF (a branch or tag) to a commit, pin each selected file from "
        "the Hub's own hashes (LFS files by their published sha256, without downloading "
        "them; the other files downloaded and hashed) and write the result as entry NAME of "
        "the lock file, atomically. A Nix model of that name with lockFile set needs only "
        "source.huggingface.repo (and ref).",
        epilog=epilog)
    lk.add_argument("name", metavar="NAME", help="the model's name in the Nix models set")
    add_repo_arguments(lk)
    lk.add_argument("--lock-file", default="model-repo.lock.json", metavar="PATH",
                    help=lock_help)
    lk.add_argument("--json", action="store_true", help="machine-readable output")
    add_log_arguments(lk)
    lk.set_defaults(hub_command=True)

    up = sub.add_parser(
        "update", help="move locked models to their refs' current commits",
        description="Move each NAME (default: every model of the lock file) to the current "
        "commit of the ref it follows, and print the files added, removed and changed and "
        "the bytes a build will download. Any error leaves the lock file untouched; the "
        "write is atomic.",
        epilog=epilog.replace("0 ok,", "0 ok (--check: the lock file is current), 1 "
                              "--check: the lock file is behind a ref,"))
    up.add_argument("names", nargs="*", metavar="NAME", help="models of the lock file "
                    "(default: all)")
    up.add_argument("--lock-file", default="model-repo.lock.json", metavar="PATH",
                    help=lock_help)
    mode = up.add_mutually_exclusive_group()
    mode.add_argument("--dry-run", action="store_true",
                      help="print what would change; write nothing")
    mode.add_argument("--check", action="store_true",
                      help="only resolve the refs (no download, nothing written): exit 1 "
                      "when the lock file is behind one of them, 0 when it is current "
                      "(for CI jobs)")
    up.add_argument("--json", action="store_true", help="machine-readable output")
    add_log_arguments(up)
    up.set_defaults(hub_command=True)

    from .persistcli import add_parsers as add_persist_parsers  # argparse only

    add_persist_parsers(sub)  # export, import, store (activate/hub/persist.py)


def run(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    """Run the Hub command ``args.command``; returns the exit status.

    ``environ`` supplies ``HF_ENDPOINT``, ``HF_TOKEN`` (else huggingface_hub's stored
    token), ``HF_HUB_OFFLINE`` (ignored, with a note), ``TMPDIR``, ``XDG_CACHE_HOME`` (the
    resumable download folder) and ``PATH`` (for ``nix-store``). Output goes to stdout,
    logs to stderr.
    """
    if getattr(args, "persist_command", False):  # export, import, store
        from .persist import run as run_persist

        return run_persist(args, environ)
    from .commands import run_command

    return run_command(args, environ)
