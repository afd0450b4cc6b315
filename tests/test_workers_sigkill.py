"""A worker process killed with SIGKILL in the middle of a webhook delivery, then restarted.

The delivery is claimed (`sending`) and its POST is at the receiver when the worker dies. After the
restart, the sweep (which beat sends every 30 s; this test sends it) returns the stuck row to retry and
sends it again, and Redis hands the unacknowledged `deliver` message to the new worker, which finds
nothing left to do. The receiver sees the same delivery key twice and can drop the repeat (that window
is why X-ATMP-Delivery exists); the delivery completes, and is recorded as sent, exactly once.
"""

from __future__ import annotations

import os
import signal
import time
from datetime import UTC, datetime, timedelta

import pytest
import redis
from sqlalchemy import select, update
from workerkit import (
    BIN,
    HOOK_SECRET,
    HOOK_SECRET_ENV,
    HOOK_URL_ENV,
    HeldReceiver,
    child_env,
    exclusive_redis,
    rss,
    source,
    spawn,
    stop,
    wait_until,
    webhook,
    write_config,
)

from monitor.config import Settings
from monitor.deliver import STUCK_AFTER
from monitor.runtime import Runtime
from monitor.store import DeliveryRow, EventRow
from workers.app import QUEUE, create_app
from workers.runlog import last_runs

pytestmark = pytest.mark.redis

VISIBILITY_TIMEOUT = 2


def delivery(runtime: Runtime) -> DeliveryRow | None:
    with runtime.store.transaction() as session:
        return session.scalars(select(DeliveryRow)).one_or_none()


def sweeps(runtime: Runtime) -> int:
    run = last_runs(runtime.store).get("sweep")
    return run.runs if run else 0


def oldest_unacked_age(client: redis.Redis) -> float:
    scores = client.zrange("unacked_index", 0, 0, withscores=True)
    return time.time() - scores[0][1] if scores else 0.0


@pytest.fixture
def redis_url():
    with exclusive_redis() as url:
        yield url


def test_a_delivery_interrupted_by_sigkill_completes_once_after_restart(tmp_path, feed_server, redis_url):
    feed_server.set("/feed.xml", rss([("k-1", "Earlier news")]))
    with HeldReceiver() as receiver:
        config = write_config(tmp_path / "config", [source("kill", feed_server.url("/feed.xml"))], [webhook("hook")])
        database = tmp_path / "atmp.db"
        env = child_env(config, database, redis_url=redis_url, ATMP_VISIBILITY_TIMEOUT=str(VISIBILITY_TIMEOUT),
                        **{HOOK_URL_ENV: receiver.url, HOOK_SECRET_ENV: HOOK_SECRET})
        runtime = Runtime.load(Settings(config, f"sqlite:///{database}", redis_url))
        runtime.poller().poll(now=datetime.now(UTC) - timedelta(minutes=1))
        feed_server.set("/feed.xml", rss([("k-2", "Gene therapy approved"), ("k-1", "Earlier news")]))
        producer = create_app(runtime.settings, var_dir=tmp_path / "var")
        broker = redis.Redis.from_url(redis_url)
        worker_args = [str(BIN / "celery"), "-A", "workers.app", "worker", "--pool=solo", "--concurrency=1",
                       "--without-mingle", "--without-gossip", "--loglevel=INFO"]
        first = spawn([*worker_args, "--hostname=first@%h"], cwd=tmp_path, env=env, log=tmp_path / "first.log")
        second = None
        try:
            producer.send_task("atmp.poll_source", args=("kill",))
            assert receiver.first_arrived.wait(timeout=30)
            os.killpg(first.pid, signal.SIGKILL)
            first.wait(timeout=10)

            interrupted = delivery(runtime)
            assert interrupted.status == "sending"
            with runtime.store.transaction() as session:
                session.execute(update(DeliveryRow).values(claimed_at=interrupted.claimed_at - STUCK_AFTER))
            receiver.release()
            wait_until(lambda: oldest_unacked_age(broker) > VISIBILITY_TIMEOUT)

            second = spawn([*worker_args, "--hostname=second@%h"], cwd=tmp_path, env=env, log=tmp_path / "second.log")
            producer.send_task("atmp.sweep")
            wait_until(lambda: delivery(runtime).status == "sent")
            done = sweeps(runtime)
            producer.send_task("atmp.sweep")
            wait_until(lambda: sweeps(runtime) > done and broker.hlen("unacked") == 0 and broker.llen(QUEUE) == 0)
        finally:
            stop(first)
            if second is not None:
                stop(second)
            broker.close()
            producer.close()

    completed = delivery(runtime)
    with runtime.store.transaction() as session:
        events = list(session.scalars(select(EventRow.title).where(EventRow.alert.is_(True))))
    runtime.store.dispose()
    assert events == ["Gene therapy approved"]
    assert (completed.status, completed.attempts) == ("sent", 2)
    assert receiver.received() == [completed.idempotency_key] * 2
