"""Signatures on webhook posts, and the check a receiver runs on them.

Every webhook POST carries:

    X-ATMP-Delivery:  a stable id for the notification; the same on every retry, so drop repeats by it
    X-ATMP-Timestamp: the time of this send attempt, in Unix seconds
    X-ATMP-Signature: sha256=<hex HMAC-SHA256 of  timestamp + "." + raw body,  keyed with the shared secret>

A receiver verifies before it parses: take the raw body bytes as received (not re-serialised JSON), call
`verify_signature(secret, timestamp_header, body, signature_header)`, and reject the request when it
returns False. The timestamp is inside the signed text, so a captured request cannot be replayed later
than `tolerance` seconds; a repeat inside that window is caught by the delivery id.
"""

from __future__ import annotations

import hashlib
import hmac
import time

SCHEME = "sha256="


def sign(secret: str, timestamp: int | str, body: bytes) -> str:
    """The `X-ATMP-Signature` value for `body` sent at `timestamp`."""
    message = str(timestamp).encode("ascii") + b"." + body
    return SCHEME + hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def signature_headers(secret: str, delivery: str, body: bytes, *, timestamp: int | None = None) -> dict[str, str]:
    stamp = int(time.time()) if timestamp is None else timestamp
    return {
        "X-ATMP-Delivery": delivery,
        "X-ATMP-Timestamp": str(stamp),
        "X-ATMP-Signature": sign(secret, stamp, body),
    }


def verify_signature(secret: str, timestamp: str | int | None, body: bytes, header: str | None,
                     tolerance: float = 300, *, now: float | None = None) -> bool:
    """True when `header` is the signature of `body` at `timestamp`, and `timestamp` is within `tolerance`
    seconds of `now` (the receiver's clock). Compared in constant time."""
    if not header or timestamp is None:
        return False
    try:
        stamp = int(str(timestamp).strip())
    except ValueError:
        return False
    current = time.time() if now is None else now
    if abs(current - stamp) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, stamp, body), header.strip())
