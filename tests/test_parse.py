from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from monitor.parse import ParseError, parse_feed

FEEDS = Path(__file__).parent / "data" / "feeds"


def parse(name: str, *, content_type: str | None = None, url: str = "https://feeds.example/feed"):
    return parse_feed("src", (FEEDS / name).read_bytes(), content_type=content_type, url=url)


def test_real_fda_drugs_feed_without_guid_is_keyed_by_link_with_eastern_dates_in_utc():
    feed = parse("fda-drugs-whatsnew-2026-09-25-excerpt.xml", content_type="application/rss+xml; charset=utf-8")
    assert feed.version == "rss20"
    assert feed.problem is None
    assert len(feed.entries) == 4
    atebrioz = feed.entries[1]
    assert atebrioz.source_id == "src"
    assert atebrioz.guid is None
    assert atebrioz.key == (
        "link:http://www.fda.gov/drugs/news-events-human-drugs/"
        "fda-approves-third-treatment-fibrodysplasia-ossificans-progressiva"
    )
    assert atebrioz.title == "FDA Approves Third Treatment for Fibrodysplasia Ossificans Progressiva"
    assert atebrioz.summary.startswith("FDA has approved Atebrioz (zilurgisertib) tablets")
    assert atebrioz.published == datetime(2026, 9, 25, 18, 46, 15, tzinfo=UTC)
    assert atebrioz.updated is None
    assert len({entry.key for entry in feed.entries}) == 4


def test_real_fda_2019_feed_recovers_the_date_hidden_in_a_time_element():
    feed = parse("fda-drug-recalls-2019-05-excerpt.xml")
    [entry] = feed.entries
    assert entry.published == datetime(2019, 5, 3, 19, 21, 28, tzinfo=UTC)
    assert "Recall of Losartan Potassium 25 mg, 50 mg and 100 mg Tablets" in entry.title
    assert "\n" not in entry.title and "  " not in entry.title
    assert entry.key == (
        "guid:http://www.fda.gov/safety/recalls-market-withdrawals-safety-alerts/"
        "vivimed-life-sciences-pvt-ltd-issues-voluntary-nationwide-recall-losartan-potassium-25-mg-50-mg-and"
    )
    assert entry.summary.endswith("interim acceptable exposu")


def test_fda_press_feed_with_wrapped_titles_and_links_and_no_guid():
    feed = parse("fda-press-no-guid.xml")
    first, roundup = feed.entries
    assert first.title == "FDA Approves First Cell Therapy for Treatment of a Rare Test Condition"
    assert first.link == (
        "https://www.fda.gov/news-events/press-announcements/fda-approves-first-cell-therapy-rare-test-condition"
    )
    assert first.key == f"link:{first.link}"
    assert first.published == datetime(2024, 7, 16, 20, 5, 12, tzinfo=UTC)
    assert roundup.link == "https://www.fda.gov/news-events/press-announcements/fda-roundup-january-12-2024"
    assert roundup.summary == "Today, the FDA is providing an at-a-glance summary of news & updates."
    assert roundup.published == datetime(2024, 1, 12, 19, 30, tzinfo=UTC)


def test_ema_feed_keeps_its_non_permalink_guid_and_categories():
    feed = parse("ema-news.xml")
    gene_therapy = feed.entries[0]
    assert gene_therapy.key == "guid:31457 at https://www.ema.europa.eu/en"
    assert gene_therapy.guid == "31457 at https://www.ema.europa.eu/en"
    assert gene_therapy.categories == ("Medicines", "Advanced therapies")
    assert gene_therapy.summary == "EMA's human medicines committee (CHMP) recommended a one-time gene therapy."
    assert gene_therapy.published == datetime(2023, 12, 15, 12, 0, tzinfo=UTC)


def test_govuk_atom_entry_keeps_one_key_across_edits_and_dates_from_updated():
    feed = parse("govuk-mhra.atom", content_type="application/atom+xml; charset=utf-8")
    assert feed.version == "atom10"
    press = feed.entries[0]
    assert press.key == "guid:https://www.gov.uk/government/news/mhra-authorises-a-test-gene-therapy"
    assert press.link == "https://www.gov.uk/government/news/mhra-authorises-a-test-gene-therapy"
    assert press.title == "Press release: MHRA authorises a test gene therapy"
    assert press.categories == ("Press release",)
    assert press.published == press.updated == datetime(2024, 2, 1, 9, 30, tzinfo=UTC)
    assert feed.entries[1].title == "Drug Safety Update: test medicine & new advice"

    edited = (FEEDS / "govuk-mhra.atom").read_bytes().replace(
        b"#2024-02-01T09:30:00+00:00</id>\n    <updated>2024-02-01T09:30:00+00:00",
        b"#2024-02-09T11:00:00+00:00</id>\n    <updated>2024-02-09T11:00:00+00:00",
    )
    again = parse_feed("src", edited).entries[0]
    assert again.key == press.key
    assert again.fingerprint != press.fingerprint


def test_canada_atom_strips_html_titles_and_scripts_in_summaries():
    feed = parse("canada-health-news.atom")
    authorised = feed.entries[0]
    assert authorised.title == "Health Canada authorizes a test CAR T-cell therapy for adults"
    assert "alert" not in authorised.summary
    assert authorised.summary == "January 18, 2024 | Ottawa, Ontario | Health Canada A new option for patients."
    assert authorised.published == datetime(2024, 1, 18, 15, 15, tzinfo=UTC)


def test_pmda_rdf_feed_reads_dc_date_in_jst():
    feed = parse("pmda-whatsnew.rdf")
    assert feed.version == "rss10"
    first, second = feed.entries
    assert first.title == "再生医療等製品の承認品目一覧を更新しました"
    assert first.key == "guid:https://www.pmda.go.jp/review-services/drug-reviews/review-information/cd/0001.html"
    assert first.published == datetime(2024, 3, 26, 8, 0, tzinfo=UTC)
    assert second.summary == ""
    assert second.published == datetime(2024, 3, 25, 1, 30, tzinfo=UTC)


def test_malformed_feed_keeps_its_entries_and_says_what_was_wrong():
    feed = parse("bozo-unescaped-ampersand.xml", content_type="application/rss+xml")
    titles = [entry.title for entry in feed.entries]
    assert titles == ["Research & Development update for a test product", "Second item"]
    assert feed.problem.startswith("SAXParseException: ")


def test_feed_truncated_after_two_items_keeps_them():
    feed = parse("truncated-after-two-items.xml")
    assert [entry.link for entry in feed.entries] == ["https://example.org/news/one", "https://example.org/news/two"]
    assert "SAXParseException" in feed.problem


def test_wrong_content_type_is_recorded_but_the_feed_is_used():
    feed = parse("ema-news.xml", content_type="text/html; charset=utf-8")
    assert len(feed.entries) == 2
    assert feed.problem.startswith("NonXMLContentType: ")


def test_shared_guids_untitled_items_and_repeats():
    feed = parse("shared-guid-and-untitled.xml")
    keys = [entry.key for entry in feed.entries]
    assert keys == ["link:https://example.org/news/first", "link:https://example.org/news/second"]
    assert feed.entries[0].guid == "https://example.org/news"
    assert feed.problem == "2 entries without title or link skipped; 1 duplicate entry dropped"


def test_a_well_formed_feed_with_no_items_is_quiet_not_broken():
    feed = parse("empty-channel.xml", content_type="application/rss+xml")
    assert feed.version == "rss20"
    assert feed.entries == []
    assert feed.problem is None


def test_relative_links_are_resolved_against_the_feed_url():
    body = b'<rss version="2.0"><channel><item><title>A</title><link>/news/a</link></item></channel></rss>'
    [entry] = parse_feed("src", body, url="https://www.fda.gov/feeds/rss.xml").entries
    assert entry.link == "https://www.fda.gov/news/a"


@pytest.mark.parametrize(
    ("name", "content_type", "message"),
    [
        ("fda-apology.html", "text/html; charset=utf-8", "an HTML page ('FDA Apology')"),
        ("fda-apology.html", None, "an HTML page ('FDA Apology')"),
        ("json-error.json", "application/json", "a JSON document"),
        ("garbage.bin", "application/octet-stream", "SAXParseException: "),
        ("truncated-in-first-item.xml", "application/rss+xml", "SAXParseException: "),
    ],
)
def test_what_is_not_a_feed_raises(name, content_type, message):
    with pytest.raises(ParseError) as raised:
        parse(name, content_type=content_type)
    assert str(raised.value).startswith(message)


def test_an_empty_body_raises():
    with pytest.raises(ParseError, match="empty body"):
        parse_feed("src", b"  \n", content_type="application/rss+xml")


def test_charset_mismatch_keeps_the_entries_and_records_the_override():
    text = (FEEDS / "pmda-whatsnew.rdf").read_text(encoding="utf-8").replace('encoding="UTF-8"', 'encoding="Shift_JIS"')
    feed = parse_feed("pmda", text.encode("shift_jis"), content_type="text/xml; charset=utf-8")
    assert feed.entries[0].title == "再生医療等製品の承認品目一覧を更新しました"
    assert feed.problem.startswith("CharacterEncodingOverride: ")


def test_dates_that_cannot_be_read_leave_the_entry_without_a_date():
    dates = ["sometime in May", "Tue, 32 Jan 2024 10:00 GMT", "9999-12-31T23:59:59-14:00"]
    items = "".join(f"<item><title>{n}</title><link>https://x.example/{n}</link><pubDate>{date}</pubDate></item>"
                    for n, date in enumerate(dates))
    body = f'<rss version="2.0"><channel><title>x</title>{items}</channel></rss>'.encode()
    feed = parse_feed("src", body, content_type="application/rss+xml")
    assert [(entry.title, entry.published) for entry in feed.entries] == [("0", None), ("1", None), ("2", None)]
    assert feed.problem is None


def test_a_body_that_crashes_the_parser_is_not_a_feed():
    body = b'<rss version="2.0"><channel><item><title>A&#xD800;</title><link>https://x.example/a</link></item></channel></rss>'
    with pytest.raises(ParseError, match=r"^the parser gave up: UnicodeEncodeError"):
        parse_feed("src", body)
