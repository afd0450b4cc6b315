"""The outbox: rows written with the event, once per (subscription, event), whatever happens to the event after;
and source-health incidents opened and closed once each. On both SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta
from email.utils import format_datetime
from xml.sax.saxutils import escape

import pytest
from notifykit import T0, load_yaml, store_event, update_event
from sqlalchemy import func, select

from monitor import health
from monitor.config import SourceConfig
from monitor.outbox import make_health_watch, make_outbox
from monitor.poll import Poller
from monitor.store import DeliveryRow, EventRow, SourceIncidentRow, SourceRow
from monitor.subscriptions import Subscriptions, parse_subscription

SUBSCRIPTIONS = """
subscriptions:
  - name: fda-gene-now
    channel: webhook
    url_env: HOOK_URL
    secret_env: HOOK_SECRET
    filter: {regulators: [FDA], modalities: [gene_therapy]}
  - name: approvals-daily
    channel: slack
    url_env: SLACK_URL
    mode: digest
    schedule: {cron: "0 8 * * *", timezone: Europe/Berlin}
    filter: {event_types: [new_product]}
  - name: cell-only
    channel: slack
    url_env: SLACK_URL
    filter: {modalities: [cell_therapy]}
"""


@pytest.fixture
def subscriptions(tmp_path):
    return load_yaml(tmp_path, SUBSCRIPTIONS)


def deliveries(store) -> list[tuple[str, str, int | None, str]]:
    with store.transaction() as session:
        rows = session.scalars(select(DeliveryRow).order_by(DeliveryRow.id))
        return [(r.subscription, r.kind, r.event_id, r.status) for r in rows]


def test_a_stored_event_gets_one_row_per_matching_subscription(store, subscriptions):
    event_id = store_event(store, subscriptions, "zolgensma")

    assert deliveries(store) == [
        ("fda-gene-now", "event", event_id, "pending"),
        ("approvals-daily", "digest_item", event_id, "queued"),
    ]


def test_history_and_non_matching_events_get_nothing(store, subscriptions):
    store_event(store, subscriptions, "old-news", alert=False)
    store_event(store, subscriptions, "antibody", is_atmp=False, modality=None, event_type=None)

    assert deliveries(store) == []


def test_re_polling_and_reclassifying_add_nothing(store, subscriptions):
    event_id = store_event(store, subscriptions, "zolgensma")
    before = deliveries(store)

    with store.transaction() as session:
        make_outbox(subscriptions)(session, session.get(EventRow, event_id))
    update_event(store, subscriptions, event_id, T0 + timedelta(hours=1), title="FDA approves ZOLGENSMA (edited)")
    update_event(store, subscriptions, event_id, T0 + timedelta(hours=2), confidence=0.99, reasons=["new rule"])

    assert deliveries(store) == before


def test_an_event_that_becomes_relevant_after_an_update_is_queued_then_once(store, subscriptions):
    event_id = store_event(store, subscriptions, "rethymic", modality=None, is_atmp=False, event_type=None)
    assert deliveries(store) == []

    update_event(store, subscriptions, event_id, T0 + timedelta(hours=1), is_atmp=True, modality="cell_therapy",
                 event_type="new_product")
    update_event(store, subscriptions, event_id, T0 + timedelta(hours=2), summary="edited again")

    assert deliveries(store) == [
        ("approvals-daily", "digest_item", event_id, "queued"),
        ("cell-only", "event", event_id, "pending"),
    ]


def test_an_event_matching_thousands_of_subscriptions_gets_a_row_for_each_once(store, tmp_path):
    many = Subscriptions(items=tuple(
        parse_subscription({"name": f"team-{n}", "channel": "slack", "url_env": "SLACK_URL"}, tmp_path, None)
        for n in range(2600)
    ))
    event_id = store_event(store, many, "casgevy")

    with store.transaction() as session:
        make_outbox(many)(session, session.get(EventRow, event_id))
        count = session.scalar(select(func.count()).select_from(DeliveryRow))
    assert count == 2600


def _rss(*items: tuple[str, str]) -> bytes:
    body = "".join(
        f"<item><guid>{guid}</guid><title>{escape(title)}</title><link>https://www.fda.gov/{guid}</link>"
        f"<description>text</description><pubDate>{format_datetime(T0)}</pubDate></item>"
        for guid, title in items
    )
    return (f'<?xml version="1.0"?><rss version="2.0"><channel><title>FDA</title><link>https://www.fda.gov/</link>'
            f"<description>t</description>{body}</channel></rss>").encode()


def test_the_real_poller_writes_the_outbox_once_across_re_polls_and_edits(store, feed_server, tmp_path):
    everything = load_yaml(tmp_path, """
        subscriptions:
          - {name: all, channel: slack, url_env: SLACK_URL, filter: {atmp_only: false}}
        """)
    feed_server.set("/fda.xml", _rss(("a", "FDA approves product A"), ("b", "FDA news B")))
    source = SourceConfig(id="fda-press", regulator="FDA", name="FDA", url=feed_server.url("/fda.xml"),
                          alert_backlog=True)
    poller = Poller(store, [source], [], outbox=make_outbox(everything))

    poller.poll(now=T0)
    poller.poll(now=T0 + timedelta(minutes=20))
    feed_server.set("/fda.xml", _rss(("a", "FDA approves product A for a second use"), ("b", "FDA news B")))
    (edited,) = poller.poll(now=T0 + timedelta(minutes=40))

    assert edited.updated == 1
    assert [(s, k) for s, k, _, _ in deliveries(store)] == [("all", "event"), ("all", "event")]


HEALTH = """
subscriptions:
  - name: ops
    channel: webhook
    url_env: OPS_URL
    secret_env: OPS_SECRET
    mode: health
    health: {after: 1h}
  - name: ema-ops
    channel: slack
    url_env: SLACK_URL
    mode: health
    health: {after: 1h, regulators: [EMA]}
"""


def _poll_result(store, watch, now, error: str | None) -> None:
    """What the poller does per source: update its health, then call the watch in the same transaction."""
    with store.transaction() as session:
        row = session.get(SourceRow, "fda-press")
        if row is None:
            row = SourceRow(id="fda-press", regulator="FDA", name="FDA press", url="https://www.fda.gov/rss",
                            consecutive_failures=0)
            session.add(row)
            session.flush()
        if error is None:
            health.record_success(row, now, 900)
        else:
            health.record_failure(row, now, 900, error, retry_after=None, charge=True)
        watch(session, row, now)


def health_rows(store) -> list[tuple[str, str, dict]]:
    with store.transaction() as session:
        rows = session.scalars(select(DeliveryRow).where(DeliveryRow.kind == "health").order_by(DeliveryRow.id))
        return [(r.subscription, r.payload["state"], r.payload) for r in rows]


def test_a_failing_source_alerts_once_after_the_threshold_and_once_on_recovery(store, tmp_path):
    watch = make_health_watch(load_yaml(tmp_path, HEALTH))
    _poll_result(store, watch, T0, None)
    for minutes in (0, 20, 40):
        _poll_result(store, watch, T0 + timedelta(minutes=minutes), "HTTP 503")
    assert health_rows(store) == []

    for minutes in (60, 80, 100):
        _poll_result(store, watch, T0 + timedelta(minutes=minutes), "HTTP 503")
    _poll_result(store, watch, T0 + timedelta(minutes=120), None)
    _poll_result(store, watch, T0 + timedelta(minutes=140), None)

    rows = health_rows(store)
    assert [(name, state) for name, state, _ in rows] == [("ops", "failing"), ("ops", "recovered")]
    assert rows[0][2]["reason"] == "HTTP 503"
    assert rows[0][2]["since"] == T0.isoformat()
    with store.transaction() as session:
        (incident,) = session.scalars(select(SourceIncidentRow))
        assert incident.resolved_at == T0 + timedelta(minutes=120)


def test_a_changed_shape_opens_an_incident_at_once_and_a_new_failure_is_a_new_incident(store, tmp_path):
    watch = make_health_watch(load_yaml(tmp_path, HEALTH))
    _poll_result(store, watch, T0, "feed changed shape: 0 entries where the last good fetch had 25")
    _poll_result(store, watch, T0 + timedelta(minutes=15), None)
    _poll_result(store, watch, T0 + timedelta(hours=5), "feed changed shape: 0 entries where the last had 25")

    assert [state for _, state, _ in health_rows(store)] == ["failing", "recovered", "failing"]


def test_the_real_poller_alerts_a_changed_shape_at_once_and_its_recovery(store, feed_server, tmp_path):
    """Ties the poller's wording of a shape change to the outbox's test for it: a feed emptied overnight alerts
    on the first poll that sees it, not an hour later."""
    three = _rss(("a", "FDA news A"), ("b", "FDA news B"), ("c", "FDA news C"))
    feed_server.set("/fda.xml", three)
    source = SourceConfig(id="fda-press", regulator="FDA", name="FDA", url=feed_server.url("/fda.xml"))
    poller = Poller(store, [source], [], health_watch=make_health_watch(load_yaml(tmp_path, HEALTH)))

    poller.poll(now=T0)
    feed_server.set("/fda.xml", _rss())
    poller.poll(now=T0 + timedelta(minutes=15))
    assert [(name, state) for name, state, _ in health_rows(store)] == [("ops", "failing")]

    feed_server.set("/fda.xml", three)
    poller.poll(now=T0 + timedelta(hours=2))
    assert [(name, state) for name, state, _ in health_rows(store)] == [("ops", "failing"), ("ops", "recovered")]
