"""The polling commands as a user runs them: real config folder, real SQLite file, real HTTP server."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from monitor.cli import app
from monitor.cli.app import terminal_safe

ROOT = Path(__file__).resolve().parents[1]
FEED = b"""<?xml version="1.0"?><rss version="2.0"><channel><title>FDA</title><link>https://www.fda.gov/</link>
<description>x</description>
<item><title>FDA approves Tecelra (afamitresgene autoleucel) for synovial sarcoma</title>
<link>https://www.fda.gov/news/tecelra</link><description>A TCR-T cell therapy.</description>
<pubDate>Thu, 01 Aug 2024 14:00:00 -0400</pubDate></item>
</channel></rss>"""


@pytest.fixture
def config_dir(tmp_path, feed_server, monkeypatch) -> Path:
    folder = tmp_path / "config"
    folder.mkdir()
    shutil.copy(ROOT / "config" / "baseline.yaml", folder / "baseline.yaml")
    feed_server.set("/fda.xml", FEED)
    (folder / "sources.yaml").write_text(
        "sources:\n"
        f"  - {{id: fda-press, regulator: FDA, name: FDA press, url: '{feed_server.url('/fda.xml')}',"
        " alert_backlog: true}\n"
        "  - {id: ema-news, regulator: EMA, name: EMA news, url: 'http://127.0.0.1:9/news.xml', timeout: 1}\n"
    )
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'cli.db'}")
    monkeypatch.delenv("ATMP_MONITOR_CONFIG", raising=False)
    return folder


def run(*args: str):
    return CliRunner().invoke(app, [*args], catch_exceptions=False)


def test_poll_summarises_each_source_and_exits_zero_despite_a_failing_source(config_dir):
    result = run("--config", str(config_dir), "poll")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert any(line.startswith("fda-press") and "new=1" in line and "events=1" in line for line in lines)
    assert any(line.startswith("ema-news") and "failed" in line for line in lines)
    assert "2 sources polled, 1 failed, 1 new events" in result.output


def test_events_list_as_json_lines(config_dir):
    run("--config", str(config_dir), "poll", "--source", "fda-press")
    result = run("--config", str(config_dir), "events", "list", "--json")
    (event,) = [json.loads(line) for line in result.output.splitlines()]
    assert event["title"].startswith("FDA approves Tecelra")
    assert event["sources"] == ["fda-press"]
    assert event["is_atmp"] is True
    assert run("--config", str(config_dir), "events", "list", "--since", "2999-01-01").output == ""


def test_sources_list_shows_health_after_a_poll(config_dir):
    run("--config", str(config_dir), "poll")
    output = run("--config", str(config_dir), "sources", "list").output
    assert "fda-press" in output and "healthy" in output
    assert "failing x1" in output
    assert "last error" in output


def test_sources_check_fetches_without_storing(config_dir):
    result = run("--config", str(config_dir), "sources", "check")
    assert result.exit_code == 1
    assert "fda-press" in result.output and "with 1 entries" in result.output
    assert "ema-news" in result.output and "FAILED" in result.output


def test_baseline_list_filters_by_regulator(config_dir):
    output = run("--config", str(config_dir), "baseline", "list", "--regulator", "IR-FDA").output
    assert "ReColorCell" in output
    assert "KYMRIAH" not in output.upper()


def test_bad_config_exits_non_zero_naming_file_and_line(config_dir):
    sources = config_dir / "sources.yaml"
    sources.write_text(sources.read_text().replace("timeout: 1", "timeout: 1, colour: red"))
    result = CliRunner().invoke(app, ["--config", str(config_dir), "poll"])
    assert result.exit_code == 2
    assert f"{sources}:3 (source 'ema-news')" in result.output
    assert "colour: unknown key" in result.output


def test_unknown_source_id_is_a_config_error(config_dir):
    result = CliRunner().invoke(app, ["--config", str(config_dir), "poll", "--source", "nope"])
    assert result.exit_code == 2
    assert "no source with id 'nope'" in result.output


def test_reclassify_reports_what_it_changed(config_dir):
    run("--config", str(config_dir), "poll")
    result = run("--config", str(config_dir), "reclassify")
    assert result.exit_code == 0
    assert result.output.strip() == "1 events reclassified, 0 changed"


def test_classify_knows_products_the_store_has_learned(config_dir):
    line = '{"title": "FDA expands approval of Tecelra to adolescents", "regulator": "FDA"}\n'
    before = json.loads(CliRunner().invoke(app, ["--config", str(config_dir), "classify", "-"], input=line).output)
    run("--config", str(config_dir), "poll")
    after = json.loads(CliRunner().invoke(app, ["--config", str(config_dir), "classify", "-"], input=line).output)
    assert before["products"] == []
    assert after["products"] == [{"name": "Tecelra", "known": True}]
    assert after["event"] == "new_indication"



def test_events_list_shows_hostile_titles_safely_in_text_and_json(config_dir, feed_server):
    hostile = "\u202eFDA approves\u2066 Tecelra".encode()
    feed_server.set("/fda.xml", FEED.replace(b"FDA approves Tecelra", hostile))
    run("--config", str(config_dir), "poll", "--source", "fda-press")
    text = run("--config", str(config_dir), "events", "list").output
    assert "\\u202eFDA approves\\u2066 Tecelra" in text
    as_json = run("--config", str(config_dir), "events", "list", "--json").output
    assert "\\u202eFDA approves\\u2066 Tecelra" in as_json
    assert not {"\u202e", "\u2066"} & set(text + as_json)
    assert json.loads(as_json)["title"].startswith("\u202eFDA approves\u2066 Tecelra")


def test_terminal_safe_makes_controls_visible_and_leaves_ordinary_text_alone():
    assert terminal_safe("Santé Canada\tautorise 日本語 — “quoted”") == "Santé Canada\tautorise 日本語 — “quoted”"
    assert terminal_safe("\x1b[2J\x07\x7f\x9b\u2066") == "\\x1b[2J\\x07\\x7f\\x9b\\u2066"


def test_polling_a_disabled_source_says_why_nothing_happened(config_dir):
    sources = config_dir / "sources.yaml"
    sources.write_text(sources.read_text().replace("timeout: 1}", "timeout: 1, enabled: false}"))
    result = run("--config", str(config_dir), "poll", "--source", "ema-news")
    assert result.exit_code == 0
    assert "ema-news is disabled in the config (enabled: false), so it is not polled" in result.output
    assert "0 sources polled" in result.output
