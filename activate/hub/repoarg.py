"""The repo arguments nix-hug users type, parsed without any network access.

Forms accepted (nix-hug's "URL Formats", seed 003, plus the Hub's own web URLs):

=========================================================  =============  ==========
argument                                                   repo type      detection
=========================================================  =============  ==========
``ORG/NAME``, ``NAME`` (single-name repos such as ``gpt2``)  ambiguous      API
``hf:ORG/NAME``                                            model          none
``https://huggingface.co/ORG/NAME``                        model          none
``datasets/ORG/NAME``, ``hf-datasets:ORG/NAME``            dataset        none
``https://huggingface.co/datasets/ORG/NAME``               dataset        none
``models/ORG/NAME``                                        model          none
``hf://ORG/NAME[@REV][/PATH]``                             model          none
``hf://datasets/ORG/NAME[@REV][/PATH]``                    dataset        none
=========================================================  =============  ==========

Any of the short forms may end in ``@REV`` (``ORG/NAME@v1.0``, huggingface_hub's
``hf://`` revision marker; percent-decoded): the revision, as ``--revision`` gives it.
In ``hf://`` URIs (huggingface_hub's ``parse_hf_uri`` grammar) ``PATH`` is one file.

A web URL may go on with ``/tree/<rev>[/<folder>]`` (a revision) or
``/blob/<rev>/<file>`` / ``/resolve/<rev>/<file>`` (a revision and one file); ``<rev>``
is percent-decoded, so ``refs%2Fpr%2F1`` is ``refs/pr/1``. Hosts: ``huggingface.co``,
``hf.co`` (with or without ``www.``), and the host of ``HF_ENDPOINT`` when given.
``spaces/…`` is refused (a Space is an app, not model files).

An ambiguous argument (``repo_type`` None) is resolved by :func:`activate.hub.api`'s
detection: the model API first (the request that resolves the revision anyway), then
the dataset API only when no model has that id: one extra request, for datasets only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from ..naming import repo_id_error

HUB_HOSTS = frozenset(("huggingface.co", "www.huggingface.co", "hf.co", "www.hf.co"))
_TYPE_PREFIXES = {"datasets": "dataset", "models": "model"}


class RepoArgError(ValueError):
    """A repo argument that names no Hub repo; the message says which form to use."""


@dataclass(frozen=True)
class RepoRef:
    """A parsed repo argument.

    ``repo_id`` ``NAME`` or ``ORG/NAME`` (valid per :func:`activate.naming.repo_id_error`);
    ``repo_type`` ``"model"``, ``"dataset"``, or None when the argument does not say
    (bare ids: ask the Hub, :func:`activate.hub.api.detect_repo_type`); ``revision`` the
    branch, tag or commit a URL named (None: not given); ``file`` the one file a
    ``/blob/`` or ``/resolve/`` URL named (None: not given).
    """

    repo_id: str
    repo_type: str | None = None
    revision: str | None = None
    file: str | None = None

    @property
    def ambiguous(self) -> bool:
        """True when the repo type must be detected through the API."""
        return self.repo_type is None


def _check_id(repo_id: str, arg: str) -> str:
    err = repo_id_error(repo_id)
    if err is not None:
        where = "" if repo_id == arg else f" in {arg!r}"
        raise RepoArgError(f"invalid repo id {repo_id!r}{where}: {err}")
    return repo_id


def _parse_url(arg: str, hosts: frozenset[str]) -> RepoRef:
    parts = urlsplit(arg)
    host = (parts.hostname or "").lower()
    if host not in hosts:
        raise RepoArgError(f"{arg!r} is not a Hugging Face Hub URL (host {host!r}; "
                           f"expected https://huggingface.co/ORG/NAME, or the host of "
                           "HF_ENDPOINT)")
    segs = [s for s in parts.path.split("/") if s]
    repo_type = "model"
    if segs and segs[0] == "spaces":
        raise RepoArgError(f"{arg!r} is a Space: model-repo pins model and dataset repos "
                           "(https://huggingface.co/ORG/NAME or …/datasets/ORG/NAME)")
    if segs and segs[0] in _TYPE_PREFIXES:
        repo_type = _TYPE_PREFIXES[segs.pop(0)]
    if not segs:
        raise RepoArgError(f"{arg!r} names no repo: expected "
                           "https://huggingface.co/ORG/NAME")
    kinds = ("tree", "blob", "resolve")
    # ORG/NAME, or NAME for single-name repos: the id ends where tree/blob/resolve starts.
    n = 1 if len(segs) > 1 and segs[1] in kinds else min(2, len(segs))
    repo_id = _check_id("/".join(unquote(s) for s in segs[:n]), arg)
    rest = segs[n:]
    revision = file = None
    if rest:
        kind = rest[0]
        if kind not in kinds or len(rest) < 2:
            raise RepoArgError(f"{arg!r}: after the repo id a Hub URL may only go on with "
                               "/tree/<rev>, /blob/<rev>/<file> or /resolve/<rev>/<file>")
        revision = unquote(rest[1])
        if kind in ("blob", "resolve"):
            if len(rest) < 3:
                raise RepoArgError(f"{arg!r}: /{kind}/<rev> must be followed by a file path")
            file = "/".join(unquote(s) for s in rest[2:])
    return RepoRef(repo_id, repo_type, revision, file)


def parse_repo(arg: str, *, endpoint: str | None = None) -> RepoRef:
    """Parse one repo argument (the forms in the module docstring) into a :class:`RepoRef`.

    ``endpoint``: the Hub base URL in use (``HF_ENDPOINT``), whose host is accepted in
    URLs besides huggingface.co and hf.co. No network access. Raises
    :class:`RepoArgError` (a ``ValueError``) naming the argument and the forms to use.
    """
    if not isinstance(arg, str) or not arg.strip():
        raise RepoArgError("the repo argument is empty: give ORG/NAME (e.g. "
                           "openai-community/gpt2), datasets/ORG/NAME or a Hub URL")
    arg = arg.strip()
    lower = arg.lower()
    if lower.startswith("hf://"):
        return _parse_hf_uri(arg)
    if lower.startswith(("https://", "http://")):
        hosts = HUB_HOSTS
        if endpoint:
            ep = (urlsplit(endpoint).hostname or "").lower()
            if ep:
                hosts = hosts | {ep}
        return _parse_url(arg, hosts)
    whole = arg
    arg, at, rev = arg.partition("@")  # ORG/NAME@REV (a repo id never holds '@')
    revision = unquote(rev) if at else None
    if at and not revision:
        raise RepoArgError(f"{whole!r}: nothing after '@': give ORG/NAME@REV (a branch, "
                           "tag or commit), or leave out the '@'")
    if lower.startswith("hf-datasets:"):
        return RepoRef(_check_id(arg[len("hf-datasets:"):], whole), "dataset", revision)
    if lower.startswith("hf:"):
        return RepoRef(_check_id(arg[len("hf:"):], whole), "model", revision)
    first, slash, rest = arg.partition("/")
    if slash and first in _TYPE_PREFIXES and rest:
        return RepoRef(_check_id(rest, whole), _TYPE_PREFIXES[first], revision)
    if slash and first == "spaces":
        raise RepoArgError(f"{arg!r} is a Space: model-repo pins model and dataset repos")
    if arg.count("/") > 1:
        raise RepoArgError(f"invalid repo id {arg!r}: must be 'name' or 'org/name' (at "
                           "most one '/'); for a dataset write datasets/ORG/NAME, for a "
                           "file of a repo use --file PATH")
    return RepoRef(_check_id(arg, whole), None, revision)


#: Revisions that hold a '/' in an ``hf://`` URI (huggingface_hub's
#: ``utils/_hf_uris.py``: ``refs/pr/N``, ``refs/convert/NAME``).
_SPECIAL_REFS = re.compile(r"^refs/(?:convert/[\w.-]+|pr/\d+)")


def _parse_hf_uri(arg: str) -> RepoRef:
    """``hf://[TYPE/]ORG/NAME[@REV][/PATH]``, huggingface_hub's URI form
    (``parse_hf_uri``, read from huggingface_hub 2.4): TYPE ``models``/``datasets``
    (default model); ``@REV`` right after the id, percent-decoded, ``refs/pr/N`` and
    ``refs/convert/NAME`` whole; PATH one file (as ``/blob/REV/PATH``)."""
    body = arg[len("hf://"):]
    first, slash, rest = body.partition("/")
    repo_type = "model"
    if slash and first in ("spaces", "buckets", "kernels"):
        raise RepoArgError(f"{arg!r} is not a model or dataset repo: model-repo pins "
                           "hf://ORG/NAME and hf://datasets/ORG/NAME")
    if slash and first in _TYPE_PREFIXES:
        repo_type, body = _TYPE_PREFIXES[first], rest
    location = body.strip("/")
    at = location.find("@")
    revision: str | None = None
    if at == -1 or location[:at].count("/") > 1:
        parts = location.split("/", 2)
        if len(parts) < 2 or not all(parts[:2]):
            raise RepoArgError(f"{arg!r}: expected hf://[datasets/]ORG/NAME[@REV][/PATH] "
                               "(the repo id is ORG/NAME)")
        repo_id, path = "/".join(parts[:2]), parts[2] if len(parts) > 2 else ""
    else:
        repo_id, rev_path = location[:at], location[at + 1:]
        special = _SPECIAL_REFS.search(rev_path)
        if special is not None:
            rev, path = special.group(), rev_path[special.end():].removeprefix("/")
        else:
            rev, _, path = rev_path.partition("/")
        revision = unquote(rev)
        if not revision:
            raise RepoArgError(f"{arg!r}: nothing after '@': give a branch, tag or commit")
    if repo_id.count("/") != 1:
        raise RepoArgError(f"{arg!r}: expected hf://[datasets/]ORG/NAME[@REV][/PATH] (the "
                           "repo id is ORG/NAME)")
    return RepoRef(_check_id(repo_id, arg), repo_type, revision, path or None)
