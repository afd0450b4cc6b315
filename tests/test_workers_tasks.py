"""The tasks on a real worker (celery.contrib.testing, in a thread) and the real Redis broker (test db only).

Results are read here, so the test app gets a result backend in the same Redis database; production
apps have none.
"""

from __future__ import annotations

import json

import pytest
from celery.contrib.testing.worker import start_worker
from sqlalchemy import select
from workerkit import (
    HOOK_SECRET,
    HOOK_SECRET_ENV,
    HOOK_URL_ENV,
    exclusive_redis,
    rss,
    settings_for,
    source,
    wait_until,
    webhook,
    write_config,
)

from monitor.signing import verify_signature
from monitor.store import DeliveryRow, EventRow
from workers.app import MonitorCelery, create_app
from workers.runlog import last_runs

pytestmark = [
    pytest.mark.redis,
    # celery's Redis result backend (read only by these tests) still calls SETEX, which redis-py 8 deprecates.
    pytest.mark.filterwarnings("ignore:Call to deprecated setex:DeprecationWarning"),
]

RESULT_TIMEOUT = 30


@pytest.fixture
def make_app(tmp_path, monkeypatch):
    """A Celery app on the test Redis database, with its own config folder, SQLite file and var folder."""
    apps: list[MonitorCelery] = []

    def build(sources: list[dict], subscriptions: list[dict] = ()) -> MonitorCelery:
        config = write_config(tmp_path / "config", sources, subscriptions)
        app = create_app(settings_for(config, tmp_path / "atmp.db", redis_url=redis_url), var_dir=tmp_path / "var")
        app.conf.update(result_backend=redis_url, task_ignore_result=False)
        apps.append(app)
        return app

    with exclusive_redis() as redis_url:
        yield build
        for app in apps:
            app.runtime.store.dispose()


def run(app: MonitorCelery, task: str, *args: object) -> str:
    return app.send_task(task, args=args).get(timeout=RESULT_TIMEOUT)


def poll_when_due(app: MonitorCelery, source_id: str) -> str:
    """Poll until the source is due again (its 1 s interval), as beat's next tick would."""
    while (outcome := run(app, "atmp.poll_source", source_id)) == "not_due":
        continue
    return outcome


def drain(app: MonitorCelery) -> None:
    """A solo worker takes messages in order: once this sweep has run, every task sent before it has too."""
    assert run(app, "atmp.sweep") == "ok"


def test_a_new_item_reaches_an_immediate_webhook_once(make_app, feed_server, monkeypatch):
    monkeypatch.setenv(HOOK_URL_ENV, feed_server.url("/hook"))
    monkeypatch.setenv(HOOK_SECRET_ENV, HOOK_SECRET)
    feed_server.set("/feed.xml", rss([("a-1", "Old approval")]))
    app = make_app([source("fda-test", feed_server.url("/feed.xml"))], [webhook("hook")])

    with start_worker(app, pool="solo", perform_ping_check=False):
        assert run(app, "atmp.poll_source", "fda-test") == "ok"
        drain(app)
        assert feed_server.posts_to("/hook") == []

        feed_server.set("/feed.xml", rss([("a-2", "Gene therapy approved"), ("a-1", "Old approval")]))
        assert poll_when_due(app, "fda-test") == "ok"
        [post] = wait_until(lambda: feed_server.posts_to("/hook"))

        feed_server.set("/feed.xml", rss([("a-2", "Gene therapy approved"), ("a-1", "Old approval")], build="2"))
        assert poll_when_due(app, "fda-test") == "ok"
        drain(app)

    assert len(feed_server.posts_to("/hook")) == 1
    payload = json.loads(post.body)
    assert [event["title"] for event in payload["events"]] == ["Gene therapy approved"]
    assert verify_signature(HOOK_SECRET, post.headers["x-atmp-timestamp"], post.body,
                            post.headers["x-atmp-signature"])
    with app.runtime.store.transaction() as session:
        deliveries = session.execute(select(DeliveryRow.status, EventRow.title).join(EventRow)).all()
    assert deliveries == [("sent", "Gene therapy approved")]
    assert last_runs(app.runtime.store)["poll:fda-test"].last_outcome == "ok"


def test_two_concurrent_polls_of_one_source_run_once(make_app, feed_server):
    feed_server.set("/slow.xml", rss([("s-1", "Slow news")]), delay=1.5)
    app = make_app([source("slow", feed_server.url("/slow.xml"))])

    with start_worker(app, pool="threads", concurrency=2, perform_ping_check=False):
        first = app.send_task("atmp.poll_source", args=("slow",))
        second = app.send_task("atmp.poll_source", args=("slow",))
        outcomes = sorted([first.get(timeout=RESULT_TIMEOUT), second.get(timeout=RESULT_TIMEOUT)])

    assert outcomes == ["locked", "ok"]
    assert len(feed_server.requests_to("/slow.xml")) == 1


def test_a_poll_before_the_source_is_due_does_not_fetch(make_app, feed_server):
    feed_server.set("/feed.xml", rss([("n-1", "News")]))
    app = make_app([source("hourly", feed_server.url("/feed.xml"), interval=3600)])

    with start_worker(app, pool="solo", perform_ping_check=False):
        assert run(app, "atmp.poll_source", "hourly") == "ok"
        assert run(app, "atmp.poll_source", "hourly") == "not_due"

    assert len(feed_server.requests_to("/feed.xml")) == 1
    assert last_runs(app.runtime.store)["poll:hourly"].last_outcome == "not_due"


def test_a_source_removed_from_config_is_skipped(make_app, feed_server):
    app = make_app([source("kept", feed_server.url("/feed.xml"))])

    with start_worker(app, pool="solo", perform_ping_check=False):
        assert run(app, "atmp.poll_source", "gone") == "unknown"

    assert feed_server.requests == []


def test_two_concurrent_sends_of_one_digest_send_it_once(make_app, feed_server, monkeypatch):
    monkeypatch.setenv(HOOK_URL_ENV, feed_server.url("/digest"))
    monkeypatch.setenv(HOOK_SECRET_ENV, HOOK_SECRET)
    feed_server.set("/feed.xml", rss([("d-1", "Cell therapy approved")]))
    digest = webhook("daily", mode="digest", schedule={"cron": "* * * * *", "timezone": "Europe/Berlin"})
    app = make_app([source("fda-digest", feed_server.url("/feed.xml"), alert_backlog=True)], [digest])

    with start_worker(app, pool="threads", concurrency=2, perform_ping_check=False):
        assert run(app, "atmp.poll_source", "fda-digest") == "ok"
        first = app.send_task("atmp.send_digest", args=("daily",))
        second = app.send_task("atmp.send_digest", args=("daily",))
        outcomes = {first.get(timeout=RESULT_TIMEOUT), second.get(timeout=RESULT_TIMEOUT)}

    assert "sent" in outcomes
    assert outcomes - {"sent"} <= {"locked", "not_due", "empty"}
    [post] = feed_server.posts_to("/digest")
    assert [event["title"] for event in json.loads(post.body)["events"]] == ["Cell therapy approved"]


def test_the_sweep_retries_a_delivery_that_failed(make_app, feed_server, monkeypatch):
    monkeypatch.setenv(HOOK_URL_ENV, feed_server.url("/flaky"))
    monkeypatch.setenv(HOOK_SECRET_ENV, HOOK_SECRET)
    feed_server.set_post_responses("/flaky", [(503, {}), (200, {})])
    feed_server.set("/feed.xml", rss([("f-1", "Tissue-engineered product approved")]))
    app = make_app([source("fda-flaky", feed_server.url("/feed.xml"), alert_backlog=True)], [webhook("flaky")])

    with start_worker(app, pool="solo", perform_ping_check=False):
        assert run(app, "atmp.poll_source", "fda-flaky") == "ok"
        drain(app)
        with app.runtime.store.transaction() as session:
            row = session.scalars(select(DeliveryRow)).one()
            assert row.status == "failed" and row.next_attempt_at is not None
            row.next_attempt_at = row.created_at
        drain(app)

    with app.runtime.store.transaction() as session:
        row = session.scalars(select(DeliveryRow)).one()
    assert (row.status, row.attempts) == ("sent", 2)
    assert len(feed_server.posts_to("/flaky")) == 2
