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
    offline: Annotated[
        bool,
        Field(
            description="Emit HF_HUB_OFFLINE=1 and TRANSFORMERS_OFFLINE=1 (only when "
            "every linked model is in place).",
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
        for name, model in self.models.items():
            if not MODEL_NAME_RE.match(name):
                problems.append(
                    f"models.{name!r}: a model name must match "
                    f"{MODEL_NAME_RE.pattern} (letters, digits, '_', '.', '+', '-'; "
                    "at most 100 characters)"
                )
                continue
            var = env_var_name(name)
            if var in by_var:
                problems.append(
                    f"models.{name!r} and models.{by_var[var]!r} both map to {var}: "
                    "rename one of them"
                )
            by_var[var] = name
            path_error = store_path_error(model.path, self.store_dir)
            if path_error:
                problems.append(f"models.{name!r}.path: {path_error}")
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
            for ref in model.refs:
                rkey = (model.folder, ref)
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
    such as ``models.bert.revision``) with the fix.
    """
    # Validated straight from the JSON text (pydantic-core parses it): no intermediate
    # dict of the whole manifest, which matters at 10,000 models.
    try:
        return Manifest.model_validate_json(data)
    except ValidationError as exc:
        raise ManifestError(_describe(exc)) from None


def validate_manifest(raw: object) -> Manifest:
    """Validate an already-decoded manifest; see :func:`parse_manifest`."""
    try:
        return Manifest.model_validate(raw)
    except ValidationError as exc:
        raise ManifestError(_describe(exc)) from None


def _describe(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors(include_url=False):
        where = ".".join(str(part) for part in err["loc"]) or "(top level)"
        msg = err["msg"]
        if err["loc"] == ("version",) and err["type"] == "literal_error":
            return (
                f"version: {err['input']!r} is not supported; this activator reads version "
                f"{MANIFEST_VERSION} (upgrade model-repo, or regenerate the manifest)"
            )
        if err["type"] == "json_invalid":
            msg = f"the manifest is not valid JSON: {msg}"
        elif err["type"] == "extra_forbidden":
            msg = "unknown field: remove it (manifest version 1 does not define it)"
        elif err["type"] == "missing":
            msg = "required field is missing"
        elif msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        lines.append(f"{where}: {msg}")
    return "invalid manifest:\n  " + "\n  ".join(lines)


def json_schema() -> dict[str, object]:
    """Return the manifest's JSON Schema (draft 2020-12), generated from the models."""
    schema = Manifest.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "model-repo manifest"
    return schema


def render_schema() -> str:
    """The schema as committed in ``schemas/manifest.schema.json``."""
    return json.dumps(json_schema(), indent=2, sort_keys=True) + "\n"
