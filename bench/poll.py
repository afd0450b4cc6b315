"""Polling throughput: N synthetic feeds served by a real local HTTP server, polled into a SQLite store.

Prints the cold cycle (every entry new), the warm cycles (answered 304, and re-sent but unchanged), and
feedparser alone on the same bytes as the floor the pipeline cannot beat.

    .venv/bin/python bench/poll.py [--feeds 200] [--entries 50]
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import feedparser

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from monitor.catalogue import load_baseline
from monitor.config import SourceConfig
from monitor.poll import Poller
from monitor.store import open_store
from tests.feedserver import FeedServer

BASELINE = Path(__file__).resolve().parents[1] / "config" / "baseline.yaml"
TITLES = [
    "FDA approves gene therapy onasemnogene abeparvovec for a new population",
    "FDA warns consumers about unapproved stem cell products",
    "FDA approves new antibody treatment for migraine prevention",
    "Company recalls blood pressure tablets because of an impurity",
    "FDA grants accelerated approval to a CAR-T cell therapy for lymphoma",
]


def synthetic_feed(feed: int, entries: int) -> bytes:
    start = datetime(2024, 1, 1, tzinfo=UTC)
    items = []
    for n in range(entries):
        title = f"{TITLES[n % len(TITLES)]} (feed {feed}, item {n})"
        items.append(
            f"<item><title>{title}</title><link>https://example.org/feeds/{feed}/items/{n}</link>"
            f"<guid isPermaLink=\"false\">feed-{feed}-item-{n}</guid>"
            f"<description>&lt;p&gt;Announcement {n} of feed {feed}: {title}.&lt;/p&gt;</description>"
            f"<pubDate>{format_datetime(start + timedelta(hours=n))}</pubDate></item>"
        )
    return (
        '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel>'
        f"<title>Synthetic feed {feed}</title><link>https://example.org/</link><description>bench</description>"
        + "".join(items) + "</channel></rss>"
    ).encode()


def timed(run) -> tuple[float, object]:
    started = time.perf_counter()
    result = run()
    elapsed = time.perf_counter() - started
    return elapsed, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--feeds", type=int, default=200)
    parser.add_argument("--entries", type=int, default=50)
    args = parser.parse_args()
    bodies = {f"/feed/{n}.xml": synthetic_feed(n, args.entries) for n in range(args.feeds)}
    total = args.feeds * args.entries
    baseline = load_baseline(BASELINE)

    with FeedServer() as server, tempfile.TemporaryDirectory() as folder:
        for path, body in bodies.items():
            server.set(path, body, etag=f'"{hash(body)}"')
        sources = [
            SourceConfig(id=f"feed-{n}", regulator="FDA", name=f"feed {n}", url=server.url(f"/feed/{n}.xml"),
                         alert_backlog=True)
            for n in range(args.feeds)
        ]
        store = open_store(f"sqlite:///{folder}/bench.db")
        poller = Poller(store, sources, baseline)

        cold, reports = timed(poller.poll)
        events = sum(len(r.events) for r in reports)
        warm_304, _ = timed(poller.poll)
        for path, body in bodies.items():
            server.set(path, body)
        warm_hash, _ = timed(poller.poll)
        warm_hash_again, _ = timed(poller.poll)

    floor, _ = timed(lambda: [
        feedparser.parse(io.BytesIO(body), response_headers={"content-type": "application/rss+xml"})
        for body in bodies.values()
    ])

    print(f"feeds: {args.feeds} x {args.entries} entries = {total} entries, {events} events stored")
    print(f"cold cycle:                 {cold:7.2f} s  {total / cold:8.0f} entries/s")
    print(f"warm cycle, 304s:           {warm_304:7.2f} s")
    print(f"warm cycle, unchanged body: {warm_hash_again:7.2f} s (first full re-send, ETag dropped: {warm_hash:.2f} s)")
    print(f"feedparser alone (floor):   {floor:7.2f} s  {total / floor:8.0f} entries/s")
    print(f"cold cycle / feedparser:    {cold / floor:7.2f} x")


if __name__ == "__main__":
    main()
