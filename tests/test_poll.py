"""The polling pipeline end to end, against a real local HTTP server and both real store back ends."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from xml.sax.saxutils import escape

import pytest
from feedserver import closed_port
from sqlalchemy import select

from monitor.catalogue import load_baseline
from monitor.config import SourceConfig
from monitor.poll import Poller
from monitor.store import EventRow, ProductRow, SourceRow

BASELINE = load_baseline(Path(__file__).resolve().parents[1] / "config" / "baseline.yaml")
NOW = datetime(2024, 8, 2, 12, 0, tzinfo=UTC)

OLD_NEWS = {
    "guid": "fda-2024-07-01-recall",
    "title": "Company recalls blood pressure tablets over an impurity",
    "link": "https://www.fda.gov/safety/recalls/blood-pressure-tablets",
    "summary": "The company is recalling two lots.",
    "date": NOW - timedelta(days=30),
}
KYMRIAH_EXPANSION = {
    "guid": "fda-2024-07-20-kymriah",
    "title": "FDA expands approval of Kymriah for a new lymphoma indication",
    "link": "https://www.fda.gov/news/kymriah-expansion",
    "summary": "Tisagenlecleucel, a CAR-T cell therapy, gains a new use.",
    "date": NOW - timedelta(days=13),
}
TECELRA = {
    "guid": "fda-2024-08-01-tecelra",
    "title": "FDA approves Tecelra (afamitresgene autoleucel), first engineered T-cell therapy for synovial sarcoma",
    "link": "https://www.fda.gov/news/tecelra-approval?utm_source=rss&utm_medium=feed",
    "summary": "<p>The agency granted <b>accelerated approval</b> to the gene-modified TCR-T cell therapy.</p>",
    "date": NOW - timedelta(days=1),
}


def rss(*items: dict) -> bytes:
    body = "".join(
        "<item>"
        + (f"<guid isPermaLink=\"false\">{escape(item['guid'])}</guid>" if item.get("guid") else "")
        + f"<title>{escape(item['title'])}</title><link>{escape(item['link'])}</link>"
        + f"<description>{escape(item['summary'])}</description>"
        + f"<pubDate>{format_datetime(item['date'])}</pubDate></item>"
        for item in items
    )
    return (f'<?xml version="1.0"?><rss version="2.0"><channel><title>FDA</title><link>https://www.fda.gov/</link>'
            f"<description>test</description>{body}</channel></rss>").encode()


def source(server, source_id: str = "fda-press", path: str = "/fda.xml", **overrides) -> SourceConfig:
    fields = {"id": source_id, "regulator": "FDA", "name": source_id, "url": server.url(path), "interval": 600}
    return SourceConfig(**(fields | overrides))


def events(store) -> list[EventRow]:
    with store.transaction() as session:
        return list(session.scalars(select(EventRow).order_by(EventRow.id)))


def source_row(store, source_id: str = "fda-press") -> SourceRow:
    with store.transaction() as session:
        return session.get(SourceRow, source_id)


def test_first_poll_is_history_and_a_new_item_is_exactly_one_alerting_event(store, feed_server):
    feed_server.set("/fda.xml", rss(KYMRIAH_EXPANSION, OLD_NEWS), etag='"v1"')
    poller = Poller(store, [source(feed_server)], BASELINE)

    (first,) = poller.poll(now=NOW)
    assert (first.status, first.new, len(first.events)) == ("ok", 2, 2)
    assert [e.alert for e in events(store)] == [False, False]

    (again,) = poller.poll(now=NOW + timedelta(minutes=10))
    assert again.status == "not_modified"
    assert feed_server.requests_to("/fda.xml")[-1].headers.get("If-None-Match") == '"v1"'

    feed_server.set("/fda.xml", rss(TECELRA, KYMRIAH_EXPANSION, OLD_NEWS), etag='"v2"')
    (third,) = poller.poll(now=NOW + timedelta(minutes=20))
    assert (third.new, third.seen, len(third.events)) == (1, 2, 1)
    newest = events(store)[-1]
    assert newest.alert is True
    assert newest.link == "https://www.fda.gov/news/tecelra-approval"
    assert newest.summary == "The agency granted accelerated approval to the gene-modified TCR-T cell therapy."
    assert newest.sources == ["fda-press"]
    assert len(events(store)) == 3


def test_an_unchanged_body_without_etag_skips_parsing(sqlite_store, feed_server):
    feed_server.set("/fda.xml", rss(KYMRIAH_EXPANSION))
    poller = Poller(sqlite_store, [source(feed_server)], BASELINE)
    poller.poll(now=NOW)
    (report,) = poller.poll(now=NOW + timedelta(minutes=10))
    assert report.status == "unchanged"
    assert source_row(sqlite_store).last_success_at == NOW + timedelta(minutes=10)


def test_a_new_guid_for_an_old_item_is_not_an_event(sqlite_store, feed_server):
    feed_server.set("/fda.xml", rss(KYMRIAH_EXPANSION))
    poller = Poller(sqlite_store, [source(feed_server)], BASELINE)
    poller.poll(now=NOW)
    feed_server.set("/fda.xml", rss(KYMRIAH_EXPANSION | {"guid": "cms-migrated-4711"}))
    (report,) = poller.poll(now=NOW + timedelta(minutes=10))
    assert (report.new, report.seen, report.events) == (0, 1, [])
    feed_server.set("/fda.xml", rss(KYMRIAH_EXPANSION | {"guid": "cms-migrated-4711"}, OLD_NEWS))
    (later,) = Poller(sqlite_store, [source(feed_server)], BASELINE).poll(now=NOW + timedelta(minutes=20))
    assert later.seen == 1


def test_an_edited_item_updates_its_event(store, feed_server):
    feed_server.set("/fda.xml", rss(KYMRIAH_EXPANSION))
    poller = Poller(store, [source(feed_server)], BASELINE)
    poller.poll(now=NOW)
    edited = KYMRIAH_EXPANSION | {"summary": "Tisagenlecleucel gains a new use in follicular lymphoma."}
    feed_server.set("/fda.xml", rss(edited))
    (report,) = poller.poll(now=NOW + timedelta(minutes=10))
    assert (report.new, report.updated, report.events) == (0, 1, [])
    (event,) = events(store)
    assert (event.status, event.revision) == ("updated", 2)
    assert "follicular lymphoma" in event.summary


def test_one_announcement_on_two_feeds_is_one_event_listing_both(store, feed_server):
    feed_server.set("/press.xml", rss(TECELRA))
    feed_server.set("/cber.xml", rss(TECELRA | {"guid": "cber-8812", "link": TECELRA["link"].split("?")[0]}))
    sources = [source(feed_server, "fda-press", "/press.xml", alert_backlog=True),
               source(feed_server, "fda-cber", "/cber.xml", alert_backlog=True)]
    reports = Poller(store, sources, BASELINE).poll(now=NOW)
    assert sum(len(r.events) for r in reports) == 1
    (event,) = events(store)
    assert sorted(event.sources) == ["fda-cber", "fda-press"]


@pytest.mark.parametrize(
    ("programme", "reason"),
    [
        ({"body": b"", "status": 500}, "HTTP 500"),
        ({"body": b"\x00\x9f garbage \xff"}, "not a feed"),
        ({"body": b"<html><head><title>FDA Apology</title></head><body>Sorry</body></html>",
          "content_type": "text/html"}, "not a feed"),
        ({"body": rss(KYMRIAH_EXPANSION)[:60]}, "not a feed"),
        ({"body": rss(KYMRIAH_EXPANSION), "delay": 3}, "timeout"),
    ],
    ids=["http-500", "garbage", "html-apology", "truncated-xml", "timeout"],
)
def test_a_broken_source_is_recorded_and_the_others_still_land(sqlite_store, feed_server, programme, reason):
    feed_server.set("/good.xml", rss(TECELRA))
    feed_server.set("/broken.xml", **programme)
    sources = [source(feed_server, "good", "/good.xml", alert_backlog=True),
               source(feed_server, "broken", "/broken.xml", timeout=1)]
    reports = {r.source_id: r for r in Poller(sqlite_store, sources, BASELINE).poll(now=NOW)}
    assert reports["good"].status == "ok" and len(reports["good"].events) == 1
    assert reports["broken"].status == "failed"
    assert reason in reports["broken"].error
    row = source_row(sqlite_store, "broken")
    assert row.consecutive_failures == 1
    assert reason in row.last_error
    assert row.last_error_at == NOW
    assert row.next_poll_at == NOW + timedelta(minutes=10)


def test_repeated_failures_back_off_and_a_success_resets(sqlite_store, feed_server):
    feed_server.set("/fda.xml", b"", status=503)
    poller = Poller(sqlite_store, [source(feed_server)], BASELINE)
    for minutes in (0, 10, 30):
        poller.poll(now=NOW + timedelta(minutes=minutes))
    row = source_row(sqlite_store)
    assert row.consecutive_failures == 3
    assert row.next_poll_at == NOW + timedelta(minutes=30 + 40)
    assert poller.poll(due_only=True, now=NOW + timedelta(minutes=45))[0].status == "skipped"
    feed_server.set("/fda.xml", rss(KYMRIAH_EXPANSION))
    poller.poll(now=NOW + timedelta(minutes=70))
    row = source_row(sqlite_store)
    assert (row.consecutive_failures, row.failing_since) == (0, None)


def test_retry_after_pushes_the_next_poll(sqlite_store, feed_server):
    feed_server.set("/fda.xml", b"slow down", status=429, headers={"Retry-After": "7200"})
    Poller(sqlite_store, [source(feed_server)], BASELINE).poll(now=NOW)
    assert source_row(sqlite_store).next_poll_at == NOW + timedelta(hours=2)


def test_when_every_source_fails_at_once_nobody_is_charged(sqlite_store, feed_server):
    closed_port = "http://127.0.0.1:9/feed.xml"
    sources = [SourceConfig(id=f"s{n}", regulator="EMA", name="n", url=closed_port) for n in range(3)]
    reports = Poller(sqlite_store, sources, BASELINE).poll(now=NOW)
    assert all(r.status == "failed" and not r.charged for r in reports)
    assert source_row(sqlite_store, "s0").consecutive_failures == 0
    assert source_row(sqlite_store, "s0").last_error is not None


def test_a_feed_that_empties_out_has_changed_shape(sqlite_store, feed_server):
    feed_server.set("/fda.xml", rss(TECELRA, KYMRIAH_EXPANSION, OLD_NEWS))
    poller = Poller(sqlite_store, [source(feed_server)], BASELINE)
    poller.poll(now=NOW)
    feed_server.set("/fda.xml", rss())
    (report,) = poller.poll(now=NOW + timedelta(minutes=10))
    assert report.status == "failed"
    assert report.error.startswith("feed changed shape")


def test_backlog_opt_in_and_old_news(sqlite_store, feed_server):
    feed_server.set("/fda.xml", rss(KYMRIAH_EXPANSION))
    poller = Poller(sqlite_store, [source(feed_server, alert_backlog=True)], BASELINE)
    poller.poll(now=NOW)
    feed_server.set("/fda.xml", rss(OLD_NEWS, KYMRIAH_EXPANSION))
    poller.poll(now=NOW + timedelta(minutes=10))
    assert [(e.title, e.alert) for e in events(sqlite_store)] == [
        (KYMRIAH_EXPANSION["title"], True), (OLD_NEWS["title"], False)]


def test_a_detected_first_approval_teaches_the_catalogue(store, feed_server):
    feed_server.set("/fda.xml", rss(TECELRA))
    poller = Poller(store, [source(feed_server, alert_backlog=True)], BASELINE)
    poller.poll(now=NOW)
    (approval,) = events(store)
    assert approval.is_atmp and approval.event_type == "new_product"
    with store.transaction() as session:
        learned = session.scalars(select(ProductRow)).all()
    assert {(p.trade_name, p.proper_name) for p in learned} == {("Tecelra", "afamitresgene autoleucel")}
    assert all(p.learned_from_event == approval.id and p.regulator == "FDA" for p in learned)

    label_update = {"guid": "fda-tecelra-label", "title": "FDA approves updated label for Tecelra",
                    "link": "https://www.fda.gov/news/tecelra-label", "summary": "Tecelra label update.",
                    "date": NOW}
    feed_server.set("/fda.xml", rss(label_update, TECELRA))
    Poller(store, [source(feed_server)], BASELINE).poll(now=NOW + timedelta(minutes=10))
    follow_up = events(store)[-1]
    assert {"name": "Tecelra", "known": True} in follow_up.products

    by_inn = {"guid": "fda-afami-inn", "title": "Afamitresgene autoleucel label updated with new safety data",
              "link": "https://www.fda.gov/news/afami-inn", "summary": "", "date": NOW}
    feed_server.set("/fda.xml", rss(by_inn, label_update, TECELRA))
    Poller(store, [source(feed_server)], BASELINE).poll(now=NOW + timedelta(minutes=20))
    inn_products = events(store)[-1].products
    assert inn_products and all(p["known"] for p in inn_products)


def test_an_approval_teaches_the_news_that_follows_it_in_the_same_batch(sqlite_store, feed_server):
    follow_up = {"guid": "fda-tecelra-label", "title": "FDA approves updated label for Tecelra",
                 "link": "https://www.fda.gov/news/tecelra-label", "summary": "Tecelra label update.", "date": NOW}
    feed_server.set("/fda.xml", rss(follow_up, TECELRA))
    Poller(sqlite_store, [source(feed_server, alert_backlog=True)], BASELINE).poll(now=NOW)
    by_title = {e.title: e for e in events(sqlite_store)}
    assert by_title[TECELRA["title"]].event_type == "new_product"
    assert by_title[follow_up["title"]].event_type == "new_indication"
    assert {"name": "Tecelra", "known": True} in by_title[follow_up["title"]].products
    with sqlite_store.transaction() as session:
        (learned,) = session.scalars(select(ProductRow)).all()
    assert learned.learned_from_event == by_title[TECELRA["title"]].id


def test_a_malformed_feed_keeps_its_entries_and_its_problem_is_in_health(store, feed_server):
    feed_server.set("/bozo.xml", (Path(__file__).parent / "data/feeds/bozo-unescaped-ampersand.xml").read_bytes())
    (report,) = Poller(store, [source(feed_server, path="/bozo.xml")], BASELINE).poll(now=NOW)
    assert (report.status, report.new) == ("ok", 2)
    assert report.problem.startswith("SAXParseException")
    row = source_row(store)
    assert row.last_problem == report.problem
    assert (row.consecutive_failures, row.last_success_at) == (0, NOW)


@pytest.mark.parametrize("etag", ['"v1"', None], ids=["304", "same-body"])
def test_an_unchanged_feed_is_never_parsed(sqlite_store, feed_server, monkeypatch, etag):
    feed_server.set("/fda.xml", rss(KYMRIAH_EXPANSION), etag=etag)
    poller = Poller(sqlite_store, [source(feed_server)], BASELINE)
    poller.poll(now=NOW)
    parsed = []
    monkeypatch.setattr("monitor.poll.parse_feed", lambda *args, **kwargs: parsed.append(args))
    (report,) = poller.poll(now=NOW + timedelta(minutes=10))
    assert report.status == ("not_modified" if etag else "unchanged")
    assert parsed == []


def test_a_crash_while_recording_loses_nothing_and_duplicates_nothing(store, feed_server):
    feed_server.set("/fda.xml", rss(TECELRA, KYMRIAH_EXPANSION), etag='"v1"')
    crashes = [RuntimeError("outbox down")]

    def outbox(session, event):
        if crashes:
            raise crashes.pop()

    poller = Poller(store, [source(feed_server, alert_backlog=True)], BASELINE, outbox=outbox)
    (crashed,) = poller.poll(now=NOW)
    assert crashed.status == "failed"
    assert crashed.error == "internal error while recording: RuntimeError: outbox down"
    assert events(store) == []
    assert source_row(store).etag is None

    (again,) = poller.poll(now=NOW + timedelta(minutes=10))
    assert (again.status, again.new, len(again.events)) == ("ok", 2, 2)
    assert sorted(e.title for e in events(store)) == sorted([TECELRA["title"], KYMRIAH_EXPANSION["title"]])


def test_a_parser_crash_fails_that_source_alone(sqlite_store, feed_server):
    feed_server.set("/good.xml", rss(TECELRA))
    feed_server.set("/crash.xml", rss(KYMRIAH_EXPANSION).replace(b"Kymriah", b"Kymriah &#xD800;"))
    sources = [source(feed_server, "good", "/good.xml"), source(feed_server, "crash", "/crash.xml")]
    reports = {r.source_id: r for r in Poller(sqlite_store, sources, BASELINE).poll(now=NOW)}
    assert (reports["good"].status, reports["good"].new) == ("ok", 1)
    assert reports["crash"].status == "failed"
    assert reports["crash"].error.startswith("not a feed: the parser gave up: UnicodeEncodeError")


def test_items_without_link_or_guid_are_known_by_title_and_date(store, feed_server):
    bare = [{key: value for key, value in item.items() if key != "guid"} | {"link": ""}
            for item in (TECELRA, KYMRIAH_EXPANSION)]
    feed_server.set("/fda.xml", rss(*bare))
    poller = Poller(store, [source(feed_server)], BASELINE)
    (first,) = poller.poll(now=NOW)
    assert (first.new, len(first.events)) == (2, 2)
    feed_server.set("/fda.xml", rss(bare[0] | {"summary": "Corrected summary."}, bare[1]))
    (second,) = poller.poll(now=NOW + timedelta(minutes=10))
    assert (second.new, second.updated, second.seen, second.events) == (0, 1, 1, [])
    (edited,) = [e for e in events(store) if e.title == TECELRA["title"]]
    assert edited.summary == "Corrected summary."


def test_an_item_edited_on_the_feed_that_joined_an_event_updates_that_event(store, feed_server):
    feed_server.set("/press.xml", rss(TECELRA))
    feed_server.set("/cber.xml", rss(TECELRA | {"guid": "cber-8812"}))
    press = source(feed_server, "fda-press", "/press.xml", alert_backlog=True)
    cber = source(feed_server, "fda-cber", "/cber.xml", alert_backlog=True)
    Poller(store, [press], BASELINE).poll(now=NOW)
    Poller(store, [cber], BASELINE).poll(now=NOW + timedelta(minutes=5))
    feed_server.set("/cber.xml", rss(TECELRA | {"guid": "cber-8812", "summary": "Label corrected by CBER."}))
    (edited,) = Poller(store, [cber], BASELINE).poll(now=NOW + timedelta(minutes=10))
    assert (edited.new, edited.updated, edited.events) == (0, 1, [])
    (event,) = events(store)
    assert (event.summary, event.status, event.revision) == ("Label corrected by CBER.", "updated", 2)
    assert sorted(event.sources) == ["fda-cber", "fda-press"]
    feed_server.set("/press.xml", rss(TECELRA, OLD_NEWS))
    (press_again,) = Poller(store, [press], BASELINE).poll(now=NOW + timedelta(minutes=15))
    assert (press_again.new, press_again.updated, press_again.seen) == (1, 0, 1)
    assert events(store)[0].summary == "Label corrected by CBER."


def test_a_source_whose_url_changed_starts_afresh(sqlite_store, feed_server):
    feed_server.set("/old.xml", b"", status=503)
    poller = Poller(sqlite_store, [source(feed_server, path="/old.xml")], BASELINE)
    poller.poll(now=NOW)
    feed_server.set("/old.xml", rss(OLD_NEWS), etag='"old"')
    poller.poll(now=NOW + timedelta(minutes=20))
    feed_server.set("/new.xml", rss(TECELRA, OLD_NEWS), etag='"new"')
    moved = Poller(sqlite_store, [source(feed_server, path="/new.xml")], BASELINE)
    with sqlite_store.transaction() as session:
        session.get(SourceRow, "fda-press").next_poll_at = NOW + timedelta(hours=6)
    (report,) = moved.poll(due_only=True, now=NOW + timedelta(minutes=30))
    assert (report.status, report.new, report.seen) == ("ok", 1, 1)
    assert "if-none-match" not in feed_server.requests_to("/new.xml")[0].headers
    assert [e.alert for e in events(sqlite_store)] == [False, False]


def test_one_source_polled_alone_is_not_charged_when_the_other_servers_are_unreachable_too(sqlite_store):
    sources = [SourceConfig(id=f"s{n}", regulator="EMA", name="n", url=f"http://127.0.0.1:{closed_port()}/feed.xml")
               for n in range(3)]
    (report,) = Poller(sqlite_store, sources, BASELINE).poll(only="s0", now=NOW)
    assert (report.status, report.charged) == ("failed", False)
    assert source_row(sqlite_store, "s0").consecutive_failures == 0


def test_one_source_polled_alone_is_charged_when_another_server_answers(sqlite_store, feed_server):
    sources = [SourceConfig(id="down", regulator="EMA", name="n", url=f"http://127.0.0.1:{closed_port()}/feed.xml"),
               source(feed_server, "up", "/unprogrammed.xml")]
    (report,) = Poller(sqlite_store, sources, BASELINE).poll(only="down", now=NOW)
    assert (report.status, report.charged) == ("failed", True)
    assert source_row(sqlite_store, "down").consecutive_failures == 1
