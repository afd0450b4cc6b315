"""Locks that keep two runs of one job apart, on Redis and on local files; a dead holder blocks no one."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest
import redis
from workerkit import exclusive_redis, wait_until

from workers.locks import FileLocks, RedisLocks


@pytest.fixture
def redis_locks():
    with exclusive_redis() as redis_url:
        client = redis.Redis.from_url(redis_url)
        yield RedisLocks(client)
        client.close()


@pytest.fixture
def file_locks(tmp_path):
    return FileLocks(tmp_path / "locks")


@pytest.fixture(params=["redis_locks", "file_locks"])
def locks(request):
    return request.getfixturevalue(request.param)


def test_a_held_lock_makes_the_second_holder_skip_until_released(locks):
    with locks.hold("poll:fda", ttl=30) as first:
        with locks.hold("poll:fda", ttl=30) as second:
            assert (first, second) == (True, False)
        with locks.hold("poll:ema", ttl=30) as other:
            assert other is True
    with locks.hold("poll:fda", ttl=30) as again:
        assert again is True


@pytest.mark.redis
def test_a_redis_lock_whose_holder_vanished_expires(redis_locks):
    abandoned = redis_locks.client.lock(redis_locks.prefix + "poll:fda", timeout=0.3)
    assert abandoned.acquire(blocking=False)

    with redis_locks.hold("poll:fda", ttl=30) as taken:
        assert taken is False

    def free() -> bool:
        with redis_locks.hold("poll:fda", ttl=30) as held:
            return held

    assert wait_until(free, timeout=5)


def test_a_file_lock_is_freed_when_its_process_is_killed(file_locks, tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time\n"
         "from pathlib import Path\n"
         "from workers.locks import FileLocks\n"
         f"with FileLocks(Path({str(file_locks.folder)!r})).hold('digest:daily', ttl=30) as held:\n"
         "    print(held, flush=True)\n"
         "    time.sleep(60)\n"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "True"
        with file_locks.hold("digest:daily", ttl=30) as while_alive:
            assert while_alive is False
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=10)
        with file_locks.hold("digest:daily", ttl=30) as after_death:
            assert after_death is True
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
        holder.stdout.close()


def test_file_lock_names_cannot_escape_their_folder(file_locks):
    assert file_locks.path("../../etc/passwd").parent == file_locks.folder
