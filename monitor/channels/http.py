"""One HTTP POST and what its answer means for a delivery, shared by the Slack and webhook channels.

The URL of a Slack or webhook target is itself a secret, so no message built here ever contains it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx

from monitor import __version__
from monitor.channels.base import TransportError

USER_AGENT = f"atmp-monitor/{__version__} (+notifications)"
RETRY_AFTER_CEILING = 24 * 3600.0
"""A receiver asking for more than a day is more likely wrong than serious; a day is waited at most."""

TRANSIENT_4XX = frozenset({408, 425, 429})


def make_client(timeout: float) -> httpx.Client:
    """Redirects are not followed: a signed payload must not travel to a host nobody configured."""
    return httpx.Client(timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)), follow_redirects=False,
                        headers={"User-Agent": USER_AGENT})


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """`Retry-After` as seconds, from either of its forms (delta-seconds or an HTTP date)."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    return min(max(seconds, 0.0), RETRY_AFTER_CEILING)


def _excerpt(response: httpx.Response) -> str:
    text = " ".join(response.text.split())
    return text[:200] + ("…" if len(text) > 200 else "")


def post(client: httpx.Client, url: str, body: bytes, headers: dict[str, str], *, parts_sent: int = 0) -> str:
    """POST and return a short description of a 2xx answer; anything else raises TransportError."""
    try:
        response = client.post(url, content=body, headers=headers)
    except httpx.TimeoutException as exc:
        raise TransportError(f"timed out ({type(exc).__name__})", parts_sent=parts_sent) from None
    except (httpx.InvalidURL, httpx.UnsupportedProtocol):
        raise TransportError("the configured URL is not a valid http(s) URL", permanent=True,
                             parts_sent=parts_sent) from None
    except httpx.TransportError as exc:
        raise TransportError(f"connection failed ({type(exc).__name__})", parts_sent=parts_sent) from None
    code = response.status_code
    described = f"HTTP {code}" + (f": {excerpt}" if (excerpt := _excerpt(response)) else "")
    if 200 <= code < 300:
        return described
    if code in TRANSIENT_4XX or code >= 500:
        raise TransportError(described, retry_after=retry_after_seconds(response.headers.get("retry-after")),
                             parts_sent=parts_sent)
    if 300 <= code < 400:
        raise TransportError(f"HTTP {code} redirect (not followed): update the URL", permanent=True,
                             parts_sent=parts_sent)
    raise TransportError(described, permanent=True, parts_sent=parts_sent)
