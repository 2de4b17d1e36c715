"""A small Hugging Face Hub on loopback, for ``model-repo prefetch``/``ls`` tests.

Two ``http.server`` servers in threads on 127.0.0.1 (ephemeral ports):

- the *Hub* (``MockHub.url``, what ``HF_ENDPOINT`` points at) answers the endpoints
  huggingface_hub 2.4 uses (read from its source: ``hf_api.py`` ``model_info`` /
  ``dataset_info`` / ``list_repo_tree``, ``utils/_pagination.py``,
  ``file_download.py`` ``get_hf_file_metadata`` / ``http_get``,
  ``utils/_http.py`` ``hf_raise_for_status``):

  ``GET /api/{models,datasets}/{repo}[/revision/{rev}]``  repo info with ``sha``
  ``GET /api/{models,datasets}/{repo}/tree/{rev}[/{path}]?recursive=…``  the listing,
      paginated with a ``Link: <…>; rel="next"`` header (``page_size`` entries a page)
  ``POST /api/{models,datasets}/{repo}/paths-info/{rev}``  the entries of form field
      ``paths`` (repeated), unknown paths left out (``get_paths_info``)
  ``HEAD|GET /[datasets/]{repo}/resolve/{rev}/{path}``  a small file: 200 with
      ``X-Repo-Commit``, ``ETag`` (git blob sha1) and ``Content-Length``; an LFS file:
      302 to the CDN with ``X-Linked-Etag`` (sha256) and ``X-Linked-Size``

- the *CDN* (another port, so another origin: huggingface_hub does not forward the
  token there) serves LFS contents by sha256, with HTTP ranges.

Errors carry ``X-Error-Code``/``X-Error-Message`` as the real Hub's do: an unknown repo
is 401 ``RepoNotFound`` without a token and 404 with one; an unknown revision 404
``RevisionNotFound``; a gated repo's metadata and listing are public but its files
answer 401 ``GatedRepo`` without a token and 403 with a token that has no access.

File contents are ``bytes`` or a ``Path`` (streamed from disk, hashed once).
Every request is recorded in ``MockHub.requests``.

Hostile answers (``answer_commit``, ``info_hook``, ``tree_hook``, ``endless_pages``,
``link_hook``, ``file_hook`` with :func:`endless_body` / :func:`trickle`,
``rate_limited`` with ``retry_after``) make it lie or never end, always bounded, for
tests/test_hub_hostile.py and the fuzz campaign (tests/hubfuzz.py).

``MockHub.aliases`` maps an old or short id (``("model", "gpt2")``) to the repo's
canonical id, which the API reports as ``id`` (the Hub redirects renamed and
single-name repos the same way). ``MockHub.throttle`` (bytes per second, per response;
None: full speed) slows file contents down, for tests that interrupt a download.
"""

from __future__ import annotations

import hashlib
import json
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlsplit

LFS_SUFFIXES = (".safetensors", ".bin", ".onnx", ".pt", ".h5", ".msgpack", ".gguf")
LFS_MIN_SIZE = 10 << 20
CHUNK = 1 << 20

_hash_cache: dict[tuple[str, int, int], tuple[str, str]] = {}


@dataclass
class Blob:
    """One file's contents and the ids the Hub reports for it."""

    source: bytes | Path
    size: int
    sha1: str  # git blob id of the contents
    sha256: str
    lfs: bool

    @property
    def pointer(self) -> bytes:
        return (f"version https://git-lfs.github.com/spec/v1\noid sha256:{self.sha256}\n"
                f"size {self.size}\n").encode()

    @property
    def oid(self) -> str:
        """The git blob id in the repo: of the LFS pointer for LFS files."""
        if not self.lfs:
            return self.sha1
        p = self.pointer
        return hashlib.sha1(b"blob %d\0" % len(p) + p).hexdigest()

    def chunks(self, start: int = 0, end: int | None = None):
        end = self.size if end is None else end
        if isinstance(self.source, bytes):
            yield self.source[start:end]
            return
        with open(self.source, "rb") as fh:
            fh.seek(start)
            left = end - start
            while left > 0:
                data = fh.read(min(CHUNK, left))
                if not data:
                    break
                left -= len(data)
                yield data


def make_blob(path: str, source: bytes | Path) -> Blob:
    if isinstance(source, Path):
        st = source.stat()
        key = (str(source), st.st_size, st.st_mtime_ns)
        if key not in _hash_cache:
            s1 = hashlib.sha1(b"blob %d\0" % st.st_size)
            s256 = hashlib.sha256()
            with open(source, "rb") as fh:
                while data := fh.read(CHUNK):
                    s1.update(data)
                    s256.update(data)
            _hash_cache[key] = (s1.hexdigest(), s256.hexdigest())
        sha1, sha256 = _hash_cache[key]
        size = st.st_size
    else:
        size = len(source)
        sha1 = hashlib.sha1(b"blob %d\0" % size + source).hexdigest()
        sha256 = hashlib.sha256(source).hexdigest()
    lfs = path.endswith(LFS_SUFFIXES) or size >= LFS_MIN_SIZE
    return Blob(source, size, sha1, sha256, lfs)


@dataclass
class Repo:
    repo_id: str
    repo_type: str
    gated: bool = False
    private: bool = False
    token: str | None = None  # the token that has access (gated or private)
    commits: dict[str, dict[str, Blob]] = field(default_factory=dict)
    dates: dict[str, str] = field(default_factory=dict)
    refs: dict[str, str] = field(default_factory=dict)
    fail_api: int | None = None  # answer every API call with this status
    gated_label: str | bool | None = None  # "gated" in the metadata (None: from gated)


class MockHub:
    """The mock Hub and CDN; use as a context manager or call :meth:`close`."""

    def __init__(self, page_size: int = 5):
        self.page_size = page_size
        self.repos: dict[tuple[str, str], Repo] = {}
        self.requests: list[dict] = []
        self.corrupt: dict[str, bytes] = {}  # sha256 -> bytes the CDN serves instead
        self.aliases: dict[tuple[str, str], str] = {}  # (type, alias) -> canonical id
        self.throttle: int | None = None  # bytes per second for file contents
        self.bytes_sent = 0  # file contents served (Hub and CDN), for benchmarks
        # Hostile answers, for the tests of what the commands promise against a Hub that
        # lies or never ends (all bounded: a test never waits on the mock forever).
        self.answer_commit: dict[str, str] = {}  # revision -> the commit the API answers
        self.tree_hook = None  # callable(list of entries) -> the entries a page answers
        self.endless_pages = False  # every tree page links a next one (a new cursor)
        self.file_hook: dict[str, object] = {}  # path -> callable(handler): its answer
        self.info_hook = None  # callable(info document) -> the document the API answers
        self.link_hook = None  # callable(next-page URL) -> the URL the Link header gives
        self.rate_limited: dict[str, int] = {}  # path or "api" -> 429 answers left
        self.retry_after = "1"  # the Retry-After of those 429 answers
        self._lock = threading.Lock()
        self._counter = 0
        self._hub = self._serve(_HubHandler)
        self._cdn = self._serve(_CdnHandler)
        self.url = f"http://127.0.0.1:{self._hub.server_address[1]}"
        self.cdn_url = f"http://127.0.0.1:{self._cdn.server_address[1]}"

    def _serve(self, handler: type) -> ThreadingHTTPServer:
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        server.daemon_threads = True
        default_error = server.handle_error

        def handle_error(request: object, client_address: object) -> None:
            if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
                default_error(request, client_address)  # a client going away is normal

        server.handle_error = handle_error  # type: ignore[method-assign]
        server.mock = self  # type: ignore[attr-defined]
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server

    def close(self) -> None:
        for s in (self._hub, self._cdn):
            s.shutdown()
            s.server_close()

    def __enter__(self) -> "MockHub":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- repos

    def add_repo(self, repo_id: str, files: dict[str, bytes | Path], *,
                 repo_type: str = "model", gated: bool = False, private: bool = False,
                 token: str | None = None, ref: str = "main") -> str:
        """Create a repo whose ``ref`` points at a first commit of ``files``; returns
        that commit."""
        self.repos[(repo_type, repo_id)] = Repo(repo_id, repo_type, gated, private, token)
        return self.commit(repo_id, files, repo_type=repo_type, ref=ref)

    def commit(self, repo_id: str, files: dict[str, bytes | Path], *,
               repo_type: str = "model", ref: str = "main") -> str:
        """Add a commit holding exactly ``files`` and move ``ref`` to it; returns it."""
        repo = self.repos[(repo_type, repo_id)]
        blobs = {p: make_blob(p, src) for p, src in files.items()}
        with self._lock:
            self._counter += 1
            h = hashlib.sha1(f"{repo_type}/{repo_id}#{self._counter}".encode())
            for p in sorted(blobs):
                h.update(f"{p}\0{blobs[p].oid}\n".encode())
            commit = h.hexdigest()
            repo.commits[commit] = blobs
            repo.dates[commit] = f"2024-0{1 + self._counter % 9}-15T10:20:30.000Z"
            repo.refs[ref] = commit
        return commit

    def set_ref(self, repo_id: str, ref: str, commit: str, *, repo_type: str = "model") -> None:
        self.repos[(repo_type, repo_id)].refs[ref] = commit

    def seen(self, server: str, method: str | None = None) -> list[dict]:
        """Recorded requests to ``"hub"`` or ``"cdn"`` (optionally one method)."""
        return [r for r in self.requests
                if r["server"] == server and (method is None or r["method"] == method)]


# ----------------------------------------------------------------------- handlers


class _Base(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_kind = ""

    @property
    def mock(self) -> MockHub:
        return self.server.mock  # type: ignore[attr-defined]

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass

    def _record(self) -> None:
        self.mock.requests.append({
            "server": self.server_kind, "method": self.command, "path": self.path,
            "authorization": self.headers.get("Authorization"),
            "range": self.headers.get("Range"),
        })

    def send(self, status: int, headers: dict[str, str] | None = None,
             body: bytes = b"") -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def send_json(self, data: object, headers: dict[str, str] | None = None) -> None:
        self.send(200, {"Content-Type": "application/json", **(headers or {})},
                  json.dumps(data).encode())

    def error(self, status: int, code: str | None, message: str,
              extra: dict[str, str] | None = None) -> None:
        headers = {"Content-Type": "application/json", "X-Error-Message": message,
                   **(extra or {})}
        if code:
            headers["X-Error-Code"] = code
        self.send(status, headers, json.dumps({"error": message}).encode())

    def send_blob(self, blob: Blob, headers: dict[str, str], data: bytes | None = None) -> None:
        """200 or 206 (``Range: bytes=a-b``) with the blob's contents (or ``data``)."""
        size = blob.size if data is None else len(data)
        start, end, status = 0, size, 200
        rng = self.headers.get("Range")
        if rng and rng.startswith("bytes="):
            a, _, b = rng[6:].partition("-")
            start = int(a) if a else max(size - int(b), 0)
            end = min(int(b) + 1, size) if a and b else size
            status = 206
            headers = {**headers, "Content-Range": f"bytes {start}-{end - 1}/{size}"}
        self.send_response(status)
        for k, v in {"Content-Type": "application/octet-stream", "Accept-Ranges": "bytes",
                     **headers}.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(end - start))
        self.end_headers()
        if self.command == "HEAD":
            return
        chunks = [data[start:end]] if data is not None else blob.chunks(start, end)
        rate = self.mock.throttle
        try:
            for chunk in chunks:
                if not rate:
                    self.wfile.write(chunk)
                    self.mock.bytes_sent += len(chunk)
                    continue
                step = max(rate // 20, 1)  # 20 writes a second
                for i in range(0, len(chunk), step):
                    self.wfile.write(chunk[i:i + step])
                    self.mock.bytes_sent += len(chunk[i:i + step])
                    time.sleep(step / rate)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client went away (an interrupted download)


class _HubHandler(_Base):
    server_kind = "hub"

    def do_HEAD(self) -> None:  # noqa: N802
        self._record()
        self.route()

    def do_GET(self) -> None:  # noqa: N802
        self._record()
        self.route()

    def do_POST(self) -> None:  # noqa: N802
        self._record()
        length = int(self.headers.get("Content-Length") or 0)
        self.form = parse_qs(self.rfile.read(length).decode()) if length else {}
        self.route()

    # -- helpers

    def token(self) -> str | None:
        auth = self.headers.get("Authorization") or ""
        return auth[7:] if auth.startswith("Bearer ") else None

    def find_repo(self, repo_type: str, repo_id: str) -> Repo | None:
        repo_id = self.mock.aliases.get((repo_type, repo_id), repo_id)
        repo = self.mock.repos.get((repo_type, repo_id))
        if repo is None:
            self.repo_not_found()
            return None
        if repo.private and self.token() != repo.token:
            self.repo_not_found()
            return None
        return repo

    def repo_not_found(self) -> None:
        if self.token() is None:
            self.error(401, "RepoNotFound", "Invalid username or password.")
        else:
            self.error(404, "RepoNotFound", "Repository not found")

    def rate_limit(self, key: str) -> bool:
        """Answer 429 with ``Retry-After`` while ``mock.rate_limited[key]`` lasts."""
        with self.mock._lock:
            left = self.mock.rate_limited.get(key, 0)
            if left <= 0:
                return False
            self.mock.rate_limited[key] = left - 1
        self.error(429, None, "Too Many Requests", {"Retry-After": self.mock.retry_after})
        return True

    def commit_of(self, repo: Repo, rev: str) -> str | None:
        if rev in repo.refs:
            return repo.refs[rev]
        if rev in repo.commits:
            return rev
        self.error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
        return None

    # -- routing

    def route(self) -> None:
        parts = urlsplit(self.path)
        segs = [unquote(s) for s in parts.path.strip("/").split("/")]
        query = parse_qs(parts.query)
        if segs == ["api", "agent-harnesses"]:  # huggingface_hub's user-agent registry
            return self.send_json({"standardEnvVars": [], "harnesses": {}})
        if segs[0] == "api" and len(segs) >= 3 and segs[1] in ("models", "datasets"):
            return self.api(segs[1][:-1], segs[2:], query, parts.path)
        repo_type = "model"
        if segs[0] == "datasets":
            repo_type, segs = "dataset", segs[1:]
        for k in (2, 1):
            if len(segs) > k + 2 and segs[k] == "resolve":
                if (repo_type, "/".join(segs[:k])) in self.mock.repos or k == 1:
                    return self.resolve(repo_type, "/".join(segs[:k]), segs[k + 1],
                                        "/".join(segs[k + 2:]))
        self.error(404, None, "Not Found")

    def api(self, repo_type: str, rest: list[str], query: dict, raw_path: str) -> None:
        # rest = repo id parts, then optionally "revision"/rev or "tree"/rev/path...
        for k in (2, 1):
            head, tail = rest[:k], rest[k:]
            if (repo_type, "/".join(head)) in self.mock.repos or k == 1:
                break
            if (repo_type, "/".join(head)) in self.mock.aliases:
                break
        repo = self.find_repo(repo_type, "/".join(head))
        if repo is None:
            return
        if repo.fail_api:
            return self.error(repo.fail_api, None, "Service Unavailable")
        if not tail:
            return self.info(repo, "main", query)
        if tail[0] == "revision" and len(tail) == 2:
            return self.info(repo, tail[1], query)
        if tail[0] == "tree" and len(tail) >= 2:
            return self.tree(repo, tail[1], "/".join(tail[2:]), query, raw_path)
        if tail[0] == "paths-info" and len(tail) == 2 and self.command == "POST":
            return self.paths_info(repo, tail[1], getattr(self, "form", {}))
        self.error(404, None, "Not Found")

    def info(self, repo: Repo, rev: str, query: dict) -> None:
        if self.rate_limit("api"):
            return
        commit = self.mock.answer_commit.get(rev) or self.commit_of(repo, rev)
        if commit is None:
            return
        blobs = repo.commits[commit]
        siblings = []
        for p in sorted(blobs):
            s: dict = {"rfilename": p}
            if query.get("blobs", [""])[0].lower() == "true":
                b = blobs[p]
                s.update(size=b.size, blobId=b.oid)
                if b.lfs:
                    s["lfs"] = {"sha256": b.sha256, "size": b.size,
                                "pointerSize": len(b.pointer)}
            siblings.append(s)
        org = repo.repo_id.split("/")[0] if "/" in repo.repo_id else None
        doc = {
            "_id": hashlib.md5(repo.repo_id.encode()).hexdigest()[:24],
            "id": repo.repo_id, "author": org, "sha": commit,
            "lastModified": repo.dates[commit], "createdAt": "2021-08-30T00:00:00.000Z",
            "private": repo.private,
            "gated": (("manual" if repo.gated else False) if repo.gated_label is None
                      else repo.gated_label),
            "disabled": False, "downloads": 0, "likes": 0, "tags": [],
            "siblings": siblings,
        }
        self.send_json(doc if self.mock.info_hook is None else self.mock.info_hook(doc))

    def tree(self, repo: Repo, rev: str, sub: str, query: dict, raw_path: str) -> None:
        commit = self.commit_of(repo, rev)
        if commit is None:
            return
        recursive = query.get("recursive", ["false"])[0].lower() in ("true", "1")
        blobs = repo.commits[commit]
        entries: dict[str, dict] = {}
        prefix = sub + "/" if sub else ""
        for p, b in blobs.items():
            if not p.startswith(prefix):
                continue
            rel = p[len(prefix):].split("/")
            depth = len(rel) if recursive else 1
            for i in range(1, min(len(rel), depth + 1)):
                d = prefix + "/".join(rel[:i])
                entries[d] = {"type": "directory", "size": 0, "path": d,
                              "oid": hashlib.sha1(d.encode()).hexdigest()}
            if len(rel) <= depth:
                e = {"type": "file", "oid": b.oid, "size": b.size, "path": p}
                if b.lfs:
                    e["lfs"] = {"oid": b.sha256, "size": b.size, "pointerSize": len(b.pointer)}
                entries[p] = e
        if sub and not entries:
            return self.error(404, "EntryNotFound", f"{sub} does not exist on {rev}")
        items = [entries[k] for k in sorted(entries)]
        if self.mock.tree_hook is not None:
            items = self.mock.tree_hook(items)
        cursor = int(query.get("cursor", ["0"])[0])
        page = items[cursor:cursor + self.mock.page_size]
        headers = {}
        if cursor + self.mock.page_size < len(items) or self.mock.endless_pages:
            nxt = (f"{self.mock.url}{raw_path}?recursive={str(recursive).lower()}"
                   f"&expand=false&cursor={cursor + self.mock.page_size}")
            if self.mock.link_hook is not None:
                nxt = self.mock.link_hook(nxt)
            headers["Link"] = f'<{nxt}>; rel="next"'
        self.send_json(page, headers)

    def paths_info(self, repo: Repo, rev: str, form: dict) -> None:
        """``POST …/paths-info/{rev}`` (form ``paths``, repeated): the entries of the
        paths that exist (a file, or a folder of files), unknown ones left out."""
        commit = self.commit_of(repo, rev)
        if commit is None:
            return
        blobs = repo.commits[commit]
        out = []
        for p in form.get("paths", []):
            b = blobs.get(p)
            if b is not None:
                e = {"type": "file", "oid": b.oid, "size": b.size, "path": p}
                if b.lfs:
                    e["lfs"] = {"oid": b.sha256, "size": b.size, "pointerSize": len(b.pointer)}
                out.append(e)
            elif any(k.startswith(p + "/") for k in blobs):
                out.append({"type": "directory", "size": 0, "path": p,
                            "oid": hashlib.sha1(p.encode()).hexdigest()})
        self.send_json(out)

    def resolve(self, repo_type: str, repo_id: str, rev: str, path: str) -> None:
        repo = self.find_repo(repo_type, repo_id)
        if repo is None:
            return
        if repo.gated and self.token() != repo.token:
            kind = "dataset" if repo_type == "dataset" else "model"
            if self.token() is None:
                return self.error(401, "GatedRepo", f"Access to {kind} {repo_id} is "
                                  "restricted. You must have access to it and be "
                                  "authenticated to access it. Please log in.")
            return self.error(403, "GatedRepo", f"Access to {kind} {repo_id} is restricted "
                              "and you are not in the authorized list. Visit "
                              f"{self.mock.url}/{repo_id} to ask for access.")
        commit = self.commit_of(repo, rev)
        if commit is None:
            return
        blob = repo.commits[commit].get(path)
        if blob is None:
            return self.error(404, "EntryNotFound", f"{path} does not exist on {rev}",
                              {"X-Repo-Commit": commit})
        common = {"X-Repo-Commit": commit}
        if self.rate_limit(path):
            return
        hook = self.mock.file_hook.get(path)
        if hook is not None and self.command == "GET":
            return hook(self)
        if blob.lfs:
            location = f"{self.mock.cdn_url}/{blob.sha256}?name={quote(path)}"
            return self.send(302, {**common, "Location": location,
                                   "ETag": f'"{blob.oid}"',
                                   "X-Linked-Etag": f'"{blob.sha256}"',
                                   "X-Linked-Size": str(blob.size)})
        self.send_blob(blob, {**common, "ETag": f'"{blob.sha1}"'},
                       self.mock.corrupt.get(blob.sha256))


def endless_body(handler: _Base, limit: int = 256 << 20) -> None:
    """A hostile answer: 200 without a length, bytes until the client leaves (or
    ``limit`` bytes: the mock stays bounded)."""
    handler.send_response(200)
    handler.send_header("Content-Type", "application/octet-stream")
    handler.send_header("Connection", "close")
    handler.end_headers()
    handler.close_connection = True
    chunk = b"x" * CHUNK
    try:
        for _ in range(limit // CHUNK):
            handler.wfile.write(chunk)
            handler.mock.bytes_sent += len(chunk)
    except (BrokenPipeError, ConnectionResetError):
        pass


def trickle(every: float, limit: int = 100):
    """A hostile answer: a body announced as ``limit`` bytes, one byte every ``every``
    seconds (so no read timeout fires, but it never ends in practice)."""

    def answer(handler: _Base) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "application/octet-stream")
        handler.send_header("Content-Length", str(limit))
        handler.end_headers()
        try:
            for _ in range(limit):
                handler.wfile.write(b"x")
                handler.wfile.flush()
                time.sleep(every)
        except (BrokenPipeError, ConnectionResetError):
            handler.close_connection = True

    return answer


class _CdnHandler(_Base):
    server_kind = "cdn"

    def do_HEAD(self) -> None:  # noqa: N802
        self.do_GET()

    def do_GET(self) -> None:  # noqa: N802
        if self.command == "GET":
            self._record()
        sha = urlsplit(self.path).path.strip("/")
        for repo in list(self.mock.repos.values()):
            for blobs in list(repo.commits.values()):
                for blob in blobs.values():
                    if blob.sha256 == sha:  # LFS files; any file a test redirects here
                        return self.send_blob(blob, {"ETag": f'"{sha}"'},
                                              self.mock.corrupt.get(sha))
        self.error(404, None, "NoSuchKey")
