"""Digest content: grouping, the subject line, one-line summaries, safe links, and the HTML/text templates."""

from __future__ import annotations

from datetime import timedelta

import pytest
from notifykit import T0, event_row, load_yaml

from monitor.channels.base import EventView, HealthView, Notification
from monitor.digest import Renderer, group_events, one_line, safe_link, subject_line

SUBSCRIPTIONS = """
email: {sender: "ATMP <atmp@example.org>"}
subscriptions:
  - name: weekly
    channel: email
    to: [ra@example.org]
    mode: digest
    schedule: {cron: "0 8 * * MON", timezone: Europe/Berlin}
    send_empty: true
    filter: {atmp_only: false}
  - {name: ops, channel: email, to: [ops@example.org], mode: health}
"""


@pytest.fixture
def subscriptions(tmp_path):
    return load_yaml(tmp_path, SUBSCRIPTIONS)


def view(event_id: int, **fields) -> EventView:
    return EventView.from_row(event_row(f"e{event_id}", id=event_id, **fields))


SUBJECTS = [
    ([{}], "1 new ATMP approval — FDA"),
    ([{}, {}, {}, {"event_type": "new_indication", "regulator": "EMA"}],
     "3 new ATMP approvals, 1 label expansion — FDA, EMA"),
    ([{"regulator": "EMA", "event_type": "safety"}, {"regulator": "EMA", "event_type": "safety"},
      {"regulator": "MHRA", "event_type": "recommendation"}, {"event_type": "guidance"}],
     "1 recommendation, 2 safety notices, 1 guidance update — EMA, FDA, MHRA"),
    ([{"is_atmp": False, "event_type": None}, {"event_type": None}], "1 other ATMP update, 1 other announcement — FDA"),
    ([], "No new ATMP events"),
]


@pytest.mark.parametrize(("events", "subject"), SUBJECTS)
def test_the_subject_says_what_is_inside(events, subject):
    assert subject_line([view(i, **fields) for i, fields in enumerate(events)]) == subject


def test_groups_put_new_products_first_and_newest_first_within(subscriptions):
    events = [view(1, event_type="safety"), view(2, published=T0 - timedelta(days=2)),
              view(3, event_type="new_indication"), view(4, published=T0), view(5, is_atmp=False)]

    groups = group_events(events)

    assert [g.heading for g in groups] == ["New ATMP approvals", "Label expansions", "Safety", "Other announcements"]
    assert [e.id for e in groups[0].events] == [4, 2]
    assert groups[0].cards[0].products == "E4 (new)"


def test_one_line_summaries_and_links():
    assert one_line("  two\n\nlines\t here ") == "two lines here"
    assert one_line("word " * 100, 30) == "word word word word word word…"
    assert safe_link("https://www.ema.europa.eu/en/news") == "https://www.ema.europa.eu/en/news"
    assert safe_link("javascript:alert(1)") is None
    assert safe_link("//no-scheme.example") is None


def test_the_html_is_an_email_layout_with_escaped_feed_text(subscriptions):
    hostile = view(1, title='"><img src=x onerror=alert(1)> & co', summary="<style>body{}</style>")
    notification = Notification(key="weekly:digest:1", kind="digest", subscription=subscriptions.named("weekly"),
                                created_at=T0, events=(hostile,))

    rendered = Renderer().email(notification, subscriptions.email)

    html = rendered.html
    assert html.count("<table") >= 3 and "role=\"presentation\"" in html
    assert "<script" not in html and "<style" not in html and "<img" not in html
    assert "&#34;&gt;&lt;img src=x onerror=alert(1)&gt; &amp; co" in html
    assert "02 Mar 2026, 10:00 CET" in html  # the subscription's own time zone
    assert 'href="mailto:atmp@example.org?subject=unsubscribe%20weekly"' in html
    assert '"><img src=x onerror=alert(1)> & co' in rendered.text


def test_an_empty_digest_can_be_rendered_when_asked_for(subscriptions):
    notification = Notification(key="k", kind="digest", subscription=subscriptions.named("weekly"), created_at=T0)

    rendered = Renderer().email(notification, subscriptions.email)

    assert rendered.subject == "No new ATMP events"
    assert "0 events" in rendered.text


@pytest.mark.parametrize(("state", "subject"), [
    ("failing", "Source ema-news (EMA) is failing: HTTP 503 <html>"),
    ("recovered", "Source ema-news (EMA) has recovered"),
])
def test_a_health_alert_renders_both_states(subscriptions, state, subject):
    incident = HealthView(source_id="ema-news", source_name="EMA news", regulator="EMA", state=state,
                          reason="HTTP 503 <html>", since=T0, at=T0 + timedelta(hours=2))
    notification = Notification(key="k", kind="health", subscription=subscriptions.named("ops"), created_at=T0,
                                health=incident)

    rendered = Renderer().email(notification, subscriptions.email)

    assert rendered.subject == subject
    assert "HTTP 503 &lt;html&gt;" in rendered.html
    assert "EMA news (ema-news, EMA)" in rendered.text
