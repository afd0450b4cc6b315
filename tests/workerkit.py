"""Support for the worker tests: config folders, feeds, a dedicated Redis database and a receiver that can
hold a request open, so a test can kill the sender in the middle of it."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from xml.sax.saxutils import escape

import redis
import yaml

from monitor.config import Settings

REDIS_DB = 12
"""Never 0: the tests flush this database, and only this one."""
REDIS_LOCK = Path(tempfile.gettempdir()) / f"atmp-monitor-tests-redis-db{REDIS_DB}.lock"

HOOK_URL_ENV = "ATMP_TEST_HOOK_URL"
HOOK_SECRET_ENV = "ATMP_TEST_HOOK_SECRET"
HOOK_SECRET = "test-secret-not-real"
REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def redis_test_url() -> str:
    """REDIS_URL's host and port (or the loopback default) with the test database number."""
    parts = urlsplit(os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0")
    return f"redis://{parts.hostname or '127.0.0.1'}:{parts.port or 6379}/{REDIS_DB}"


def _flush_test_db() -> None:
    client = redis.Redis.from_url(redis_test_url())
    try:
        client.flushdb()
    finally:
        client.close()


@contextmanager
def exclusive_redis() -> Iterator[str]:
    """The test Redis database, empty, and this process's alone until the block ends: two test runs on one
    machine (two checkouts, two people) would otherwise flush it under each other and run each other's
    queued tasks with the wrong config. A file lock serialises them; the kernel frees it if a run dies."""
    with REDIS_LOCK.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        _flush_test_db()
        try:
            yield redis_test_url()
        finally:
            _flush_test_db()


def rss(items: list[tuple[str, str]], *, build: str = "1") -> bytes:
    """An RSS 2.0 feed of (guid, title) items, all published now, so that each is news, not history."""
    published = format_datetime(datetime.now(UTC), usegmt=True)
    body = "".join(
        f"<item><guid>{escape(guid)}</guid><title>{escape(title)}</title>"
        f"<link>https://example.org/{escape(guid)}</link><pubDate>{published}</pubDate></item>"
        for guid, title in items
    )
    return (f'<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>Test regulator</title>'
            f"<link>https://example.org/</link><description>build {escape(build)}</description>{body}"
            f"</channel></rss>").encode()


def webhook(name: str, **extra: Any) -> dict[str, Any]:
    """A webhook subscription to every event (classified ATMP or not), at the URL in HOOK_URL_ENV."""
    return {"name": name, "channel": "webhook", "url_env": HOOK_URL_ENV, "secret_env": HOOK_SECRET_ENV,
            **({"filter": {"atmp_only": False}} if extra.get("mode") != "health" else {}), **extra}


def write_config(folder: Path, sources: list[dict[str, Any]], subscriptions: list[dict[str, Any]] = ()) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "baseline.yaml").write_text("products: []\n")
    (folder / "sources.yaml").write_text(yaml.safe_dump({"sources": sources}, sort_keys=False))
    (folder / "subscriptions.yaml").write_text(yaml.safe_dump({"subscriptions": list(subscriptions)},
                                                              sort_keys=False))
    return folder


def source(source_id: str, url: str, interval: int = 1, **extra: Any) -> dict[str, Any]:
    return {"id": source_id, "regulator": "FDA", "name": f"Test source {source_id}", "url": url,
            "interval": interval, **extra}


def settings_for(config: Path, database: Path, *, redis_url: str | None) -> Settings:
    return Settings(config_dir=config, database_url=f"sqlite:///{database}", redis_url=redis_url)


def child_env(config: Path, database: Path, *, redis_url: str | None, **extra: str) -> dict[str, str]:
    """The environment of a service subprocess: its own config, database and broker, never the caller's."""
    env = {key: value for key, value in os.environ.items()
           if key not in ("DATABASE_URL", "REDIS_URL", "ATMP_MONITOR_CONFIG")}
    env.update({"ATMP_MONITOR_CONFIG": str(config), "DATABASE_URL": f"sqlite:///{database}",
                "PYTHONPATH": str(REPO), **extra})
    if redis_url:
        env["REDIS_URL"] = redis_url
    return env


def spawn(args: list[str], *, cwd: Path, env: dict[str, str], log: Path) -> subprocess.Popen:
    """A service process writing to `log`; in its own session so that no signal of ours reaches it by accident."""
    handle = log.open("ab")
    try:
        return subprocess.Popen(args, cwd=cwd, env=env, stdout=handle, stderr=subprocess.STDOUT,
                                start_new_session=True)
    finally:
        handle.close()


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.kill()
        process.wait(timeout=10)


def wait_until(condition: Callable[[], Any], *, timeout: float = 20.0, interval: float = 0.05) -> Any:
    """The condition's first truthy value; the deadline only stops a broken test from hanging."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)


class HeldReceiver:
    """A webhook receiver that keeps the first POST waiting until `release()`, then answers 200 to all.

    Records every POST's delivery key; `first_arrived` is set once the first request is in.
    """

    def __init__(self) -> None:
        self.keys: list[str] = []
        self.bodies: list[bytes] = []
        self.first_arrived = threading.Event()
        self._released = threading.Event()
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                """Quiet."""

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver._lock:
                    receiver.keys.append(self.headers.get("X-ATMP-Delivery", ""))
                    receiver.bodies.append(body)
                    first = not receiver.first_arrived.is_set()
                    receiver.first_arrived.set()
                if first:
                    receiver._released.wait(timeout=60)
                try:
                    self.send_response(200)
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"ok")
                except OSError:
                    return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> HeldReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()
        self._server.shutdown()
        self._server.server_close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/hook"

    def release(self) -> None:
        self._released.set()

    def received(self) -> list[str]:
        with self._lock:
            return list(self.keys)
