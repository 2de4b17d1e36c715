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

    Runs offline (``HF_HUB_OFFLINE=1`` is set for the ``datasets`` import); every
    temporary file lives in a directory beside ``out`` that is removed afterwards.
    Raises :class:`PrepareError` for a bad repo id, revision, snapshot, config name or an
    existing ``out``; ImportError when ``datasets`` is not installed.
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
    work = tempfile.mkdtemp(prefix=".prepare-", dir=os.path.dirname(out))
    try:
        cache = os.path.join(work, "cache")
        result = os.path.join(work, "out")
        os.mkdir(result)
        module = dataset_module_factory(snapshot, cache_dir=cache)
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
            builder.download_and_prepare(output_dir=target)
            written.append(rel)
        _drop_locks(result)
        os.rename(result, out)
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
