"""The shipped source lists load, and every feed in them can actually be read by fetch()."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import pytest

from monitor.config import load_sources
from monitor.fetch import fetch
from monitor.models import Validators
from monitor.parse import parse_feed

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("path", ["config/sources.yaml", "examples/config/sources.yaml"])
def test_source_list_loads_with_unique_fetchable_urls(path):
    sources = load_sources(ROOT / path)
    assert len(sources) >= 5
    assert all(urlsplit(source.url).scheme in ("https", "file") for source in sources)
    assert len({source.url for source in sources}) == len(sources)
    assert all(15 * 60 <= source.interval <= 3600 for source in sources)


def test_real_config_covers_each_regulator_with_a_feed():
    regulators = {source.regulator for source in load_sources(ROOT / "config/sources.yaml")}
    assert regulators == {"FDA", "EMA", "MHRA", "HealthCanada", "PMDA"}


def test_every_example_feed_is_found_and_parses():
    for source in load_sources(ROOT / "examples/config/sources.yaml"):
        result = fetch(source, Validators())
        feed = parse_feed(source.id, result.body, content_type=result.content_type, url=result.url)
        assert feed.problem is None, source.id
        assert len(feed.entries) >= 4, source.id
