"""fetch() against a real HTTP server on loopback (tests/feedserver.py)."""

from __future__ import annotations

import gzip
import hashlib
from datetime import UTC, datetime
from pathlib import Path

import pytest
from feedserver import closed_port

from monitor.config import SourceConfig
from monitor.fetch import DEFAULT_USER_AGENT, FetchError, fetch, make_client, parse_retry_after, reachable
from monitor.models import Validators
from monitor.parse import ParseError, parse_feed

FEEDS = Path(__file__).parent / "data" / "feeds"
FDA_DRUGS = (FEEDS / "fda-drugs-whatsnew-2026-09-25-excerpt.xml").read_bytes()
NO_VALIDATORS = Validators()


def source(url: str, **overrides) -> SourceConfig:
    return SourceConfig(id="fda-drugs", regulator="FDA", name="FDA drugs", url=url, **overrides)


def fetch_error(src: SourceConfig, validators: Validators = NO_VALIDATORS, **kwargs) -> FetchError:
    with pytest.raises(FetchError) as raised:
        fetch(src, validators, **kwargs)
    return raised.value


def test_first_fetch_returns_the_body_and_its_validators(feed_server):
    feed_server.set("/rss.xml", FDA_DRUGS, etag='"v1"', last_modified="Fri, 25 Sep 2026 18:48:03 GMT")
    result = fetch(source(feed_server.url("/rss.xml")), NO_VALIDATORS)
    assert result.status == "fetched"
    assert result.body == FDA_DRUGS
    assert result.http_status == 200
    assert result.content_type == "application/rss+xml"
    assert result.url == feed_server.url("/rss.xml")
    assert result.validators == Validators(
        etag='"v1"', last_modified="Fri, 25 Sep 2026 18:48:03 GMT", body_hash=hashlib.sha256(FDA_DRUGS).hexdigest()
    )


def test_etag_is_sent_back_and_304_means_not_modified(feed_server):
    feed_server.set("/rss.xml", FDA_DRUGS, etag='"v1"')
    src = source(feed_server.url("/rss.xml"))
    first = fetch(src, NO_VALIDATORS)
    second = fetch(src, first.validators)
    assert second.status == "not_modified"
    assert second.body is None
    assert second.validators == first.validators
    first_request, second_request = feed_server.requests_to("/rss.xml")
    assert "if-none-match" not in first_request.headers
    assert second_request.headers["if-none-match"] == '"v1"'


def test_last_modified_is_sent_back_as_if_modified_since(feed_server):
    stamp = "Fri, 25 Sep 2026 18:48:03 GMT"
    feed_server.set("/rss.xml", FDA_DRUGS, last_modified=stamp)
    src = source(feed_server.url("/rss.xml"))
    second = fetch(src, fetch(src, NO_VALIDATORS).validators)
    assert second.status == "not_modified"
    assert feed_server.requests_to("/rss.xml")[1].headers["if-modified-since"] == stamp


def test_a_server_without_validators_is_caught_by_the_body_hash(feed_server):
    feed_server.set("/rss.xml", FDA_DRUGS)
    src = source(feed_server.url("/rss.xml"))
    first = fetch(src, NO_VALIDATORS)
    again = fetch(src, first.validators)
    assert again.status == "unchanged"
    assert again.body is None
    assert again.validators.body_hash == first.validators.body_hash

    feed_server.set("/rss.xml", FDA_DRUGS.replace(b"Gazyva", b"Gazyva (corrected)"))
    changed = fetch(src, first.validators)
    assert changed.status == "fetched"
    assert b"Gazyva (corrected)" in changed.body
    assert changed.validators.body_hash != first.validators.body_hash


def test_user_agent_accept_and_source_headers_are_sent(feed_server):
    feed_server.set("/rss.xml", FDA_DRUGS)
    fetch(source(feed_server.url("/rss.xml"), headers={"Accept-Language": "en-GB"}), NO_VALIDATORS)
    [request] = feed_server.requests
    assert request.headers["user-agent"] == DEFAULT_USER_AGENT
    assert "application/rss+xml" in request.headers["accept"]
    assert request.headers["accept-language"] == "en-GB"


def test_a_source_can_override_the_user_agent(feed_server):
    feed_server.set("/rss.xml", FDA_DRUGS)
    with make_client() as client:
        fetch(source(feed_server.url("/rss.xml"), headers={"user-agent": "custom/1.0"}), NO_VALIDATORS, client=client)
    assert feed_server.requests[0].headers["User-Agent"] == "custom/1.0"


def test_a_shared_client_serves_several_sources(feed_server):
    feed_server.set("/a.xml", FDA_DRUGS)
    feed_server.set("/b.xml", FDA_DRUGS.replace(b"Drugs", b"Biologics"))
    with make_client() as client:
        a = fetch(source(feed_server.url("/a.xml")), NO_VALIDATORS, client=client)
        b = fetch(source(feed_server.url("/b.xml")), NO_VALIDATORS, client=client)
    assert (a.status, b.status) == ("fetched", "fetched")
    assert a.validators.body_hash != b.validators.body_hash
    assert [r.headers["user-agent"] for r in feed_server.requests] == [DEFAULT_USER_AGENT] * 2


def test_server_error_carries_the_status(feed_server):
    feed_server.set("/rss.xml", b"oops", status=500, content_type="text/plain")
    error = fetch_error(source(feed_server.url("/rss.xml")))
    assert error.reason == "HTTP 500"
    assert error.http_status == 500
    assert error.network is False
    assert error.retry_after is None


def test_429_with_retry_after_seconds(feed_server):
    feed_server.set("/rss.xml", b"slow down", status=429, content_type="text/plain", headers={"Retry-After": "120"})
    error = fetch_error(source(feed_server.url("/rss.xml")))
    assert (error.http_status, error.retry_after) == (429, 120.0)


def test_503_with_retry_after_as_a_date_in_the_past_means_now(feed_server):
    feed_server.set("/rss.xml", b"", status=503, headers={"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"})
    error = fetch_error(source(feed_server.url("/rss.xml")))
    assert (error.http_status, error.retry_after) == (503, 0.0)


@pytest.mark.parametrize(
    ("header", "seconds"),
    [("120", 120.0), (" 0 ", 0.0), ("Wed, 21 Oct 2015 07:30:00 GMT", 120.0), ("soon", None), ("", None), (None, None)],
)
def test_parse_retry_after(header, seconds):
    assert parse_retry_after(header, now=datetime(2015, 10, 21, 7, 28, tzinfo=UTC)) == seconds


def test_404_is_an_error_of_the_source(feed_server):
    error = fetch_error(source(feed_server.url("/moved.xml")))
    assert (error.reason, error.http_status, error.network) == ("HTTP 404", 404, False)


def test_a_slow_server_times_out(feed_server):
    feed_server.set("/rss.xml", FDA_DRUGS, delay=1.0)
    error = fetch_error(source(feed_server.url("/rss.xml"), timeout=0.2))
    assert error.reason == "timeout after 0.2s"
    assert error.network is False


def test_a_declared_body_over_the_cap_is_refused(feed_server):
    feed_server.set("/rss.xml", b"x" * 2_000)
    error = fetch_error(source(feed_server.url("/rss.xml")), max_bytes=1_000)
    assert error.reason == "body larger than 1 kB"


def test_a_compressed_body_is_capped_at_its_real_size(feed_server):
    bomb = gzip.compress(b"<rss>" + b" " * 200_000)
    assert len(bomb) < 50_000
    feed_server.set("/rss.xml", bomb, headers={"Content-Encoding": "gzip"})
    error = fetch_error(source(feed_server.url("/rss.xml")), max_bytes=50_000)
    assert error.reason == "body larger than 50 kB"


def test_a_body_cut_short_is_an_error(feed_server):
    feed_server.set("/rss.xml", FDA_DRUGS, truncate_at=300)
    error = fetch_error(source(feed_server.url("/rss.xml")))
    assert error.reason == "connection closed before the response was complete"


def test_redirects_are_followed_and_the_final_url_reported(feed_server):
    feed_server.redirect("/old.xml", feed_server.url("/rss.xml"), status=301)
    feed_server.set("/rss.xml", FDA_DRUGS)
    result = fetch(source(feed_server.url("/old.xml")), NO_VALIDATORS)
    assert result.status == "fetched"
    assert result.url == feed_server.url("/rss.xml")


def test_a_redirect_loop_stops(feed_server):
    feed_server.redirect("/a", feed_server.url("/b"))
    feed_server.redirect("/b", feed_server.url("/a"))
    with make_client() as client:
        error = fetch_error(source(feed_server.url("/a")), client=client)
    assert error.reason == "too many redirects"
    assert len(feed_server.requests) == 6


def test_a_redirect_to_an_html_apology_page_fails_in_parse(feed_server):
    feed_server.redirect("/rss.xml", feed_server.url("/apology_objects/abuse-detection-apology.html"))
    feed_server.set("/apology_objects/abuse-detection-apology.html", (FEEDS / "fda-apology.html").read_bytes(),
                    content_type="text/html; charset=utf-8")
    result = fetch(source(feed_server.url("/rss.xml")), NO_VALIDATORS)
    with pytest.raises(ParseError, match="FDA Apology"):
        parse_feed("fda-drugs", result.body, content_type=result.content_type, url=result.url)


def test_connection_refused_looks_like_our_network(feed_server):
    error = fetch_error(source(f"http://127.0.0.1:{closed_port()}/rss.xml"))
    assert error.reason == "connection refused"
    assert error.network is True
    assert error.http_status is None


def test_file_url_is_read_and_skipped_when_unchanged(tmp_path):
    feed = tmp_path / "feed.xml"
    feed.write_bytes(FDA_DRUGS)
    src = source(feed.as_uri())
    first = fetch(src, NO_VALIDATORS)
    assert (first.status, first.body) == ("fetched", FDA_DRUGS)
    assert first.validators.body_hash == hashlib.sha256(FDA_DRUGS).hexdigest()
    assert fetch(src, first.validators).status == "unchanged"


def test_missing_file_is_an_error(tmp_path):
    missing = tmp_path / "nowhere.xml"
    error = fetch_error(source(missing.as_uri()))
    assert error.reason == f"file not found: {missing}"
    assert error.network is False


def test_file_over_the_cap_is_refused(tmp_path):
    feed = tmp_path / "feed.xml"
    feed.write_bytes(b"x" * 2_000)
    assert fetch_error(source(feed.as_uri()), max_bytes=1_500).reason == "body larger than 1.5 kB"


def test_a_redirect_to_a_host_name_that_cannot_be_looked_up_is_an_error_of_the_source(feed_server):
    feed_server.redirect("/rss.xml", "https://bad..host/feed.xml")
    error = fetch_error(source(feed_server.url("/rss.xml")))
    assert (error.reason, error.network) == ("host name that cannot be looked up (an empty or over-long label)", False)


def test_any_answer_means_a_server_is_reachable_and_a_refused_connection_does_not(feed_server):
    with make_client() as client:
        assert reachable(client, feed_server.url("/not-programmed.xml")) is True
        assert reachable(client, f"http://127.0.0.1:{closed_port()}/feed.xml") is False
    assert feed_server.requests == [], "a probe asks for headers only, it never GETs the feed"
