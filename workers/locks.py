"""Locks that keep two runs of one job apart: one poll per source, one send per digest, at any moment.

Beat fires on a clock, not when the previous run has finished, and several workers may pick up the same
job; a lock that is taken makes the second run skip instead of wait. On Redis the lock is a key with an
expiry, so a worker that dies holding it blocks that job for at most `ttl` seconds. Without Redis the
service runs on one machine, and an `flock` on a file does the same: the kernel drops it the moment the
holding process exits, however it exits, so no expiry is needed there.
"""

from __future__ import annotations

import fcntl
import logging
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Protocol
from urllib.parse import quote

import redis
from redis.exceptions import LockNotOwnedError

log = logging.getLogger(__name__)

REDIS_PREFIX = "atmp-monitor:lock:"


class Locks(Protocol):
    def hold(self, name: str, ttl: float) -> AbstractContextManager[bool]:
        """Yield True with the lock held, or False at once when another run holds it."""
        ...


class RedisLocks:
    """redis-py's Lock: SET NX with an expiry, released only by the token that took it."""

    def __init__(self, client: redis.Redis, prefix: str = REDIS_PREFIX):
        self.client = client
        self.prefix = prefix

    @contextmanager
    def hold(self, name: str, ttl: float) -> Iterator[bool]:
        lock = self.client.lock(self.prefix + name, timeout=ttl, blocking=False, thread_local=False)
        if not lock.acquire():
            yield False
            return
        try:
            yield True
        finally:
            try:
                lock.release()
            except LockNotOwnedError:
                log.warning("lock %s expired before the job finished; raise its ttl", name)


class FileLocks:
    """`flock` on one file per name in `folder`; exclusive between processes and between threads."""

    def __init__(self, folder: Path):
        self.folder = folder

    def path(self, name: str) -> Path:
        return self.folder / f"{quote(name, safe='')}.lock"

    @contextmanager
    def hold(self, name: str, ttl: float) -> Iterator[bool]:
        """`ttl` is not needed here: the kernel releases the lock when its holder exits."""
        self.folder.mkdir(parents=True, exist_ok=True)
        with self.path(name).open("a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                acquired = True
            except BlockingIOError:
                acquired = False
            if not acquired:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


def locks_for(redis_url: str | None, folder: Path) -> Locks:
    """Redis locks whenever there is a Redis (workers may be on several machines), file locks otherwise."""
    if redis_url:
        return RedisLocks(redis.Redis.from_url(redis_url))
    return FileLocks(folder)
