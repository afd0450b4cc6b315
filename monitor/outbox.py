"""The outbox: what must be sent is written in the same transaction that learned it; nothing is sent here.

Every row carries an idempotency key, (subscription, event) for events and (subscription, incident, state)
for health alerts, inserted with ON CONFLICT DO NOTHING. The poll calls the outbox on every creation and
every update of an alerting event, so re-polling and reclassifying add nothing that is already owed; an
event that starts matching a subscription only after an update gets its row then, once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from monitor.channels.base import EventView
from monitor.health import SHAPE_CHANGED
from monitor.store import DeliveryRow, EventRow, SourceIncidentRow, SourceRow
from monitor.subscriptions import Subscription, Subscriptions

Outbox = Callable[[Session, EventRow], None]
HealthWatch = Callable[[Session, SourceRow, datetime], None]


def event_key(subscription: str, event_id: int) -> str:
    return f"{subscription}:event:{event_id}"


def health_key(subscription: str, incident_id: int, state: str) -> str:
    return f"{subscription}:health:{incident_id}:{state}"


def insert_if_absent(session: Session, rows: Sequence[dict]) -> None:
    """Insert delivery rows whose key is new; rows already there are left exactly as they are.

    Sent as one executemany of a cached statement: a multi-VALUES literal per event would be compiled
    afresh every time (the bulk of the cost) and outgrow SQLite's bound-parameter limit past ~2,300 rows."""
    if not rows:
        return
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    statement = insert(DeliveryRow.__table__).on_conflict_do_nothing(index_elements=["idempotency_key"])
    session.execute(statement, list(rows))


def delivery_row(subscription: Subscription, key: str, kind: str, now: datetime, **fields: object) -> dict:
    """Every column of a new row, so one multi-row INSERT can carry rows of any kind."""
    row = {
        "idempotency_key": key, "subscription": subscription.name, "channel": subscription.channel, "kind": kind,
        "event_id": None, "incident_id": None, "digest_id": None,
        "status": "queued" if kind == "digest_item" else "pending",
        "attempts": 0, "parts_sent": 0, "created_at": now, "updated_at": now,
    }
    row.update(fields)
    return row


def rows_for_event(subscriptions: Sequence[Subscription], event: EventView, now: datetime) -> list[dict]:
    return [
        delivery_row(s, event_key(s.name, event.id), "digest_item" if s.mode == "digest" else "event", now,
                     event_id=event.id)
        for s in subscriptions if s.wants(event)
    ]


def make_outbox(subscriptions: Subscriptions) -> Outbox:
    """The `outbox` callable the poller runs for every alerting event it stores or updates."""
    watching = [s for s in subscriptions if s.mode in ("immediate", "digest")]

    def enqueue(session: Session, event: EventRow) -> None:
        if not watching or not event.alert:
            return
        insert_if_absent(session, rows_for_event(watching, EventView.from_row(event), event.updated_at))

    return enqueue


def _open_incident(session: Session, subscription: str, source_id: str) -> SourceIncidentRow | None:
    return session.scalars(
        select(SourceIncidentRow).where(
            SourceIncidentRow.subscription == subscription,
            SourceIncidentRow.source_id == source_id,
            SourceIncidentRow.resolved_at.is_(None),
        ).order_by(SourceIncidentRow.id.desc()).limit(1)
    ).first()


def _health_payload(source: SourceRow, incident: SourceIncidentRow, state: str, now: datetime) -> dict:
    return {"source_id": source.id, "source_name": source.name, "regulator": source.regulator, "state": state,
            "reason": incident.reason, "since": incident.started_at.isoformat(), "at": now.isoformat()}


def _should_open(subscription: Subscription, source: SourceRow, now: datetime) -> bool:
    """Failing for the configured time, or changed shape (a silent breakage nobody should wait on)."""
    if source.failing_since is None or not source.consecutive_failures:
        return False
    if (source.last_error or "").startswith(SHAPE_CHANGED):
        return True
    return (now - source.failing_since).total_seconds() >= subscription.health.after


def watch_source(session: Session, subscriptions: Sequence[Subscription], source: SourceRow, now: datetime) -> None:
    """Open an incident (alert once) when a watched source crosses its threshold; close it (alert again)
    when the source succeeds. Polls in between change nothing, so one incident is one pair of alerts."""
    for subscription in subscriptions:
        if not subscription.health.covers(source.id, source.regulator):
            continue
        incident = _open_incident(session, subscription.name, source.id)
        if incident is not None and not source.consecutive_failures:
            incident.resolved_at = now
            state = "recovered"
        elif incident is None and _should_open(subscription, source, now):
            incident = SourceIncidentRow(subscription=subscription.name, source_id=source.id,
                                         started_at=source.failing_since, opened_at=now,
                                         reason=source.last_error or "unknown error")
            session.add(incident)
            session.flush()
            state = "failing"
        else:
            continue
        insert_if_absent(session, [delivery_row(
            subscription, health_key(subscription.name, incident.id, state), "health", now,
            incident_id=incident.id, payload=_health_payload(source, incident, state, now))])


def make_health_watch(subscriptions: Subscriptions) -> HealthWatch:
    """The `health_watch` callable the poller runs after each source's health is updated."""
    watching = subscriptions.of_mode("health")

    def watch(session: Session, source: SourceRow, now: datetime) -> None:
        if watching:
            watch_source(session, watching, source, now)

    return watch
