"""Slack: Block Kit within Slack's limits, mrkdwn escaping of feed text, and posts to a real local receiver."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from notifykit import T0, event_row, load_yaml, runtime_for, store_event
from sqlalchemy import select

from monitor.channels import slack
from monitor.channels.base import EventView, Notification
from monitor.deliver import deliver_due, send_digest
from monitor.store import DeliveryRow

HOSTILE = "<!channel> Win <https://evil.example|a prize> & <script>x</script> @here"
CONFIG = """
subscriptions:
  - name: team-now
    channel: slack
    url_env: TEST_SLACK_URL
  - name: team-daily
    channel: slack
    url_env: TEST_SLACK_DIGEST_URL
    mode: digest
    schedule: {cron: "0 8 * * *", timezone: Europe/Berlin}
    filter: {regulators: [EMA]}
"""


@pytest.fixture
def subscriptions(tmp_path):
    return load_yaml(tmp_path, CONFIG)


def view(identity: str, event_id: int, **fields) -> EventView:
    return EventView.from_row(event_row(identity, id=event_id, **fields))


def texts(payload: dict) -> list[str]:
    found = []
    for block in payload["blocks"]:
        if "text" in block:
            found.append(block["text"]["text"])
        found.extend(element["text"] for element in block.get("elements", []))
    return found


def test_feed_text_cannot_ping_or_forge_links(subscriptions):
    event = view("x", 1, title=HOSTILE, summary="Tom & Jerry <b>", reasons=["a <tag>"], link="javascript:alert(1)")
    notification = Notification(key="k", kind="event", subscription=subscriptions.named("team-now"),
                                created_at=T0, events=(event,))

    (payload,) = slack.messages(notification)
    mrkdwn = "\n".join(texts(payload)[1:])

    assert "<!channel>" not in mrkdwn and "<https://evil" not in mrkdwn and "<script>" not in mrkdwn
    assert "&lt;!channel&gt; Win &lt;https://evil.example|a prize&gt; &amp; &lt;script&gt;" in mrkdwn
    assert "Tom &amp; Jerry &lt;b&gt;" in mrkdwn
    assert "Why: a &lt;tag&gt;" in mrkdwn
    assert "javascript" not in mrkdwn
    assert payload["blocks"][0]["type"] == "header"


def test_a_link_is_made_only_from_an_http_url():
    assert slack.link("https://www.ema.europa.eu/x?a=1&b=<2>|", "T & C", 100) == \
        "<https://www.ema.europa.eu/x?a=1&amp;b=%3C2%3E%7C|T &amp; C>"
    assert slack.link("data:text/html,hi", "T", 100) == "T"


def test_a_long_digest_is_split_within_the_block_and_text_limits(subscriptions):
    events = tuple(view(f"p{i}", i, regulator="EMA", title="&" * 5000 if i == 0 else f"Product {i}",
                        summary="<" * 4000, event_type="new_product" if i % 2 else "safety") for i in range(60))
    notification = Notification(key="k", kind="digest", subscription=subscriptions.named("team-daily"),
                                created_at=T0, events=events)

    payloads = slack.messages(notification)

    assert len(payloads) == 3
    assert all(len(p["blocks"]) <= slack.MAX_BLOCKS for p in payloads)
    sections = [b["text"]["text"] for p in payloads for b in p["blocks"] if b["type"] == "section"]
    assert max(len(text) for text in sections) <= slack.MAX_SECTION_TEXT
    assert all(len(p["blocks"][0]["text"]["text"]) <= slack.MAX_HEADER_TEXT for p in payloads)
    assert payloads[1]["blocks"][0]["text"]["text"].startswith("ATMP digest (2/3): ")
    first = next(text for text in sections if text.startswith("*<https://www.fda.gov/news/p0|&amp;"))
    assert first.split("|", 1)[1].split(">", 1)[0].replace("&amp;", "") == "…"
    assert sum(text.count("/news/p") for text in sections) == 60


def test_an_alert_is_posted_and_a_500_retried_once(sqlite_store, feed_server, subscriptions, monkeypatch, tmp_path):
    monkeypatch.setenv("TEST_SLACK_URL", feed_server.url("/services/T000/B000/XXXX"))
    feed_server.set_post_responses("/services/T000/B000/XXXX", [(500, {}), (200, {})])
    runtime = runtime_for(sqlite_store, subscriptions, tmp_path)
    store_event(sqlite_store, subscriptions, "casgevy", products=[{"name": "CASGEVY", "known": False}])

    assert deliver_due(runtime, now=T0).retrying == 1
    assert deliver_due(runtime, now=T0 + timedelta(hours=1)).sent == 1
    assert deliver_due(runtime, now=T0 + timedelta(hours=2)).sent == 0

    bodies = [json.loads(p.body) for p in feed_server.posts_to("/services/T000/B000/XXXX")]
    assert len(bodies) == 2 and bodies[0] == bodies[1]
    assert bodies[0]["text"] == "New ATMP approval: CASGEVY — FDA"
    assert "*<https://www.fda.gov/news/casgevy|FDA approves casgevy>*" in texts(bodies[0])[1]


def test_a_429_in_the_middle_of_a_split_digest_resumes_after_the_parts_sent(
        sqlite_store, feed_server, subscriptions, monkeypatch, tmp_path):
    path = "/services/T000/B000/DIGEST"
    monkeypatch.setenv("TEST_SLACK_DIGEST_URL", feed_server.url(path))
    feed_server.set_post_responses(path, [(200, {}), (429, {"Retry-After": "30"}), (200, {})])
    runtime = runtime_for(sqlite_store, subscriptions, tmp_path)
    for i in range(60):
        store_event(sqlite_store, subscriptions, f"p{i}", regulator="EMA")

    assert send_digest(runtime, "team-daily", now=T0).status == "retrying"
    with sqlite_store.transaction() as session:
        digest = session.scalar(select(DeliveryRow).where(DeliveryRow.kind == "digest"))
    assert (digest.parts_sent, digest.next_attempt_at >= T0 + timedelta(seconds=30)) == (1, True)
    deliver_due(runtime, now=T0 + timedelta(seconds=31))

    headers = [json.loads(p.body)["blocks"][0]["text"]["text"].split(":")[0] for p in feed_server.posts_to(path)]
    assert headers == ["ATMP digest (1/3)", "ATMP digest (2/3)", "ATMP digest (2/3)", "ATMP digest (3/3)"]


def test_after_a_429_the_rest_of_the_batch_waits_without_being_tried(
        sqlite_store, feed_server, subscriptions, monkeypatch, tmp_path):
    monkeypatch.setenv("TEST_SLACK_URL", feed_server.url("/busy"))
    feed_server.set_post_responses("/busy", [(429, {"Retry-After": "120"}), (200, {})])
    runtime = runtime_for(sqlite_store, subscriptions, tmp_path)
    for name in ("a", "b", "c"):
        store_event(sqlite_store, subscriptions, name)

    assert deliver_due(runtime, now=T0).retrying == 3
    assert len(feed_server.posts_to("/busy")) == 1
    with sqlite_store.transaction() as session:
        waits = session.scalars(select(DeliveryRow.next_attempt_at).where(DeliveryRow.kind == "event")).all()
    assert min(waits) >= T0 + timedelta(seconds=120)


@pytest.mark.parametrize(("answer", "reason"), [
    ((404, {}, b"no_service"), "HTTP 404: no_service"),                  # the webhook was removed
    ((403, {}, b"invalid_token"), "HTTP 403: invalid_token"),            # its token was revoked
    ((410, {}, b"channel_is_archived"), "HTTP 410: channel_is_archived"),
])
def test_a_webhook_slack_no_longer_knows_fails_for_good_with_slacks_reason(
        sqlite_store, feed_server, subscriptions, monkeypatch, tmp_path, answer, reason):
    monkeypatch.setenv("TEST_SLACK_URL", feed_server.url("/services/T000/B000/GONE"))
    feed_server.set_post_responses("/services/T000/B000/GONE", [answer])
    runtime = runtime_for(sqlite_store, subscriptions, tmp_path)
    store_event(sqlite_store, subscriptions, "casgevy")

    assert deliver_due(runtime, now=T0).failed == 1
    assert deliver_due(runtime, now=T0 + timedelta(days=1)).failed == 0
    with sqlite_store.transaction() as session:
        failed = session.scalars(select(DeliveryRow)).one()
    assert (failed.status, failed.next_attempt_at, failed.last_error) == ("failed", None, reason)
    assert len(feed_server.posts_to("/services/T000/B000/GONE")) == 1


def test_a_missing_webhook_variable_fails_for_good_naming_it(sqlite_store, subscriptions, monkeypatch, tmp_path):
    monkeypatch.delenv("TEST_SLACK_URL", raising=False)
    runtime = runtime_for(sqlite_store, subscriptions, tmp_path)
    store_event(sqlite_store, subscriptions, "casgevy")

    assert deliver_due(runtime, now=T0).failed == 1
    with sqlite_store.transaction() as session:
        error = session.scalar(select(DeliveryRow.last_error))
    assert error == "environment variable TEST_SLACK_URL (Slack webhook URL) is not set"
