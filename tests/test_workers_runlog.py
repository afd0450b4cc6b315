"""The record of periodic runs behind `atmp-monitor status`, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from workers.runlog import TaskRun, last_runs, record_run

T0 = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)


def test_each_entry_keeps_its_latest_run_and_a_count(store):
    record_run(store, TaskRun("poll:fda", "atmp.poll_source", T0, T0 + timedelta(seconds=2), "ok", "new=1"))
    record_run(store, TaskRun("sweep", "atmp.sweep", T0, T0 + timedelta(seconds=1), "ok"))
    later = T0 + timedelta(minutes=15)
    record_run(store, TaskRun("poll:fda", "atmp.poll_source", later, later + timedelta(seconds=1), "failed",
                              "HTTP 503"))

    runs = last_runs(store)

    assert set(runs) == {"poll:fda", "sweep"}
    fda = runs["poll:fda"]
    assert (fda.last_started_at, fda.last_outcome, fda.last_detail, fda.runs) == (later, "failed", "HTTP 503", 2)
    assert runs["sweep"].runs == 1
