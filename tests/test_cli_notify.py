"""The notification commands as a user runs them: a real config folder, SQLite file, HTTP and SMTP servers."""

from __future__ import annotations

from pathlib import Path

import pytest
from notifykit import SmtpCatcher, load_yaml, store_event
from typer.testing import CliRunner

from monitor.cli import app
from monitor.store import open_store

SUBSCRIPTIONS = """
email:
  smtp: {{host: 127.0.0.1, port: {smtp_port}, security: none}}
  sender: atmp@example.org
subscriptions:
  - name: partner
    channel: webhook
    url_env: TEST_CLI_HOOK_URL
    secret_env: TEST_CLI_HOOK_SECRET
  - name: weekly
    channel: email
    to: [ra@example.org]
    mode: digest
    schedule: {{cron: "0 8 * * MON", timezone: Europe/Berlin}}
"""


@pytest.fixture
def smtp():
    with SmtpCatcher() as catcher:
        yield catcher


@pytest.fixture
def config_dir(tmp_path, feed_server, smtp, monkeypatch) -> Path:
    folder = tmp_path / "config"
    folder.mkdir()
    (folder / "sources.yaml").write_text("sources: []\n")
    (folder / "baseline.yaml").write_text("products: []\n")
    (folder / "subscriptions.yaml").write_text(SUBSCRIPTIONS.format(smtp_port=smtp.port))
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'cli.db'}")
    monkeypatch.setenv("TEST_CLI_HOOK_URL", feed_server.url("/hook"))
    monkeypatch.setenv("TEST_CLI_HOOK_SECRET", "cli-secret")
    monkeypatch.delenv("ATMP_MONITOR_CONFIG", raising=False)
    return folder


@pytest.fixture
def events(config_dir, tmp_path):
    """Two events stored with their outbox rows, as a poll would leave them."""
    subscriptions = load_yaml(config_dir, (config_dir / "subscriptions.yaml").read_text())
    store = open_store(f"sqlite:///{tmp_path / 'cli.db'}")
    ids = [store_event(store, subscriptions, "casgevy", products=[{"name": "CASGEVY", "known": False}]),
           store_event(store, subscriptions, "x", title="Evil \x1b[31mred\x1b[0m & <b>bold</b>")]
    store.dispose()
    return ids


def run(config_dir: Path, *args: str):
    return CliRunner().invoke(app, ["--config", str(config_dir), *args], catch_exceptions=False)


def test_deliver_sends_what_is_due_and_a_rerun_sends_nothing(config_dir, events, feed_server):
    first = run(config_dir, "deliver")
    second = run(config_dir, "deliver")

    assert first.exit_code == 0, first.output
    assert "deliveries: 2 sent, 0 will retry, 0 failed" in first.output
    assert "deliveries: 0 sent, 0 will retry, 0 failed" in second.output
    assert len(feed_server.posts_to("/hook")) == 2


def test_a_failed_delivery_is_listed_with_its_reason_and_retried_by_hand(config_dir, events, feed_server):
    feed_server.set_post_responses("/hook", [(400, {}, b"unknown field"), (400, {}, b"unknown field"), (200, {})])
    run(config_dir, "deliver")

    listed = run(config_dir, "deliveries", "list", "--failed")
    assert listed.output.count("failed") == 2
    assert "error: HTTP 400: unknown field" in listed.output
    assert "Evil \\x1b[31mred\\x1b[0m & <b>bold</b>" in listed.output
    assert "\x1b" not in listed.output

    retried = run(config_dir, "deliveries", "retry", str(events[0]))
    assert retried.exit_code == 0, retried.output
    assert retried.output.strip().endswith(": sent")
    assert run(config_dir, "deliveries", "list", "--failed").output.count("failed") == 1
    assert run(config_dir, "deliveries", "retry").output.strip().endswith(": sent")
    assert run(config_dir, "deliveries", "list", "--failed").output.strip() == "no failed deliveries"


def test_digest_preview_renders_without_sending_and_send_sends_once(config_dir, events, smtp, tmp_path):
    preview = run(config_dir, "digest", "preview", "weekly")
    written = run(config_dir, "digest", "preview", "weekly", "--out", str(tmp_path / "digest.html"))

    assert preview.exit_code == 0, preview.output
    assert "Subject: 2 new ATMP approvals — FDA" in preview.output
    assert "New ATMP approvals (2)" in preview.output
    assert "written to" in written.output
    assert "&lt;b&gt;bold&lt;/b&gt;" in (tmp_path / "digest.html").read_text()
    assert smtp.messages() == []

    sent = run(config_dir, "digest", "send", "weekly")
    again = run(config_dir, "digest", "send", "weekly")
    assert "digest weekly: sent (2 events)" in sent.output
    assert "digest weekly: empty (0 events)" in again.output
    assert [m["Subject"] for m in smtp.messages()] == ["2 new ATMP approvals — FDA"]


def test_an_unknown_digest_and_a_bad_file_stop_with_exit_code_2(config_dir):
    unknown = run(config_dir, "digest", "send", "nope")
    assert unknown.exit_code == 2
    assert "no subscription named 'nope'" in unknown.output

    (config_dir / "subscriptions.yaml").write_text("subscriptions:\n  - {name: a, channel: fax}\n")
    bad = run(config_dir, "deliver")
    assert bad.exit_code == 2
    assert "subscriptions.yaml:2 (subscription 'a'): channel: must be one of email, slack, webhook" in bad.output


FEED = b"""<?xml version="1.0"?><rss version="2.0"><channel><title>FDA</title><link>https://www.fda.gov/</link>
<description>x</description>
<item><guid>tecelra</guid><title>FDA approves Tecelra for synovial sarcoma</title>
<link>https://www.fda.gov/news/tecelra</link><description>A TCR-T cell therapy.</description></item>
</channel></rss>"""


def test_poll_then_deliver_sends_each_new_event_once(config_dir, feed_server):
    feed_server.set("/fda.xml", FEED)
    (config_dir / "sources.yaml").write_text(
        f"sources:\n  - {{id: fda-press, regulator: FDA, name: FDA, url: '{feed_server.url('/fda.xml')}', "
        "alert_backlog: true}\n")
    (config_dir / "subscriptions.yaml").write_text(
        "subscriptions:\n  - {name: all, channel: webhook, url_env: TEST_CLI_HOOK_URL, "
        "secret_env: TEST_CLI_HOOK_SECRET, filter: {atmp_only: false}}\n")

    for _ in range(2):
        assert run(config_dir, "poll").exit_code == 0
        assert run(config_dir, "deliver").exit_code == 0

    (post,) = feed_server.posts_to("/hook")
    assert post.headers["X-ATMP-Delivery"] == "all:event:1"
