"""The Celery app, built from the same Settings as the CLI, so a worker and a command never disagree.

With REDIS_URL set the broker is Redis and workers may run on many machines. Without it the broker is
kombu's filesystem transport in `var/broker`: one machine, no server to install, the same tasks and the
same beat schedule. Config and store are loaded on first use, so importing this module touches nothing
but that folder.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import httpx
import redis
from celery import Celery

from monitor.config import Settings
from monitor.fetch import make_client
from monitor.runtime import Runtime
from workers.locks import Locks, locks_for

VAR_DIR = Path("var")
QUEUE = "atmp-monitor"


@dataclass(frozen=True)
class TimeLimits:
    soft: int
    hard: int


POLL_LIMITS = TimeLimits(soft=330, hard=360)
"""A source may take its whole 300 s fetch timeout; recording it takes seconds."""
DELIVER_LIMITS = TimeLimits(soft=60, hard=90)
"""One webhook, Slack or SMTP send, each with its own network timeouts well below this."""
DIGEST_LIMITS = TimeLimits(soft=300, hard=360)
SWEEP_LIMITS = TimeLimits(soft=300, hard=360)
LONGEST_TASK = max(limits.hard for limits in (POLL_LIMITS, DELIVER_LIMITS, DIGEST_LIMITS, SWEEP_LIMITS))

VISIBILITY_TIMEOUT = 4 * LONGEST_TASK
"""Seconds Redis waits before handing an unacknowledged message to another worker."""


def visibility_timeout() -> int:
    """`ATMP_VISIBILITY_TIMEOUT` shortens recovery after a crash (tests do); keep it above LONGEST_TASK."""
    return int(os.environ.get("ATMP_VISIBILITY_TIMEOUT") or VISIBILITY_TIMEOUT)


def broker_folder(var_dir: Path) -> Path:
    return var_dir / "broker"


def celery_config(settings: Settings, var_dir: Path) -> dict[str, Any]:
    if settings.redis_url:
        broker_url = settings.redis_url
        # Longer than any task (and any retry countdown), or a message still running would run twice.
        transport_options: dict[str, Any] = {"visibility_timeout": visibility_timeout()}
    else:
        folder = broker_folder(var_dir)
        broker_url = "filesystem://localhost/"
        # One folder is both ends of the queue; half a second between folder scans keeps latency low.
        transport_options = {"data_folder_in": str(folder / "queue"), "data_folder_out": str(folder / "queue"),
                             "control_folder": str(folder / "control"), "polling_interval": 0.5}
    return {
        "broker_url": broker_url,
        "broker_transport_options": transport_options,
        # In compose the worker may start before Redis accepts connections: keep trying instead of exiting.
        "broker_connection_retry_on_startup": True,
        "task_default_queue": QUEUE,
        # A message leaves the queue only once its task has finished, so a killed worker's job is redone;
        # every task is idempotent (outbox keys, locks, due checks), so redoing it sends nothing twice.
        "task_acks_late": True,
        # A task whose process the OS killed is not re-queued: it might kill the next worker too, and the
        # sweep redoes lost work from the database anyway.
        "task_reject_on_worker_lost": False,
        # Reserve one message per process: polls and sends are long and uneven, and a prefetched message
        # would wait behind a slow task while another worker sits idle.
        "worker_prefetch_multiplier": 1,
        # Defaults for any task without its own limits: soft raises inside the task so it can clean up,
        # hard kills the process if the soft limit was ignored.
        "task_soft_time_limit": SWEEP_LIMITS.soft,
        "task_time_limit": SWEEP_LIMITS.hard,
        # JSON only: a message on the broker can never make a worker unpickle (and run) arbitrary code.
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        # No one reads these tasks' results; storing them would only fill Redis.
        "task_ignore_result": True,
        # Where a result is read (a test, a one-off call), it still goes away after an hour.
        "result_expires": 3600,
        "timezone": "UTC",
        "enable_utc": True,
        # Beat's schedule is rebuilt from config on every start, on top of beat's own persistent file.
        "beat_scheduler": "workers.schedule:ConfigScheduler",
        "beat_schedule_filename": str(var_dir / "celerybeat-schedule"),
    }


class MonitorCelery(Celery):
    """A Celery app that carries the monitor's settings, its Runtime and its locks."""

    def __init__(self, settings: Settings, *, var_dir: Path = VAR_DIR):
        super().__init__("atmp-monitor", include=["workers.tasks"])
        self.settings = settings
        self.var_dir = var_dir
        self.config_from_object(celery_config(settings, var_dir))
        if settings.redis_url is None:
            for folder in ("queue", "control"):
                (broker_folder(var_dir) / folder).mkdir(parents=True, exist_ok=True)

    @cached_property
    def runtime(self) -> Runtime:
        return Runtime.load(self.settings)

    @cached_property
    def http_client(self) -> httpx.Client:
        """One for the process's lifetime: building one loads the CA bundle (~35 ms), more than a 304 poll."""
        return make_client()

    @cached_property
    def locks(self) -> Locks:
        return locks_for(self.settings.redis_url, self.var_dir / "locks")

    def queue_depth(self) -> int:
        """Messages waiting in the queue: the Redis list's length, or the message files in the folder."""
        if self.settings.redis_url:
            client = redis.Redis.from_url(self.settings.redis_url)
            try:
                return int(client.llen(QUEUE))
            finally:
                client.close()
        queue = broker_folder(self.var_dir) / "queue"
        return sum(1 for path in queue.glob(f"*.{QUEUE}.msg")) if queue.is_dir() else 0


def create_app(settings: Settings | None = None, *, var_dir: Path = VAR_DIR) -> MonitorCelery:
    return MonitorCelery(settings or Settings.from_env(), var_dir=var_dir)


app = create_app()
