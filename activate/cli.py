"""The ``model-repo`` command line (also ``python -m activate``).

stdout carries only the environment (or the output of ``status``/``schema``); logs go
to stderr. Exit codes:

====  ================================================================================
0     ok: every model is in place
1     partial: some models could not be linked (each reported with its path and fix);
      the others are linked
2     bad input: invalid manifest or arguments
3     environment: lock timeout, unwritable cache or state dir
70    internal error (a bug: please report it with the log)
====  ================================================================================
"""

from __future__ import annotations

import os
import sys

from .envout import FORMATS, render

# The no-op path must not import typing or collections (~10 ms): annotations are
# strings (PEP 563) and these names exist only for type checkers.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from collections.abc import Mapping, Sequence

EXIT_OK = 0
EXIT_PARTIAL = 1
EXIT_BAD_INPUT = 2
EXIT_ENVIRONMENT = 3
EXIT_INTERNAL = 70


def _parser() -> argparse.ArgumentParser:
    import argparse

    parser = argparse.ArgumentParser(
        prog="model-repo",
        description="Link Nix-store Hugging Face models into the hub cache and print "
        "their environment.",
        epilog="Exit codes: 0 ok, 1 partial, 2 bad input, 3 environment (lock timeout, "
        "unwritable cache), 70 internal error.",
    )
    from . import __version__
    from .log import add_color_argument

    parser.add_argument("--version", action="version", version=f"model-repo {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def common(p: argparse.ArgumentParser) -> None:
        level = p.add_mutually_exclusive_group()
        level.add_argument("-v", "--verbose", action="store_true",
                           help="log every change and decision (stderr)")
        level.add_argument("-q", "--quiet", action="store_true", help="log errors only")
        p.add_argument("--log-format", choices=("console", "json"), default="console",
                       help="stderr log format (default: console)")
        add_color_argument(p)
        p.add_argument("--state-dir", metavar="DIR",
                       help="where profile states live (default: $MODEL_REPO_STATE_DIR, "
                       "else the platform's user state dir, ~/.local/state/model-repo)")

    def hub(p: argparse.ArgumentParser, what: str = "hub cache to use, overriding the "
            "manifest's cacheDir and HF_HUB_CACHE/HF_HOME") -> None:
        p.add_argument("--cache-dir", metavar="DIR",
                       help=f"{what} (~ is the HOME of the environment)")

    def env_output(p: argparse.ArgumentParser) -> None:
        p.add_argument("--manifest", required=True, metavar="FILE",
                       help="manifest JSON (version 1), usually a store path")
        p.add_argument("--format", choices=FORMATS, default="sh",
                       help="environment format on stdout (default: sh)")
        p.add_argument("--env-file", metavar="PATH",
                       help="write the environment to PATH (atomically) instead of stdout")

    act = sub.add_parser(
        "activate", help="link the manifest's models and print the environment",
        description="Link every model of the manifest into the hub cache (a snapshot link "
        "to its store path, plus its refs), remove what this profile linked before and no "
        "longer wants, restoring refs it had taken over, and print the environment "
        "(MODEL_REPO_<NAME>, HF_HUB_CACHE when the hub dir was chosen, and "
        "HF_HUB_OFFLINE/TRANSFORMERS_OFFLINE when every model is in place). A repeat run "
        "with the same manifest writes nothing.",
        epilog="Exit codes: 0 ok, 1 partial (the models that could not be linked are "
        "reported with the path and a fix; the others are linked), 2 bad input, 3 "
        "environment (lock timeout, unwritable cache or state dir), 70 internal error.")
    env_output(act)
    hub(act)
    act.add_argument("--dry-run", action="store_true", help="print the plan; write nothing")
    act.add_argument("--gc-roots", action="store_true",
                     help="keep an indirect GC root (in the state dir) for each store path "
                     "it links, and drop the roots of paths it no longer links, so "
                     "nix-collect-garbage keeps linked models (for use outside the modules)")
    act.add_argument("--lock-timeout", type=float, default=60.0, metavar="SECONDS",
                     help="how long to wait for another activator (default: 60)")
    common(act)

    env = sub.add_parser(
        "env", help="print the environment only; change nothing",
        description="Print the environment activate would print for this manifest, "
        "judging from what is in the hub cache now; write nothing (no link, no ref, no "
        "state). The offline pair appears only when every model is already linked.",
        epilog="Exit codes: 0 ok, 2 bad input, 3 environment, 70 internal error.")
    env_output(env)
    hub(env)
    common(env)

    status = sub.add_parser(
        "status", help="what is linked, for which profile, dangling, blocked",
        description="For each profile with a state in the state dir: its hub dir, each "
        "snapshot link and ref it created with its status (ok, dangling: the store path is "
        "gone; missing: someone removed it; changed: it now holds something else; "
        "damaged: a file of its store path was removed, added or rewritten), and "
        "what its last activation could not link.",
        epilog="Exit codes: 0 all ok, 1 something is dangling, missing, changed, damaged or "
        "blocked, 2 bad input (--profile names no profile with a state: the profiles "
        "that have one are listed), 3 a state cannot be read (no permission, damaged, "
        "or written by a newer model-repo), 70 internal error. Writes nothing.")
    hub(status, "only the profiles linking into this hub cache")
    status.add_argument("--profile", metavar="PROFILE",
                        help="only this profile (e.g. home-manager, nixos, devenv:/path)")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    common(status)

    deact = sub.add_parser(
        "deactivate", help="remove every link and ref a profile created",
        description="Remove every snapshot link and ref PROFILE created (in every hub "
        "cache it linked into, or only DIR with --cache-dir), give back the refs it had "
        "taken over, remove the repo folders it created once empty, and drop its state. "
        "Links another profile sharing the state dir still wants are kept.",
        epilog="Exit codes: 0 ok, 1 partial (what could not be undone stays in the "
        "state for a later run), 3 environment, 70 internal error.")
    deact.add_argument("--profile", required=True, metavar="PROFILE",
                       help="e.g. home-manager, nixos, devenv:/path")
    hub(deact, "only this hub cache")
    deact.add_argument("--dry-run", action="store_true", help="print the plan; write nothing")
    deact.add_argument("--forget", action="store_true",
                       help="only for a hub cache that is gone (removed on purpose): drop "
                       "the profile's state for it without touching any cache")
    deact.add_argument("--lock-timeout", type=float, default=60.0, metavar="SECONDS",
                       help="how long to wait for another activator (default: 60)")
    common(deact)

    sub.add_parser(
        "schema", help="print the manifest's JSON Schema",
        description="Print the JSON Schema (draft 2020-12) of the manifest, version 1, "
        "generated from the activator's own models (schemas/manifest.schema.json holds "
        "the same text).")
    prep = sub.add_parser(
        "prepare-dataset",
        help="write a dataset snapshot as the datasets library's arrow cache",
        description="Prepare a dataset repo's files (SNAPSHOT: its store path, or any "
        "directory of them) with the `datasets` library, offline, into OUT as "
        "<config>/<version>/<commit>/ directories: what `datasets.load_dataset(REPO_ID)` "
        "reads offline once the activator links it into HF_DATASETS_CACHE (manifest field "
        "`prepared`). lib/datasets.nix runs this in a derivation. Needs the `datasets` "
        "package. Prints the directories written.")
    prep.add_argument("snapshot", metavar="SNAPSHOT", help="directory of the dataset's files")
    prep.add_argument("--repo-id", required=True, metavar="ORG/NAME", help="the dataset's repo id")
    prep.add_argument("--revision", required=True, metavar="COMMIT",
                      help="the snapshot's commit (40 hex characters)")
    prep.add_argument("--out", required=True, metavar="DIR",
                      help="where to write (must not exist; made atomically)")
    prep.add_argument("--config", action="append", metavar="NAME",
                      help="prepare only this config (repeatable; default: every config "
                      "of the dataset card)")
    from .hub.cli import add_parsers  # cheap: huggingface_hub is imported only when run

    add_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Run the CLI; returns the exit status (the console script exits with it)."""
    environ = os.environ if environ is None else environ
    argv = sys.argv[1:] if argv is None else list(argv)
    quick = _noop_request(argv)
    if quick is not None:
        from .noop import try_noop

        env = try_noop(quick["--manifest"], cache_flag=quick.get("--cache-dir"),
                       state_flag=quick.get("--state-dir"), environ=environ)
        if env is not None:
            try:
                _emit(env, quick.get("--format", "sh"), quick.get("--env-file"))
            except OutputError as exc:
                sys.stderr.write(f"model-repo: error: {exc}\n")
                return EXIT_ENVIRONMENT
            return EXIT_OK
    args = parse_args(_parser(), argv)
    if getattr(args, "hub_command", False):  # prefetch, ls: activate/hub/
        from .hub.cli import run

        return run(args, environ)
    if args.command == "schema":
        from .manifest import render_schema

        sys.stdout.write(render_schema())
        return EXIT_OK
    if args.command == "prepare-dataset":
        return _prepare_dataset(args)
    from .log import Log

    level = "debug" if args.verbose else "error" if args.quiet else "warning"
    if getattr(args, "dry_run", False) and not args.quiet:
        level = "debug" if args.verbose else "info"
    log = Log(level, args.log_format, color=getattr(args, "color", "auto"),
              environ=environ)
    try:
        if args.command in ("activate", "env"):
            return _activate(args, environ, log)
        if args.command == "status":
            return _status(args, environ, log)
        if args.command == "deactivate":
            return _deactivate(args, environ, log)
    except KeyboardInterrupt:
        log.error("interrupted")
        return EXIT_ENVIRONMENT
    except Exception as exc:  # noqa: BLE001 - a bug; report it and exit distinctly
        from .activation import EnvironmentProblem
        from .state import StateProblem

        if isinstance(exc, (EnvironmentProblem, OutputError, StateProblem)):
            log.error(str(exc))
            return EXIT_ENVIRONMENT
        import traceback

        log.error("internal error", error=repr(exc), traceback=traceback.format_exc())
        return EXIT_INTERNAL
    raise AssertionError(args.command)  # pragma: no cover


def _prepare_dataset(args: argparse.Namespace) -> int:
    from .datasets_prepare import PrepareError, prepare_dataset

    try:
        written = prepare_dataset(args.snapshot, args.repo_id, args.revision, args.out,
                                  configs=args.config)
    except PrepareError as exc:
        sys.stderr.write(f"model-repo prepare-dataset: error: {exc}\n")
        return EXIT_BAD_INPUT
    except ImportError as exc:
        sys.stderr.write(f"model-repo prepare-dataset: error: {exc}: install the `datasets` "
                         "package (pip install 'datasets>=3.0')\n")
        return EXIT_ENVIRONMENT
    sys.stdout.write("".join(f"{rel}\n" for rel in written))
    return EXIT_OK


def parse_args(parser: argparse.ArgumentParser, argv: Sequence[str]) -> argparse.Namespace:
    """``parser.parse_args(argv)``, except that an argument no command knows is reported
    by the innermost subcommand's parser (``model-repo prefetch: error: unrecognized
    arguments: --bogus`` with prefetch's usage), not the top-level one: argparse hands a
    subparser's leftovers up to the parser that started (``parse_known_args``). Exits 2
    through :meth:`argparse.ArgumentParser.error`, as argparse does."""
    args, extra = parser.parse_known_args(argv)
    if extra:
        _innermost(parser, args).error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def _innermost(parser: argparse.ArgumentParser,
               args: argparse.Namespace) -> argparse.ArgumentParser:
    """The parser of the (nested) subcommand ``args`` were parsed by: the subparsers
    actions are followed by their ``dest`` (``command``, then ``store_command``…)."""
    import argparse

    while True:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        name = getattr(args, subs[0].dest, None) if subs else None
        if name is None or name not in subs[0].choices:
            return parser
        parser = subs[0].choices[name]


#: Options of ``activate`` the no-op path understands; anything else (``--dry-run``,
#: ``--verbose``, abbreviations, ``--help``) goes through argparse and the full path.
_NOOP_OPTIONS = frozenset(
    ("--manifest", "--cache-dir", "--state-dir", "--format", "--env-file", "--log-format",
     "--lock-timeout"))
_NOOP_FLAGS = frozenset(("-q", "--quiet"))


def _noop_request(argv: Sequence[str]) -> dict[str, str] | None:
    """``activate`` options as ``{"--name": value}`` when ``argv`` is a plain activation
    the no-op path may answer without building the argparse parser; otherwise None."""
    if not argv or argv[0] != "activate":
        return None
    out: dict[str, str] = {}
    rest = iter(argv[1:])
    for arg in rest:
        if arg in _NOOP_FLAGS:
            continue
        name, eq, value = arg.partition("=")
        if name not in _NOOP_OPTIONS or name in out:
            return None
        if not eq:
            nxt = next(rest, None)
            if nxt is None or nxt.startswith("-"):
                return None
            value = nxt
        out[name] = value
    if "--manifest" not in out or out.get("--format", "sh") not in FORMATS:
        return None
    return out


def _activate(args: argparse.Namespace, environ: Mapping[str, str], log: object) -> int:
    from .activation import request_of, run_activate
    from .cachedir import resolve_datasets_dir, resolve_hub_dir
    from .manifest import ManifestError, parse_manifest
    from .state import state_dir

    try:
        with open(args.manifest, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        log.error(f"cannot read the manifest {args.manifest}: {exc.strerror}")  # type: ignore[attr-defined]
        return EXIT_BAD_INPUT
    try:
        manifest = parse_manifest(data)
    except ManifestError as exc:
        log.error(f"{args.manifest}: {exc}")  # type: ignore[attr-defined]
        return EXIT_BAD_INPUT
    del data  # the models hold what they need; this copy is megabytes at 10,000 models
    hub_dir, explicit = resolve_hub_dir(args.cache_dir, manifest.cache_dir, environ)
    datasets_dir = resolve_datasets_dir(None, manifest.datasets_cache_dir, environ)
    request = request_of(manifest)
    model_count = len(manifest.models)
    del manifest
    outcome = run_activate(
        request,
        hub_dir=hub_dir,
        explicit_hub=explicit,
        state_dir=state_dir(args.state_dir, environ),
        log=log,  # type: ignore[arg-type]
        dry_run=getattr(args, "dry_run", False),
        read_only=args.command == "env",
        lock_timeout=getattr(args, "lock_timeout", 60.0),
        gc_roots=getattr(args, "gc_roots", False),
        datasets_dir=datasets_dir,
    )
    result = outcome.plan
    for note in result.notes:
        log.warning(note)  # type: ignore[attr-defined]
    if args.command == "activate":
        verb = "would" if args.dry_run else "did"
        for act in result.actions if args.dry_run else outcome.done:
            log.info(f"{verb} {act.describe()}", hub_dir=hub_dir)  # type: ignore[attr-defined]
    for problem in result.problems:
        log.error(problem.message())  # type: ignore[attr-defined]
    if args.command == "activate" and not args.dry_run:
        log.info("activated", profile=request.profile, hub_dir=hub_dir,  # type: ignore[attr-defined]
                 models=model_count, changes=len(outcome.done),
                 problems=len(result.problems))
    if args.command == "activate" and not args.dry_run:
        from .noop import remove_receipt, write_receipt

        directory = state_dir(args.state_dir, environ)
        try:
            # No receipt with prepared datasets: the no-op check verifies hub links only,
            # and the datasets cache follows HF_DATASETS_CACHE (a full run then).
            if (outcome.complete and not result.problems and not outcome.state_error
                    and not request.prepared):
                write_receipt(directory, args.manifest, args.cache_dir, environ,
                              request.profile, outcome.hub_key,
                              _ReceiptRows(outcome.records), outcome.env)
            else:
                remove_receipt(directory, args.manifest, args.cache_dir, environ)
        except OSError as exc:
            # The receipt is a cache of this run for the next one's quick exit: without
            # it the next run takes the full path. Never fail a run for it.
            try:
                remove_receipt(directory, args.manifest, args.cache_dir, environ)
            except OSError:
                pass
            log.warning(f"could not write the receipt of this run in {directory}: "  # type: ignore[attr-defined]
                        f"{exc.strerror or exc}; the next activation takes the full path "
                        "(free space in the state dir to make repeat runs quick again)")
    env, state_error, partial = outcome.env, outcome.state_error, bool(result.problems)
    # The plan, its records and the request are megabytes at 10,000 models: they go
    # before the environment is rendered (the run's last large allocation).
    del outcome, result, request
    _emit(env, args.format, args.env_file)
    if state_error:
        # Every link is in place and the state saved before the changes owns them all;
        # the environment is printed, but the run says the state is behind.
        log.error(state_error)  # type: ignore[attr-defined]
        return EXIT_ENVIRONMENT
    return EXIT_PARTIAL if partial else EXIT_OK


class _ReceiptRows:
    """The receipt's ``(kind, path, value, created)`` rows of ``records``, made one at a
    time as the receipt is written (a list of them is megabytes at 10,000 models, at the
    run's peak memory)."""

    def __init__(self, records: list) -> None:
        self.records = records

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self):  # type: ignore[no-untyped-def]
        for r in self.records:
            yield (r.kind, r.path, r.value or "", r.created)


class OutputError(Exception):
    """The environment cannot be written where or as asked (exit 3, one line)."""


def _emit(env: Mapping[str, str], fmt: str, env_file: str | None) -> None:
    """Write ``env`` as ``fmt`` to stdout, or to ``env_file`` atomically (a random
    temporary name beside it, opened ``O_EXCL | O_NOFOLLOW``, then rename; left alone
    when it already holds these bytes). Raises :class:`OutputError`."""
    try:
        data = render(env, fmt)
    except ValueError as exc:
        raise OutputError(str(exc)) from None
    if env_file is None:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return
    from .statefile import write_if_changed

    path = os.path.abspath(env_file)
    if os.path.isdir(path):
        raise OutputError(f"--env-file {env_file} is a directory; name a file in it")
    try:
        write_if_changed(path, [data], mode=0o644)
    except OSError as exc:
        raise OutputError(f"cannot write the environment to {env_file}: "
                          f"{exc.strerror or exc}; create its folder, or choose another "
                          "--env-file") from None


def _status(args: argparse.Namespace, environ: Mapping[str, str], log: object) -> int:
    """``model-repo status``: the report on stdout (text, or a JSON list with --json).

    Items of the datasets caches (``datasetsCacheDir`` in place of ``hubDir``) follow,
    unless ``--cache-dir`` is given. Exit 0 when every entry is ok, 1 when one is
    dangling/missing/changed or a model is blocked, 2 when ``--profile`` names a profile without a state (under ``--cache-dir``
    if given): stdout stays empty and the error lists the profiles that have one."""
    import json

    from .cachedir import flag_hub_dir
    from .noop import verify_records
    from .state import CorruptState, list_states, state_dir
    from .tree import Below

    from .storecheck import changed

    damaged: dict[str, str | None] = {}  # store path -> why it is damaged (once each)
    hub_filter = os.path.realpath(flag_hub_dir(args.cache_dir, environ)) if args.cache_dir else None
    directory = state_dir(args.state_dir, environ)
    report = []
    existing: list[tuple[str, str]] = []  # (profile, hub dir) of every state
    # Read-only: a corrupt state stays where it is; an unreadable state dir or a state
    # of a newer model-repo raises StateProblem (exit 3, said in main).
    corrupt: list[CorruptState] = []
    states = list_states(directory, corrupt, aside=False)
    for exc in corrupt:
        log.error(exc.message())  # type: ignore[attr-defined]
    for path, st in states:
        existing.append((st.profile, st.hub_dir))
        if hub_filter and st.hub_dir != hub_filter:
            continue
        if args.profile and st.profile != args.profile:
            continue
        entries = []
        # Entries are read relative to the hub dir's descriptor: a path of any length.
        below = Below.open(st.hub_dir)
        for rec in st.records:
            if rec.kind == "dir":
                continue
            raw = rec.to_json()
            ok = below is not None and verify_records(st.hub_dir, [raw], below,
                                                      check_store=False)  # damage: below
            state = "ok"
            if not ok:
                present = below is not None and below.exists(rec.path)
                if rec.kind in ("snapshot", "tree") and present \
                        and not os.path.isdir(rec.value or ""):
                    state = "dangling"
                elif not present:
                    state = "missing"
                else:
                    state = "changed"
            damage = None
            if state == "ok" and rec.kind in ("snapshot", "tree") and rec.value:
                if rec.value not in damaged:
                    damaged[rec.value] = changed(rec.value)
                damage = damaged[rec.value]
                if damage:
                    state = "damaged"
            entries.append({"path": os.path.join(st.hub_dir, rec.path), "kind": rec.kind,
                            "value": rec.value, "created": rec.created, "status": state})
            if damage:
                entries[-1]["reason"] = f"the store path {rec.value}: {damage}"
                entries[-1]["fix"] = (f"check it with nix-store --verify-path {rec.value}; "
                                      f"repair it (nix-store --repair-path {rec.value}) or "
                                      "delete it (nix-store --delete) and rebuild")
            if state == "dangling" and rec.value:
                from .persistdir import import_hint  # standard library

                hint = import_hint(rec.value, environ)
                if hint:
                    entries[-1]["fix"] = hint
        if below is not None:
            below.close()
        report.append({"profile": st.profile, "hubDir": st.hub_dir, "stateFile": path,
                       "upToDate": st.complete, "entries": entries,
                       "blocked": st.problems})
    if not hub_filter:  # the datasets caches' links (activate/datasets_link.py)
        from .datasets_link import DatasetsCacheProblem
        from .datasets_link import status as datasets_status

        try:
            report.extend(datasets_status(directory, args.profile))
        except DatasetsCacheProblem as exc:
            log.error(str(exc))  # type: ignore[attr-defined]
            return EXIT_ENVIRONMENT
    if args.profile and not report:
        log.error(_unknown_profile(args.profile, hub_filter, directory, existing))  # type: ignore[attr-defined]
        return EXIT_BAD_INPUT
    if args.json:
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
    else:
        if not report:
            sys.stdout.write("no profile has linked anything (no state found)\n")
        for prof in report:
            where = prof.get("hubDir") or f"datasets cache {prof['datasetsCacheDir']}"
            sys.stdout.write(f"profile {prof['profile']} -> {where}\n")
            for e in prof["entries"]:
                sys.stdout.write(f"  {e['status']:<8} {e['kind']:<8} {e['path']}"
                                 f" -> {e['value']}\n")
                if e.get("reason"):
                    sys.stdout.write(f"           {e['reason']}\n")
                if e.get("fix"):
                    sys.stdout.write(f"           fix: {e['fix']}\n")
            for b in prof["blocked"]:
                sys.stdout.write(f"  blocked  {b}\n")
    bad = any(e["status"] != "ok" for p in report for e in p["entries"]) or any(
        p["blocked"] for p in report)
    if corrupt:
        return EXIT_ENVIRONMENT
    return EXIT_PARTIAL if bad else EXIT_OK


def _unknown_profile(profile: str, hub_filter: str | None, directory: str,
                     existing: list[tuple[str, str]]) -> str:
    """The error of ``status --profile PROFILE`` when no state matches: which profiles
    have one (with their hub dirs), or that none has."""
    where = f" for the hub cache {hub_filter}" if hub_filter else ""
    head = f"profile {profile!r} has no state in {directory}{where}"
    if not existing:
        return f"{head}; no profile has one yet (nothing was activated with this state dir)"
    listed = ", ".join(f"{p!r} (hub cache {h})" for p, h in sorted(set(existing)))
    return (f"{head}; profiles with a state: {listed}. Give one of them to --profile, "
            "or leave --profile out to see all")


def _deactivate(args: argparse.Namespace, environ: Mapping[str, str], log: object) -> int:
    from .activation import run_deactivate
    from .cachedir import flag_hub_dir
    from .state import state_dir

    results = run_deactivate(
        args.profile,
        state_dir=state_dir(args.state_dir, environ),
        hub_dir=flag_hub_dir(args.cache_dir, environ) if args.cache_dir else None,
        log=log,  # type: ignore[arg-type]
        dry_run=args.dry_run,
        lock_timeout=args.lock_timeout,
        forget=args.forget,
    )
    if not results:
        log.warning("nothing to deactivate: no state for this profile", profile=args.profile)  # type: ignore[attr-defined]
    partial = False
    for hub_dir, result in results:
        for act in result.actions:
            log.info(f"{'would' if args.dry_run else 'did'} {act.describe()}", hub_dir=hub_dir)  # type: ignore[attr-defined]
        for note in result.notes:
            log.warning(note)  # type: ignore[attr-defined]
        for problem in result.problems:
            partial = True
            log.error(problem.message())  # type: ignore[attr-defined]
    return EXIT_PARTIAL if partial else EXIT_OK
