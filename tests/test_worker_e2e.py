"""End to end: actions sent with .delay() run in a real `celery -A actionrunner worker` process."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from actionrunner import constants as C
from tests.actions import explode, record
from tests.conftest import ROOT, Worker

pytestmark = [pytest.mark.integration, pytest.mark.e2e]


def _lines(record_dir: Path, bucket: str) -> list[str]:
    path = record_dir / f"{bucket}.txt"
    return path.read_text().splitlines() if path.exists() else []


def test_delay_runs_in_the_worker_and_logs_each_lifecycle_event_as_json(
    start_worker: Callable[..., Worker], queue_url: str, record_dir: Path
) -> None:
    # Given a worker started as a user would, loading tests.actions via ACTIONRUNNER_IMPORTS
    worker = start_worker()
    bucket, token = f"e2e-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    # When an action is sent with .delay()
    result = record.delay(bucket=bucket, token=token)
    # Then it runs there with its inputs
    worker.wait_for(lambda: worker.lifecycle("succeeded", id=result.id), what="succeeded")
    assert _lines(record_dir, bucket) == [token]
    # And its lifecycle lines carry the fields operators need
    [started] = worker.lifecycle("started", id=result.id)
    [succeeded] = worker.lifecycle("succeeded", id=result.id)
    for line in (started, succeeded):
        assert line["action"] == "tests.actions.record"
        assert line["group"] == f"rec:{bucket}"
        assert line["dedup_id"] == started["dedup_id"]  # from the call id: one per call
        assert line["attempt"] == 1
        assert line["level"] == "info" and "timestamp" in line
    assert isinstance(started["queue_wait_ms"], float) and started["queue_wait_ms"] >= 0
    assert succeeded["outcome"] == "succeeded"
    assert isinstance(succeeded["duration_ms"], float)
    # and each line is a CloudWatch metric too (Embedded Metric Format)
    assert succeeded["ActionsSucceeded"] == 1 and succeeded["ActionDuration"] == succeeded["duration_ms"]
    assert succeeded["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "ActionRunner"
    assert started["ActionsStarted"] == 1 and started["QueueWait"] == started["queue_wait_ms"]


def test_a_failure_is_logged_with_its_error_type(
    start_worker: Callable[..., Worker], queue_url: str
) -> None:
    worker = start_worker()
    result = explode.delay(token=uuid.uuid4().hex[:8])
    [failed] = worker.wait_for(lambda: worker.lifecycle("failed", id=result.id), what="failed")
    assert failed["outcome"] == "failed"
    assert failed["error_type"] == "ValueError"
    assert failed["level"] == "error"


def test_the_same_call_sent_twice_within_the_dedup_window_runs_once(
    start_worker: Callable[..., Worker], queue_url: str, record_dir: Path
) -> None:
    # (one call, sent twice: e.g. a producer that re-sends after a lost response keeps its call id)
    bucket, token = f"dup-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    call = {C.CALL_ID_HEADER: uuid.uuid4().hex}
    first = record.apply_async(kwargs={"bucket": bucket, "token": token}, headers=call)
    second = record.apply_async(kwargs={"bucket": bucket, "token": token}, headers=call)
    marker = record.delay(bucket=bucket, token="after")  # same group: runs after the others
    worker = start_worker()
    worker.wait_for(lambda: worker.lifecycle("succeeded", id=marker.id), what="the marker")
    assert _lines(record_dir, bucket).count(token) == 1
    ran = {e["id"] for e in worker.lifecycle("succeeded")}
    assert first.id in ran and second.id not in ran


def test_action_modules_come_from_actionrunner_imports(aws: Any, queue_url: str) -> None:
    # Without tests.actions in ACTIONRUNNER_IMPORTS, the worker does not know the test actions...
    env = {**os.environ, "ACTIONRUNNER_IMPORTS": ""}
    code = "from actionrunner.app import app, import_action_modules as i; i(app); print(sorted(app.tasks))"
    without = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True)
    assert "tests.actions.record" not in without.stdout and "tasks.demo.hello" in without.stdout
    # ...and with it, it does
    with_ = subprocess.run([sys.executable, "-c", code], env={**env, "ACTIONRUNNER_IMPORTS": "tests.actions"},
                           cwd=ROOT, capture_output=True, text=True)
    assert "tests.actions.record" in with_.stdout
    # A module that cannot be imported is named in a clear error
    bad = subprocess.run([sys.executable, "-c", code], env={**env, "ACTIONRUNNER_IMPORTS": "no.such.module"},
                         cwd=ROOT, capture_output=True, text=True)
    assert "cannot import action module 'no.such.module'" in bad.stderr


def test_a_clean_stop_logs_no_traceback(
    start_worker: Callable[..., Worker], queue_url: str, record_dir: Path
) -> None:
    # Given a worker that ran an action and polls its queue and its mailbox
    worker = start_worker()
    bucket = f"stop-{uuid.uuid4().hex[:8]}"
    record.delay(bucket=bucket, token="t")
    worker.wait_for(lambda: _lines(record_dir, bucket), timeout=30, what="the action")
    # When it is stopped as a supervisor stops it
    assert worker.stop() == 0
    # Then it said nothing alarming on the way out
    text = worker.log_path.read_text()
    assert "Traceback" not in text and "Error in timer" not in text, text[-3000:]
