from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select

from monitor.catalogue import load_baseline
from monitor.config import SourceConfig
from monitor.poll import Poller
from monitor.reclassify import reclassify
from monitor.store import EventRow

BASELINE = load_baseline(Path(__file__).resolve().parents[1] / "config" / "baseline.yaml")
FEED = b"""<?xml version="1.0"?><rss version="2.0"><channel><title>FDA</title><link>https://www.fda.gov/</link>
<description>x</description>
<item><title>FDA approves Tecelra (afamitresgene autoleucel) for synovial sarcoma</title>
<link>https://www.fda.gov/news/tecelra</link><pubDate>Thu, 01 Aug 2024 14:00:00 -0400</pubDate></item>
<item><title>FDA approves new antibody for migraine prevention</title>
<link>https://www.fda.gov/news/migraine</link><pubDate>Wed, 31 Jul 2024 10:00:00 -0400</pubDate></item>
</channel></rss>"""


def test_reclassify_restores_labels_keeps_the_teaching_event_new_and_tells_nobody(store, feed_server):
    feed_server.set("/fda.xml", FEED)
    source = SourceConfig(id="fda", regulator="FDA", name="FDA", url=feed_server.url("/fda.xml"), alert_backlog=True)
    queued = []
    Poller(store, [source], BASELINE, outbox=lambda session, event: queued.append(event.id)).poll(
        now=datetime(2024, 8, 2, tzinfo=UTC))
    assert len(queued) == 2
    with store.transaction() as session:
        stored = {e.id: (e.is_atmp, e.event_type, e.products) for e in session.scalars(select(EventRow))}
        for event in session.scalars(select(EventRow)):
            event.is_atmp, event.event_type, event.products = False, None, []

    report = reclassify(store, BASELINE)

    assert (report.total, report.changed) == (2, 1)
    with store.transaction() as session:
        again = {e.id: (e.is_atmp, e.event_type, e.products) for e in session.scalars(select(EventRow))}
    assert again == stored
    assert ("new_product" in {label for _, label, _ in again.values()})
    assert len(queued) == 2


def test_reclassify_with_an_outbox_queues_only_changed_events(sqlite_store, feed_server):
    feed_server.set("/fda.xml", FEED)
    source = SourceConfig(id="fda", regulator="FDA", name="FDA", url=feed_server.url("/fda.xml"), alert_backlog=True)
    Poller(sqlite_store, [source], BASELINE).poll(now=datetime(2024, 8, 2, tzinfo=UTC))
    with sqlite_store.transaction() as session:
        tecelra = session.scalars(select(EventRow).where(EventRow.title.contains("Tecelra"))).one()
        tecelra.modality = None
    queued = []
    reclassify(sqlite_store, BASELINE, outbox=lambda session, event: queued.append(event.title))
    assert queued == [tecelra.title]
