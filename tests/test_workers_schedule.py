"""Beat's schedule as built from config: intervals, cron in time zones (across DST), and restarts."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime, timedelta

import pytest
from workerkit import redis_test_url, settings_for, source, webhook, write_config

from monitor.config import SourceConfig
from monitor.runtime import Runtime
from workers.app import create_app
from workers.schedule import (
    FIRST_POLL_SPREAD,
    SWEEP_INTERVAL,
    ConfigScheduler,
    CronSchedule,
    build_schedule,
    first_poll_offset,
)


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


def fixed_now(moment: datetime):
    return lambda: moment


@pytest.fixture
def config(tmp_path):
    return write_config(
        tmp_path / "config",
        [source("fda", "https://example.org/fda.xml", interval=900),
         source("ema", "https://example.org/ema.xml", interval="1h"),
         source("paused", "https://example.org/paused.xml", enabled=False)],
        [webhook("berlin-morning", mode="digest", schedule={"cron": "0 8 * * *", "timezone": "Europe/Berlin"}),
         webhook("ny-monday", mode="digest", schedule={"cron": "0 9 * * mon", "timezone": "America/New_York"}),
         webhook("instant")],
    )


def runtime_for(config, tmp_path) -> Runtime:
    return Runtime.load(settings_for(config, tmp_path / "atmp.db", redis_url=None))


def test_each_enabled_source_is_polled_at_its_own_interval(config, tmp_path):
    schedule = build_schedule(runtime_for(config, tmp_path))

    polls = {name: entry for name, entry in schedule.items() if entry["task"] == "atmp.poll_source"}
    assert {name: (entry["schedule"], entry["args"]) for name, entry in polls.items()} == {
        "poll:fda": (timedelta(seconds=900), ("fda",)),
        "poll:ema": (timedelta(hours=1), ("ema",)),
    }
    assert [entry["options"]["expires"] for entry in polls.values()] == [900, 3600]


def first_run(entry: dict) -> datetime:
    return entry["last_run_at"] + entry["schedule"]


def test_a_new_source_is_first_polled_within_a_minute_of_start_not_one_interval_later(config, tmp_path):
    start = utc(2026, 11, 25, 9)
    schedule = build_schedule(runtime_for(config, tmp_path), start)

    for name in ("poll:fda", "poll:ema"):
        assert start <= first_run(schedule[name]) < start + timedelta(seconds=FIRST_POLL_SPREAD)
    assert first_run(schedule["sweep"]) <= start


def test_sources_started_together_are_spread_so_their_ticks_do_not_coincide():
    sources = [SourceConfig(id=f"source-{n}", regulator="FDA", name="s", url="https://example.org/", interval=900)
               for n in range(500)]
    offsets = [first_poll_offset(s) for s in sources]

    assert all(timedelta(0) <= offset < timedelta(seconds=FIRST_POLL_SPREAD) for offset in offsets)
    assert len({int(offset.total_seconds()) for offset in offsets}) == FIRST_POLL_SPREAD
    assert first_poll_offset(sources[0]) == first_poll_offset(sources[0].model_copy())


def test_a_source_polled_every_second_starts_within_that_second():
    fast = SourceConfig(id="fast", regulator="FDA", name="s", url="https://example.org/", interval=1)

    assert first_poll_offset(fast) < timedelta(seconds=1)


def test_each_digest_fires_on_its_cron_in_its_own_zone_and_immediate_ones_have_no_entry(config, tmp_path):
    schedule = build_schedule(runtime_for(config, tmp_path))

    digests = {name: entry for name, entry in schedule.items() if entry["task"] == "atmp.send_digest"}
    assert {name: (entry["schedule"], entry["args"]) for name, entry in digests.items()} == {
        "digest:berlin-morning": (CronSchedule("0 8 * * *", "Europe/Berlin"), ("berlin-morning",)),
        "digest:ny-monday": (CronSchedule("0 9 * * mon", "America/New_York"), ("ny-monday",)),
    }
    assert all(entry["options"]["expires"] > 0 for entry in digests.values())


def test_the_sweep_runs_every_half_minute(config, tmp_path):
    sweep = build_schedule(runtime_for(config, tmp_path))["sweep"]

    assert (sweep["task"], sweep["schedule"], sweep["options"]["expires"]) == (
        "atmp.sweep", timedelta(seconds=SWEEP_INTERVAL), SWEEP_INTERVAL)


@pytest.mark.parametrize(("after", "expected"), [
    (utc(2026, 3, 27, 12), utc(2026, 3, 28, 7)),   # 08:00 CET is 07:00 UTC
    (utc(2026, 3, 28, 7), utc(2026, 3, 29, 6)),    # clocks go forward that night: 08:00 CEST is 06:00 UTC
    (utc(2026, 10, 24, 6), utc(2026, 10, 25, 7)),  # and back: 08:00 CET again
])
def test_a_morning_digest_stays_at_eight_local_across_dst(after, expected):
    assert CronSchedule("0 8 * * *", "Europe/Berlin").next_after(after) == expected


def test_a_time_skipped_by_the_spring_change_runs_an_hour_late_and_a_repeated_one_runs_once():
    night = CronSchedule("30 2 * * *", "Europe/Berlin")

    assert night.next_after(utc(2026, 3, 28, 12)) == utc(2026, 3, 29, 1, 30)   # 03:30 CEST, 02:30 never came
    first = night.next_after(utc(2026, 10, 24, 12))
    assert first == utc(2026, 10, 25, 0, 30)                                     # 02:30 CEST, first of two
    assert night.next_after(first) == utc(2026, 10, 26, 1, 30)                   # not again at 02:30 CET


def test_a_weekly_new_york_digest_is_due_on_monday_at_nine_local():
    weekly = CronSchedule("0 9 * * mon", "America/New_York")
    last_run = utc(2026, 11, 23, 14)                                              # Monday 09:00 EST

    before = CronSchedule("0 9 * * mon", "America/New_York", nowfun=fixed_now(utc(2026, 11, 30, 13, 59)))
    at = CronSchedule("0 9 * * mon", "America/New_York", nowfun=fixed_now(utc(2026, 11, 30, 14, 0, 5)))

    assert weekly.next_after(last_run) == utc(2026, 11, 30, 14)
    assert before.is_due(last_run) == (False, 60.0)
    due, next_check = at.is_due(last_run)
    assert due is True
    assert next_check == pytest.approx(timedelta(days=7).total_seconds() - 5)


def test_a_cron_schedule_survives_beats_schedule_file():
    schedule = CronSchedule("0 8 * * *", "Europe/Berlin")

    assert pickle.loads(pickle.dumps(schedule)) == schedule


def test_an_invalid_cron_expression_is_refused():
    with pytest.raises(ValueError, match="cron"):
        CronSchedule("every morning", "Europe/Berlin")


@pytest.fixture
def scheduler(config, tmp_path):
    """Starts beat's scheduler on `config` as beat does at start, its file in a folder that does not exist yet;
    the last one started is closed at the end."""
    started: list[ConfigScheduler] = []

    def start() -> ConfigScheduler:
        app = create_app(settings_for(config, tmp_path / "atmp.db", redis_url=redis_test_url()), var_dir=tmp_path)
        beat = ConfigScheduler(app=app, schedule_filename=str(tmp_path / "beat" / "celerybeat-schedule"), lazy=True)
        started.append(beat)
        beat.setup_schedule()
        return beat

    yield start
    if started:
        started[-1].close()


def test_restarting_beat_after_a_config_change_changes_the_schedule(config, scheduler):
    beat = scheduler()
    assert set(beat.schedule) == {"poll:fda", "poll:ema", "digest:berlin-morning", "digest:ny-monday", "sweep"}
    beat.schedule["poll:fda"] = beat.schedule["poll:fda"]._next_instance(utc(2026, 11, 25, 10))
    beat.close()

    write_config(config, [source("fda", "https://example.org/fda.xml", interval=600),
                          source("mhra", "https://example.org/mhra.xml")])
    restarted = scheduler()

    assert set(restarted.schedule) == {"poll:fda", "poll:mhra", "sweep"}
    assert restarted.schedule["poll:fda"].schedule.run_every == timedelta(seconds=600)
    assert restarted.schedule["poll:fda"].last_run_at == utc(2026, 11, 25, 10)
    assert (restarted.schedule["poll:fda"].total_run_count, restarted.schedule["poll:mhra"].total_run_count) == (1, 0)
