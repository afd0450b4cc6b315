from datetime import UTC, datetime, timedelta

from monitor.health import (
    BACKOFF_CEILING,
    RETRY_AFTER_CEILING,
    backoff_delay,
    is_due,
    record_failure,
    record_success,
)
from monitor.store import SourceRow

NOW = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)


def fresh_row() -> SourceRow:
    return SourceRow(id="ema-news", regulator="EMA", name="EMA news", url="https://x", consecutive_failures=0)


def test_backoff_doubles_per_failure_up_to_the_ceiling():
    delays = [backoff_delay(900, failures) for failures in range(1, 8)]
    assert delays[:4] == [timedelta(minutes=15), timedelta(minutes=30), timedelta(hours=1), timedelta(hours=2)]
    assert delays[-1] == BACKOFF_CEILING


def test_a_daily_source_is_never_polled_more_often_than_its_interval():
    assert backoff_delay(2 * 86400, 9) == timedelta(days=2)


def test_retry_after_wins_when_longer():
    assert backoff_delay(60, 1, retry_after=3600) == timedelta(hours=1)
    assert backoff_delay(3600, 1, retry_after=5) == timedelta(hours=1)


def test_failures_accumulate_and_stretch_the_next_poll():
    row = fresh_row()
    for minute in range(3):
        record_failure(row, NOW + timedelta(minutes=minute), 600, "HTTP 503", retry_after=None, charge=True)
    assert row.consecutive_failures == 3
    assert row.failing_since == NOW
    assert row.last_error == "HTTP 503"
    assert row.next_poll_at == NOW + timedelta(minutes=2) + timedelta(minutes=40)
    assert not is_due(row, NOW + timedelta(minutes=30))


def test_an_uncharged_failure_keeps_the_count_and_the_normal_interval():
    row = fresh_row()
    record_failure(row, NOW, 600, "connection refused", retry_after=None, charge=False)
    assert row.consecutive_failures == 0
    assert row.failing_since is None
    assert row.last_error == "connection refused"
    assert row.next_poll_at == NOW + timedelta(minutes=10)


def test_success_resets_health_and_marks_first_poll():
    row = fresh_row()
    record_failure(row, NOW, 600, "timeout", retry_after=None, charge=True)
    record_success(row, NOW + timedelta(hours=1), 600, problem="bozo: CharacterEncodingOverride")
    assert row.consecutive_failures == 0
    assert row.failing_since is None
    assert row.initialised_at == NOW + timedelta(hours=1)
    assert row.last_problem.startswith("bozo")
    assert is_due(row, NOW + timedelta(hours=1, minutes=10))


def test_an_absurd_retry_after_is_cut_so_polling_never_gives_up():
    assert backoff_delay(600, 1, retry_after=10.0**20) == RETRY_AFTER_CEILING
    row = fresh_row()
    record_failure(row, NOW, 600, "HTTP 503", retry_after=10.0**20, charge=True)
    assert row.next_poll_at == NOW + RETRY_AFTER_CEILING
