"""Sending what the outbox holds: claim, attempt, record, so each (subscription, event) is sent once.

A row is claimed with a compare-and-set UPDATE (`WHERE id = :id AND <still due>`) that only one process
can win, committed before anything is sent; the result is recorded after. Transient failures (timeouts,
connection errors, 5xx, 408, 429) are retried with exponential backoff and jitter, never sooner than the
receiver's Retry-After; permanent ones (other 4xx, refused addresses, missing secrets) stop and stay
visible until someone retries them. A row left in `sending` by a worker that died is returned to retry
by the reaper. An alert whose event no longer matches its subscription when it comes to be sent
(reclassified meanwhile, or the filter narrowed) is dropped, as a digest drops such items, so it can be
queued again should the event ever match again. A crash after the receiver accepted but before we
recorded it can repeat one send; the stable delivery key (X-ATMP-Delivery, Message-ID) lets receivers
drop that repeat.

Digests: events for a digest subscription wait as `digest_item` rows (`queued`). Sending a digest claims
them all at once (`queued` → `batched`, pointing at a new `digest` row), so two runs of the same digest
at the same moment cannot both take an event, and the digest row then goes through the same
claim/attempt/retry path as any other delivery. A scheduled slot is recorded in `digest_runs` under a
unique key, so a second trigger of the same slot (beat firing twice, a sweep) sends nothing.
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import and_, delete, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from monitor.channels import CHANNELS, Notification, SendContext, Sent, TransportError
from monitor.channels.base import EventView, HealthView, Outcome
from monitor.config import ConfigError
from monitor.digest import Renderer
from monitor.store import DeliveryRow, DigestRunRow, EventRow, Store
from monitor.subscriptions import Subscription, Subscriptions

if TYPE_CHECKING:
    from monitor.runtime import Runtime

log = logging.getLogger(__name__)

SENDABLE = ("event", "digest", "health")
"""Kinds a sender claims; `digest_item` rows are only ever sent inside their digest."""

BACKOFF_BASE = timedelta(seconds=30)
BACKOFF_CEILING = timedelta(hours=6)
MAX_ATTEMPTS = 12
"""With the backoff above, about two and a half days of trying before a row needs a person."""

STUCK_AFTER = timedelta(minutes=15)
"""Far longer than any send can take (HTTP and SMTP time out well before), so a live sender is never reaped."""

BATCH_SIZE = 200
_jitter = random.Random()


@dataclass
class DeliveryReport:
    sent: int = 0
    failed: int = 0
    retrying: int = 0
    reaped: int = 0
    dropped: int = 0

    def add(self, status: str) -> None:
        if status in ("sent", "failed", "retrying", "dropped"):
            setattr(self, status, getattr(self, status) + 1)


@dataclass(frozen=True)
class DigestResult:
    """`status`: sent | retrying | failed (as a delivery), empty (nothing to send), not_due (slot served)."""

    subscription: str
    status: str
    events: int = 0
    delivery_id: int | None = None


@dataclass(frozen=True)
class DeliveryLine:
    """A delivery as `deliveries list` shows it."""

    id: int
    subscription: str
    channel: str
    kind: str
    status: str
    attempts: int
    created_at: datetime
    next_attempt_at: datetime | None
    sent_at: datetime | None
    last_error: str | None
    about: str


def _utcnow() -> datetime:
    return datetime.now(UTC)


def backoff(attempts: int) -> timedelta:
    """Doubling per attempt up to the ceiling, then a random 50–100 % of it, so retries of many deliveries
    that failed together (a receiver outage) do not all come back at the same second."""
    ceiling = min(BACKOFF_BASE * (2 ** max(attempts - 1, 0)), BACKOFF_CEILING)
    return ceiling * _jitter.uniform(0.5, 1.0)


def next_attempt_at(attempts: int, retry_after: float | None, now: datetime) -> datetime:
    delay = backoff(attempts)
    if retry_after is not None:
        delay = max(delay, timedelta(seconds=retry_after))
    return now + delay


def _due(now: datetime):
    return or_(
        and_(DeliveryRow.status == "pending",
             or_(DeliveryRow.next_attempt_at.is_(None), DeliveryRow.next_attempt_at <= now)),
        and_(DeliveryRow.status == "failed", DeliveryRow.next_attempt_at.is_not(None),
             DeliveryRow.next_attempt_at <= now),
    )


def claim(store: Store, delivery_id: int, now: datetime) -> bool:
    """Compare-and-set `sending`: True for exactly one of any number of concurrent callers."""
    with store.transaction() as session:
        result = session.execute(
            update(DeliveryRow)
            .where(DeliveryRow.id == delivery_id, DeliveryRow.kind.in_(SENDABLE), _due(now))
            .values(status="sending", claimed_at=now, attempts=DeliveryRow.attempts + 1, updated_at=now)
            .execution_options(synchronize_session=False)
        )
        return result.rowcount == 1


def reap(store: Store, now: datetime) -> int:
    """Rows claimed long ago and never recorded: their sender died. They are retried now."""
    with store.transaction() as session:
        result = session.execute(
            update(DeliveryRow)
            .where(DeliveryRow.status == "sending", DeliveryRow.claimed_at < now - STUCK_AFTER)
            .values(status="failed", next_attempt_at=now, updated_at=now,
                    last_error="interrupted while sending (the sender stopped); retrying")
            .execution_options(synchronize_session=False)
        )
        if result.rowcount:
            log.warning("returned %d delivery(ies) stuck in sending to retry", result.rowcount)
        return result.rowcount


@lru_cache(maxsize=8)
def renderer_for(templates: Path | None) -> Renderer:
    return Renderer(templates)


def send_context(runtime: Runtime, now: datetime) -> SendContext:
    subscriptions = runtime.subscriptions
    return SendContext(config=subscriptions, renderer=renderer_for(subscriptions.templates),
                       environ=os.environ, now=now)


EVENTS = EventRow.__table__
"""Digests read events as plain rows (same attribute names as EventRow): a digest of hundreds of events does
not need ORM identity tracking, which costs more than the rendering."""


def _digest_events(session: Session, digest_id: int) -> tuple[EventView, ...]:
    rows = session.execute(
        select(EVENTS).join(DeliveryRow, DeliveryRow.event_id == EVENTS.c.id)
        .where(DeliveryRow.digest_id == digest_id).order_by(EVENTS.c.id)
    )
    return tuple(EventView.from_row(row) for row in rows)


def _health_view(payload: dict) -> HealthView:
    return HealthView(
        source_id=payload["source_id"], source_name=payload["source_name"], regulator=payload["regulator"],
        state=payload["state"], reason=payload["reason"], since=datetime.fromisoformat(payload["since"]),
        at=datetime.fromisoformat(payload["at"]),
    )


class NoLongerWanted(Exception):
    """The event of an alert no longer matches its subscription: the row is dropped, not sent."""


def notification_for(session: Session, subscriptions: Subscriptions, row: DeliveryRow) -> Notification:
    subscription = subscriptions.get(row.subscription)
    if subscription is None:
        raise TransportError(f"subscription {row.subscription!r} is no longer configured", permanent=True)
    common = {"key": row.idempotency_key, "subscription": subscription, "created_at": row.created_at,
              "parts_done": row.parts_sent or 0}
    if row.kind == "digest":
        return Notification(kind="digest", events=_digest_events(session, row.id), **common)
    if row.kind == "health":
        return Notification(kind="health", health=_health_view(row.payload), **common)
    event = EventView.from_row(session.get(EventRow, row.event_id))
    if not subscription.wants(event):
        raise NoLongerWanted
    return Notification(kind="event", events=(event,), **common)


@dataclass
class Prepared:
    """Claimed rows sorted by what happens next: sent, recorded as failed at once, or dropped."""

    ready: list[tuple[int, Notification]]
    broken: list[tuple[int, TransportError]]
    dropped: list[tuple[int, str]]


def _prepare(store: Store, subscriptions: Subscriptions, ids: Sequence[int]) -> Prepared:
    prepared = Prepared([], [], [])
    with store.transaction() as session:
        for row in session.scalars(select(DeliveryRow).where(DeliveryRow.id.in_(ids)).order_by(DeliveryRow.id)):
            try:
                prepared.ready.append((row.id, notification_for(session, subscriptions, row)))
            except NoLongerWanted:
                prepared.dropped.append((row.id, row.subscription))
                session.delete(row)
            except TransportError as exc:
                prepared.broken.append((row.id, exc))
            except Exception as exc:
                log.exception("cannot build delivery %d for %s", row.id, row.subscription)
                prepared.broken.append((row.id, TransportError(f"internal error: {type(exc).__name__}: {exc}")))
    return prepared


def _send_group(channel: str, notifications: list[Notification], context: SendContext) -> list[Outcome]:
    """One channel call per batch, so all the email of one run shares one SMTP connection."""
    try:
        outcomes = CHANNELS[channel].send(notifications, context)
    except Exception as exc:
        log.exception("channel %s failed", channel)
        return [TransportError(f"internal error: {type(exc).__name__}: {exc}")] * len(notifications)
    if len(outcomes) != len(notifications):
        return [TransportError("internal error: channel returned the wrong number of outcomes")] * len(notifications)
    return outcomes


def record(store: Store, delivery_id: int, outcome: Outcome, claimed_at: datetime, now: datetime) -> str:
    """Write one attempt's result; returns sent | retrying | failed (or the row's status if another owns it)."""
    with store.transaction() as session:
        row = session.get(DeliveryRow, delivery_id, with_for_update=True)
        if isinstance(outcome, Sent):
            row.status, row.sent_at, row.next_attempt_at = "sent", now, None
            row.last_response, row.last_error, row.parts_sent = outcome.response[:500], None, outcome.parts
            row.updated_at = now
            if row.kind == "digest":
                session.execute(update(DeliveryRow).where(DeliveryRow.digest_id == row.id)
                                .values(status="sent", sent_at=now, updated_at=now)
                                .execution_options(synchronize_session=False))
            return "sent"
        if row.status != "sending" or row.claimed_at != claimed_at:
            return row.status
        row.last_error = outcome.message[:2000]
        row.parts_sent = max(row.parts_sent or 0, outcome.parts_sent)
        row.status, row.updated_at = "failed", now
        if outcome.permanent or row.attempts >= MAX_ATTEMPTS:
            row.next_attempt_at = None
            if not outcome.permanent:
                row.last_error = f"gave up after {row.attempts} attempts: {row.last_error}"[:2000]
            return "failed"
        row.next_attempt_at = next_attempt_at(row.attempts, outcome.retry_after, now)
        return "retrying"


def _send_claimed(runtime: Runtime, ids: Sequence[int], now: datetime) -> dict[int, str]:
    """Send claimed rows, grouped by channel; the status each ended in."""
    prepared = _prepare(runtime.store, runtime.subscriptions, ids)
    statuses = {delivery_id: record(runtime.store, delivery_id, error, now, now)
                for delivery_id, error in prepared.broken}
    for delivery_id, subscription in prepared.dropped:
        log.info("delivery %d to %s: dropped, its event no longer matches the subscription", delivery_id, subscription)
        statuses[delivery_id] = "dropped"
    groups: dict[str, list[tuple[int, Notification]]] = {}
    for delivery_id, notification in prepared.ready:
        groups.setdefault(notification.subscription.channel, []).append((delivery_id, notification))
    context = send_context(runtime, now)
    for channel, group in groups.items():
        outcomes = _send_group(channel, [n for _, n in group], context)
        for (delivery_id, notification), outcome in zip(group, outcomes, strict=True):
            statuses[delivery_id] = status = record(runtime.store, delivery_id, outcome, now, now)
            _log_outcome(delivery_id, notification.subscription, outcome, status)
    return statuses


def _log_outcome(delivery_id: int, subscription: Subscription, outcome: Outcome, status: str) -> None:
    """Names the subscription, never the target: a Slack or webhook URL is a secret."""
    if isinstance(outcome, Sent):
        log.info("delivery %d to %s (%s): sent", delivery_id, subscription.name, subscription.channel)
    else:
        log.warning("delivery %d to %s (%s): %s: %s", delivery_id, subscription.name, subscription.channel,
                    status, outcome.message)


def _due_ids(store: Store, now: datetime, limit: int) -> list[int]:
    with store.transaction() as session:
        return list(session.scalars(
            select(DeliveryRow.id).where(DeliveryRow.kind.in_(SENDABLE), _due(now))
            .order_by(DeliveryRow.id).limit(limit)
        ))


def deliver_due(runtime: Runtime, *, now: datetime | None = None) -> DeliveryReport:
    """Send every delivery that is due (pending, or failed and due for retry), after reaping stuck ones."""
    now = now or _utcnow()
    report = DeliveryReport(reaped=reap(runtime.store, now))
    while ids := _due_ids(runtime.store, now, BATCH_SIZE):
        claimed = [delivery_id for delivery_id in ids if claim(runtime.store, delivery_id, now)]
        for status in _send_claimed(runtime, claimed, now).values():
            report.add(status)
    return report


def delivery_status(store: Store, delivery_id: int) -> str:
    with store.transaction() as session:
        status = session.scalar(select(DeliveryRow.status).where(DeliveryRow.id == delivery_id))
    return status or "missing"


def deliver_one(runtime: Runtime, delivery_id: int, *, now: datetime | None = None) -> str:
    """Claim and send one delivery; if it is not due or someone else has it, just report its status."""
    now = now or _utcnow()
    if not claim(runtime.store, delivery_id, now):
        return delivery_status(runtime.store, delivery_id)
    return _send_claimed(runtime, [delivery_id], now)[delivery_id]


def _digest_subscription(runtime: Runtime, name: str) -> Subscription:
    subscription = runtime.subscriptions.named(name)
    if subscription.mode != "digest":
        raise ConfigError(runtime.subscriptions.path or "subscriptions.yaml",
                          f"subscription {name!r} is not a digest (mode: {subscription.mode})")
    return subscription


def _insert_run(session: Session, name: str, slot: datetime | None, now: datetime) -> DigestRunRow | None:
    """The run for `slot`, or None when that slot already has one (someone else is serving it)."""
    if slot is None:
        run = DigestRunRow(subscription=name, slot=None, started_at=now, event_count=0)
        session.add(run)
        session.flush()
        return run
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    run_id = session.scalar(
        insert(DigestRunRow).values(subscription=name, slot=slot, started_at=now, event_count=0)
        .on_conflict_do_nothing(index_elements=["subscription", "slot"]).returning(DigestRunRow.id)
    )
    return session.get(DigestRunRow, run_id) if run_id is not None else None


def _take_items(session: Session, subscription: Subscription, digest: DeliveryRow, now: datetime) -> int:
    """Claim every queued item for this digest at once, then drop those whose event no longer matches
    (reclassified since), so they can be queued again if they ever match again."""
    session.execute(
        update(DeliveryRow)
        .where(DeliveryRow.subscription == subscription.name, DeliveryRow.kind == "digest_item",
               DeliveryRow.status == "queued")
        .values(status="batched", digest_id=digest.id, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    items = session.execute(
        select(DeliveryRow.id.label("item_id"), EVENTS).join(EVENTS, DeliveryRow.event_id == EVENTS.c.id)
        .where(DeliveryRow.digest_id == digest.id)
    ).all()
    stale = [item.item_id for item in items if not subscription.wants(EventView.from_row(item))]
    if stale:
        session.execute(delete(DeliveryRow).where(DeliveryRow.id.in_(stale))
                        .execution_options(synchronize_session=False))
    return len(items) - len(stale)


def queue_digest(runtime: Runtime, subscription_name: str, *, now: datetime | None = None,
                 force: bool = False) -> DigestResult:
    """Gather a digest's events into one `digest` delivery without sending it.

    Without `force` this serves the schedule's latest slot at `now`, once; with it, it runs regardless of
    the schedule (a manual send). Either way each queued event goes into exactly one digest."""
    now = now or _utcnow()
    subscription = _digest_subscription(runtime, subscription_name)
    slot = None if force else subscription.schedule.latest_at(now)
    with runtime.store.transaction() as session:
        run = _insert_run(session, subscription.name, slot, now)
        if run is None:
            return DigestResult(subscription.name, "not_due")
        digest = DeliveryRow(
            idempotency_key=f"{subscription.name}:digest:{run.id}", subscription=subscription.name,
            channel=subscription.channel, kind="digest", status="pending", attempts=0, parts_sent=0,
            created_at=now, updated_at=now,
        )
        session.add(digest)
        session.flush()
        run.event_count = count = _take_items(session, subscription, digest, now)
        if count == 0 and not subscription.send_empty:
            session.delete(digest)
            return DigestResult(subscription.name, "empty")
        run.delivery_id = digest.id
        return DigestResult(subscription.name, "queued", count, digest.id)


def send_digest(runtime: Runtime, subscription_name: str, *, now: datetime | None = None,
                force: bool = False) -> DigestResult:
    """Queue (see `queue_digest`) and send one digest now; an empty digest sends nothing unless the
    subscription says `send_empty: true`. Safe to call twice at once: the second sends nothing."""
    now = now or _utcnow()
    queued = queue_digest(runtime, subscription_name, now=now, force=force)
    if queued.delivery_id is None:
        return queued
    return replace(queued, status=deliver_one(runtime, queued.delivery_id, now=now))


def due_digests(runtime: Runtime, now: datetime) -> list[str]:
    """Digest subscriptions whose latest scheduled slot at `now` has not been served yet.

    A subscription seen here for the first time has its current slot marked as served, so its first
    digest goes out at its next scheduled time, not at whatever moment the service happened to start."""
    digests = runtime.subscriptions.of_mode("digest")
    if not digests:
        return []
    with runtime.store.transaction() as session:
        served = dict(session.execute(
            select(DigestRunRow.subscription, func.max(DigestRunRow.slot))
            .where(DigestRunRow.slot.is_not(None)).group_by(DigestRunRow.subscription)
        ).all())
        due = []
        for subscription in digests:
            slot = subscription.schedule.latest_at(now)
            last = served.get(subscription.name)
            if last is None:
                _insert_run(session, subscription.name, slot, now)
            elif last < slot:
                due.append(subscription.name)
    return due


def pending_counts(runtime: Runtime) -> dict[str, int]:
    """Deliveries by state, for `atmp-monitor status`: pending, sending, retrying (failed, will retry),
    failed (for good, until retried by hand), sent; and queued (events waiting for their digest)."""
    counts = dict.fromkeys(("pending", "sending", "retrying", "failed", "sent", "queued"), 0)
    with runtime.store.transaction() as session:
        rows = session.execute(
            select(DeliveryRow.kind, DeliveryRow.status, DeliveryRow.next_attempt_at.is_not(None), func.count())
            .group_by(DeliveryRow.kind, DeliveryRow.status, DeliveryRow.next_attempt_at.is_not(None))
        ).all()
    for kind, status, scheduled, count in rows:
        if kind == "digest_item":
            counts["queued"] += count if status == "queued" else 0
        elif status == "failed" and scheduled:
            counts["retrying"] += count
        elif status in counts:
            counts[status] += count
    return counts


def retry(runtime: Runtime, ids: Sequence[int] = (), *, now: datetime | None = None) -> list[int]:
    """Make failed deliveries (those listed, or all) due now with a fresh attempt budget; returns their ids."""
    now = now or _utcnow()
    query = select(DeliveryRow.id).where(DeliveryRow.status == "failed", DeliveryRow.kind.in_(SENDABLE))
    if ids:
        query = query.where(DeliveryRow.id.in_(list(ids)))
    with runtime.store.transaction() as session:
        chosen = list(session.scalars(query.order_by(DeliveryRow.id)))
        if chosen:
            session.execute(
                update(DeliveryRow).where(DeliveryRow.id.in_(chosen), DeliveryRow.status == "failed")
                .values(status="pending", next_attempt_at=None, attempts=0, updated_at=now)
                .execution_options(synchronize_session=False)
            )
    return chosen


def _about(session: Session, row: DeliveryRow) -> str:
    if row.kind == "event" and row.event_id is not None:
        return session.scalar(select(EventRow.title).where(EventRow.id == row.event_id)) or ""
    if row.kind == "digest":
        count = session.scalar(select(func.count()).where(DeliveryRow.digest_id == row.id))
        return f"digest of {count} event(s)"
    if row.kind == "health" and row.payload:
        return f"source {row.payload.get('source_id')} {row.payload.get('state')}"
    return ""


def list_deliveries(runtime: Runtime, *, failed_only: bool = False, limit: int = 50) -> list[DeliveryLine]:
    """The newest deliveries first (digest items are shown through their digest)."""
    query = select(DeliveryRow).where(DeliveryRow.kind.in_(SENDABLE))
    if failed_only:
        query = query.where(DeliveryRow.status == "failed")
    with runtime.store.transaction() as session:
        rows = session.scalars(query.order_by(DeliveryRow.id.desc()).limit(limit)).all()
        return [
            DeliveryLine(
                id=row.id, subscription=row.subscription, channel=row.channel, kind=row.kind, status=row.status,
                attempts=row.attempts, created_at=row.created_at, next_attempt_at=row.next_attempt_at,
                sent_at=row.sent_at, last_error=row.last_error, about=_about(session, row),
            )
            for row in rows
        ]
