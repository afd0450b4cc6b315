"""From an item's appearance in a feed to its webhook's arrival, with real Celery worker and beat processes
on Redis, a PostgreSQL store (a throwaway schema) and a real local HTTP server for feeds and webhooks.

1. Latency: one source polled every second; at a random moment its feed gains an item; the time until the
   immediate webhook subscription's POST arrives, p50 and p95 over `--trials` trials.
2. Scaling, with 1, 2 and 4 worker processes over `--sources` sources (answering 304 when unchanged):
   the same latency for items appearing in random sources polled every `--interval` seconds, with the
   deepest queue seen; and the polls per second achieved when every source is due every second, which
   is more than any of these worker counts can do.

    .venv/bin/python bench/latency.py [--trials 20] [--sources 500] [--interval 10] [--workers 1 2 4]
                                      [--window 20] [--redis-db 13]

Only the Redis database `--redis-db` (never 0) is flushed, and only the schema made here is dropped.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import redis
import yaml
from sqlalchemy import func, select

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from monitor.store import SourceRow, Store  # noqa: E402
from tests.feedserver import FeedServer  # noqa: E402

BIN = Path(sys.executable).parent
PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
HOOK_URL_ENV, HOOK_SECRET_ENV = "ATMP_BENCH_HOOK_URL", "ATMP_BENCH_HOOK_SECRET"
QUEUE = "atmp-monitor"


@dataclass
class Feed:
    """One source's feed: its items, newest first, served with an ETag so an unchanged poll costs a 304."""

    path: str
    items: list[tuple[str, str]]

    def body(self) -> bytes:
        published = format_datetime(datetime.now(UTC), usegmt=True)
        items = "".join(f"<item><guid>{guid}</guid><title>{title}</title><link>https://example.org/{guid}</link>"
                        f"<pubDate>{published}</pubDate></item>" for guid, title in self.items)
        return (f'<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>{self.path}</title>'
                f"<link>https://example.org/</link><description>bench</description>{items}</channel></rss>").encode()

    def serve(self, server: FeedServer) -> None:
        body = self.body()
        server.set(self.path, body, etag=f'"{hashlib.sha256(body).hexdigest()[:16]}"')

    def gain(self, server: FeedServer, title: str) -> None:
        self.items.insert(0, (uuid.uuid4().hex, title))
        self.serve(server)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


@contextmanager
def pg_schema() -> Iterator[str]:
    schema = f"atmp_bench_{uuid.uuid4().hex[:10]}"
    conninfo = PG_URL.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(conninfo, autocommit=True) as admin:
        admin.execute(f'CREATE SCHEMA "{schema}"')
        try:
            yield f"{PG_URL}?options=-csearch_path%3D{schema}"
        finally:
            admin.execute(f'DROP SCHEMA "{schema}" CASCADE')


class Service:
    """Beat plus `workers` worker processes (each a solo pool, like `--scale worker=N`), started and stopped here."""

    def __init__(self, folder: Path, env: dict[str, str], workers: int):
        self.folder, self.env, self.workers = folder, env, workers
        self.processes: list[subprocess.Popen] = []

    def _spawn(self, name: str, args: list[str]) -> None:
        with (self.folder / f"{name}.log").open("ab") as log:
            self.processes.append(subprocess.Popen([str(BIN / "celery"), "-A", "workers.app", *args], cwd=self.folder,
                                                   env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                                   start_new_session=True))

    def __enter__(self) -> Service:
        for n in range(self.workers):
            self._spawn(f"worker-{n}", ["worker", "--pool=solo", "--without-mingle", "--without-gossip",
                                        "--loglevel=WARNING", f"--hostname=bench-{n}@%h"])
        self._spawn("beat", ["beat", "--loglevel=WARNING", f"--schedule={self.folder / 'beat-schedule'}"])
        return self

    def __exit__(self, *exc_info: object) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def write_config(folder: Path, sources: list[dict]) -> Path:
    config = folder / "config"
    config.mkdir(parents=True)
    (config / "baseline.yaml").write_text((ROOT / "config" / "baseline.yaml").read_text())
    (config / "sources.yaml").write_text(yaml.safe_dump({"sources": sources}))
    (config / "subscriptions.yaml").write_text(yaml.safe_dump({"subscriptions": [
        {"name": "bench", "channel": "webhook", "url_env": HOOK_URL_ENV, "secret_env": HOOK_SECRET_ENV,
         "filter": {"atmp_only": False}}]}))
    return config


def service_env(config: Path, database_url: str, redis_url: str, hook_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "ATMP_MONITOR_CONFIG")}
    env.update({"ATMP_MONITOR_CONFIG": str(config), "DATABASE_URL": database_url, "REDIS_URL": redis_url,
                HOOK_URL_ENV: hook_url, HOOK_SECRET_ENV: "bench-secret", "PYTHONPATH": str(ROOT)})
    return env


def wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise SystemExit(f"gave up waiting for {what} after {timeout:.0f} s")
        time.sleep(0.002)
    return value


def initialised(store: Store) -> int:
    with store.transaction() as session:
        return session.scalar(select(func.count()).select_from(SourceRow).where(SourceRow.initialised_at.is_not(None)))


def trial(server: FeedServer, feed: Feed, rng: random.Random, spread: float) -> float:
    """Wait a random moment, add an item, return seconds until its webhook arrives."""
    time.sleep(rng.uniform(0, spread))
    before = len(server.posts_to("/hook"))
    feed.gain(server, f"Gene therapy {uuid.uuid4().hex[:8]} approved")
    appeared = time.monotonic()
    wait_for(lambda: len(server.posts_to("/hook")) > before, 120, "the webhook")
    return time.monotonic() - appeared


@dataclass
class Deployment:
    """A running service over `feeds`, with its store and a client on its Redis database."""

    feeds: list[Feed]
    store: Store
    broker: redis.Redis

    def deepest_queue(self, deepest: int) -> int:
        return max(deepest, self.broker.llen(QUEUE))


@contextmanager
def deployed(server: FeedServer, redis_url: str, sources: int, interval: int, workers: int) -> Iterator[Deployment]:
    """Fresh feeds, Redis database and schema; beat and `workers` workers; every source past its first poll."""
    feeds = [Feed(f"/feeds/{interval}/{n}.xml", [(f"old-{n}", f"Earlier news {n}")]) for n in range(sources)]
    for feed in feeds:
        feed.serve(server)
    broker = redis.Redis.from_url(redis_url)
    broker.flushdb()
    try:
        with tempfile.TemporaryDirectory(prefix="atmp-bench-") as tmp, pg_schema() as database_url:
            folder = Path(tmp)
            config = write_config(folder, [{"id": f"s{n}", "regulator": "FDA", "name": f"Bench source {n}",
                                            "url": server.url(feed.path), "interval": interval}
                                           for n, feed in enumerate(feeds)])
            store = Store(database_url)
            store.migrate()
            try:
                with Service(folder, service_env(config, database_url, redis_url, server.url("/hook")), workers):
                    wait_for(lambda: initialised(store) == sources, 600, "every source's first poll")
                    yield Deployment(feeds, store, broker)
            finally:
                store.dispose()
    finally:
        broker.flushdb()
        broker.close()


def latencies(deployment: Deployment, server: FeedServer, trials: int, interval: int, rng: random.Random
              ) -> tuple[list[float], int]:
    """Appearance-to-webhook latencies of `trials` items in random sources, and the deepest queue seen."""
    found, deepest = [], 0
    for _ in range(trials):
        found.append(trial(server, rng.choice(deployment.feeds), rng, interval * 1.5))
        deepest = deployment.deepest_queue(deepest)
    return found, deepest


def saturated_rate(deployment: Deployment, server: FeedServer, window: float) -> float:
    """Polls per second while every source is due every second: more than any worker count here can do."""
    gets_before, started = len(server.requests), time.monotonic()
    time.sleep(window)
    return (len(server.requests) - gets_before) / (time.monotonic() - started)


def summary(latencies: list[float]) -> str:
    return (f"p50 {statistics.median(latencies):.2f} s, p95 {percentile(latencies, 0.95):.2f} s, "
            f"max {max(latencies):.2f} s ({len(latencies)} trials)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--sources", type=int, default=500)
    parser.add_argument("--interval", type=int, default=10, help="poll interval of each source when scaling")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--scale-trials", type=int, default=10)
    parser.add_argument("--window", type=float, default=20.0, help="seconds of saturated polling measured")
    parser.add_argument("--redis-db", type=int, default=13)
    args = parser.parse_args()
    if args.redis_db == 0:
        raise SystemExit("refusing to flush Redis database 0")
    parts = urlsplit(os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0")
    redis_url = f"redis://{parts.hostname or '127.0.0.1'}:{parts.port or 6379}/{args.redis_db}"
    rng = random.Random(20261125)

    with FeedServer() as server:
        with deployed(server, redis_url, 1, 1, 1) as deployment:
            found, _ = latencies(deployment, server, args.trials, 1, rng)
        print(f"1 source polled every 1 s, 1 worker: appearance -> webhook {summary(found)}", flush=True)
        for workers in args.workers:
            with deployed(server, redis_url, args.sources, args.interval, workers) as deployment:
                found, deepest = latencies(deployment, server, args.scale_trials, args.interval, rng)
            with deployed(server, redis_url, args.sources, 1, workers) as deployment:
                rate = saturated_rate(deployment, server, args.window)
            print(f"{workers} worker(s), {args.sources} sources: saturated {rate:.0f} polls/s; "
                  f"every {args.interval} s: deepest queue {deepest}, appearance -> webhook {summary(found)}",
                  flush=True)


if __name__ == "__main__":
    main()
