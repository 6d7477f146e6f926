"""What the README's "Celery compatibility" table says, checked on a real worker."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from celery.exceptions import TaskRevokedError

from actionrunner import action
from actionrunner.app import app
from actionrunner.errors import ActionDefinitionError, ActionError
from tests.actions import auto_retried, kept_add, paced_local, record, soft_limited
from tests.conftest import Worker

pytestmark = [pytest.mark.integration, pytest.mark.e2e]


def test_countdown_expires_rate_limit_autoretry_soft_limit_and_autoscale(
    start_worker: Callable[..., Worker], queue_url: str, record_dir: Path
) -> None:
    # (the worker autoscales: Celery's --autoscale works with the prefork pool)
    worker = start_worker(args=("--autoscale=3,1",))
    run = uuid.uuid4().hex[:8]
    # countdown: the worker holds the message until then (its group waits)
    sent_at = time.time()
    later = kept_add.apply_async(kwargs={"a": 1, "b": 1}, countdown=3)
    assert later.get(timeout=30) == 2 and time.time() - sent_at >= 3
    # expires: an expired message is discarded, not run; its result says REVOKED
    gone = kept_add.apply_async(kwargs={"a": 7, "b": 7}, countdown=2, expires=1)
    with pytest.raises(TaskRevokedError):
        gone.get(timeout=30)
    assert gone.state == "REVOKED" and worker.lifecycle("started", id=gone.id) == []
    # rate_limit (Celery's, per worker): 2/s
    times = sorted(r.get(timeout=60) for r in [paced_local.delay(run=run, n=n) for n in range(4)])
    assert times[-1] - times[0] >= 1.0
    # retry_for (Celery's autoretry_for): retried on the same message, bounded by max_attempts
    assert auto_retried.delay(run=run).get(timeout=60) == 2
    # soft_time_limit raises SoftTimeLimitExceeded in the action
    assert soft_limited.delay(run=run).get(timeout=30) == "soft limit"


def test_refused_options_fail_loudly(queue_url: str) -> None:
    with pytest.raises(Exception, match="Queue 'other.fifo' missing from task_queues"):
        record.apply_async(kwargs={"bucket": "q", "token": "t"}, queue="other.fifo")
    with pytest.raises(ActionError, match="priority= is not supported"):
        record.apply_async(kwargs={"bucket": "q", "token": "t"}, priority=5)
    with pytest.raises(ActionDefinitionError, match="max_retries= does nothing here"):
        action(name="tests.compat.bad", max_retries=5)(lambda x: x)
    # a plain Celery task is sent (tests/test_plain_tasks.py), but a group from its inputs is refused
    with pytest.raises(ActionDefinitionError, match="only an @action does that"):
        app.task(name="tests.compat.plain_celery_task", message_group="t:{x}")(lambda x: x).name  # noqa: B018 (made on first use)
    with pytest.raises(ActionDefinitionError, match="autoretry_for= does nothing here.*retry_for="):
        action(name="tests.compat.bad", autoretry_for=(ValueError,))(lambda x: x)


def test_task_always_eager_runs_in_process(aws: object, record_dir: Path) -> None:
    app.conf.task_always_eager = True
    bucket = "eager-" + uuid.uuid4().hex[:6]
    try:
        result = record.delay(bucket=bucket, token="e")
        assert result.get() == "e" and result.state == "SUCCESS"
    finally:
        app.conf.task_always_eager = False
    assert (record_dir / f"{bucket}.txt").read_text().splitlines() == ["e"]
