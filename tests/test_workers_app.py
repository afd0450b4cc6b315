"""The Celery app's configuration, on Redis and on the filesystem transport, and its queue depth."""

from __future__ import annotations

import pytest
from workerkit import exclusive_redis, redis_test_url, settings_for, write_config

from workers.app import DELIVER_LIMITS, LONGEST_TASK, POLL_LIMITS, QUEUE, create_app

TASKS = {"atmp.poll_source", "atmp.deliver", "atmp.send_digest", "atmp.sweep"}


@pytest.fixture
def config(tmp_path):
    return write_config(tmp_path / "config", [])


def test_on_redis_messages_are_acknowledged_late_and_outlive_no_task(config, tmp_path):
    app = create_app(settings_for(config, tmp_path / "atmp.db", redis_url=redis_test_url()), var_dir=tmp_path)
    conf = app.conf

    assert conf.broker_url == redis_test_url()
    assert conf.broker_transport_options["visibility_timeout"] > LONGEST_TASK
    assert (conf.task_acks_late, conf.worker_prefetch_multiplier) == (True, 1)
    assert (conf.task_serializer, conf.accept_content) == ("json", ["json"])
    assert conf.task_ignore_result is True
    assert conf.result_backend is None


def test_each_task_has_its_own_time_limits(config, tmp_path):
    app = create_app(settings_for(config, tmp_path / "atmp.db", redis_url=redis_test_url()), var_dir=tmp_path)
    app.loader.import_default_modules()  # what a worker does at start: imports `include`

    assert set(app.tasks) >= TASKS
    poll, deliver = app.tasks["atmp.poll_source"], app.tasks["atmp.deliver"]
    assert (poll.soft_time_limit, poll.time_limit) == (POLL_LIMITS.soft, POLL_LIMITS.hard)
    assert (deliver.soft_time_limit, deliver.time_limit) == (DELIVER_LIMITS.soft, DELIVER_LIMITS.hard)
    assert poll.retry_jitter is True and poll.retry_backoff


def test_the_visibility_timeout_can_be_shortened_for_faster_recovery(config, tmp_path, monkeypatch):
    monkeypatch.setenv("ATMP_VISIBILITY_TIMEOUT", "5")
    app = create_app(settings_for(config, tmp_path / "atmp.db", redis_url=redis_test_url()), var_dir=tmp_path)

    assert app.conf.broker_transport_options["visibility_timeout"] == 5


def test_without_redis_the_queue_is_a_folder_under_var(config, tmp_path):
    app = create_app(settings_for(config, tmp_path / "atmp.db", redis_url=None), var_dir=tmp_path / "var")

    assert app.conf.broker_url.startswith("filesystem://")
    options = app.conf.broker_transport_options
    assert options["data_folder_in"] == options["data_folder_out"] == str(tmp_path / "var" / "broker" / "queue")
    assert (tmp_path / "var" / "broker" / "queue").is_dir()


def test_queue_depth_counts_message_files_without_redis(config, tmp_path):
    app = create_app(settings_for(config, tmp_path / "atmp.db", redis_url=None), var_dir=tmp_path / "var")

    app.send_task("atmp.sweep")
    app.send_task("atmp.poll_source", args=("fda",))

    assert app.queue_depth() == 2


@pytest.mark.redis
def test_queue_depth_is_the_length_of_the_redis_list(config, tmp_path):
    with exclusive_redis() as redis_url:
        app = create_app(settings_for(config, tmp_path / "atmp.db", redis_url=redis_url), var_dir=tmp_path)
        for _ in range(3):
            app.send_task("atmp.sweep")
        assert app.queue_depth() == 3
        assert app.conf.task_default_queue == QUEUE
