"""Getting a source's bytes, politely and only when they changed.

Regulator sites throttle and block anonymous clients, so every request says who we are, asks only for what
changed since last time (ETag / Last-Modified) and gives up quickly. An unchanged body is recognised by its
hash even when the server ignores conditional requests, so that the slow parse is skipped.
"""

from __future__ import annotations

import errno
import hashlib
import socket
import ssl
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from urllib.parse import urlsplit
from urllib.request import url2pathname

import httpx

from monitor import __version__
from monitor.config import SourceConfig
from monitor.models import FetchResult, Validators

DEFAULT_USER_AGENT = (
    f"atmp-monitor/{__version__} (+https://github.com/atmp-monitor/atmp-monitor; regulatory news monitor)"
)
DEFAULT_MAX_BYTES = 5_000_000
CONNECT_TIMEOUT = 10.0
PROBE_TIMEOUT = 5.0
MAX_REDIRECTS = 5
_ACCEPT = (
    "application/rss+xml, application/atom+xml, application/rdf+xml, application/xml;q=0.9, text/xml;q=0.9, */*;q=0.1"
)
_RETRY_AFTER_STATUSES = frozenset({429, 503})


class FetchError(Exception):
    """The source could not be read this time; `network` says whether our own connectivity is the suspect."""

    def __init__(
        self,
        reason: str,
        *,
        http_status: int | None = None,
        retry_after: float | None = None,
        network: bool = False,
    ):
        super().__init__(reason)
        self.reason = reason
        self.http_status = http_status
        self.retry_after = retry_after
        self.network = network


def make_client(*, user_agent: str = DEFAULT_USER_AGENT) -> httpx.Client:
    """One client per poll cycle, so that sources on the same host share connections."""
    return httpx.Client(
        headers={"User-Agent": user_agent, "Accept": _ACCEPT},
        timeout=httpx.Timeout(20.0, connect=CONNECT_TIMEOUT),
        follow_redirects=True,
        max_redirects=MAX_REDIRECTS,
        limits=httpx.Limits(max_connections=20, max_keepalive_connections=10),
    )


def fetch(
    source: SourceConfig,
    validators: Validators,
    *,
    client: httpx.Client | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    user_agent: str = DEFAULT_USER_AGENT,
) -> FetchResult:
    if urlsplit(source.url).scheme == "file":
        return _fetch_file(source.url, validators, max_bytes)
    if client is not None:
        return _fetch_http(client, source, validators, max_bytes, user_agent)
    with make_client(user_agent=user_agent) as own_client:
        return _fetch_http(own_client, source, validators, max_bytes, user_agent)


def reachable(client: httpx.Client, url: str, *, timeout: float = PROBE_TIMEOUT) -> bool:
    """Whether the server of `url` can be reached from here at all; any answer, even an error status, says yes.

    It only has to tell a dead uplink from one dead site, so a HEAD, with no body to download, is enough.
    """
    try:
        with _translated_errors(timeout):
            client.head(url, timeout=httpx.Timeout(timeout), follow_redirects=False)
    except FetchError as exc:
        return not exc.network
    return True


def _body_hash(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def _size(limit: int) -> str:
    for unit, scale in (("MB", 1_000_000), ("kB", 1_000)):
        if limit >= scale:
            return f"{limit / scale:g} {unit}"
    return f"{limit} bytes"


def _result(url: str, body: bytes, old: Validators, new: Validators, **details: object) -> FetchResult:
    if old.body_hash is not None and new.body_hash == old.body_hash:
        return FetchResult(status="unchanged", url=url, validators=new, **details)
    return FetchResult(status="fetched", url=url, validators=new, body=body, **details)


def _fetch_file(url: str, validators: Validators, max_bytes: int) -> FetchResult:
    """Local feeds (demos, replays) go through the same change detection as remote ones."""
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise FetchError(f"file URL on another host is not supported: {parts.netloc}")
    path = Path(url2pathname(parts.path))
    try:
        if path.stat().st_size > max_bytes:
            raise FetchError(f"body larger than {_size(max_bytes)}")
        body = path.read_bytes()
    except FileNotFoundError:
        raise FetchError(f"file not found: {path}") from None
    except OSError as exc:
        raise FetchError(f"cannot read file {path}: {exc.strerror or exc}") from None
    return _result(url, body, validators, Validators(body_hash=_body_hash(body)))


def _request_headers(source: SourceConfig, validators: Validators, user_agent: str) -> httpx.Headers:
    """A source's own headers win, whatever their spelling (`user-agent` replaces ours)."""
    headers = httpx.Headers({"User-Agent": user_agent, "Accept": _ACCEPT})
    headers.update(source.headers)
    if validators.etag:
        headers["If-None-Match"] = validators.etag
    if validators.last_modified:
        headers["If-Modified-Since"] = validators.last_modified
    return headers


def _fetch_http(
    client: httpx.Client, source: SourceConfig, validators: Validators, max_bytes: int, user_agent: str
) -> FetchResult:
    timeout = httpx.Timeout(source.timeout, connect=min(CONNECT_TIMEOUT, source.timeout))
    headers = _request_headers(source, validators, user_agent)
    with (
        _translated_errors(source.timeout),
        client.stream("GET", source.url, headers=headers, timeout=timeout, follow_redirects=True) as response,
    ):
        return _read_response(response, validators, max_bytes, source.timeout)


def _read_response(response: httpx.Response, old: Validators, max_bytes: int, timeout: float) -> FetchResult:
    url = str(response.url)
    if response.status_code == 304:
        fresh = Validators(
            etag=response.headers.get("etag") or old.etag,
            last_modified=response.headers.get("last-modified") or old.last_modified,
            body_hash=old.body_hash,
        )
        return FetchResult(status="not_modified", url=url, validators=fresh, http_status=304)
    if not response.is_success:
        retry_after = None
        if response.status_code in _RETRY_AFTER_STATUSES:
            retry_after = parse_retry_after(response.headers.get("retry-after"))
        raise FetchError(f"HTTP {response.status_code}", http_status=response.status_code, retry_after=retry_after)
    body = _read_capped(response, max_bytes, deadline=time.monotonic() + timeout)
    new = Validators(
        etag=response.headers.get("etag"),
        last_modified=response.headers.get("last-modified"),
        body_hash=_body_hash(body),
    )
    return _result(
        url, body, old, new, content_type=response.headers.get("content-type"), http_status=response.status_code
    )


def _read_capped(response: httpx.Response, max_bytes: int, *, deadline: float) -> bytes:
    """Stops at `max_bytes` of decoded content (a gzip bomb counts at its real size) and at the deadline,
    since the read timeout alone would let a server dribble one byte at a time forever."""
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise FetchError(f"body larger than {_size(max_bytes)}", http_status=response.status_code)
    chunks: list[bytes] = []
    received = 0
    for chunk in response.iter_bytes():
        received += len(chunk)
        if received > max_bytes:
            raise FetchError(f"body larger than {_size(max_bytes)}", http_status=response.status_code)
        if time.monotonic() > deadline:
            raise FetchError("body not received in time", http_status=response.status_code)
        chunks.append(chunk)
    return b"".join(chunks)


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait, from either form of Retry-After (delta-seconds or an HTTP date)."""
    if not value or not value.strip():
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (ValueError, TypeError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def _causes(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _connect_failure(exc: httpx.ConnectError) -> FetchError:
    """Refused, unresolvable or unreachable hosts are what a dead uplink looks like; a TLS failure is not."""
    for cause in _causes(exc):
        if isinstance(cause, ssl.SSLError):
            return FetchError(f"TLS error: {getattr(cause, 'reason', None) or cause}")
        if isinstance(cause, socket.gaierror):
            return FetchError("DNS lookup failed", network=True)
        if isinstance(cause, ConnectionRefusedError):
            return FetchError("connection refused", network=True)
        if isinstance(cause, OSError) and cause.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH):
            return FetchError("network unreachable", network=True)
    return FetchError(f"connection failed: {exc}", network=True)


@contextmanager
def _translated_errors(timeout: float) -> Iterator[None]:
    """httpx's exception zoo → one FetchError with a reason short enough for a status page."""
    try:
        yield
    except httpx.ConnectTimeout:
        raise FetchError(f"connect timeout after {min(CONNECT_TIMEOUT, timeout):g}s", network=True) from None
    except httpx.TimeoutException:
        raise FetchError(f"timeout after {timeout:g}s") from None
    except httpx.ConnectError as exc:
        raise _connect_failure(exc) from None
    except httpx.TooManyRedirects:
        raise FetchError("too many redirects") from None
    except httpx.RemoteProtocolError:
        raise FetchError("connection closed before the response was complete") from None
    except httpx.DecodingError:
        raise FetchError("response body could not be decoded (bad compression)") from None
    except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
        raise FetchError(f"unsupported URL: {exc}") from None
    except UnicodeError:
        raise FetchError("host name that cannot be looked up (an empty or over-long label)") from None
    except httpx.HTTPError as exc:
        raise FetchError(f"{type(exc).__name__}: {exc}") from None
