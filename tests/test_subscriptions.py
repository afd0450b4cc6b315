"""Subscriptions config: validation with file/line/entry, event filters, and cron schedules across DST."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from notifykit import event_row, load_yaml

from monitor.channels.base import EventView
from monitor.config import ConfigError
from monitor.subscriptions import EventFilter, Schedule, load_optional

GOOD = """
email:
  smtp: {host: localhost, port: 1025, security: none}
  sender: "ATMP Monitor <atmp@example.org>"
subscriptions:
  - name: daily-digest
    channel: email
    to: [ra-team@example.org]
    mode: digest
    schedule: {cron: "0 8 * * *", timezone: Europe/Berlin}
    filter: {regulators: [FDA, EMA], modalities: [gene_therapy]}
  - name: slack-now
    channel: slack
    url_env: ATMP_SLACK_WEBHOOK_URL
  - name: ops
    channel: webhook
    url_env: OPS_HOOK_URL
    secret_env: OPS_HOOK_SECRET
    mode: health
    health: {after: 2h, sources: [fda-press]}
"""


def test_a_valid_file_loads_every_kind_of_subscription(tmp_path):
    subscriptions = load_yaml(tmp_path, GOOD)

    digest, slack, ops = subscriptions
    assert (digest.mode, digest.schedule.timezone, digest.target.to) == ("digest", "Europe/Berlin",
                                                                           ("ra-team@example.org",))
    assert digest.filter.regulators == ("fda", "ema")
    assert (slack.mode, slack.target.url_env) == ("immediate", "ATMP_SLACK_WEBHOOK_URL")
    assert (ops.health.after, ops.health.sources, ops.target.secret_env) == (7200, ("fda-press",), "OPS_HOOK_SECRET")
    assert subscriptions.email.smtp.port == 1025


def test_no_file_means_no_subscriptions(tmp_path):
    assert len(load_optional(tmp_path / "subscriptions.yaml")) == 0


BAD_ENTRIES = [
    ("  - {name: x, channel: pigeon}", "channel: must be one of email, slack, webhook"),
    ("  - {name: x, channel: slack, url_env: X, colour: red}", "colour: unknown key"),
    ("  - {name: x, channel: slack, url: 'https://hooks.slack.com/services/T/B/secret'}", "url: unknown key"),
    ("  - {name: x, channel: slack, url_env: 'lower-case'}", "url_env: String should match pattern"),
    ("  - {name: x, channel: webhook, url_env: U}", "secret_env: Field required"),
    ("  - {name: x, channel: slack, url_env: U, mode: digest}", "a digest needs a `schedule:`"),
    ("  - {name: x, channel: slack, url_env: U, mode: digest, schedule: {cron: '0 25 * * *'}}",
     "not a cron expression"),
    ("  - {name: x, channel: slack, url_env: U, mode: digest, schedule: {cron: '0 8 * * * 30'}}",
     "not a cron expression"),  # croniter would take a sixth field as seconds
    ("  - {name: x, channel: slack, url_env: U, mode: digest, schedule: {cron: '0 8 30 2 *'}}", "never fires"),
    ("  - {name: x, channel: slack, url_env: U, mode: digest, schedule: {cron: '0 8 * * *', timezone: Mars/Base}}",
     "unknown IANA time zone"),
    ("  - {name: x, channel: slack, url_env: U, filter: {modalities: [gene_therapie]}}", "unknown modality"),
    ("  - {name: x, channel: slack, url_env: U, filter: {event_types: [approval]}}", "unknown event type"),
    ("  - {name: x, channel: slack, url_env: U, filter: {min_confidence: 2}}", "less than or equal to 1"),
    ("  - {name: x, channel: slack, url_env: U, mode: health, filter: {regulators: [FDA]}}", "watches sources"),
    ("  - {name: x, channel: email, to: [not-an-address]}", "not an email address"),
    ("  - {name: X Y, channel: slack, url_env: U}", "name: String should match pattern"),
]


@pytest.mark.parametrize(("entry", "message"), BAD_ENTRIES)
def test_a_bad_entry_is_named_with_its_file_and_line(tmp_path, entry, message):
    text = ("email: {sender: a@example.org}\nsubscriptions:\n"
            "  - {name: fine, channel: slack, url_env: FINE_URL}\n" + entry + "\n")
    with pytest.raises(ConfigError) as caught:
        load_yaml(tmp_path, text)

    assert caught.value.line == 4
    assert caught.value.path == Path(tmp_path / "subscriptions.yaml")
    assert message in str(caught.value)
    assert "subscription" in (caught.value.entry or "")


def test_duplicate_names_and_email_without_settings_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="duplicate name"):
        load_yaml(tmp_path, "subscriptions:\n  - {name: a, channel: slack, url_env: U}\n"
                            "  - {name: a, channel: slack, url_env: U}\n")
    with pytest.raises(ConfigError, match="top-level `email:` block"):
        load_yaml(tmp_path, "subscriptions:\n  - {name: a, channel: email, to: [x@example.org]}\n")
    with pytest.raises(ConfigError, match="unknown top-level key"):
        load_yaml(tmp_path, "subscriptons: []\n")


def _view(**fields) -> EventView:
    row = event_row("casgevy", id=1, **fields)
    return EventView.from_row(row)


FILTER_CASES = [
    ({}, {}, True),
    ({}, {"is_atmp": False}, False),
    ({"atmp_only": False}, {"is_atmp": False}, True),
    ({"regulators": ["fda"]}, {"regulator": "FDA"}, True),
    ({"regulators": ["EMA"]}, {"regulator": "FDA"}, False),
    ({"modalities": ["cell_therapy", "gene_therapy"]}, {}, True),
    ({"modalities": ["cell_therapy"]}, {}, False),
    ({"eu_categories": ["TEP"]}, {}, False),
    ({"eu_categories": ["GTMP"]}, {}, True),
    ({"event_types": ["safety"]}, {}, False),
    ({"event_types": ["new_product", "safety"]}, {}, True),
    ({"products": ["Casgevy"]}, {}, True),
    ({"products": ["Zolgensma"]}, {}, False),
    ({"keywords": ["SICKLE cell"]}, {"summary": "For sickle cell disease."}, True),
    ({"keywords": ["thalassemia"]}, {"summary": "For sickle cell disease."}, False),
    ({"min_confidence": 0.95}, {}, False),
    ({"min_confidence": 0.9}, {}, True),
    ({"regulators": ["FDA"], "event_types": ["safety"]}, {}, False),
]


@pytest.mark.parametrize(("criteria", "event", "expected"), FILTER_CASES)
def test_filters(criteria, event, expected):
    assert EventFilter.model_validate(criteria).matches(_view(**event)) is expected


def _utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


SCHEDULE_CASES = [
    # daily 08:00 Berlin across the spring change (last Sunday of March 2026 is the 29th): 07:00 UTC, then 06:00
    ("0 8 * * *", "Europe/Berlin", _utc(2026, 3, 28, 7, 0), _utc(2026, 3, 29, 6, 0)),
    ("0 8 * * *", "Europe/Berlin", _utc(2026, 3, 27, 7, 30), _utc(2026, 3, 28, 7, 0)),
    # ... and the autumn change (25 October 2026): 06:00 UTC, then 07:00
    ("0 8 * * *", "Europe/Berlin", _utc(2026, 10, 24, 6, 0), _utc(2026, 10, 25, 7, 0)),
    # 02:30 does not exist on the spring night: it runs once, when the clock reads 03:30 CEST
    ("30 2 * * *", "Europe/Berlin", _utc(2026, 3, 28, 1, 30), _utc(2026, 3, 29, 1, 30)),
    # 02:30 happens twice on the autumn night: it runs at the first one only
    ("30 2 * * *", "Europe/Berlin", _utc(2026, 10, 24, 0, 30), _utc(2026, 10, 25, 0, 30)),
    ("30 2 * * *", "Europe/Berlin", _utc(2026, 10, 25, 0, 30), _utc(2026, 10, 26, 1, 30)),
    # weekly on Monday 07:00 New York, across the US spring change (8 March 2026)
    ("0 7 * * MON", "America/New_York", _utc(2026, 3, 3, 12, 0), _utc(2026, 3, 9, 11, 0)),
    ("0 7 * * MON", "America/New_York", _utc(2026, 2, 24, 12, 0), _utc(2026, 3, 2, 12, 0)),
    ("0 9 * * 1-5", "Asia/Tokyo", _utc(2026, 3, 6, 0, 0), _utc(2026, 3, 9, 0, 0)),
]


@pytest.mark.parametrize(("cron", "zone", "after", "expected"), SCHEDULE_CASES)
def test_next_run_is_local_wall_time_through_dst(cron, zone, after, expected):
    assert Schedule(cron=cron, timezone=zone).next_after(after) == expected


def test_the_latest_slot_is_the_run_at_or_before_now():
    daily = Schedule(cron="0 8 * * *", timezone="Europe/Berlin")

    assert daily.latest_at(_utc(2026, 3, 29, 6, 0)) == _utc(2026, 3, 29, 6, 0)
    assert daily.latest_at(_utc(2026, 3, 29, 5, 59)) == _utc(2026, 3, 28, 7, 0)
    autumn = Schedule(cron="30 2 * * *", timezone="Europe/Berlin")
    # at 02:45 the second time round (01:45 UTC), the slot already served is the first 02:30
    assert autumn.latest_at(_utc(2026, 10, 25, 1, 45)) == _utc(2026, 10, 25, 0, 30)


def test_a_health_subscription_covers_the_sources_it_names(tmp_path):
    ops = load_yaml(tmp_path, GOOD).named("ops")
    load_yaml(tmp_path, GOOD).check_sources({"fda-press", "ema-news"})
    with pytest.raises(ConfigError, match=r"\(subscription 'ops'\): health: sources: no source with id 'fda-press'"):
        load_yaml(tmp_path, GOOD).check_sources({"fda-news"})

    assert ops.health.covers("fda-press", "FDA")
    assert not ops.health.covers("ema-news", "EMA")
    with pytest.raises(ConfigError, match="no subscription named 'nope'"):
        load_yaml(tmp_path, GOOD).named("nope")
