"""Delivery: claim by compare-and-set, retries with backoff and Retry-After, permanent failures kept and
retryable, the reaper, and digests sent exactly once. Against a real local HTTP receiver and both stores."""

from __future__ import annotations

import json
import logging
import threading
from datetime import timedelta

import pytest
from notifykit import T0, load_yaml, runtime_for, store_event, update_event
from sqlalchemy import select, update

from monitor import deliver
from monitor.deliver import (
    claim,
    deliver_due,
    deliver_one,
    due_digests,
    list_deliveries,
    pending_counts,
    retry,
    send_digest,
)
from monitor.signing import verify_signature
from monitor.store import DeliveryRow

SECRET = "s3cret-signing-key"
CONFIG = """
subscriptions:
  - name: hook
    channel: webhook
    url_env: TEST_HOOK_URL
    secret_env: TEST_HOOK_SECRET
  - name: morning
    channel: webhook
    url_env: TEST_DIGEST_URL
    secret_env: TEST_HOOK_SECRET
    mode: digest
    schedule: {cron: "0 8 * * *", timezone: Europe/Berlin}
"""


@pytest.fixture
def receiver(feed_server, monkeypatch):
    """The local HTTP server standing in for the subscriber's endpoint; the URL carries a secret token."""
    monkeypatch.setenv("TEST_HOOK_URL", feed_server.url("/hook/token-abc123"))
    monkeypatch.setenv("TEST_DIGEST_URL", feed_server.url("/digest/token-def456"))
    monkeypatch.setenv("TEST_HOOK_SECRET", SECRET)
    return feed_server


@pytest.fixture
def runtime(store, tmp_path):
    return runtime_for(store, load_yaml(tmp_path, CONFIG), tmp_path)


def posts(server, path="/hook/token-abc123") -> list[dict]:
    """Every post received there, after checking its signature as a real receiver would."""
    received = []
    for post in server.posts_to(path):
        assert verify_signature(SECRET, post.headers["X-ATMP-Timestamp"], post.body, post.headers["X-ATMP-Signature"])
        received.append({"delivery": post.headers["X-ATMP-Delivery"], **json.loads(post.body)})
    return received


def row(runtime, delivery_id: int) -> DeliveryRow:
    with runtime.store.transaction() as session:
        return session.get(DeliveryRow, delivery_id)


def only_id(runtime, kind: str = "event") -> int:
    with runtime.store.transaction() as session:
        return session.scalar(select(DeliveryRow.id).where(DeliveryRow.kind == kind))


def test_due_deliveries_are_sent_once_and_a_rerun_sends_nothing(runtime, receiver):
    store_event(runtime.store, runtime.subscriptions, "casgevy")
    store_event(runtime.store, runtime.subscriptions, "lyfgenia")

    first = deliver_due(runtime, now=T0)
    second = deliver_due(runtime, now=T0 + timedelta(minutes=5))

    assert (first.sent, first.failed, first.retrying) == (2, 0, 0)
    assert (second.sent, second.failed, second.retrying) == (0, 0, 0)
    assert [p["events"][0]["title"] for p in posts(receiver)] == ["FDA approves casgevy", "FDA approves lyfgenia"]


def test_a_500_is_retried_after_backoff_and_delivered_once(runtime, receiver):
    receiver.set_post_responses("/hook/token-abc123", [(500, {}), (200, {})])
    store_event(runtime.store, runtime.subscriptions, "casgevy")
    delivery_id = only_id(runtime)

    assert deliver_due(runtime, now=T0).retrying == 1
    retry_at = row(runtime, delivery_id).next_attempt_at
    assert T0 + deliver.BACKOFF_BASE * 0.5 <= retry_at <= T0 + deliver.BACKOFF_BASE
    assert deliver_due(runtime, now=retry_at - timedelta(seconds=1)).sent == 0
    assert deliver_due(runtime, now=retry_at).sent == 1
    assert deliver_due(runtime, now=retry_at + timedelta(hours=1)).sent == 0

    received = posts(receiver)
    assert len(received) == 2
    assert received[0]["delivery"] == received[1]["delivery"] == "hook:event:1"
    done = row(runtime, delivery_id)
    assert (done.status, done.attempts, done.last_error) == ("sent", 2, None)


def test_a_429_waits_as_long_as_retry_after_says(runtime, receiver):
    receiver.set_post_responses("/hook/token-abc123", [(429, {"Retry-After": "600"}), (200, {})])
    store_event(runtime.store, runtime.subscriptions, "casgevy")
    delivery_id = only_id(runtime)

    deliver_due(runtime, now=T0)

    assert row(runtime, delivery_id).next_attempt_at >= T0 + timedelta(seconds=600)
    assert deliver_due(runtime, now=T0 + timedelta(seconds=599)).sent == 0
    assert len(receiver.posts_to("/hook/token-abc123")) == 1
    assert deliver_due(runtime, now=T0 + timedelta(seconds=601)).sent == 1


def test_a_400_fails_for_good_stays_visible_and_can_be_retried(runtime, receiver):
    receiver.set_post_responses("/hook/token-abc123", [(400, {}, b"invalid payload"), (200, {})])
    store_event(runtime.store, runtime.subscriptions, "casgevy")
    delivery_id = only_id(runtime)

    assert deliver_due(runtime, now=T0).failed == 1
    assert deliver_due(runtime, now=T0 + timedelta(days=3)).sent == 0
    failed = row(runtime, delivery_id)
    assert (failed.status, failed.next_attempt_at) == ("failed", None)
    assert failed.last_error == "HTTP 400: invalid payload"
    assert [line.id for line in list_deliveries(runtime, failed_only=True)] == [delivery_id]
    assert pending_counts(runtime)["failed"] == 1

    assert retry(runtime, [delivery_id], now=T0 + timedelta(days=3)) == [delivery_id]
    assert deliver_one(runtime, delivery_id, now=T0 + timedelta(days=3)) == "sent"
    assert list_deliveries(runtime, failed_only=True) == []
    assert len(receiver.posts_to("/hook/token-abc123")) == 2


def test_only_one_of_many_concurrent_claims_wins(runtime):
    store_event(runtime.store, runtime.subscriptions, "casgevy")
    delivery_id = only_id(runtime)
    start = threading.Barrier(6)
    wins: list[bool] = []

    def contend() -> None:
        start.wait()
        wins.append(claim(runtime.store, delivery_id, T0))

    threads = [threading.Thread(target=contend) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(wins) == [False] * 5 + [True]
    assert deliver_one(runtime, delivery_id, now=T0) == "sending"


def test_a_sent_delivery_is_not_sent_again_by_deliver_one(runtime, receiver):
    store_event(runtime.store, runtime.subscriptions, "casgevy")
    delivery_id = only_id(runtime)

    assert deliver_one(runtime, delivery_id, now=T0) == "sent"
    assert deliver_one(runtime, delivery_id, now=T0) == "sent"
    assert len(receiver.posts_to("/hook/token-abc123")) == 1


def test_a_row_stuck_in_sending_is_reaped_and_sent(runtime, receiver):
    store_event(runtime.store, runtime.subscriptions, "casgevy")
    delivery_id = only_id(runtime)
    assert claim(runtime.store, delivery_id, T0)

    assert deliver_due(runtime, now=T0 + timedelta(minutes=5)).sent == 0
    report = deliver_due(runtime, now=T0 + deliver.STUCK_AFTER + timedelta(minutes=1))

    assert (report.reaped, report.sent) == (1, 1)
    assert row(runtime, delivery_id).attempts == 2


def test_transient_failures_give_up_after_the_attempt_budget(runtime, receiver):
    receiver.set_post_responses("/hook/token-abc123", [(503, {})])
    store_event(runtime.store, runtime.subscriptions, "casgevy")
    delivery_id = only_id(runtime)
    now = T0
    for _ in range(deliver.MAX_ATTEMPTS):
        deliver_due(runtime, now=now)
        now += deliver.BACKOFF_CEILING

    failed = row(runtime, delivery_id)
    assert (failed.status, failed.next_attempt_at) == ("failed", None)
    assert failed.last_error.startswith(f"gave up after {deliver.MAX_ATTEMPTS} attempts: HTTP 503")


def test_an_alert_whose_event_stopped_matching_is_dropped_and_queued_again_if_it_matches_again(runtime, receiver):
    event_id = store_event(runtime.store, runtime.subscriptions, "casgevy")
    update_event(runtime.store, runtime.subscriptions, event_id, T0, is_atmp=False)  # reclassified before sending

    assert deliver_due(runtime, now=T0).dropped == 1
    assert posts(receiver) == []
    assert list_deliveries(runtime) == []

    update_event(runtime.store, runtime.subscriptions, event_id, T0 + timedelta(hours=1), is_atmp=True)
    update_event(runtime.store, runtime.subscriptions, event_id, T0 + timedelta(hours=2), summary="edited")
    assert deliver_due(runtime, now=T0 + timedelta(hours=2)).sent == 1
    assert deliver_due(runtime, now=T0 + timedelta(hours=3)).sent == 0
    ((alert,),) = [p["events"] for p in posts(receiver)]
    assert (alert["id"], alert["is_atmp"], alert["summary"]) == (event_id, True, "edited")


def test_a_delivery_for_a_removed_subscription_fails_with_the_reason(runtime, receiver, tmp_path):
    store_event(runtime.store, runtime.subscriptions, "casgevy")
    runtime.subscriptions = load_yaml(tmp_path, "subscriptions: []\n")

    assert deliver_due(runtime, now=T0).failed == 1
    assert row(runtime, only_id(runtime)).last_error == "subscription 'hook' is no longer configured"


def test_a_row_that_cannot_be_built_is_retried_not_left_in_sending(runtime, receiver):
    with runtime.store.transaction() as session:
        session.add(DeliveryRow(idempotency_key="hook:health:9:failing", subscription="hook", channel="webhook",
                                kind="health", payload={"state": "failing"}, status="pending", attempts=0))

    assert deliver_due(runtime, now=T0).retrying == 1
    assert row(runtime, only_id(runtime, "health")).last_error == "internal error: KeyError: 'source_id'"


def test_logs_name_the_subscription_never_the_secret_url(runtime, receiver, caplog):
    receiver.set_post_responses("/hook/token-abc123", [(500, {}, b"down")])
    store_event(runtime.store, runtime.subscriptions, "casgevy")

    with caplog.at_level(logging.INFO, logger="monitor"):
        deliver_due(runtime, now=T0)

    assert "hook" in caplog.text
    assert "token-abc123" not in caplog.text
    assert SECRET not in caplog.text


def digest_posts(receiver) -> list[dict]:
    return posts(receiver, "/digest/token-def456")


def test_a_digest_carries_each_event_once_and_a_second_run_of_the_slot_sends_nothing(runtime, receiver):
    for name in ("casgevy", "lyfgenia", "elevidys"):
        store_event(runtime.store, runtime.subscriptions, name)
    eight_berlin = T0.replace(hour=7)  # 08:00 CET on 2 March

    assert due_digests(runtime, eight_berlin - timedelta(minutes=1)) == []  # first sight: wait for the schedule
    assert due_digests(runtime, eight_berlin) == ["morning"]
    first = send_digest(runtime, "morning", now=eight_berlin)
    again = send_digest(runtime, "morning", now=eight_berlin + timedelta(minutes=1))

    assert (first.status, first.events) == ("sent", 3)
    assert again.status == "not_due"
    assert due_digests(runtime, eight_berlin + timedelta(hours=1)) == []
    (digest,) = digest_posts(receiver)
    assert (digest["type"], len(digest["events"])) == ("digest", 3)

    store_event(runtime.store, runtime.subscriptions, "roctavian")
    assert due_digests(runtime, eight_berlin + timedelta(days=1)) == ["morning"]
    nextday = send_digest(runtime, "morning", now=eight_berlin + timedelta(days=1))
    assert nextday.events == 1
    assert [len(p["events"]) for p in digest_posts(receiver)] == [3, 1]
    assert pending_counts(runtime)["queued"] == 0


def test_an_empty_digest_sends_nothing_but_serves_its_slot(runtime, receiver):
    result = send_digest(runtime, "morning", now=T0)

    assert result.status == "empty"
    assert digest_posts(receiver) == []
    assert due_digests(runtime, T0) == []


def test_a_forced_send_takes_only_what_no_digest_has_carried(runtime, receiver):
    store_event(runtime.store, runtime.subscriptions, "casgevy")

    assert send_digest(runtime, "morning", now=T0, force=True).events == 1
    assert send_digest(runtime, "morning", now=T0, force=True).status == "empty"
    assert len(digest_posts(receiver)) == 1


def test_concurrent_sends_of_one_digest_send_it_once(runtime, receiver):
    for name in ("casgevy", "lyfgenia"):
        store_event(runtime.store, runtime.subscriptions, name)
    start = threading.Barrier(4)
    results = []

    def send(force: bool) -> None:
        start.wait()
        results.append(send_digest(runtime, "morning", now=T0, force=force))

    threads = [threading.Thread(target=send, args=(force,)) for force in (False, False, True, True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(r.events for r in results) == [0, 0, 0, 2]
    (digest,) = digest_posts(receiver)
    assert sorted(e["title"] for e in digest["events"]) == ["FDA approves casgevy", "FDA approves lyfgenia"]


def test_a_failed_digest_is_retried_whole_by_the_sweep(runtime, receiver):
    receiver.set_post_responses("/digest/token-def456", [(502, {}), (200, {})])
    store_event(runtime.store, runtime.subscriptions, "casgevy")

    assert send_digest(runtime, "morning", now=T0).status == "retrying"
    store_event(runtime.store, runtime.subscriptions, "lyfgenia")  # arrives meanwhile: waits for the next digest
    deliver_due(runtime, now=T0 + timedelta(hours=1))

    bodies = digest_posts(receiver)
    assert [len(b["events"]) for b in bodies] == [1, 1]
    assert bodies[0]["delivery"] == bodies[1]["delivery"]
    assert pending_counts(runtime)["queued"] == 1


def test_a_queued_event_reclassified_out_of_the_filter_is_dropped_from_the_digest(runtime, receiver):
    kept = store_event(runtime.store, runtime.subscriptions, "casgevy")
    dropped = store_event(runtime.store, runtime.subscriptions, "not-really")
    update_event(runtime.store, runtime.subscriptions, dropped, T0, is_atmp=False)

    assert send_digest(runtime, "morning", now=T0).events == 1
    (digest,) = digest_posts(receiver)
    assert [e["id"] for e in digest["events"]] == [kept]


def test_pending_counts_report_every_state(runtime, receiver):
    receiver.set_post_responses("/hook/token-abc123", [(500, {})])
    store_event(runtime.store, runtime.subscriptions, "casgevy")
    deliver_due(runtime, now=T0)
    with runtime.store.transaction() as session:
        session.execute(update(DeliveryRow).where(DeliveryRow.kind == "digest_item").values(status="queued"))

    assert pending_counts(runtime) == {"pending": 0, "sending": 0, "retrying": 1, "failed": 0, "sent": 0,
                                       "queued": 1}
