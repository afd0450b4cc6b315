"""Recording on both real back ends: batches and text of any size a feed can send."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import select

from monitor.catalogue import Catalogue, load_baseline
from monitor.config import SourceConfig
from monitor.models import Entry
from monitor.poll import Poller
from monitor.record import Recorder, seen_index
from monitor.store import EntryRow, EventRow, ProductRow, SourceRow

BASELINE = load_baseline(Path(__file__).resolve().parents[1] / "config" / "baseline.yaml")
NOW = datetime(2024, 8, 2, 12, 0, tzinfo=UTC)
SOURCE = SourceConfig(id="ema-archive", regulator="EMA", name="EMA archive", url="https://www.ema.europa.eu/a.xml")


def archive(count: int, source_id: str = SOURCE.id) -> list[Entry]:
    """A feed of `count` distinct items, as an archive feed carrying years of news would be."""
    return [
        Entry(source_id=source_id, key=f"guid:{n}", guid=str(n), link=f"https://www.ema.europa.eu/en/news/{n}",
              title=f"Meeting highlights {n}", summary="", published=NOW - timedelta(hours=n), updated=None,
              categories=(), fingerprint=f"f{n}")
        for n in range(count)
    ]


def record(store, entries: list[Entry], source: SourceConfig = SOURCE, now: datetime = NOW):
    with store.transaction() as session:
        row = session.get(SourceRow, source.id) or SourceRow(
            id=source.id, regulator=source.regulator, name=source.name, url=source.url, consecutive_failures=0)
        session.add(row)
        return Recorder(session, source, row, Catalogue(BASELINE), None, now).record(entries)


def test_a_batch_larger_than_a_statement_takes_parameters_is_looked_up_in_parts(store):
    """25,000 entries × key, link and title is 75,000 values: over PostgreSQL's 65,535 parameters per statement."""
    entries = archive(25_000)
    with store.transaction() as session:
        assert seen_index(session, SOURCE.id, entries).by_key == {}
    record(store, entries[:3])
    with store.transaction() as session:
        index = seen_index(session, SOURCE.id, entries)
    assert sorted(index.by_key) == ["guid:0", "guid:1", "guid:2"]


def test_a_run_on_name_is_not_learned_as_a_product(store, tmp_path):
    run_on = "afami" + "t" * 300 + "gene autoleucel"
    feed = tmp_path / "fda.xml"
    feed.write_text(
        '<rss version="2.0"><channel><title>FDA</title><item>'
        f"<title>FDA approves {run_on} for synovial sarcoma</title><link>https://www.fda.gov/news/x</link>"
        "<pubDate>Thu, 01 Aug 2024 14:00:00 GMT</pubDate></item></channel></rss>"
    )
    source = SourceConfig(id="fda", regulator="FDA", name="FDA", url=feed.as_uri(), alert_backlog=True)
    (report,) = Poller(store, [source], BASELINE).poll(now=NOW)
    assert (report.status, report.new) == ("ok", 1)
    with store.transaction() as session:
        assert session.scalars(select(ProductRow)).all() == []
        (event,) = session.scalars(select(EventRow)).all()
    assert event.event_type == "new_product"


def test_characters_no_feed_may_carry_are_dropped_before_they_reach_the_store(store, tmp_path):
    feed = tmp_path / "fda.xml"
    feed.write_text(
        '<rss version="2.0"><channel><title>FDA</title><item><guid isPermaLink="false">id&#0;7</guid>'
        "<title>FDA approves&#0; a &#x1b;[31mtherapy</title><description>Text&#0; here</description>"
        "<category>Gene&#0; therapy</category><link>https://www.fda.gov/news/a&#0;b</link>"
        "<pubDate>Thu, 01 Aug 2024 14:00:00 GMT</pubDate></item></channel></rss>"
    )
    source = SourceConfig(id="fda", regulator="FDA", name="FDA", url=feed.as_uri())
    (report,) = Poller(store, [source], BASELINE).poll(now=NOW)
    assert (report.status, report.new) == ("ok", 1)
    with store.transaction() as session:
        entry = session.scalars(select(EntryRow)).one()
    assert (entry.guid, entry.title, entry.summary) == ("id7", "FDA approves a [31mtherapy", "Text here")
    assert (entry.link, entry.categories) == ("https://www.fda.gov/news/ab", ["Gene therapy"])


def test_a_very_long_unicode_title_is_stored_whole_and_found_again(store):
    title = " — ".join(["再生医療等製品の承認について Ünïcödé"] * 2_000)
    long_one = replace(archive(1)[0], title=title)
    assert record(store, [long_one]).new == 1
    assert record(store, [long_one]).seen == 1
    with store.transaction() as session:
        assert session.scalars(select(EventRow.title)).one() == title
