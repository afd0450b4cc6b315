"""Source health: how failures are counted and how far they push the next poll back.

A failing regulator site is polled less and less often, but never given up on: the delay doubles per
consecutive failure up to a ceiling, a Retry-After is obeyed, and one success resets everything.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from monitor.store import SourceRow

BACKOFF_CEILING = timedelta(hours=6)

SHAPE_CHANGED = "feed changed shape"
"""How a failure caused by a feed answering 200 with the wrong shape starts; health alerts open on it at once."""
RETRY_AFTER_CEILING = timedelta(days=1)
"""A server may ask for a pause, not to be forgotten: a longer Retry-After (a year, or digits enough to overflow
a date) is cut to this, so that polling never gives up on a source."""


def backoff_delay(interval: int, failures: int, retry_after: float | None = None) -> timedelta:
    """`interval` × 2^(failures-1), capped at the ceiling (or the interval, if that is longer)."""
    base = timedelta(seconds=interval)
    ceiling = max(base, BACKOFF_CEILING)
    delay = min(base * (2 ** max(failures - 1, 0)), ceiling)
    if retry_after is not None:
        delay = max(delay, timedelta(seconds=min(retry_after, RETRY_AFTER_CEILING.total_seconds())))
    return delay


def record_success(row: SourceRow, now: datetime, interval: int, problem: str | None = None) -> None:
    row.last_polled_at = now
    row.last_success_at = now
    row.consecutive_failures = 0
    row.failing_since = None
    row.last_problem = problem
    row.next_poll_at = now + timedelta(seconds=interval)
    if row.initialised_at is None:
        row.initialised_at = now


def record_failure(
    row: SourceRow, now: datetime, interval: int, reason: str, *, retry_after: float | None, charge: bool
) -> None:
    """`charge=False` when every source failed at once: our network is down, not this regulator's site."""
    row.last_polled_at = now
    row.last_error = reason
    row.last_error_at = now
    if charge:
        row.consecutive_failures = (row.consecutive_failures or 0) + 1
        row.failing_since = row.failing_since or now
    row.next_poll_at = now + backoff_delay(interval, row.consecutive_failures or 0, retry_after)


def is_due(row: SourceRow, now: datetime) -> bool:
    return row.next_poll_at is None or row.next_poll_at <= now
