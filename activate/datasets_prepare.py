"""Prepare a dataset snapshot as the `datasets` library's own arrow cache, offline.

``datasets.load_dataset("org/name")`` with ``HF_HUB_OFFLINE=1`` does not read the hub
cache: it falls back to a dataset it prepared before, in ``HF_DATASETS_CACHE``
(``datasets.load.CachedDatasetModuleFactory`` and the packaged module
``datasets.packaged_modules.cache``). :func:`prepare_dataset` builds exactly that from a
snapshot directory, with the real ``datasets`` library; the Nix side runs it in a
derivation (``lib/datasets.nix``) and the activator links the result into the datasets
cache (:mod:`activate.datasets_link`).

Layout of the result (``out``), one directory per config, as ``datasets`` lays out
``<HF_DATASETS_CACHE>/<org>___<snake name>/``::

    <config>/<version>/<commit>/dataset_info.json
    <config>/<version>/<commit>/<snake name>-<split>.arrow   (or -00000-of-0000N.arrow)

The commit stands where ``datasets`` puts its 16-hex module hash: 40 hex characters
never collide with a cache ``datasets`` made itself.

Needs the ``datasets`` package (imported here only; the rest of model-repo does not).
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile

from .naming import COMMIT_RE, repo_id_error


class PrepareError(ValueError):
    """The snapshot cannot be prepared; ``str()`` says why and the fix."""


def prepare_dataset(snapshot: str, repo_id: str, revision: str, out: str,
                    configs: list[str] | None = None) -> list[str]:
    """Write ``snapshot`` (a directory of the dataset repo's files, e.g. its store path)
    as the prepared arrow cache of ``repo_id`` at ``revision`` into ``out`` (which must
    not exist; created atomically: a temporary sibling renamed into place).

    ``configs``: the config names to prepare, default every config the dataset card
    (``README.md`` YAML ``configs:``) declares, or ``default`` when it declares none.
    Returns the relative ``<config>/<version>/<commit>`` directories written, sorted.

    Runs offline (``HF_HUB_OFFLINE=1`` is set for the ``datasets`` import); the work
    happens in a temporary directory under ``TMPDIR``, removed afterwards; the result is
    renamed to ``out`` (copied when ``TMPDIR`` is another filesystem, and removed if that
    fails).
    Raises :class:`PrepareError` for a bad repo id, revision, snapshot, config name, an
    existing ``out``, or data ``datasets`` cannot read (its error named); ImportError when
    ``datasets`` is not installed.
    """
    error = repo_id_error(repo_id)
    if error:
        raise PrepareError(f"repo id {repo_id!r} {error}")
    if not COMMIT_RE.match(revision):
        raise PrepareError(f"revision {revision!r} is not a commit: give the 40-hex commit id")
    if not os.path.isdir(snapshot):
        raise PrepareError(f"snapshot {snapshot!r} is not a directory: give the dataset's "
                           "store path (or any directory of its files)")
    out = os.path.abspath(out)
    if os.path.lexists(out):
        raise PrepareError(f"{out!r} exists: give a path that does not exist yet")
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    from datasets.load import dataset_module_factory, get_dataset_builder_class
    from datasets.naming import camelcase_to_snakecase

    name = camelcase_to_snakecase(repo_id.split("/")[-1])
    # The work happens in TMPDIR (in a Nix build, out's parent is the store itself).
    work = tempfile.mkdtemp(prefix="model-repo-prepare-")
    try:
        cache = os.path.join(work, "cache")
        result = os.path.join(work, "out")
        os.mkdir(result)
        try:
            module = dataset_module_factory(snapshot, cache_dir=cache)
        except Exception as exc:  # noqa: BLE001 - datasets' own errors, reported as input
            raise PrepareError(f"datasets cannot read {snapshot} as a dataset "
                               f"({type(exc).__name__}: {exc}): give the directory of the "
                               "dataset repo's files (data files and README.md)") from None
        kwargs = dict(module.builder_kwargs)
        kwargs.pop("dataset_name", None)
        kwargs.pop("config_name", None)
        declared = [c.name for c in module.builder_configs_parameters.builder_configs or []]
        wanted = configs or declared or ["default"]
        unknown = [c for c in wanted if declared and c not in declared]
        if unknown:
            raise PrepareError(f"config {unknown[0]!r} is not in the dataset card: choose "
                               f"from {', '.join(declared)}")
        builder_cls = get_dataset_builder_class(module, dataset_name=name)
        written = []
        for config_name in wanted:
            info = module.dataset_infos.get(config_name) if module.dataset_infos else None
            builder = builder_cls(cache_dir=cache, dataset_name=name, config_name=config_name,
                                  hash=revision, info=info, **kwargs)
            rel = os.path.join(builder.config_id, str(builder.config.version), revision)
            target = os.path.join(result, rel)
            try:
                builder.download_and_prepare(output_dir=target)
            except Exception as exc:  # noqa: BLE001 - datasets' own errors
                raise PrepareError(f"datasets could not prepare config {config_name!r} "
                                   f"({type(exc).__name__}: {exc})") from None
            written.append(rel)
        _drop_locks(result)
        try:
            os.rename(result, out)
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
            try:  # only out may be written (a Nix build's $out): copied, removed on error
                shutil.copytree(result, out, symlinks=True)
            except BaseException:
                shutil.rmtree(out, ignore_errors=True)
                raise
        return sorted(written)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _drop_locks(root: str) -> None:
    """Remove the ``*.lock`` files ``datasets`` leaves beside what it prepared (they
    belong to the run that made them, not to the result)."""
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            if f.endswith(".lock"):
                os.unlink(os.path.join(dirpath, f))
