"""One polling cycle: fetch and parse every due source in parallel, then record each in its own transaction.

Fetching happens outside any transaction (it is slow and may fail); recording is short and atomic, and
the source's ETag and body hash are saved in the same transaction as its entries, so a crash between the
two never makes the service believe it has seen items it has not stored.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

import httpx
from sqlalchemy.orm import Session

from monitor import health
from monitor.catalogue import Catalogue
from monitor.config import SourceConfig
from monitor.fetch import FetchError, fetch, make_client
from monitor.models import FetchResult, ParsedFeed, Product, Validators
from monitor.parse import ParseError, parse_feed
from monitor.record import Outbox, Recorder, learned_products
from monitor.store import SourceRow, Store

log = logging.getLogger(__name__)

PollStatus = Literal["ok", "not_modified", "unchanged", "failed", "skipped"]

SHAPE_CHANGE_MIN_ENTRIES = 3
"""A feed that had at least this many entries and now has none has changed shape (or is broken)."""

FETCH_THREADS = 8


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
    row = session.get(SourceRow, source.id)
    if row is None:
        row = SourceRow(id=source.id, regulator=source.regulator, name=source.name, url=source.url,
                        consecutive_failures=0)
        session.add(row)
    elif row.url != source.url:
        row.etag = row.last_modified = row.body_hash = None
    row.regulator, row.name, row.url = source.regulator, source.name, source.url
    return row


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
        return f"feed changed shape: 0 entries where the last good fetch had {previous}"
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
        fetched = self._fetch_all(due, validators)
        network_down = len(fetched) > 1 and all(f.network for f in fetched)
        reports = [self._record_isolated(f, catalogue, now, charge=not network_down) for f in fetched]
        return reports + skipped

    def _record_isolated(self, fetched: _Fetched, catalogue: Catalogue, now: datetime, *, charge: bool
                         ) -> SourceReport:
        """A defect met while recording one source is that source's failure, not the cycle's."""
        try:
            return self._record(fetched, catalogue, now, charge=charge)
        except Exception as exc:
            log.exception("recording source %s failed", fetched.source.id)
            failed = _Fetched(fetched.source, error=f"internal error while recording: {type(exc).__name__}: {exc}")
            return self._record(failed, catalogue, now, charge=charge)

    def _fetch_all(self, sources: list[SourceConfig], validators: dict[str, Validators]) -> list[_Fetched]:
        client = self.client or make_client()
        try:
            with ThreadPoolExecutor(max_workers=min(FETCH_THREADS, max(len(sources), 1))) as pool:
                return list(pool.map(lambda s: _fetch_and_parse(s, validators[s.id], client), sources))
        finally:
            if self.client is None:
                client.close()

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
            log.warning("source %s failed: %s", source.id, error.encode("unicode_escape").decode("ascii"))
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
