"""Webhooks: the versioned payload, signed headers a receiver can verify, and how answers are classified."""

from __future__ import annotations

import json
import socket
from datetime import timedelta
from email.utils import format_datetime

import pytest
from notifykit import T0, load_yaml, runtime_for, store_event
from sqlalchemy import select

from monitor import health
from monitor.channels import TransportError, webhook
from monitor.channels.base import SendContext
from monitor.channels.http import retry_after_seconds
from monitor.deliver import deliver_due, notification_for, renderer_for
from monitor.outbox import make_health_watch
from monitor.signing import verify_signature
from monitor.store import DeliveryRow, SourceRow

SECRET = "whsec-test-0123"
CONFIG = """
subscriptions:
  - name: partner
    channel: webhook
    url_env: TEST_PARTNER_URL
    secret_env: TEST_PARTNER_SECRET
  - name: ops
    channel: webhook
    url_env: TEST_PARTNER_URL
    secret_env: TEST_PARTNER_SECRET
    mode: health
    health: {after: 30m}
"""


@pytest.fixture
def runtime(sqlite_store, tmp_path, feed_server, monkeypatch):
    monkeypatch.setenv("TEST_PARTNER_URL", feed_server.url("/atmp"))
    monkeypatch.setenv("TEST_PARTNER_SECRET", SECRET)
    return runtime_for(sqlite_store, load_yaml(tmp_path, CONFIG), tmp_path)


def last_error(runtime) -> str | None:
    with runtime.store.transaction() as session:
        return session.scalar(select(DeliveryRow.last_error).order_by(DeliveryRow.id.desc()).limit(1))


def test_an_event_is_posted_as_a_signed_versioned_payload(runtime, feed_server):
    event_id = store_event(runtime.store, runtime.subscriptions, "casgevy", title="FDA approves Casgevy & more",
                           products=[{"name": "CASGEVY", "known": False}])

    assert deliver_due(runtime, now=T0).sent == 1

    (post,) = feed_server.posts_to("/atmp")
    assert post.headers["Content-Type"] == "application/json; charset=utf-8"
    assert verify_signature(SECRET, post.headers["X-ATMP-Timestamp"], post.body, post.headers["X-ATMP-Signature"])
    assert not verify_signature(SECRET, post.headers["X-ATMP-Timestamp"], post.body + b" ",
                                post.headers["X-ATMP-Signature"])
    assert not verify_signature("other-secret", post.headers["X-ATMP-Timestamp"], post.body,
                                post.headers["X-ATMP-Signature"])
    body = json.loads(post.body)
    assert post.headers["X-ATMP-Delivery"] == body["delivery"] == f"partner:event:{event_id}"
    assert (body["version"], body["type"], body["subscription"], body["incident"]) == (1, "event", "partner", None)
    assert body["title"] == "New ATMP approval: CASGEVY — FDA"
    (event,) = body["events"]
    assert event == {
        "id": event_id, "regulator": "FDA", "title": "FDA approves Casgevy & more",
        "link": "https://www.fda.gov/news/casgevy", "summary": "A first approval.", "published": T0.isoformat(),
        "is_atmp": True, "event_type": "new_product", "modality": "gene_therapy", "eu_category": "GTMP",
        "submodality": "aav", "products": [{"name": "CASGEVY", "known": False}], "confidence": 0.9,
        "reasons": ["INN stem -parvovec → AAV vector"], "revision": 1,
    }


def test_a_source_health_incident_is_posted_when_it_opens_and_when_it_recovers(runtime, feed_server):
    watch = make_health_watch(runtime.subscriptions)
    for minutes, error in ((0, "HTTP 503"), (15, "HTTP 503"), (30, "HTTP 503"), (45, "HTTP 503"), (60, None)):
        now = T0 + timedelta(minutes=minutes)
        with runtime.store.transaction() as session:
            row = session.get(SourceRow, "ema-news") or SourceRow(
                id="ema-news", regulator="EMA", name="EMA news", url="https://www.ema.europa.eu/rss",
                consecutive_failures=0)
            session.add(row)
            if error:
                health.record_failure(row, now, 900, error, retry_after=None, charge=True)
            else:
                health.record_success(row, now, 900)
            session.flush()
            watch(session, row, now)
        deliver_due(runtime, now=now)

    incidents = [json.loads(p.body)["incident"] for p in feed_server.posts_to("/atmp")]
    assert [(i["state"], i["source_id"], i["reason"]) for i in incidents] == [
        ("failing", "ema-news", "HTTP 503"), ("recovered", "ema-news", "HTTP 503")]
    assert incidents[0]["since"] == T0.isoformat()


@pytest.mark.parametrize(("answer", "status", "reason"), [
    ((400, {}, b"bad"), "failed", "HTTP 400: bad"),
    ((410, {}, b""), "failed", "HTTP 410"),
    ((301, {"Location": "https://elsewhere.example/"}), "failed", "HTTP 301 redirect (not followed): update the URL"),
    ((408, {}, b""), "retrying", "HTTP 408"),
    ((503, {"Retry-After": "5"}, b"maintenance"), "retrying", "HTTP 503: maintenance"),
])
def test_answers_are_classified_permanent_or_transient(runtime, feed_server, answer, status, reason):
    feed_server.set_post_responses("/atmp", [answer])
    store_event(runtime.store, runtime.subscriptions, "casgevy")

    report = deliver_due(runtime, now=T0)

    assert (report.failed, report.retrying) == ((1, 0) if status == "failed" else (0, 1))
    assert last_error(runtime) == reason


def test_a_503_with_retry_after_is_not_retried_before_the_receiver_asked(runtime, feed_server):
    feed_server.set_post_responses("/atmp", [(503, {"Retry-After": "3600"}, b"maintenance"), (200, {})])
    store_event(runtime.store, runtime.subscriptions, "casgevy")

    assert deliver_due(runtime, now=T0).retrying == 1
    with runtime.store.transaction() as session:
        retry_at = session.scalar(select(DeliveryRow.next_attempt_at))
    assert retry_at >= T0 + timedelta(hours=1)
    assert deliver_due(runtime, now=T0 + timedelta(minutes=59)).sent == 0
    assert deliver_due(runtime, now=retry_at).sent == 1
    assert len(feed_server.posts_to("/atmp")) == 2


def test_a_closed_port_is_a_transient_connection_error(runtime, monkeypatch):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("TEST_PARTNER_URL", f"http://127.0.0.1:{port}/secret-path")
    store_event(runtime.store, runtime.subscriptions, "casgevy")

    assert deliver_due(runtime, now=T0).retrying == 1
    assert last_error(runtime) == "connection failed (ConnectError)"


def test_a_receiver_that_never_answers_times_out(runtime, monkeypatch):
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        monkeypatch.setenv("TEST_PARTNER_URL", f"http://127.0.0.1:{silent.getsockname()[1]}/hook")
        store_event(runtime.store, runtime.subscriptions, "casgevy")
        notification = _notification(runtime)
        context = SendContext(config=runtime.subscriptions, renderer=renderer_for(None),
                              environ={"TEST_PARTNER_URL": f"http://127.0.0.1:{silent.getsockname()[1]}/hook",
                                       "TEST_PARTNER_SECRET": SECRET}, now=T0, timeout=0.3)

        (outcome,) = webhook.send([notification], context)

    assert isinstance(outcome, TransportError)
    assert (outcome.permanent, outcome.message) == (False, "timed out (ReadTimeout)")


def _notification(runtime):
    with runtime.store.transaction() as session:
        return notification_for(session, runtime.subscriptions, session.scalars(select(DeliveryRow)).first())


def test_retry_after_is_read_in_both_forms():
    assert retry_after_seconds("120") == 120.0
    assert retry_after_seconds(format_datetime(T0 + timedelta(seconds=90)), now=T0) == 90.0
    assert retry_after_seconds("soon") is None
    assert retry_after_seconds("99999999") == 24 * 3600.0
