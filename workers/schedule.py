"""Beat's schedule, built from config each time beat starts: so changing config and restarting beat is enough.

- every enabled source is polled at its own interval; its backoff after failures lives in the database
  (`next_poll_at`), and the poll task skips a tick that comes before it, so beat needs no state of its own;
- every digest subscription fires on its cron expression read in its own IANA time zone;
- the sweep retries deliveries that are due and catches digests a stopped worker missed.

Each entry carries `expires`: a message still queued when the next tick comes is dropped, not run late,
so a stalled worker does not come back to a stampede of stale polls.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from celery.beat import PersistentScheduler
from celery.schedules import BaseSchedule, schedstate

from monitor.config import SourceConfig
from monitor.runtime import Runtime
from monitor.subscriptions import Schedule

SWEEP_INTERVAL = 30
DIGEST_EXPIRES = 3600
"""A digest message not picked up within an hour is dropped; the sweep sends that digest when it is due."""

OVERDUE = datetime(2000, 1, 1, tzinfo=UTC)
"""`last_run_at` for a sweep beat has never run, so it runs at start, not one interval later. Beat keeps
the real last run of every entry in its schedule file: a given `last_run_at` applies only to new entries."""

FIRST_POLL_SPREAD = 60


class CronSchedule(BaseSchedule):
    """A digest's cron expression in its IANA time zone, as a beat schedule: 08:00 stays 08:00 across DST.

    The arithmetic is `monitor.subscriptions.Schedule.next_after` (wall-clock stepping; a time the spring
    change skips runs an hour late, a time the autumn change repeats runs once), so beat and the digest's
    own slot bookkeeping can never disagree about when a slot is.
    """

    def __init__(self, cron: str, timezone: str, nowfun: Any = None, app: Any = None):
        self.plan = Schedule(cron=cron, timezone=timezone)
        super().__init__(nowfun=nowfun, app=app)

    def next_after(self, moment: datetime) -> datetime:
        """The first firing strictly after `moment`, in UTC."""
        return self.plan.next_after(self.maybe_make_aware(moment).astimezone(UTC))

    def now(self) -> datetime:
        return self.maybe_make_aware(super().now()).astimezone(UTC)

    def remaining_estimate(self, last_run_at: datetime) -> timedelta:
        return self.next_after(last_run_at) - self.now()

    def is_due(self, last_run_at: datetime) -> schedstate:
        now = self.now()
        next_run = self.next_after(last_run_at)
        if next_run <= now:
            return schedstate(is_due=True, next=(self.next_after(now) - now).total_seconds())
        return schedstate(is_due=False, next=(next_run - now).total_seconds())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, CronSchedule):
            return self.plan == other.plan
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.plan)

    def __reduce__(self) -> tuple[type, tuple[str, str, Any]]:
        return self.__class__, (self.plan.cron, self.plan.timezone, self.nowfun)

    def __repr__(self) -> str:
        return f"<cron {self.plan.cron} {self.plan.timezone}>"


@dataclass(frozen=True)
class DigestPlan:
    """What beat needs to know about a digest subscription."""

    name: str
    cron: str
    timezone: str


def poll_entry_name(source_id: str) -> str:
    return f"poll:{source_id}"


def digest_entry_name(subscription: str) -> str:
    return f"digest:{subscription}"


SWEEP_ENTRY = "sweep"


def first_poll_offset(source: SourceConfig) -> timedelta:
    """How long after beat's start a source it has never run is first polled: a stable spread over the first
    interval (at most a minute). Started together, sources would stay in step for good, and every tick
    would drop all of them on the queue in the same second."""
    window_ms = min(source.interval, FIRST_POLL_SPREAD) * 1000
    return timedelta(milliseconds=zlib.crc32(source.id.encode()) % window_ms)


def source_entries(sources: list[SourceConfig], now: datetime) -> dict[str, dict[str, Any]]:
    return {
        poll_entry_name(source.id): {
            "task": "atmp.poll_source",
            "schedule": timedelta(seconds=source.interval),
            "args": (source.id,),
            "options": {"expires": source.interval},
            "last_run_at": now - timedelta(seconds=source.interval) + first_poll_offset(source),
        }
        for source in sources
        if source.enabled
    }


def digest_entries(digests: list[DigestPlan]) -> dict[str, dict[str, Any]]:
    return {
        digest_entry_name(plan.name): {
            "task": "atmp.send_digest",
            "schedule": CronSchedule(plan.cron, plan.timezone),
            "args": (plan.name,),
            "options": {"expires": DIGEST_EXPIRES},
        }
        for plan in digests
    }


def sweep_entry() -> dict[str, dict[str, Any]]:
    return {
        SWEEP_ENTRY: {
            "task": "atmp.sweep",
            "schedule": timedelta(seconds=SWEEP_INTERVAL),
            "options": {"expires": SWEEP_INTERVAL},
            "last_run_at": OVERDUE,
        }
    }


def digest_plans(runtime: Runtime) -> list[DigestPlan]:
    return [DigestPlan(s.name, s.schedule.cron, s.schedule.timezone) for s in runtime.subscriptions.of_mode("digest")]


def build_schedule(runtime: Runtime, now: datetime | None = None) -> dict[str, dict[str, Any]]:
    now = now or datetime.now(UTC)
    return {**source_entries(runtime.sources, now), **digest_entries(digest_plans(runtime)), **sweep_entry()}


class ConfigScheduler(PersistentScheduler):
    """Beat's persistent scheduler, whose entries come from config: entries no longer configured are dropped,
    and those still there keep their last run from beat's file, so a restart does not re-fire them."""

    def setup_schedule(self) -> None:
        Path(self.schedule_filename).parent.mkdir(parents=True, exist_ok=True)
        self.app.conf.beat_schedule = build_schedule(self.app.runtime)
        super().setup_schedule()

    def install_default_entries(self, data: dict[str, Any]) -> None:
        """Celery would add a nightly clean-up of stored results; these tasks store none."""
