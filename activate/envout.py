"""The environment a profile exports, and its rendering for each consumer.

Standard library only, imported lazily: the no-op path renders ``sh`` without loading
``json``, ``base64`` or ``re``.
"""

from __future__ import annotations


# The no-op path must not import typing or collections (~10 ms): annotations are
# strings (PEP 563) and these names exist only for type checkers.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

FORMATS = ("sh", "fish", "json", "dotenv", "devenv")

#: ``HF_DATASETS_OFFLINE``: the ``datasets`` library reads it before ``HF_HUB_OFFLINE``
#: (``datasets.config``), so a ``HF_DATASETS_OFFLINE=0`` left in a shell would otherwise
#: send ``load_dataset`` to the Hub.
OFFLINE_VARS = ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


def environment(
    model_paths: Mapping[str, str],
    *,
    hub_dir: str | None,
    offline: bool,
    datasets_dir: str | None = None,
    model_files: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The variables to export, sorted by name (so every run prints the same bytes).

    ``model_paths``: model name -> store path (``MODEL_REPO_<NAME>``, the loadable
    directory). ``hub_dir``: exported as ``HF_HUB_CACHE`` when not None (the caller
    passes it when the cache is not huggingface_hub's default). ``datasets_dir``: exported
    as ``HF_DATASETS_CACHE`` when not None (likewise, for the ``datasets`` cache).
    ``offline``: add ``HF_DATASETS_OFFLINE=1``, ``HF_HUB_OFFLINE=1`` and
    ``TRANSFORMERS_OFFLINE=1`` (the caller decides: only when every linked model is in
    place). ``model_files``: model name -> its one file's path inside its store path,
    exported as ``MODEL_REPO_<NAME>_FILE`` = ``<store path>/<file>`` (the manifest's
    ``file``; ``modules/common.nix`` exports the same).
    """
    from .naming import env_var_name, file_var_name

    env = {env_var_name(name): path for name, path in sorted(model_paths.items())}
    for name, file in (model_files or {}).items():
        env[file_var_name(name)] = model_paths[name] + "/" + file
    if hub_dir is not None:
        env["HF_HUB_CACHE"] = hub_dir
    if datasets_dir is not None:
        env["HF_DATASETS_CACHE"] = datasets_dir
    if offline:
        for var in OFFLINE_VARS:
            env[var] = "1"
    return dict(sorted(env.items()))


def render(env: Mapping[str, str], fmt: str) -> bytes:
    """Render ``env`` as ``fmt`` (one of :data:`FORMATS`).

    - ``sh``: ``export NAME='value'`` lines for bash, zsh, dash (``'`` as ``'\\''``).
    - ``fish``: ``set -gx NAME 'value'`` lines (``\\`` and ``'`` backslash-escaped).
    - ``json``: one flat object, variable -> value.
    - ``dotenv``: ``NAME='value'`` lines as python-dotenv and docker compose read them
      (inside single quotes only ``\\\\`` and ``\\'`` are escapes).
    - ``devenv``: ``NAME\\0base64(value)\\0`` pairs, the format of devenv's
      ``$DEVENV_TASK_EXPORTS_FILE`` (devenv CLI >= 2.0.4).

    Values may hold any character but NUL (no environment can carry it): ValueError.
    Bytes that are not UTF-8 (a path huggingface_hub accepts, kept by Python as surrogate
    escapes) are written back byte for byte, except in ``json``, which cannot carry them:
    ValueError.
    """
    for name, value in env.items():
        if "\0" in value or "\0" in name:
            raise ValueError(f"{name}: environment values cannot contain NUL")
    if fmt == "sh":
        return _bytes("".join(f"export {k}={_sh_quote(v)}\n" for k, v in env.items()))
    if fmt == "fish":
        return _bytes("".join(f"set -gx {k} {_escaped_single_quote(v)}\n" for k, v in env.items()))
    if fmt == "json":
        import json

        try:
            return (json.dumps(dict(env), indent=2, ensure_ascii=False) + "\n").encode()
        except UnicodeEncodeError:
            raise ValueError("a value holds bytes that are not UTF-8 (in a path?), which "
                             "JSON cannot carry exactly; use --format sh, fish, dotenv or "
                             "devenv") from None
    if fmt == "dotenv":
        return _bytes("".join(f"{k}={_escaped_single_quote(v)}\n" for k, v in env.items()))
    if fmt == "devenv":
        import base64

        return b"".join(
            k.encode() + b"\0" + base64.b64encode(_bytes(v)) + b"\0" for k, v in env.items()
        )
    raise ValueError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")


def _bytes(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def _sh_quote(value: str) -> str:
    return "'" + value.replace("'", "'\\''") + "'"


def _escaped_single_quote(value: str) -> str:
    # fish and python-dotenv share this rule: inside '...', only \\ and \' are escapes.
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
