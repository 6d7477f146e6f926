"""Plain Celery tasks (no ``@action``) used by the tests: ``@shared_task``, ``@app.task``, a
class-based task. The worker loads them through ACTIONRUNNER_IMPORTS=tests.plain_tasks."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from celery import Task, shared_task

from actionrunner.app import app


def _append(bucket: str, token: str) -> None:
    with open(Path(os.environ["ACTIONRUNNER_TEST_RECORD_DIR"]) / f"{bucket}.txt", "a") as out:
        out.write(token + "\n")


@shared_task(ignore_result=False)
def plain_add(a: Any, b: Any) -> Any:
    """A plain ``@shared_task`` with its results kept."""
    return a + b


@app.task(ignore_result=False, message_group="plain-fixed")
def plain_record(bucket: str, token: str) -> str:
    """A plain ``@app.task`` in one declared group: its calls run one at a time, in order."""
    _append(bucket, token)
    return token


@shared_task(bind=True, ignore_result=False, max_attempts=3, retry_backoff=0.1)
def plain_flaky(self: Task, bucket: str, fail_times: int) -> int:
    """Fails (Celery's ``self.retry()``) its first ``fail_times`` runs, then returns the run count."""
    _append(bucket, "run")
    runs = len((Path(os.environ["ACTIONRUNNER_TEST_RECORD_DIR"]) / f"{bucket}.txt")
               .read_text().splitlines())
    if runs <= fail_times:
        raise self.retry(exc=RuntimeError(f"flaky run {runs}"), countdown=0.1)
    return runs


@shared_task(ignore_result=False, max_attempts=3, retry_backoff=3)
def plain_fails_once(bucket: str) -> int:
    """Raises on its first run (no ``self.retry()``: the worker's policy runs it again), then
    returns the run count."""
    _append(bucket, "run")
    runs = len((Path(os.environ["ACTIONRUNNER_TEST_RECORD_DIR"]) / f"{bucket}.txt")
               .read_text().splitlines())
    if runs == 1:
        raise RuntimeError(f"first run of {bucket} fails")
    return runs


@shared_task(max_attempts=2, retry_backoff=0.1)
def plain_explode(token: str) -> None:
    """Always fails: dead-lettered after two attempts."""
    raise ValueError(f"plain boom {token}")


class PlainGaveUp(Exception):
    pass


@shared_task(bind=True, ignore_result=False, max_retries=1)
def plain_retries_once(self: Task, token: str) -> None:
    """Always asks for a retry; Celery's ``max_retries=1``: two runs, then its exception."""
    raise self.retry(exc=PlainGaveUp(token, "gave up"), countdown=0.1)


@shared_task(ignore_result=False)
def plain_reject(token: str) -> None:
    """Rejects its message without requeueing it (Celery's ``Reject``)."""
    from celery.exceptions import Reject

    raise Reject(f"refused {token}", requeue=False)


class PlainClassTask(Task):  # type: ignore[misc]
    """A class-based task on Celery's own ``Task`` (registered below)."""

    name = "tests.plain_tasks.PlainClassTask"
    ignore_result = False

    def run(self, x: int) -> dict[str, int]:
        return {"x": x, "square": x * x}


plain_class_task = app.register_task(PlainClassTask())
