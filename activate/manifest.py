"""The manifest, version 1: the contract between the Nix side and the activator.

The pydantic models below are its single definition; ``schemas/manifest.schema.json`` is
generated from them (``model-repo schema``) and a test fails when the two drift.
"""

from __future__ import annotations

import json
import os
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from .naming import (
    COMMIT_RE,
    MODEL_NAME_RE,
    env_var_name,
    file_var_name,
    ref_error,
    repo_folder_name,
    repo_id_error,
)

MANIFEST_VERSION = 1
DEFAULT_STORE_DIR = "/nix/store"

#: A Nix store path's base name: 32 characters of Nix's base-32 alphabet, ``-``, a name.
_STORE_NAME_CHARS = set("0123456789abcdfghijklmnpqrsvwxyz")
_STORE_PATH_NAME_EXTRA = set("+-._?=")


class ManifestError(ValueError):
    """The manifest is unusable; ``str()`` names each bad field and how to fix it."""


class Model(BaseModel):
    """One model (or dataset) to link: what the Nix side fetched, and where it lives."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    repo_id: Annotated[
        str,
        Field(
            alias="repoId",
            description="Hub repo id, 'org/name' or 'name' (rules of huggingface_hub "
            "validate_repo_id).",
            examples=["sentence-transformers/all-MiniLM-L6-v2"],
        ),
    ]
    repo_type: Annotated[
        Literal["model", "dataset"],
        Field(alias="repoType", description="Hub repo type."),
    ] = "model"
    revision: Annotated[
        str,
        Field(
            description="The pinned commit: 40 lowercase hex characters.",
            json_schema_extra={"pattern": "^[0-9a-f]{40}$"},
        ),
    ]
    refs: Annotated[
        list[str],
        Field(
            description="Ref names (branches, tags) written under refs/ pointing at the "
            "revision; at least one when link is true, since `hf cache prune` drops "
            "revisions no ref names.",
        ),
    ] = ["main"]
    path: Annotated[
        str,
        Field(
            description="Store path of a flat directory holding the repo's files, "
            "directly under storeDir.",
        ),
    ]
    link: Annotated[
        bool,
        Field(
            description="Link into the hub cache; false = environment variable only.",
        ),
    ] = True
    partial: Annotated[
        bool,
        Field(
            description="The store path may hold only some of the revision's files (fetched "
            "with include/exclude). Its snapshot is then a real directory of per-file "
            "links, so huggingface_hub downloads a missing file beside them instead of "
            "into the store.",
        ),
    ] = False
    prepared: Annotated[
        str | None,
        Field(
            description="Store path of the dataset prepared as the `datasets` library's "
            "arrow cache (lib/datasets.nix: <config>/<version>/<commit>/ directories); "
            "linked into the datasets cache so `datasets.load_dataset(repoId)` works "
            "offline. Only with repoType = 'dataset'; null = none.",
        ),
    ] = None
    file: Annotated[
        str | None,
        Field(
            description="The model's one file, as a path inside `path` (a GGUF "
            "quantization's model file or first part, a source.url main file): exported "
            "as MODEL_REPO_<NAME>_FILE = <path>/<file>, as the modules do; null = none.",
            examples=["Q8_0/Tiny-Q8_0-00001-of-00002.gguf"],
        ),
    ] = None

    @field_validator("file")
    @classmethod
    def _check_file(cls, value: str | None) -> str | None:
        from .repopath import repo_path_error, shown

        why = None if value is None else repo_path_error(value)
        if why is not None:
            raise ValueError(f"the file path {shown(value)} {why}: give the file's path "
                             "inside the store path (the repo file path rule, "
                             "activate/repopath.py)")
        return value

    @field_validator("repo_id")
    @classmethod
    def _check_repo_id(cls, value: str) -> str:
        error = repo_id_error(value)
        if error:
            raise ValueError(f"repo id {value!r} {error}")
        return value

    @field_validator("revision")
    @classmethod
    def _check_revision(cls, value: str) -> str:
        if not COMMIT_RE.match(value):
            raise ValueError(
                f"{value!r} is not a commit: pin the 40-hex commit id "
                "(`model-repo prefetch ORG/NAME` prints it)"
            )
        return value

    @field_validator("refs")
    @classmethod
    def _check_refs(cls, value: list[str]) -> list[str]:
        for ref in value:
            error = ref_error(ref)
            if error:
                raise ValueError(f"ref {ref!r} {error}")
        if len(set(value)) != len(value):
            raise ValueError("lists a ref twice")
        return value

    @model_validator(mode="after")
    def _check_refs_when_linked(self) -> Model:
        if self.link and not self.refs:
            raise ValueError(
                "refs is empty: list at least one ref (e.g. ['main']) so the linked "
                "revision is not dropped by `hf cache prune`"
            )
        return self

    @model_validator(mode="after")
    def _check_prepared(self) -> Model:
        if self.prepared is not None and self.repo_type != "dataset":
            raise ValueError(
                "prepared is set but repoType is not 'dataset': only datasets are "
                "prepared for the `datasets` library; remove prepared"
            )
        return self

    @property
    def folder(self) -> str:
        """The repo's folder in the hub cache (``models--org--name``)."""
        return repo_folder_name(self.repo_id, self.repo_type)


class Manifest(BaseModel):
    """What to link for one profile, and where."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    version: Annotated[
        Literal[1], Field(description="Manifest format version; only 1 exists.")
    ]
    profile: Annotated[
        str,
        Field(
            min_length=1,
            max_length=4096,
            description="Owner of the links: 'home-manager', 'devenv:<project root>', "
            "'nixos', ... Pruning touches only what this profile created.",
        ),
    ]
    cache_dir: Annotated[
        str | None,
        Field(
            alias="cacheDir",
            description="Absolute hub cache dir, or null to resolve it as huggingface_hub "
            "does (HF_HUB_CACHE > HUGGINGFACE_HUB_CACHE > $HF_HOME/hub > "
            "$XDG_CACHE_HOME/huggingface/hub > ~/.cache/huggingface/hub).",
        ),
    ] = None
    datasets_cache_dir: Annotated[
        str | None,
        Field(
            alias="datasetsCacheDir",
            description="Absolute `datasets` cache dir that prepared datasets are linked "
            "into, or null to resolve it as the `datasets` library does "
            "(HF_DATASETS_CACHE > $HF_HOME/datasets > $XDG_CACHE_HOME/huggingface/datasets "
            "> ~/.cache/huggingface/datasets).",
        ),
    ] = None
    offline: Annotated[
        bool,
        Field(
            description="Emit HF_HUB_OFFLINE=1, HF_DATASETS_OFFLINE=1 and "
            "TRANSFORMERS_OFFLINE=1 (only when every linked model is in place).",
        ),
    ] = False
    store_dir: Annotated[
        str,
        Field(alias="storeDir", description="The Nix store every model path lies in."),
    ] = DEFAULT_STORE_DIR
    models: Annotated[
        dict[str, Model],
        Field(description="Model name -> model. The name gives MODEL_REPO_<NAME>."),
    ] = {}

    @field_validator("profile")
    @classmethod
    def _check_profile(cls, value: str) -> str:
        if "\0" in value or "\n" in value:
            raise ValueError("may not contain NUL or newline characters")
        return value

    @field_validator("cache_dir")
    @classmethod
    def _check_cache_dir(cls, value: str | None) -> str | None:
        if value is None:
            return None
        _check_abs_path(value, "cacheDir")
        return os.path.normpath(value)

    @field_validator("datasets_cache_dir")
    @classmethod
    def _check_datasets_cache_dir(cls, value: str | None) -> str | None:
        if value is None:
            return None
        _check_abs_path(value, "datasetsCacheDir")
        return os.path.normpath(value)

    @field_validator("store_dir")
    @classmethod
    def _check_store_dir(cls, value: str) -> str:
        _check_abs_path(value, "storeDir")
        if os.path.normpath(value) != value or value == "/":
            raise ValueError(
                f"{value!r} is not a canonical directory (no trailing '/', '.', '..', "
                "'//'; not '/')"
            )
        return value

    @model_validator(mode="after")
    def _check_models(self) -> Manifest:
        problems: list[str] = []
        by_var: dict[str, str] = {}
        snapshots: dict[tuple[str, str], tuple[str, str]] = {}
        refs: dict[tuple[str, str], tuple[str, str]] = {}
        folders: dict[tuple[str, str], tuple[str, str]] = {}  # (folder, ref folder) -> (ref, model)
        for name, model in self.models.items():
            if not MODEL_NAME_RE.match(name):
                problems.append(
                    f"models.{name!r}: a model name must match "
                    f"{MODEL_NAME_RE.pattern} (letters, digits, '_', '.', '+', '-'; "
                    "at most 100 characters)"
                )
                continue
            for var in [env_var_name(name)] + (
                    [file_var_name(name)] if model.file is not None else []):
                if var in by_var:
                    problems.append(
                        f"models.{name!r} and models.{by_var[var]!r} both map to {var}: "
                        "rename one of them"
                    )
                by_var[var] = name
            path_error = store_path_error(model.path, self.store_dir)
            if path_error:
                problems.append(f"models.{name!r}.path: {path_error}")
            if model.prepared is not None:
                prepared_error = store_path_error(model.prepared, self.store_dir)
                if prepared_error:
                    problems.append(f"models.{name!r}.prepared: {prepared_error}")
            if not model.link:
                continue
            key = (model.folder, model.revision)
            if key in snapshots and snapshots[key][1] != model.path:
                other = snapshots[key][0]
                problems.append(
                    f"models.{name!r} and models.{other!r} link the same revision of "
                    f"{model.repo_id} to different store paths: keep one, or set "
                    "link = false on the other"
                )
            snapshots.setdefault(key, (name, model.path))
            folder = model.folder
            for ref in model.refs:
                clash = _nested_ref(folder, ref, name, refs, folders)
                if clash:
                    problems.append(
                        f"models.{name!r}.refs: ref {ref!r} and ref {clash[0]!r} "
                        f"(models.{clash[1]!r}) of {model.repo_id} cannot both exist: one "
                        "would be a file and a folder under refs/ at once; rename one"
                    )
                rkey = (folder, ref)
                if rkey in refs and refs[rkey][1] != model.revision:
                    other = refs[rkey][0]
                    problems.append(
                        f"models.{name!r} and models.{other!r} both want ref {ref!r} of "
                        f"{model.repo_id} at different revisions: give one another ref"
                    )
                refs.setdefault(rkey, (name, model.revision))
        if problems:
            raise ValueError("; ".join(problems))
        return self


def _nested_ref(folder: str, ref: str, name: str,
                refs: dict[tuple[str, str], tuple[str, str]],
                folders: dict[tuple[str, str], tuple[str, str]]) -> tuple[str, str] | None:
    """``(other ref, its model)`` when ``ref`` (of model ``name``, repo ``folder``) is a
    folder of a ref seen before (``main`` after ``main/x``) or lies in one (``main/x``
    after ``main``), else None; then records ``ref``'s parent folders in ``folders``.
    ``refs`` maps ``(folder, ref)`` to ``(model, revision)``. Linear in the refs."""
    parts = ref.split("/")
    parents = ["/".join(parts[:i]) for i in range(1, len(parts))]
    clash = folders.get((folder, ref))
    for parent in parents:
        if clash is None and (folder, parent) in refs:
            clash = (parent, refs[(folder, parent)][0])
    for parent in parents:
        folders.setdefault((folder, parent), (ref, name))
    return clash


def _check_abs_path(value: str, field: str) -> None:
    if not value.startswith("/"):
        raise ValueError(
            f"{value!r} is not absolute: give an absolute path (the Nix modules resolve "
            f"relative {field} values for you)"
        )
    if "\0" in value:
        raise ValueError("may not contain NUL")


def store_path_error(path: str, store_dir: str) -> str | None:
    """Return why ``path`` is not a canonical store path directly under ``store_dir``.

    A store path is ``<storeDir>/<32 chars of Nix base-32>-<name>`` where the name uses
    ``A-Za-z0-9+-._?=`` and does not start with ``.`` (Nix's own rules,
    ``StorePath`` in libstore). No trailing ``/``, no ``..``, no sub-path.
    """
    parent, base = os.path.split(path)
    if parent != store_dir or os.path.normpath(path) != path:
        return (
            f"{path!r} must be a store path directly under {store_dir!r} "
            "(like /nix/store/<hash>-<name>, no sub-directory, no '..' or trailing '/')"
        )
    digest, dash, name = base.partition("-")
    if (
        len(digest) != 32
        or not dash
        or not set(digest) <= _STORE_NAME_CHARS
        or not name
        or name.startswith(".")
        or len(name) > 211
        or not all(ch.isascii() and (ch.isalnum() or ch in _STORE_PATH_NAME_EXTRA) for ch in name)
    ):
        return f"{base!r} is not a store path name (<32-char hash>-<name>)"
    return None


def parse_manifest(data: bytes | str) -> Manifest:
    """Parse and validate manifest JSON text.

    Raises :class:`ManifestError` whose message names every bad field (as a dotted path
    such as ``models.bert.revision``), one per line, each with its fix: all mistakes at
    once, including the checks across models that pydantic skips once a field is
    invalid (see :func:`_problems`). An unsupported ``version`` is reported alone.
    """
    # Validated straight from the JSON text (pydantic-core parses it): no intermediate
    # dict of the whole manifest, which matters at 10,000 models. pydantic keeps the
    # last of duplicate keys silently; a first pass that builds no objects refuses them.
    duplicate = _duplicate_key(data)
    if duplicate:
        raise ManifestError(f"invalid manifest:\n  {duplicate}: this key appears twice in one "
                            "object; keep one")
    try:
        return Manifest.model_validate_json(data)
    except ValidationError as exc:
        try:
            raw: object = json.loads(data)
        except ValueError:
            raw = None
        raise ManifestError(_describe(exc, raw)) from None


def _duplicate_key(data: bytes | str) -> str | None:
    """The dotted path of the first key that appears twice in one JSON object, or None
    (also None for text that is not JSON: pydantic reports that)."""
    found: list[str] = []

    def hook(pairs: list[tuple[str, object]]) -> None:
        seen: set[str] = set()
        for k, _ in pairs:
            if k in seen and not found:
                found.append(k)
            seen.add(k)
        return None

    try:
        json.loads(data, object_pairs_hook=hook)
    except (ValueError, TypeError):
        return None
    return found[0] if found else None


def validate_manifest(raw: object) -> Manifest:
    """Validate an already-decoded manifest; see :func:`parse_manifest`."""
    try:
        return Manifest.model_validate(raw)
    except ValidationError as exc:
        raise ManifestError(_describe(exc, raw)) from None


def _describe(exc: ValidationError, raw: object = None) -> str:
    """The message of a :class:`ManifestError`: ``invalid manifest:`` then one line per
    problem, ``<dotted field>: <what is wrong and the fix>``; or, for an unsupported
    ``version``, that alone (the rest of a newer manifest is expected not to fit this
    version's rules)."""
    for err in exc.errors(include_url=False):
        if tuple(err["loc"]) == ("version",) and err["type"] == "literal_error":
            return (
                f"version: {err['input']!r} is not supported; this activator reads version "
                f"{MANIFEST_VERSION} (upgrade model-repo, or regenerate the manifest)"
            )
    return "invalid manifest:\n  " + "\n  ".join(_problems(exc, raw))


def _problems(exc: ValidationError, raw: object) -> list[str]:
    """Every problem of a manifest that failed validation, one ``field: message`` each.

    pydantic reports every invalid field, but runs a model's after-validators (here: the
    rules across fields and across models) only when all its fields are valid. So a
    manifest with a bad revision in one model and a bad name or store path in another
    would show one mistake per run. When field errors hid those checks, they are run
    again on stand-ins built from ``raw`` (the decoded input) with the invalid fields
    left out (see :func:`_hidden_problems`).
    """
    lines: list[str] = []
    ran_manifest_checks = False
    field_errors: dict[tuple[str | int, ...], str] = {}
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        msg = err["msg"]
        if err["type"] == "json_invalid":
            msg = f"the manifest is not valid JSON: {msg}"
        elif err["type"] == "extra_forbidden":
            msg = "unknown field: remove it (manifest version 1 does not define it)"
        elif err["type"] == "missing":
            msg = "required field is missing"
        elif msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        field_errors[loc] = err["type"]
        if not loc and err["type"] == "value_error":
            # The manifest's own after-validator ran: its problems are joined by "; ",
            # each starting with the field it names.
            ran_manifest_checks = True
            lines.extend(_split_problems(msg))
            continue
        lines.append(f"{'.'.join(str(part) for part in loc) or '(top level)'}: {msg}")
    if not ran_manifest_checks and isinstance(raw, dict):
        for line in _hidden_problems(raw, field_errors):
            if line not in lines:
                lines.append(line)
    return lines


def _split_problems(msg: str) -> list[str]:
    """``"models.'a': x; models.'b'.path: y"`` -> one line per problem."""
    import re

    return [part for part in re.split(r"; (?=models\.)", msg) if part]


def _after_validators(cls: type[BaseModel]) -> list[str]:
    """Names of the ``mode="after"`` model validators of ``cls``."""
    decorators = cls.__pydantic_decorators__.model_validators
    return [d.cls_var_name for d in decorators.values() if d.info.mode == "after"]


def _valid_fields(cls: type[BaseModel], raw: dict, bad: set[str]) -> dict[str, object]:
    """The fields of ``raw`` (keyed by alias) that validated, keyed by attribute name."""
    out: dict[str, object] = {}
    for name, info in cls.model_fields.items():
        key = info.alias or name
        if key in raw and key not in bad:
            out[name] = raw[key]
    return out


def _run_checks(stand_in: BaseModel, prefix: str) -> list[str]:
    """Run the after-validators of ``stand_in``'s class on it; their ``ValueError``
    messages as problem lines. A check that trips over a left-out field (anything but
    ``ValueError``) cannot judge the stand-in and says nothing."""
    out: list[str] = []
    for name in _after_validators(type(stand_in)):
        try:
            getattr(stand_in, name)()
        except ValueError as exc:
            if prefix:
                out.append(f"{prefix}: {exc}")
            else:
                out.extend(_split_problems(str(exc)))
        except Exception:  # noqa: BLE001 - the stand-in lacks what this check reads
            continue
    return out


def _hidden_problems(raw: dict, field_errors: dict[tuple[str | int, ...], str]) -> list[str]:
    """The after-validator problems that pydantic skipped because of field errors.

    Stand-ins are built without validation (``model_construct``) from the fields that
    did validate. A model with invalid fields gets its own after-validators run on such
    a stand-in, and takes part in the manifest's checks with ``link = false`` (so only
    its name and store path are judged) and, when its ``path`` is invalid or the
    ``storeDir`` is, a placeholder path that passes.
    """
    top_bad = {str(loc[0]) for loc in field_errors if loc}
    models_raw = raw.get("models", {})
    if not isinstance(models_raw, dict):
        return []  # ``models`` itself is not an object (reported): nothing to look into
    store_ok = "storeDir" not in top_bad
    store_dir = raw.get("storeDir", DEFAULT_STORE_DIR) if store_ok else DEFAULT_STORE_DIR
    placeholder = f"{store_dir}/{'0' * 32}-placeholder"
    out: list[str] = []
    stand_ins: dict[str, Model] = {}
    for name, model_raw in models_raw.items():
        model_errors = {loc for loc in field_errors if loc[:2] == ("models", name)}
        if not model_errors:
            try:
                stand_ins[name] = Model.model_validate(model_raw)
            except ValidationError:  # pragma: no cover - valid in JSON mode, not here
                pass
            continue
        bad = {str(loc[2]) for loc in model_errors if len(loc) > 2}
        fields = _valid_fields(Model, model_raw, bad) if isinstance(model_raw, dict) else {}
        if bad:  # field errors hid this model's own after-validators
            out.extend(_run_checks(Model.model_construct(**fields), f"models.{name}"))
        if "path" not in fields or not store_ok:
            fields["path"] = placeholder
        fields["link"] = False
        stand_ins[name] = Model.model_construct(**fields)
    top = _valid_fields(Manifest, raw, top_bad | {"models", "storeDir"})
    manifest = Manifest.model_construct(**top, store_dir=store_dir, models=stand_ins)
    out.extend(_run_checks(manifest, ""))
    return out


def schema_of(model: type[BaseModel], title: str) -> dict[str, object]:
    """The JSON Schema (draft 2020-12) pydantic generates for ``model``, by alias, with
    ``title``: how every schema in ``schemas/`` is made."""
    schema = model.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = title
    return schema


def schema_text(schema: dict[str, object]) -> str:
    """A schema as committed in ``schemas/``: sorted keys, two-space indent, newline."""
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def json_schema() -> dict[str, object]:
    """Return the manifest's JSON Schema (draft 2020-12), generated from the models."""
    return schema_of(Manifest, "model-repo manifest")


def render_schema() -> str:
    """The schema as committed in ``schemas/manifest.schema.json``."""
    return schema_text(json_schema())
