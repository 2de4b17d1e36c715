"""HTTP to the Hub through huggingface_hub, bounded: retries, rate limits, body caps,
deadlines, one origin.

Every request the Hub commands make themselves (repo info, tree pages, paths-info, the
per-file downloads of :mod:`activate.hub.pin`) goes through :func:`stream`:

- 5xx answers and network errors are retried by huggingface_hub's own backoff
  (``http_stream_backoff`` in huggingface_hub >= 1.0, httpx; ``http_backoff(stream=True)``
  in 0.x, requests: feature-detected, so both lines work);
- 429 is retried here, waiting what the Hub asks (``Retry-After`` in seconds or as an
  HTTP date, RFC 9110 §10.2.3; else huggingface_hub's ``RateLimit`` header parser when
  it has one; else an exponential backoff), never past the command's deadline: a wait
  longer than the time left fails at once (exit 3) instead of sleeping;
- bodies are read in chunks with a cap (:func:`read_capped`), so an endless body ends
  the request instead of filling memory; the deadline is checked after every chunk
  (huggingface_hub's read timeout, ``HF_HUB_DOWNLOAD_TIMEOUT``, bounds one chunk).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urljoin, urlsplit

from .failure import EXIT_ENVIRONMENT, Deadline, Failure

#: Statuses huggingface_hub's backoff retries for us (its defaults, without 429).
RETRY_STATUSES = (500, 502, 503, 504)
#: 429 answers waited out before giving up (each wait bounded by the deadline).
RATE_LIMIT_RETRIES = 8
#: The largest JSON answer read (a tree page of 1,000 entries is ~300 KB).
MAX_JSON_BYTES = 64 << 20


def _retry_wait(headers: Any, attempt: int) -> float:
    """Seconds a 429 answer asks to wait: ``Retry-After`` (seconds or an HTTP date),
    else huggingface_hub's ``parse_ratelimit_headers`` reset (>= 1.0), else 1, 2, 4 …
    capped at 60."""
    raw = (headers.get("Retry-After") or "").strip()
    if raw.isdigit():
        return float(raw)
    if raw:
        from email.utils import parsedate_to_datetime

        try:
            when = parsedate_to_datetime(raw)
            return max(0.0, when.timestamp() - time.time())
        except (TypeError, ValueError, OverflowError, IndexError):
            pass
    try:
        from huggingface_hub.utils import parse_ratelimit_headers  # type: ignore[attr-defined]

        info = parse_ratelimit_headers(headers)
        if info is not None and info.remaining == 0:
            return float(info.reset_in_seconds)
    except Exception:  # noqa: BLE001 - absent in 0.x, or headers it cannot parse
        pass
    return float(min(60, 2 ** attempt))


def _retries_within(seconds: float) -> int:
    """How many of huggingface_hub's retries (at most its default 5) fit in ``seconds``:
    its backoff sleeps 1, 2, 4, 8, 8 … seconds (``base_wait_time=1``,
    ``max_wait_time=8``), and a sleep cannot be cut short by a deadline check."""
    retries, total, wait = 0, 0.0, 1.0
    while retries < 5 and total + wait < seconds:
        total += wait
        wait = min(8.0, wait * 2)
        retries += 1
    return retries


def same_origin(url: str, endpoint: str) -> bool:
    """True when ``url`` has the scheme, host and port of ``endpoint``."""
    a, b = urlsplit(url), urlsplit(endpoint)
    return (a.scheme.lower(), a.hostname, a.port) == (b.scheme.lower(), b.hostname, b.port)


@contextlib.contextmanager
def stream(method: str, url: str, *, headers: dict[str, str], deadline: Deadline,
           doing: str, data: Any = None) -> Iterator[Any]:
    """A response to ``method url`` with its body not yet read (an httpx or a requests
    response), after huggingface_hub's retries on 5xx and network errors and ours on
    429. Redirects are followed (the HTTP libraries drop the ``Authorization`` header
    on a redirect to another host). Raises :class:`Failure` (exit 3) when the deadline
    passes or a 429 asks to wait past it; huggingface_hub's and the HTTP library's
    errors propagate (:func:`activate.hub.api.hub_failure` maps them)."""
    from huggingface_hub import constants
    from huggingface_hub.utils import http_backoff

    try:
        from huggingface_hub.utils import http_stream_backoff  # >= 1.0 (httpx)
    except ImportError:  # 0.x (requests)
        http_stream_backoff = None
    timeout = float(getattr(constants, "HF_HUB_DOWNLOAD_TIMEOUT", 10) or 10)
    timeout = max(1.0, min(timeout, deadline.left()))
    kwargs: dict[str, Any] = {"headers": headers, "timeout": timeout,
                              "retry_on_status_codes": RETRY_STATUSES,
                              "max_retries": _retries_within(deadline.left())}
    if data is not None:
        kwargs["data"] = data
    for attempt in range(RATE_LIMIT_RETRIES + 1):
        deadline.check(doing)
        if http_stream_backoff is not None:
            cm = http_stream_backoff(method, url, follow_redirects=True, **kwargs)
        else:
            cm = contextlib.closing(_requests_backoff(http_backoff, method, url, **kwargs))
        with cm as r:
            if r.status_code != 429 or attempt == RATE_LIMIT_RETRIES:
                yield r
                return
            wait = _retry_wait(r.headers, attempt)
        if wait > deadline.left():
            raise Failure(EXIT_ENVIRONMENT, f"{doing}: the Hub is rate limiting (HTTP 429) "
                          f"and asks to wait {wait:g} s, past the deadline "
                          f"({deadline.seconds:g} s, {deadline.what}); retry later")
        time.sleep(wait)
    raise AssertionError  # pragma: no cover - the loop yields or raises


def _requests_backoff(http_backoff: Any, method: str, url: str, **kwargs: Any) -> Any:
    """huggingface_hub 0.x's ``http_backoff`` (requests), streaming; the response of the
    last try when it gives up on a status (it raises requests' own ``HTTPError`` there,
    which the caller's ``hf_raise_for_status`` turns into huggingface_hub's error)."""
    try:
        return http_backoff(method, url, stream=True, allow_redirects=True, **kwargs)
    except Exception as exc:  # noqa: BLE001 - requests.HTTPError carrying the response
        resp = getattr(exc, "response", None)
        if resp is None or not hasattr(resp, "status_code"):
            raise
        return resp


def iter_body(r: Any) -> Iterator[bytes]:
    """The body's chunks as they arrive, for an httpx or a requests response (with
    requests, urllib3's ``read1`` where it has one: ``iter_content`` waits for a whole
    chunk, so a body trickling a byte at a time would never reach a deadline check)."""
    if hasattr(r, "iter_bytes"):
        return r.iter_bytes()
    raw = getattr(r, "raw", None)
    if raw is not None and hasattr(raw, "read1"):
        def chunks() -> Iterator[bytes]:
            while True:
                data = raw.read1(1 << 16, decode_content=True)
                if not data:
                    return
                yield data

        return chunks()
    return r.iter_content(chunk_size=1 << 16)


def read_capped(r: Any, cap: int, deadline: Deadline, doing: str) -> bytes:
    """The whole body, at most ``cap`` bytes; raises :class:`Failure` (exit 3) past the
    cap or the deadline."""
    out = bytearray()
    for chunk in iter_body(r):
        out += chunk
        if len(out) > cap:
            raise Failure(EXIT_ENVIRONMENT, f"{doing}: the Hub's answer is larger than "
                          f"{cap} bytes; check HF_ENDPOINT")
        deadline.check(doing)
    return bytes(out)


def get_json(url: str, *, headers: dict[str, str], deadline: Deadline, doing: str,
             method: str = "GET", data: Any = None) -> tuple[Any, str | None]:
    """The JSON answer to ``method url`` and its next-page link (``Link: <…>;
    rel="next"``, resolved against ``url``; None when absent). Raises
    :class:`Failure` (exit 3) for a body that is not JSON or too large, and
    huggingface_hub's HTTP errors (``hf_raise_for_status``) for error statuses."""
    import json

    from huggingface_hub.utils import hf_raise_for_status

    with stream(method, url, headers=headers, deadline=deadline, doing=doing,
                data=data) as r:
        hf_raise_for_status(r)
        body = read_capped(r, MAX_JSON_BYTES, deadline, doing)
        links = getattr(r, "links", None) or {}
        nxt = (links.get("next") or {}).get("url")
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise Failure(EXIT_ENVIRONMENT, f"{doing}: the Hub's answer is not JSON "
                      f"({body[:60]!r}); check HF_ENDPOINT") from None
    return doc, (urljoin(url, nxt) if nxt else None)
