"""`atmp-monitor run` with no Redis (a real process: worker, embedded beat, filesystem queue), `status`,
and `migrate`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import inspect, select
from sqlalchemy.exc import OperationalError
from typer.testing import CliRunner
from workerkit import BIN, child_env, rss, source, spawn, stop, wait_until, write_config

from monitor.cli import app
from monitor.store import EventRow, Store


def event_titles(store: Store) -> list[str]:
    """Titles stored so far; nothing while the service is still creating the schema."""
    try:
        with store.transaction() as session:
            return list(session.scalars(select(EventRow.title).order_by(EventRow.id)))
    except OperationalError:
        return []


@contextmanager
def running_service(tmp_path: Path, feed_server, first_title: str) -> Iterator[tuple[subprocess.Popen, Store]]:
    """`atmp-monitor run` with no Redis over one local feed polled every second, yielded once the feed's first
    item is stored; killed at the end if the test has not stopped it."""
    feed_server.set("/feed.xml", rss([("r-1", first_title)]))
    config = write_config(tmp_path / "config", [source("local", feed_server.url("/feed.xml"), interval=1)])
    database = tmp_path / "atmp.db"
    process = spawn([str(BIN / "atmp-monitor"), "run"], cwd=tmp_path,
                    env=child_env(config, database, redis_url=None), log=tmp_path / "run.log")
    store = Store(f"sqlite:///{database}")
    try:
        assert wait_until(lambda: event_titles(store)) == [first_title]
        yield process, store
    finally:
        stop(process)
        store.dispose()


def test_run_without_redis_polls_on_schedule_records_events_and_stops_on_sigterm(tmp_path, feed_server):
    with running_service(tmp_path, feed_server, "First announcement") as (process, store):
        feed_server.set("/feed.xml", rss([("r-2", "Second announcement"), ("r-1", "First announcement")]))
        assert wait_until(lambda: len(event_titles(store)) == 2 and event_titles(store))[1] == "Second announcement"
        process.send_signal(signal.SIGTERM)
        exit_code = process.wait(timeout=30)

    log = (tmp_path / "run.log").read_text()
    assert exit_code == 0, log
    assert "Warm shutdown" in log
    assert "broker filesystem" in log
    assert len(feed_server.requests_to("/feed.xml")) >= 2
    assert (tmp_path / "var" / "broker" / "queue").is_dir()


def test_ctrl_c_stops_the_worker_and_its_beat_cleanly(tmp_path, feed_server):
    """Ctrl-C in a terminal sends SIGINT to the whole foreground process group: the worker and beat alike."""
    with running_service(tmp_path, feed_server, "An announcement") as (process, _):
        os.killpg(process.pid, signal.SIGINT)
        exit_code = process.wait(timeout=30)

    log = (tmp_path / "run.log").read_text()
    assert exit_code == 0, log
    assert "Warm shutdown" in log and "beat: Shutting down" in log
    assert "Traceback" not in log


def test_run_refuses_a_bad_config_before_starting(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = write_config(tmp_path / "config", [{"id": "Bad Id", "regulator": "FDA"}])
    result = CliRunner().invoke(app, ["--config", str(config), "run"],
                                env={"DATABASE_URL": f"sqlite:///{tmp_path / 'atmp.db'}", "REDIS_URL": ""})

    assert result.exit_code == 2
    assert "sources.yaml" in result.output


def test_status_shows_sources_deliveries_queue_and_periodic_tasks(tmp_path, feed_server, monkeypatch):
    monkeypatch.chdir(tmp_path)
    feed_server.set("/feed.xml", rss([("s-1", "Status news")]))
    config = write_config(tmp_path / "config", [source("local", feed_server.url("/feed.xml"), interval=60)])
    env = {"DATABASE_URL": f"sqlite:///{tmp_path / 'atmp.db'}", "REDIS_URL": ""}
    runner = CliRunner()
    assert runner.invoke(app, ["--config", str(config), "poll"], env=env).exit_code == 0

    result = runner.invoke(app, ["--config", str(config), "status", "--json"], env=env)

    assert result.exit_code == 0, result.output
    status = json.loads(result.output)
    assert status["broker"].startswith("filesystem")
    assert status["queue_depth"] == 0
    assert status["deliveries"]["pending"] == 0 and status["deliveries"]["failed"] == 0
    [local] = status["sources"]
    assert (local["id"], local["health"], local["interval"]) == ("local", "healthy", 60)
    assert local["next_poll_at"] > local["last_success_at"]
    assert {task["name"]: task["last_run_at"] for task in status["periodic"]} == {"poll:local": None, "sweep": None}

    text = runner.invoke(app, ["--config", str(config), "status"], env=env)
    assert "poll:local" in text.output and "healthy" in text.output


def test_migrate_creates_the_schema_including_task_runs(tmp_path):
    database = tmp_path / "fresh.db"
    result = CliRunner().invoke(app, ["migrate"], env={"DATABASE_URL": f"sqlite:///{database}"})

    assert result.exit_code == 0, result.output
    store = Store(f"sqlite:///{database}")
    try:
        assert {"events", "deliveries", "task_runs"} <= set(inspect(store.engine).get_table_names())
    finally:
        store.dispose()
