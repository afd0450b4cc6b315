from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from monitor.normalize import (
    MAX_KEY_LENGTH,
    canonical_link,
    clean_title,
    entry_key,
    fingerprint,
    plain_text,
    to_utc,
    utc_from_string,
    utc_from_struct,
    xml_chars,
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("https://www.fda.gov/news", "https://www.fda.gov/news"),
        ("\n    https://www.fda.gov/news-events/\n    fda-approves-x\n  ", "https://www.fda.gov/news-events/fda-approves-x"),
        ("HTTPS://WWW.FDA.GOV/News", "https://www.fda.gov/News"),
        ("https://www.fda.gov:443/a", "https://www.fda.gov/a"),
        ("http://www.fda.gov:80/a", "http://www.fda.gov/a"),
        ("http://localhost:8080/a", "http://localhost:8080/a"),
        ("https://www.ema.europa.eu/en/news/x#main-content", "https://www.ema.europa.eu/en/news/x"),
        ("https://a.example/x?utm_source=rss&id=7&UTM_Medium=feed&fbclid=abc&b=2", "https://a.example/x?id=7&b=2"),
        ("https://a.example/x?gclid=1&mc_cid=2&mc_eid=3&_hsenc=4&_hsmi=5&cmpid=6", "https://a.example/x"),
        ("https://a.example/x?z=1&a=2&flag", "https://a.example/x?z=1&a=2&flag"),
        ("https://a.example/x?q=a%20b&utm_campaign=z", "https://a.example/x?q=a%20b"),
        ("https://Example.org", "https://example.org/"),
        ("http://[2001:DB8::1]:8080/feed", "http://[2001:db8::1]:8080/feed"),
    ],
)
def test_canonical_link(raw, expected):
    assert canonical_link(raw) == expected


@pytest.mark.parametrize(
    "raw", [None, "", "   ", "javascript:alert(1)", "mailto:press@fda.hhs.gov", "/relative/path", "https://a:99999/"]
)
def test_canonical_link_refuses_what_is_not_a_web_link(raw):
    assert canonical_link(raw) is None


def test_plain_text_drops_markup_scripts_and_styles():
    html = (
        '<p>EMA&#039;s committee <abbr title="x">CHMP</abbr> &amp; partners</p>'
        "<script>alert('pwned')</script><style>p { color: red }</style>"
        "<ul><li>first</li><li>second</li></ul>"
    )
    assert plain_text(html) == "EMA's committee CHMP & partners first second"


def test_plain_text_keeps_block_boundaries_and_collapses_whitespace():
    assert plain_text("<p>one</p><p>two</p>line<br/>break\n\n\t  end&nbsp;&nbsp;here") == "one two line break end here"


def test_plain_text_leaves_plain_text_and_stray_angle_brackets_alone():
    assert plain_text("dose < 5 mg and > 1 mg") == "dose < 5 mg and > 1 mg"
    assert plain_text(None) == ""


def test_plain_text_drops_an_unclosed_script_entirely():
    assert plain_text("Visible<script>document.write('x')") == "Visible"


def test_clean_title_joins_wrapped_lines():
    assert clean_title("FDA Approves First Cell Therapy for\n          Treatment of X\n") == (
        "FDA Approves First Cell Therapy for Treatment of X"
    )
    assert clean_title(None) == ""


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Fri, 25 Sep 2026 14:48:03 EDT", datetime(2026, 9, 25, 18, 48, 3, tzinfo=UTC)),
        ("Fri, 12 Jan 2024 14:30:00 EST", datetime(2024, 1, 12, 19, 30, tzinfo=UTC)),
        ("Fri, 15 Dec 2023 13:00:00 +0100", datetime(2023, 12, 15, 12, 0, tzinfo=UTC)),
        ("Mon, 04 Mar 2024 09:00:00 GMT", datetime(2024, 3, 4, 9, 0, tzinfo=UTC)),
        ("2024-03-26T17:00:00+09:00", datetime(2024, 3, 26, 8, 0, tzinfo=UTC)),
        ("2024-01-18T10:15:00-05:00", datetime(2024, 1, 18, 15, 15, tzinfo=UTC)),
        ("2019-05-03T19:21:28Z", datetime(2019, 5, 3, 19, 21, 28, tzinfo=UTC)),
        ("2024-02-16", datetime(2024, 2, 16, tzinfo=UTC)),
        ("Mon, 15 Jan 2024 10:00:00 -0000", datetime(2024, 1, 15, 10, 0, tzinfo=UTC)),
        (
            '<time datetime="2019-05-03T19:21:28Z">Fri, 05/03/2019 - 15:21</time>',
            datetime(2019, 5, 3, 19, 21, 28, tzinfo=UTC),
        ),
        ("  <span>2024-02-16T09:00:00+09:00</span> ", datetime(2024, 2, 16, 0, 0, tzinfo=UTC)),
    ],
)
def test_utc_from_string(raw, expected):
    parsed = utc_from_string(raw)
    assert parsed == expected
    assert parsed.tzinfo is UTC


@pytest.mark.parametrize(
    "raw", [None, "", "soon", "Fri, 05/03/2019 - 15:21", "Tue, 32 Jan 2024 10:00:00 GMT", "<time>no attribute</time>"]
)
def test_utc_from_string_gives_none_for_what_it_cannot_read(raw):
    assert utc_from_string(raw) is None


def test_utc_from_struct_reads_feedparser_values_as_utc():
    parsed = time.struct_time((2024, 2, 16, 9, 0, 0, 4, 47, 0))
    assert utc_from_struct(parsed) == datetime(2024, 2, 16, 9, 0, tzinfo=UTC)
    assert utc_from_struct(None) is None


def test_to_utc_prefers_the_parsed_value_and_falls_back_to_the_raw_string():
    parsed = time.struct_time((2024, 2, 16, 9, 0, 0, 4, 47, 0))
    assert to_utc(parsed, "2000-01-01T00:00:00Z") == datetime(2024, 2, 16, 9, 0, tzinfo=UTC)
    assert to_utc(None, "2000-01-01T00:00:00Z") == datetime(2000, 1, 1, tzinfo=UTC)
    assert to_utc(None, "not a date") is None


def test_fingerprint_ignores_layout_but_sees_edits():
    when = datetime(2024, 2, 16, tzinfo=UTC)
    base = fingerprint("FDA approves X", "Summary text.", "https://www.fda.gov/x", when, None)
    assert base == fingerprint("  FDA approves\n   X ", "Summary   text.", "https://WWW.fda.gov/x#top", when, None)
    assert base != fingerprint("FDA approves Y", "Summary text.", "https://www.fda.gov/x", when, None)
    assert base != fingerprint("FDA approves X", "Summary text, corrected.", "https://www.fda.gov/x", when, None)
    assert base != fingerprint("FDA approves X", "Summary text.", "https://www.fda.gov/x", when, when)
    assert len(base) == 64


def test_entry_key_prefers_the_guid():
    assert entry_key(" 31457 at https://www.ema.europa.eu/en ", "https://x.example/a", "T", None) == (
        "guid:31457 at https://www.ema.europa.eu/en"
    )


def test_entry_key_cleans_permalink_guids_like_links():
    wrapped = "\n   http://www.fda.gov/safety/recalls/\n   item-1\n  "
    assert entry_key(wrapped, None, "T", None) == "guid:http://www.fda.gov/safety/recalls/item-1"
    govuk = "https://www.gov.uk/government/news/x#2024-02-01T09:30:00+00:00"
    edited = "https://www.gov.uk/government/news/x#2024-03-05T12:00:00+00:00"
    assert entry_key(govuk, None, "T", None) == entry_key(edited, None, "T", None) == (
        "guid:https://www.gov.uk/government/news/x"
    )


def test_entry_key_falls_back_to_the_link_then_to_a_hash():
    when = datetime(2024, 2, 16, tzinfo=UTC)
    assert entry_key(None, " https://www.fda.gov/x?utm_source=rss ", "T", when) == "link:https://www.fda.gov/x"
    assert entry_key("   ", "https://www.fda.gov/x", "T", when) == "link:https://www.fda.gov/x"
    hashed = entry_key(None, None, "FDA   approves X", when)
    assert hashed.startswith("hash:") and len(hashed) == len("hash:") + 64
    assert hashed == entry_key(None, "javascript:void(0)", "FDA approves X", when)
    assert hashed != entry_key(None, None, "FDA approves X", None)


def test_entry_key_hashes_identities_too_long_for_the_store():
    long_link = "https://www.fda.gov/" + "a" * 400
    key = entry_key(None, long_link, "T", None)
    assert len(key) <= MAX_KEY_LENGTH
    assert key.startswith("link:sha256:")
    assert key != entry_key(None, long_link + "b", "T", None)


def test_characters_no_feed_may_carry_are_dropped_everywhere():
    assert xml_chars("a\x00b\x1bc\ud800d\ufffee\tf\ng") == "abcde\tf\ng"
    assert clean_title("FDA\x00 approves\x0c X") == "FDA approves X"
    assert plain_text("<p>one\x00</p>two\x08") == "one two"
    assert canonical_link("https://www.fda.gov/a\x00b") == "https://www.fda.gov/ab"
    assert plain_text("日本語 — Ünïcödé") == "日本語 — Ünïcödé"
