"""Commands that run and watch the service: `run`, `status`, `migrate`.

`run` is Celery itself (a worker with beat embedded), not a scheduler of our own: the same tasks and the
same beat schedule as a docker-compose deployment, only all in one place.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

import redis
import typer
from kombu.utils.url import maybe_sanitize_url
from sqlalchemy import select

from monitor.cli.app import app, fail_on_config_error, settings, terminal_safe
from monitor.cli.poll import load_runtime
from monitor.config import ConfigError
from monitor.deliver import pending_counts
from monitor.runtime import Runtime
from monitor.store import SourceRow, Store
from workers.app import MonitorCelery, broker_folder, create_app
from workers.runlog import last_runs
from workers.schedule import CronSchedule, build_schedule


@dataclass(frozen=True)
class SourceStatus:
    id: str
    regulator: str
    interval: int
    health: str
    consecutive_failures: int
    last_success_at: str | None
    next_poll_at: str | None
    last_error: str | None


@dataclass(frozen=True)
class PeriodicStatus:
    name: str
    task: str
    schedule: str
    last_run_at: str | None
    last_outcome: str | None
    last_detail: str | None


@dataclass(frozen=True)
class ServiceStatus:
    broker: str
    queue_depth: int | None
    queue_error: str | None
    deliveries: dict[str, int]
    sources: list[SourceStatus]
    periodic: list[PeriodicStatus]


def _iso(value: datetime | None) -> str | None:
    return value.isoformat(timespec="seconds") if value else None


def _health(enabled: bool, row: SourceRow | None) -> str:
    if not enabled:
        return "disabled"
    if row is None or row.last_polled_at is None:
        return "never polled"
    return f"failing x{row.consecutive_failures}" if row.consecutive_failures else "healthy"


def source_statuses(runtime: Runtime) -> list[SourceStatus]:
    with runtime.store.transaction() as session:
        rows = {row.id: row for row in session.scalars(select(SourceRow))}
    statuses = []
    for source in runtime.sources:
        row = rows.get(source.id)
        statuses.append(SourceStatus(
            id=source.id, regulator=source.regulator, interval=source.interval, health=_health(source.enabled, row),
            consecutive_failures=row.consecutive_failures if row else 0,
            last_success_at=_iso(row.last_success_at) if row else None,
            next_poll_at=_iso(row.next_poll_at) if row else None,
            last_error=row.last_error if row else None,
        ))
    return statuses


def _describe(schedule: Any) -> str:
    if isinstance(schedule, CronSchedule):
        return f"cron {schedule.plan.cron} {schedule.plan.timezone}"
    seconds = int(schedule.total_seconds()) if isinstance(schedule, timedelta) else int(schedule.seconds)
    return f"every {seconds}s"


def periodic_statuses(runtime: Runtime) -> list[PeriodicStatus]:
    runs = last_runs(runtime.store)
    statuses = []
    for name, entry in build_schedule(runtime).items():
        run = runs.get(name)
        statuses.append(PeriodicStatus(
            name=name, task=entry["task"], schedule=_describe(entry["schedule"]),
            last_run_at=_iso(run.last_finished_at) if run else None,
            last_outcome=run.last_outcome if run else None, last_detail=run.last_detail if run else None,
        ))
    return statuses


def broker_description(celery_app: MonitorCelery) -> str:
    """The Redis URL without its password, or the folder the filesystem transport uses."""
    if celery_app.settings.redis_url:
        return maybe_sanitize_url(celery_app.settings.redis_url)
    return f"filesystem {broker_folder(celery_app.var_dir)}"


def collect_status(runtime: Runtime, celery_app: MonitorCelery) -> ServiceStatus:
    depth, error = None, None
    try:
        depth = celery_app.queue_depth()
    except redis.RedisError as exc:
        error = f"broker unreachable: {type(exc).__name__}"
    return ServiceStatus(
        broker=broker_description(celery_app), queue_depth=depth, queue_error=error,
        deliveries=pending_counts(runtime), sources=source_statuses(runtime), periodic=periodic_statuses(runtime),
    )


def status_lines(status: ServiceStatus) -> list[str]:
    depth = status.queue_error or f"{status.queue_depth} message(s) waiting"
    counts = ", ".join(f"{name} {count}" for name, count in status.deliveries.items())
    lines = [f"broker      {status.broker}", f"queue       {depth}", f"deliveries  {counts}", "", "sources"]
    for source in status.sources:
        lines.append(f"  {source.id:<28} {source.regulator:<8} every {source.interval}s  {source.health:<14} "
                     f"last success {source.last_success_at or '-'}  next poll {source.next_poll_at or '-'}")
        if source.last_error and source.consecutive_failures:
            lines.append(f"    last error: {terminal_safe(source.last_error)}")
    lines += ["", "periodic tasks"]
    for task in status.periodic:
        outcome = f"{task.last_outcome} ({terminal_safe(task.last_detail)})" if task.last_detail else task.last_outcome
        lines.append(f"  {task.name:<36} {task.schedule:<28} last run {task.last_run_at or 'never'}"
                     + (f"  {outcome}" if outcome else ""))
    return lines


@app.command()
def status(as_json: bool = typer.Option(False, "--json", help="One JSON object instead of text.")) -> None:
    """Sources with their health and next poll, deliveries by state, queue depth, last run of each periodic task."""
    runtime = load_runtime()
    result = collect_status(runtime, create_app(settings()))
    if as_json:
        typer.echo(json.dumps(asdict(result), ensure_ascii=False, indent=2))
        return
    for line in status_lines(result):
        typer.echo(line)


def worker_argv(loglevel: str) -> list[str]:
    """A solo worker (tasks run in this process) with beat embedded; no mingle or gossip, which only
    matter between several workers and would need broadcasts the filesystem transport does poorly."""
    return ["worker", "--pool=solo", "--concurrency=1", "--beat", f"--loglevel={loglevel}",
            "--without-mingle", "--without-gossip", "--hostname=atmp-monitor@%h"]


@app.command()
def run(loglevel: str = typer.Option("INFO", "--loglevel", help="DEBUG, INFO, WARNING or ERROR.")) -> None:
    """Run the whole service here: a Celery worker with its beat. Ctrl-C or SIGTERM stops it cleanly.

    Without REDIS_URL it needs no server (the queue is a folder under var/); with it, it joins that broker.
    """
    celery_app = create_app(settings())
    try:
        store = celery_app.runtime.store
    except ConfigError as exc:
        raise fail_on_config_error(exc) from None
    store.dispose()  # beat is forked from this process: it must not inherit open database connections
    typer.echo(f"atmp-monitor: {len(celery_app.runtime.sources)} sources, broker {broker_description(celery_app)}")
    celery_app.worker_main(worker_argv(loglevel))


@app.command()
def migrate() -> None:
    """Create or upgrade the database schema to the newest revision; safe to run on every deploy."""
    store = Store(settings().database_url)
    try:
        store.migrate()
    finally:
        store.dispose()
    typer.echo("database schema is up to date")
