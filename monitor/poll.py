"""One polling cycle: fetch and parse every due source in parallel, then record each in its own transaction.

Fetching happens outside any transaction (it is slow and may fail); recording is short and atomic, and
the source's ETag and body hash are saved in the same transaction as its entries, so a crash between the
two never makes the service believe it has seen items it has not stored.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal
from urllib.parse import urlsplit

import httpx
from sqlalchemy.orm import Session

from monitor import health
from monitor.catalogue import Catalogue
from monitor.config import SourceConfig
from monitor.fetch import FetchError, fetch, make_client, reachable
from monitor.models import FetchResult, ParsedFeed, Product, Validators
from monitor.parse import ParseError, parse_feed
from monitor.record import Outbox, Recorder, learned_products
from monitor.store import SourceRow, Store

log = logging.getLogger(__name__)

PollStatus = Literal["ok", "not_modified", "unchanged", "failed", "skipped"]

SHAPE_CHANGE_MIN_ENTRIES = 3
"""A feed that had at least this many entries and now has none has changed shape (or is broken)."""

FETCH_THREADS = 8

OFFLINE_PROBES = 3
"""When the one source polled could not be reached, how many other sources' servers are tried before deciding
that our own network is down (a worker polls one source per task, so "every source failed" is never seen)."""

_ERROR_LENGTH = 300
"""Longest reason kept for an internal error: a status line, not a dump."""


@dataclass
class SourceReport:
    source_id: str
    status: PollStatus
    new: int = 0
    updated: int = 0
    seen: int = 0
    events: list[int] = field(default_factory=list)
    error: str | None = None
    problem: str | None = None
    charged: bool = True


@dataclass
class _Fetched:
    """What the network phase produced for one source, handed to the recording phase."""

    source: SourceConfig
    result: FetchResult | None = None
    feed: ParsedFeed | None = None
    error: str | None = None
    retry_after: float | None = None
    network: bool = False


def _sync_source_row(session: Session, source: SourceConfig) -> SourceRow:
    """A source whose URL changed in config is a new feed: its old validators and entry count describe another
    document, a poll held back by the old address's backoff is due now, and what the new feed already holds is
    history, as on a first poll (entries it shares with the old feed are still recognised by key and link)."""
    row = session.get(SourceRow, source.id)
    if row is None:
        row = SourceRow(id=source.id, regulator=source.regulator, name=source.name, url=source.url,
                        consecutive_failures=0)
        session.add(row)
    elif row.url != source.url:
        row.etag = row.last_modified = row.body_hash = row.feed_version = None
        row.last_entry_count = row.initialised_at = row.next_poll_at = None
    row.regulator, row.name, row.url = source.regulator, source.name, source.url
    return row


def _loggable(text: str) -> str:
    """Feed-derived text on one line of plain ASCII, so that it cannot forge or garble log lines."""
    return text.encode("unicode_escape").decode("ascii")


def _internal_error(exc: Exception) -> str:
    """A short reason for the status page. A database error's first line only: the rest is the SQL statement with
    its parameters, which hold feed text (and thousands of values for a big feed)."""
    cause = getattr(exc, "orig", None) or exc
    first_line = next(iter(str(cause).splitlines()), "")
    return f"{type(cause).__name__}: {first_line}"[:_ERROR_LENGTH]


def _log_defect(what: str, source_id: str, exc: Exception) -> str:
    """Logs the frames of an unexpected error without its message (see `_internal_error`); returns the reason."""
    reason = f"internal error while {what}: {_internal_error(exc)}"
    log.error("source %s: %s\n%s", source_id, _loggable(reason), "".join(traceback.format_tb(exc.__traceback__)))
    return reason


def _fetch_isolated(source: SourceConfig, validators: Validators, client: httpx.Client) -> _Fetched:
    """A defect met while fetching one source is that source's failure, not the cycle's."""
    try:
        return _fetch_and_parse(source, validators, client)
    except Exception as exc:
        return _Fetched(source, error=_log_defect("fetching", source.id, exc))


def _fetch_and_parse(source: SourceConfig, validators: Validators, client: httpx.Client) -> _Fetched:
    try:
        result = fetch(source, validators, client=client)
    except FetchError as exc:
        return _Fetched(source, error=exc.reason, retry_after=exc.retry_after, network=exc.network)
    if result.status != "fetched" or result.body is None:
        return _Fetched(source, result=result)
    try:
        feed = parse_feed(source.id, result.body, content_type=result.content_type, url=result.url)
    except ParseError as exc:
        return _Fetched(source, result=result, error=f"not a feed: {exc}")
    return _Fetched(source, result=result, feed=feed)


def _shape_problem(row: SourceRow, feed: ParsedFeed) -> str | None:
    previous = row.last_entry_count or 0
    if not feed.entries and previous >= SHAPE_CHANGE_MIN_ENTRIES:
        return f"{health.SHAPE_CHANGED}: 0 entries where the last good fetch had {previous}"
    return None


HealthWatch = Callable[[Session, SourceRow, datetime], None]
"""Called in each source's recording transaction after its health is updated (health alerts hook in here)."""


class Poller:
    """Polls configured sources into a store; `outbox` is called for every event that should alert."""

    def __init__(self, store: Store, sources: Sequence[SourceConfig], baseline: Sequence[Product],
                 *, outbox: Outbox | None = None, health_watch: HealthWatch | None = None,
                 client: httpx.Client | None = None):
        self.store = store
        self.sources = list(sources)
        self.baseline = list(baseline)
        self.outbox = outbox
        self.health_watch = health_watch
        self.client = client

    def poll(self, *, only: str | None = None, due_only: bool = False, now: datetime | None = None
             ) -> list[SourceReport]:
        now = now or datetime.now(UTC)
        wanted = [s for s in self.sources if s.enabled and (only is None or s.id == only)]
        with self.store.transaction() as session:
            rows = {s.id: _sync_source_row(session, s) for s in wanted}
            due = [s for s in wanted if not due_only or health.is_due(rows[s.id], now)]
            validators = {s.id: Validators(rows[s.id].etag, rows[s.id].last_modified, rows[s.id].body_hash)
                          for s in due}
            catalogue = Catalogue([*self.baseline, *learned_products(session)])
        skipped = [SourceReport(s.id, "skipped") for s in wanted if s not in due]
        with self._http_client() as client:
            fetched = self._fetch_all(client, due, validators)
            charge = not self._offline(client, fetched)
        reports = [self._record_isolated(f, catalogue, now, charge=charge) for f in fetched]
        return reports + skipped

    def _record_isolated(self, fetched: _Fetched, catalogue: Catalogue, now: datetime, *, charge: bool
                         ) -> SourceReport:
        """A defect met while recording one source is that source's failure, not the cycle's."""
        try:
            return self._record(fetched, catalogue, now, charge=charge)
        except Exception as exc:
            failed = _Fetched(fetched.source, error=_log_defect("recording", fetched.source.id, exc))
            return self._record(failed, catalogue, now, charge=charge)

    @contextmanager
    def _http_client(self) -> Iterator[httpx.Client]:
        if self.client is not None:
            yield self.client
            return
        with make_client() as client:
            yield client

    @staticmethod
    def _fetch_all(client: httpx.Client, sources: list[SourceConfig], validators: dict[str, Validators]
                   ) -> list[_Fetched]:
        with ThreadPoolExecutor(max_workers=min(FETCH_THREADS, max(len(sources), 1))) as pool:
            return list(pool.map(lambda s: _fetch_isolated(s, validators[s.id], client), sources))

    def _offline(self, client: httpx.Client, fetched: list[_Fetched]) -> bool:
        """Whether our own network is down rather than the regulators' sites: every source polled failed the way
        a dead uplink does, and if that was a single source, the servers of a few other sources do not answer
        either. With nothing else to ask, one failing source is charged."""
        if not fetched or not all(f.network for f in fetched):
            return False
        if len(fetched) > 1:
            return True
        polled = urlsplit(fetched[0].source.url).netloc
        others: dict[str, str] = {}
        for source in self.sources:
            parts = urlsplit(source.url)
            if source.enabled and parts.scheme in ("http", "https") and parts.netloc != polled:
                others.setdefault(parts.netloc, source.url)
        probes = list(others.values())[:OFFLINE_PROBES]
        if not probes:
            return False
        with ThreadPoolExecutor(max_workers=len(probes)) as pool:
            return not any(pool.map(lambda url: reachable(client, url), probes))

    def _record(self, fetched: _Fetched, catalogue: Catalogue, now: datetime, *, charge: bool) -> SourceReport:
        with self.store.transaction() as session:
            row = session.get(SourceRow, fetched.source.id)
            report = self._apply(session, row, fetched, catalogue, now, charge=charge)
            if self.health_watch is not None:
                self.health_watch(session, row, now)
            return report

    def _apply(self, session: Session, row: SourceRow, fetched: _Fetched, catalogue: Catalogue, now: datetime,
               *, charge: bool) -> SourceReport:
        source = fetched.source
        error = fetched.error or (_shape_problem(row, fetched.feed) if fetched.feed else None)
        if error is not None:
            health.record_failure(row, now, source.interval, error, retry_after=fetched.retry_after,
                                  charge=charge)
            log.warning("source %s failed: %s", source.id, _loggable(error))
            return SourceReport(source.id, "failed", error=error, charged=charge)
        result = fetched.result
        if fetched.feed is None:
            health.record_success(row, now, source.interval, row.last_problem)
            return SourceReport(source.id, result.status)
        recorded = Recorder(session, source, row, catalogue, self.outbox, now).record(fetched.feed.entries)
        row.etag = result.validators.etag
        row.last_modified = result.validators.last_modified
        row.body_hash = result.validators.body_hash
        row.feed_version = fetched.feed.version
        row.last_entry_count = len(fetched.feed.entries)
        health.record_success(row, now, source.interval, fetched.feed.problem)
        return SourceReport(source.id, "ok", new=recorded.new, updated=recorded.updated, seen=recorded.seen,
                            events=recorded.events, problem=fetched.feed.problem)
