"""The test server itself: other tests trust it to answer exactly as programmed."""

from __future__ import annotations

import httpx


def test_unprogrammed_paths_answer_404_and_are_logged(feed_server):
    response = httpx.get(feed_server.url("/nothing"), headers={"X-Probe": "1"})
    assert response.status_code == 404
    assert feed_server.requests[0].path == "/nothing"
    headers = feed_server.requests[0].headers
    assert headers["x-probe"] == headers["X-Probe"] == headers.get("X-PROBE") == "1"
    assert "X-Probe" in headers and "X-Missing" not in headers


def test_weak_and_listed_etags_match(feed_server):
    feed_server.set("/feed", b"<rss/>", etag='"abc"')
    assert httpx.get(feed_server.url("/feed"), headers={"If-None-Match": 'W/"abc"'}).status_code == 304
    assert httpx.get(feed_server.url("/feed"), headers={"If-None-Match": '"x", "abc"'}).status_code == 304
    assert httpx.get(feed_server.url("/feed"), headers={"If-None-Match": '"other"'}).content == b"<rss/>"


def test_post_responses_follow_the_programmed_sequence_then_repeat_the_last(feed_server):
    feed_server.set_post_responses("/hook", [(500, {}), (429, {"Retry-After": "3"}), (200, {}, b"accepted")])
    with httpx.Client() as client:
        answers = [client.post(feed_server.url("/hook"), json={"n": n}) for n in range(4)]
    assert [a.status_code for a in answers] == [500, 429, 200, 200]
    assert answers[1].headers["retry-after"] == "3"
    assert answers[3].text == "accepted"
    posts = feed_server.posts_to("/hook")
    assert [p.body for p in posts] == [b'{"n":0}', b'{"n":1}', b'{"n":2}', b'{"n":3}']
    assert posts[0].headers["content-type"] == "application/json"


def test_unprogrammed_posts_are_accepted_and_recorded(feed_server):
    assert httpx.post(feed_server.url("/anything"), content=b"payload").status_code == 200
    assert feed_server.posts[0].body == b"payload"
