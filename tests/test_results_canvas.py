"""Celery results and canvas on the state table and SQS FIFO, with a real worker.

Results are kept per action here (``@action(ignore_result=False)``, tests/actions.py), or for
every action with ``ACTIONRUNNER_RUN_STATUS=all`` (in a sender process of its own).
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Callable

import pytest
from celery import chain, chord, group

from actionrunner.errors import ActionError, ResultsNotKept
from tests.actions import kept_add, kept_fail, kept_total, record
from tests.conftest import ROOT, Worker

pytestmark = [pytest.mark.integration, pytest.mark.e2e]


def test_results_not_kept_raise_an_error_naming_the_setting(queue_url: str) -> None:
    result = record.delay(bucket="not-kept", token=uuid.uuid4().hex)
    for ask in (lambda: result.get(timeout=1), lambda: result.state, result.ready,
                lambda: result.result, lambda: result.status):
        with pytest.raises(ResultsNotKept, match="ACTIONRUNNER_RUN_STATUS=all"):
            ask()


def test_asyncresult_get_state_ready_result_of_a_kept_action(
    start_worker: Callable[..., Worker], queue_url: str
) -> None:
    worker = start_worker()
    result = kept_add.delay(a=2, b=3)
    assert result.get(timeout=30) == 5
    assert result.state == "SUCCESS" and result.ready() and result.successful()
    assert result.result == 5
    failed = kept_fail.delay(token=uuid.uuid4().hex[:8])
    with pytest.raises(ValueError, match="kept failure"):
        failed.get(timeout=30)
    assert failed.state == "FAILURE" and failed.ready() and not failed.successful()
    assert worker.lifecycle("succeeded", id=result.id)


def test_run_status_all_keeps_every_actions_results(
    start_worker: Callable[..., Worker], queue_url: str
) -> None:
    env = {"ACTIONRUNNER_RUN_STATUS": "all"}
    start_worker(env=env)
    code = ("import uuid\n"
            "from tests.actions import record\n"
            "r = record.delay(bucket='all-' + uuid.uuid4().hex[:6], token='t')\n"
            "print(r.get(timeout=30), r.state, r.ready())\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**os.environ, **env},
                          capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["t", "SUCCESS", "True"]


def test_chain_group_chord_and_immutable_signatures_run_on_a_real_worker(
    start_worker: Callable[..., Worker], queue_url: str
) -> None:
    worker = start_worker(concurrency=2)
    # chain: each step's result is the next one's first input
    assert chain(kept_add.s(a=1, b=2), kept_add.s(b=10), kept_add.s(b=100))().get(timeout=60) == 113
    # .si(): immutable, the previous result is not passed on
    assert chain(kept_add.si(a=1, b=1), kept_add.si(a=5, b=5))().get(timeout=60) == 10
    # group: every member runs, in its own message group
    grouped = group(kept_add.s(a=n, b=1000) for n in range(4))()
    assert grouped.get(timeout=60) == [1000, 1001, 1002, 1003]
    groups = {line["group"] for r in grouped.results for line in worker.lifecycle("succeeded", id=r.id)}
    assert groups == {f"kept:{n}" for n in range(4)}
    # chord: the body gets the header's results, once
    body = chord(kept_add.s(a=n, b=0) for n in range(1, 5))(kept_total.s())
    assert body.get(timeout=60) == 10
    assert len(worker.lifecycle("succeeded", id=body.id)) == 1


def test_a_failure_reaches_the_group_chained_after_it(
    start_worker: Callable[..., Worker], queue_url: str
) -> None:
    """``a | fail | group(b, chain(c, d))``: the group's tasks never run; each is failed with the
    error (Celery skips the group and its .get() waits on members that never run: #6437)."""
    start_worker(concurrency=2)
    token = uuid.uuid4().hex[:8]
    sig = (kept_add.s(a=1, b=1) | kept_fail.si(token=token)
           | group(kept_add.s(b=1), chain(kept_add.s(b=2), kept_add.s(b=3))))
    res = sig.delay()
    with pytest.raises(ValueError, match=f"kept failure {token}"):
        res.get(timeout=60)
    assert [leaf.state for leaf in res.results] == ["FAILURE", "FAILURE"]
    assert res.results[1].parent is not None


def test_a_group_at_a_chains_end_runs_after_the_chain(
    start_worker: Callable[..., Worker], queue_url: str
) -> None:
    """``a | b | group(<generator>)``: the group is sent when b ends and each member runs (the
    lazy list of a generator's group was sent as ``[]``: nothing ran, and .get() waited; Celery's
    suite, test_group::test_parent_ids, checks the members' parent and root ids)."""
    start_worker(concurrency=2)
    res = (kept_add.si(a=1, b=1) | kept_add.si(a=2, b=2)
           | group(kept_add.si(a=n, b=0) for n in range(5)))()
    assert res.get(timeout=60) == [0, 1, 2, 3, 4]
    parent = res.parent
    assert parent is not None and parent.get(timeout=5) == 4
    assert parent.parent is not None and parent.parent.get(timeout=5) == 2


def test_what_the_canvas_does_not_support_fails_when_sent(queue_url: str) -> None:
    with pytest.raises(ActionError, match=r"task.chunks\(\)\) is not supported on SQS FIFO"):
        kept_add.chunks([(1, 2), (3, 4)], 1).apply_async()
    with pytest.raises(ActionError, match="celery.map .* is not supported"):
        kept_add.map([1, 2]).apply_async()
    # a chord needs its header's results kept
    with pytest.raises(ActionError, match="chord's header, but its results are not kept"):
        chord(record.s(bucket="c", token=str(n)) for n in range(2))(kept_total.s())


def test_writes_per_action_with_results_kept(aws: object, monkeypatch: pytest.MonkeyPatch) -> None:
    """DynamoDB writes of one run, counted on the client calls (in process, eagerly): the
    idempotency claim and completion, and the run record's running and succeeded."""
    from botocore.client import BaseClient

    from actionrunner import events, runs
    from actionrunner.app import app
    from actionrunner.settings import get_settings

    writes: list[str] = []
    original = BaseClient._make_api_call

    def counting(self: BaseClient, operation: str, params: dict) -> object:
        if self.meta.service_model.service_name == "dynamodb" and operation in (
                "PutItem", "UpdateItem", "DeleteItem", "TransactWriteItems"):
            writes.append(operation)
        return original(self, operation, params)

    monkeypatch.setattr(BaseClient, "_make_api_call", counting)
    runs.install_worker_observer(get_settings())
    app.conf.task_always_eager = True
    try:
        assert kept_add.delay(a=20, b=uuid.uuid4().int % 1000).get() >= 20
        kept = list(writes)
        writes.clear()
        record.delay(bucket="writes-" + uuid.uuid4().hex[:6], token="w")
        not_kept = list(writes)
    finally:
        app.conf.task_always_eager = False
        events.unobserve(runs._record)
    print(f"writes per action: results kept {kept}, not kept {not_kept}")
    assert sorted(kept) == ["PutItem", "UpdateItem", "UpdateItem", "UpdateItem"]
    assert sorted(not_kept) == ["PutItem", "UpdateItem"]


def test_a_state_stored_while_running_and_an_end_stored_elsewhere_are_read_back(queue_url: str) -> None:
    from actionrunner.app import app

    backend = app.backend
    progress, elsewhere, failed = (str(uuid.uuid4()) for _ in range(3))
    # update_state(state="PROGRESS", meta=...) from inside a task: the state and its meta
    backend.store_result(progress, {"current": 3, "total": 10}, "PROGRESS")
    result = app.AsyncResult(progress)
    assert (result.state, result.info) == ("PROGRESS", {"current": 3, "total": 10})
    # STARTED stored by a worker that tracks it (another process): STARTED, not PENDING
    backend.store_result(elsewhere, {"hostname": "other@host"}, "STARTED")
    assert app.AsyncResult(elsewhere).state == "STARTED"
    # an end stored by another process (no request): SUCCESS with its value, FAILURE with its error
    backend.store_result(elsewhere, {"answer": 42}, "SUCCESS")
    assert app.AsyncResult(elsewhere).get(timeout=5) == {"answer": 42}
    backend.store_result(failed, KeyError("gone"), "FAILURE")
    with pytest.raises(KeyError, match="gone"):
        app.AsyncResult(failed).get(timeout=5)


def test_the_pool_failed_line_after_a_stored_final_failure_leaves_the_run_ended(
    queue_url: str,
) -> None:
    """A chord member's final failure is stored (dead-lettered) as Celery marks it failed, before
    the pool process writes its "failed" lifecycle line: that later line must not turn an ended
    run back into an unfinished one (the chord's body would read its ChordError while the member
    looked still running: Celery's suite, test_chord_error_propagation_with_different_body_types).
    A run redriven from the DLQ starts again ("running"), which is still written."""
    from actionrunner.app import app
    from actionrunner.runs import run_store

    runs, run_id = run_store(), str(uuid.uuid4())
    fields = {"id": run_id, "action": "tests.actions.kept_fail", "attempt": 3}
    error = {"error_type": "ExpectedException", "error": "boom"}
    runs.record("dead-lettered", {**fields, **error})
    runs.record("failed", {**fields, **error})
    assert (runs.get(run_id) or {})["status"] == "dead-lettered"
    assert app.AsyncResult(run_id).state == "FAILURE"
    runs.record("started", {**fields, "attempt": 1})  # redriven: it runs again
    runs.record("failed", {**fields, **error, "attempt": 1})
    assert (runs.get(run_id) or {})["status"] == "failed"
