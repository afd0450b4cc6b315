"""Notification throughput: queue and render digests for many subscriptions over a batch of events.

Loads N digest subscriptions with varied filters, stores E events through the outbox (as a poll would),
then, for every subscription, gathers its digest into a delivery (`queue_digest`, the claim sending uses)
and renders its email (HTML and text). Nothing is sent: the figure is what the service can prepare.
Timings come from a run without tracemalloc; a second run with tracemalloc gives the peak memory.

    .venv/bin/python bench/notify.py [--subscriptions 10000] [--events 200] [--database URL]
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
import tracemalloc
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from monitor.channels.email import EmailSettings
from monitor.config import Settings
from monitor.deliver import notification_for, queue_digest, renderer_for
from monitor.outbox import make_outbox
from monitor.runtime import Runtime
from monitor.store import DeliveryRow, EventRow, open_store
from monitor.subscriptions import EVENT_TYPES, MODALITIES, Subscriptions, parse_subscription

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
REGULATORS = ("FDA", "EMA", "MHRA", "HealthCanada", "PMDA", "IR-FDA")
PRODUCTS = ("CASGEVY", "LYFGENIA", "ELEVIDYS", "ROCTAVIAN", "VYJUVEK", "LANTIDRA", "OMISIRGE", "ZOLGENSMA")
ZONES = ("Europe/Berlin", "America/New_York", "Asia/Tokyo", "UTC")


def subscriptions(count: int, rng: random.Random) -> Subscriptions:
    items = []
    for n in range(count):
        criteria: dict = {}
        if rng.random() < 0.6:
            criteria["regulators"] = rng.sample(REGULATORS, rng.randint(1, 3))
        if rng.random() < 0.5:
            criteria["modalities"] = rng.sample(MODALITIES, rng.randint(1, 3))
        if rng.random() < 0.4:
            criteria["event_types"] = rng.sample(EVENT_TYPES, rng.randint(1, 3))
        if rng.random() < 0.1:
            criteria["products"] = rng.sample(PRODUCTS, 2)
        raw = {"name": f"digest-{n}", "channel": "email", "to": [f"team{n}@example.org"], "mode": "digest",
               "schedule": {"cron": "0 8 * * *", "timezone": rng.choice(ZONES)}, "filter": criteria}
        items.append(parse_subscription(raw, Path("bench"), None))
    return Subscriptions(items=tuple(items), email=EmailSettings(sender="ATMP Monitor <atmp@example.org>"))


def event(n: int, rng: random.Random) -> EventRow:
    product = rng.choice(PRODUCTS)
    return EventRow(
        identity=f"bench-{n}", regulator=rng.choice(REGULATORS), title=f"Regulator approves {product} & co <{n}>",
        link=f"https://example.org/news/{n}", summary="A first approval of an advanced therapy. " * 4,
        published=NOW - timedelta(hours=n), status="new", revision=1, alert=True, sources=["bench"],
        created_at=NOW, updated_at=NOW, is_atmp=True, modality=rng.choice(MODALITIES), eu_category="GTMP",
        submodality=None, event_type=rng.choice(EVENT_TYPES), products=[{"name": product, "known": False}],
        confidence=round(rng.uniform(0.5, 1.0), 2), reasons=["INN stem → vector", "phrase 'approves' → approval"],
    )


@dataclass
class Figures:
    load: float
    queue: float
    rows: int
    digest: float
    digests: int
    rendered_bytes: int


def run(database: str | None, count: int, events: int) -> Figures:
    rng = random.Random(20260302)
    folder = Path(tempfile.mkdtemp(prefix="atmp-bench-notify-"))
    url = database or f"sqlite:///{folder / 'bench.db'}"
    store = open_store(url)
    started = time.perf_counter()
    subs = subscriptions(count, rng)
    load = time.perf_counter() - started
    runtime = Runtime(settings=Settings(config_dir=folder, database_url=url, redis_url=None), sources=[],
                      baseline=[], subscriptions=subs)
    runtime.store = store
    outbox = make_outbox(subs)

    started = time.perf_counter()
    for n in range(events):
        with store.transaction() as session:
            row = event(n, rng)
            session.add(row)
            session.flush()
            outbox(session, row)
    queue = time.perf_counter() - started
    with store.transaction() as session:
        rows = session.query(DeliveryRow).count()

    renderer = renderer_for(None)
    digests = size = 0
    started = time.perf_counter()
    for subscription in subs:
        result = queue_digest(runtime, subscription.name, now=NOW, force=True)
        if result.delivery_id is None:
            continue
        with store.transaction() as session:
            notification = notification_for(session, subs, session.get(DeliveryRow, result.delivery_id))
        rendered = renderer.email(notification, subs.email)
        digests += 1
        size += len(rendered.html) + len(rendered.text)
    digest = time.perf_counter() - started
    store.dispose()
    return Figures(load, queue, rows, digest, digests, size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscriptions", type=int, default=10_000)
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--database", help="a DATABASE_URL (default: a fresh SQLite file)")
    options = parser.parse_args()

    figures = run(options.database, options.subscriptions, options.events)
    print(f"{options.subscriptions} digest subscriptions, {options.events} events "
          f"({'given database' if options.database else 'SQLite file'})")
    print(f"  load and validate subscriptions  {figures.load:7.2f} s")
    print(f"  outbox (queue {figures.rows} items)  {figures.queue:7.2f} s   "
          f"{figures.rows / figures.queue:9.0f} items/s   {options.events / figures.queue:7.1f} events/s")
    print(f"  gather + render {figures.digests} digests  {figures.digest:7.2f} s   "
          f"{figures.digests / figures.digest:9.1f} digests/s   "
          f"(avg {figures.rows / max(figures.digests, 1):.1f} events, "
          f"{figures.rendered_bytes / max(figures.digests, 1) / 1024:.1f} KiB per digest)")

    tracemalloc.start()
    run(options.database, options.subscriptions, options.events)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(f"  peak memory (tracemalloc, second run)  {peak / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
