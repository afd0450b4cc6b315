from pathlib import Path

import pytest

from monitor.config import ConfigError, Settings, load_sources, parse_duration

GOOD_SOURCE = """\
sources:
  - id: fda-press
    regulator: FDA
    name: FDA press announcements
    url: https://www.fda.gov/press.xml
    kind: rss
    interval: 15m
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sources.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(60, 60), ("90", 90), ("30s", 30), ("15m", 900), ("1h", 3600), ("1h30m", 5400), ("1d", 86400)],
)
def test_durations(value, seconds):
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("value", [0, -5, "", "soon", "15 minutes", True, None, "0m"])
def test_bad_durations(value):
    with pytest.raises(ValueError):
        parse_duration(value)


def test_a_valid_source_loads_with_defaults(tmp_path):
    (source,) = load_sources(write(tmp_path, GOOD_SOURCE))
    assert source.id == "fda-press"
    assert source.interval == 900
    assert source.enabled is True
    assert source.alert_backlog is False


def test_relative_file_url_resolves_against_the_config_folder(tmp_path):
    text = GOOD_SOURCE.replace("https://www.fda.gov/press.xml", "file:feeds/fda.xml")
    (source,) = load_sources(write(tmp_path, text))
    assert source.url == (tmp_path / "feeds" / "fda.xml").as_uri()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("kind: rss", "kind: rss\n    colour: blue"), "colour: unknown key"),
        (("https://www.fda.gov/press.xml", "ftp://example.org/feed"), "not an http(s) or file:// URL"),
        (("interval: 15m", "interval: whenever"), "not a duration"),
        (("interval: 15m", "interval: 0"), "duration must be positive"),
        (("id: fda-press", "id: FDA Press!"), "id:"),
        (("    regulator: FDA\n", ""), "regulator: Field required"),
        (("https://www.fda.gov/press.xml", "https://www.fda.gov:99999/press.xml"), "not a usable URL"),
        (("https://www.fda.gov/press.xml", "https://www..fda.gov/press.xml"), "not a usable URL"),
        (("kind: rss", "kind: rss\n    headers: {X-Token: \"a\\r\\nHost: evil\"}"), "line break or NUL"),
        (("kind: rss", "kind: rss\n    headers: {Accept Language: en}"), "not a valid header name"),
    ],
)
def test_bad_entries_name_file_line_and_entry(tmp_path, change, message):
    path = write(tmp_path, GOOD_SOURCE.replace(*change))
    with pytest.raises(ConfigError) as caught:
        load_sources(path)
    text = str(caught.value)
    assert text.startswith(f"{path}:2 ")
    assert "source" in text
    assert message in text


def test_duplicate_id_points_at_both_entries(tmp_path):
    second = GOOD_SOURCE.split("sources:\n", 1)[1]
    path = write(tmp_path, GOOD_SOURCE + second)
    with pytest.raises(ConfigError, match=r":8 \(source 'fda-press'\): duplicate id \(first defined on line 2\)"):
        load_sources(path)


def test_broken_yaml_and_missing_file_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_sources(write(tmp_path, "sources:\n  - id: [unclosed\n"))
    with pytest.raises(ConfigError, match="file not found"):
        load_sources(tmp_path / "absent.yaml")
    with pytest.raises(ConfigError, match="expected a top-level `sources:` list"):
        load_sources(write(tmp_path, "feeds: []\n"))


def test_settings_come_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("ATMP_MONITOR_CONFIG", str(tmp_path))
    monkeypatch.setenv("DATABASE_URL", "sqlite:///elsewhere.db")
    monkeypatch.delenv("REDIS_URL", raising=False)
    settings = Settings.from_env()
    assert settings.config_dir == tmp_path
    assert settings.database_url == "sqlite:///elsewhere.db"
    assert settings.redis_url is None


def test_an_impossible_date_is_a_config_error(tmp_path):
    path = tmp_path / "baseline.yaml"
    path.write_text("products:\n  - trade_name: X\n    approval_date: 2023-02-30\n")
    with pytest.raises(ConfigError, match="bad value"):
        load_sources(path)
