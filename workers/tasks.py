"""Celery tasks: thin wrappers over `monitor/` that add what only a queue needs.

What they add: a lock so two runs of one job never overlap, a due check so a beat tick honours a source's
backoff, a record of each periodic run for `status`, and Celery retries (with backoff and jitter) for the
infrastructure failing under them (database or broker unreachable). Failures of a regulator's site or of
a receiver are not task failures: `monitor/` records them and decides when to try again, in the database.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import redis
from celery import Task, shared_task
from sqlalchemy import select
from sqlalchemy.exc import InterfaceError, OperationalError

from monitor import deliver as delivery
from monitor.config import ConfigError, SourceConfig
from monitor.store import DeliveryRow, SourceRow, Store
from workers.app import DELIVER_LIMITS, DIGEST_LIMITS, POLL_LIMITS, SWEEP_LIMITS, MonitorCelery, TimeLimits
from workers.runlog import TaskRun, record_run
from workers.schedule import SWEEP_ENTRY, digest_entry_name, poll_entry_name

log = logging.getLogger(__name__)

DUE_SLACK = 0.5
"""Fraction of a source's interval by which a tick may precede the source's `next_poll_at` and still poll.

Beat ticks every `interval` from its own clock, while a poll sets `next_poll_at` to its own start plus
`interval`; queueing delays jitter both, so a strict comparison would skip about every other tick. Backoff
pushes `next_poll_at` whole intervals away, so half an interval of slack never overrides it."""

RETRYABLE = (OperationalError, InterfaceError, redis.ConnectionError, redis.TimeoutError)
"""Infrastructure hiccups worth another try: a locked SQLite file, a dropped database or broker connection."""


def _options(limits: TimeLimits) -> dict[str, Any]:
    # Retries back off exponentially from 2 s to at most 60 s, with jitter so that workers that failed
    # together do not retry together; the longest countdown stays far below the visibility timeout.
    return {"bind": True, "soft_time_limit": limits.soft, "time_limit": limits.hard,
            "autoretry_for": RETRYABLE, "retry_backoff": 2, "retry_backoff_max": 60, "retry_jitter": True,
            "max_retries": 5}


def _app(task: Task) -> MonitorCelery:
    return task.app


def _now() -> datetime:
    return datetime.now(UTC)


def due_at_tick(store: Store, source: SourceConfig, now: datetime) -> bool:
    with store.transaction() as session:
        next_poll_at = session.scalar(select(SourceRow.next_poll_at).where(SourceRow.id == source.id))
    return next_poll_at is None or next_poll_at <= now + timedelta(seconds=source.interval * DUE_SLACK)


def pending_since(store: Store, since: datetime) -> list[int]:
    """Deliveries written since `since` and not yet attempted: what a poll just put in the outbox."""
    with store.transaction() as session:
        return list(session.scalars(
            select(DeliveryRow.id).where(DeliveryRow.kind.in_(delivery.SENDABLE), DeliveryRow.status == "pending",
                                         DeliveryRow.attempts == 0, DeliveryRow.created_at >= since)
            .order_by(DeliveryRow.id)
        ))


def _record(app: MonitorCelery, name: str, task: str, started: datetime, outcome: str, detail: str | None = None
            ) -> None:
    record_run(app.runtime.store, TaskRun(name, task, started, _now(), outcome, detail))


@shared_task(name="atmp.poll_source", **_options(POLL_LIMITS))
def poll_source(self: Task, source_id: str) -> str:
    """Poll one source if it is due, then hand what it put in the outbox to `deliver` at once."""
    app, started = _app(self), _now()
    runtime = app.runtime
    try:
        source = runtime.source(source_id)
    except ConfigError:
        log.warning("poll of %s skipped: no longer configured", source_id)
        return "unknown"
    with app.locks.hold(poll_entry_name(source_id), ttl=POLL_LIMITS.hard) as held:
        if not held:
            return "locked"
        if not source.enabled:
            outcome, detail = "disabled", None
        elif not due_at_tick(runtime.store, source, started):
            outcome, detail = "not_due", None
        else:
            [report] = runtime.poller(app.http_client).poll(only=source_id, now=started)
            outcome = report.status
            detail = report.error or (f"new={report.new} updated={report.updated} events={len(report.events)}"
                                      if report.status == "ok" else None)
            for delivery_id in pending_since(runtime.store, started):
                app.send_task("atmp.deliver", args=(delivery_id,))
    _record(app, poll_entry_name(source_id), "atmp.poll_source", started, outcome, detail)
    return outcome


@shared_task(name="atmp.deliver", **_options(DELIVER_LIMITS))
def deliver(self: Task, delivery_id: int) -> str:
    """Send one outbox row; its compare-and-set claim makes a second run of the same message send nothing."""
    return delivery.deliver_one(_app(self).runtime, delivery_id)


@shared_task(name="atmp.send_digest", **_options(DIGEST_LIMITS))
def send_digest(self: Task, subscription: str) -> str:
    """Send a digest's current slot; the lock and the slot's unique row each make a second send impossible."""
    app, started = _app(self), _now()
    with app.locks.hold(digest_entry_name(subscription), ttl=DIGEST_LIMITS.hard) as held:
        if not held:
            return "locked"
        try:
            result = delivery.send_digest(app.runtime, subscription, now=started)
        except ConfigError as exc:
            log.warning("digest %s skipped: %s", subscription, exc)
            return "unknown"
    _record(app, digest_entry_name(subscription), "atmp.send_digest", started, result.status,
            f"events={result.events}")
    return result.status


@shared_task(name="atmp.sweep", **_options(SWEEP_LIMITS))
def sweep(self: Task) -> str:
    """Retry due deliveries (and those a dead worker left half-sent), and queue digests a stopped worker missed."""
    app, started = _app(self), _now()
    with app.locks.hold(SWEEP_ENTRY, ttl=SWEEP_LIMITS.hard) as held:
        if not held:
            return "locked"
        report = delivery.deliver_due(app.runtime, now=started)
        missed = delivery.due_digests(app.runtime, started)
    for subscription in missed:
        app.send_task("atmp.send_digest", args=(subscription,))
    detail = (f"sent={report.sent} retrying={report.retrying} failed={report.failed} dropped={report.dropped} "
              f"reaped={report.reaped} digests={len(missed)}")
    _record(app, SWEEP_ENTRY, "atmp.sweep", started, "ok", detail)
    return "ok"
