"""Plain Celery tasks on the ActionRunner app: ``@shared_task``, ``@app.task``, class-based tasks
and tasks sent by name (``send_task``, ``signature("name")``) travel on the FIFO queue with a
message group and a call id, and run as actions do (order, retries on the same message, DLQ,
results, lifecycle lines). Runs against moto and fauxqs (the suite's two passes)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from celery import shared_task, signature

from actionrunner import keys
from actionrunner.app import app
from actionrunner.errors import ActionDefinitionError, ActionError
from tests.conftest import Worker, message_text, receive_all
from tests.plain_tasks import (
    PlainGaveUp,
    plain_add,
    plain_class_task,
    plain_explode,
    plain_fails_once,
    plain_flaky,
    plain_record,
    plain_reject,
    plain_retries_once,
)

pytestmark = pytest.mark.integration

IMPORTS = {"ACTIONRUNNER_IMPORTS": "tests.actions,tests.plain_tasks"}


def _sent(sqs: Any, url: str, token: str, n: int = 1) -> list[dict[str, Any]]:
    got = receive_all(sqs, url, n, timeout=20, token=token)
    assert len(got) == n, got
    return got


# -- the send path ---------------------------------------------------------------------------
def test_each_way_of_sending_a_plain_task_gets_a_group_and_a_call_id(sqs: Any, queue_url: str) -> None:
    # Given plain tasks sent every way Celery offers (no @action anywhere)
    token = uuid.uuid4().hex
    sent = {
        "shared_task": plain_add.delay(token, "x"),
        "app.task with message_group": plain_record.delay(bucket="b", token=token),
        "class-based": plain_class_task.apply_async(args=(7,), headers={"t": token}),
        "send_task (a name this process does not know)": app.send_task(
            "elsewhere.report", args=(token,)),
        "signature by name": signature("elsewhere.report", args=(token,)).delay(),
        "send_task of a known name": app.send_task("tests.plain_tasks.plain_record",
                                                   kwargs={"bucket": "b", "token": token}),
        "a call's own group": plain_add.apply_async((token, "y"), MessageGroupId="mine"),
    }
    # Then every one reached the FIFO queue, each in its group, each with its own dedup id
    messages = _sent(sqs, queue_url, token, len(sent))
    by_id = {}
    for m in messages:
        text = message_text(m)
        [task_id] = [r.id for r in sent.values() if r.id in text]
        by_id[task_id] = m["Attributes"]
    groups = {what: by_id[r.id]["MessageGroupId"] for what, r in sent.items()}
    assert groups == {
        "shared_task": "tests.plain_tasks.plain_add",
        "app.task with message_group": "plain-fixed",
        "class-based": "tests.plain_tasks.PlainClassTask",
        "send_task (a name this process does not know)": "elsewhere.report",
        "signature by name": "elsewhere.report",
        "send_task of a known name": "plain-fixed",
        "a call's own group": "mine",
    }
    # the dedup id is the call's (its task id): deterministic, one per call
    for what, result in sent.items():
        name = "tests.plain_tasks.PlainClassTask" if what == "class-based" else None
        name = name or {"shared_task": "tests.plain_tasks.plain_add",
                        "a call's own group": "tests.plain_tasks.plain_add",
                        "app.task with message_group": "tests.plain_tasks.plain_record",
                        "send_task of a known name": "tests.plain_tasks.plain_record"}.get(
                            what, "elsewhere.report")
        assert by_id[result.id]["MessageDeduplicationId"] == keys.call_dedup_id(name, result.id), what


def test_two_equal_calls_are_two_messages_and_a_route_names_the_group(
    sqs: Any, queue_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = uuid.uuid4().hex
    first, second = plain_add.delay(token, 1), plain_add.delay(token, 1)
    assert len(_sent(sqs, queue_url, token, 2)) == 2 and first.id != second.id
    # Given task_routes naming a group for a task (kombu's spelling, as for apply_async)
    monkeypatch.setitem(app.conf, "task_routes",
                        {"tests.plain_tasks.plain_add": {"MessageGroupId": "routed"},
                         "tests.plain_tasks.plain_record": {"MessageGroupId": "routed"}})
    app.amqp.flush_routes()
    try:
        router = app.amqp.Router()
        routed = plain_add.apply_async((token, 2), router=router)
        by_name = app.send_task("tests.plain_tasks.plain_add", args=(token, 3), router=router)
        declared = plain_record.apply_async(kwargs={"bucket": "b", "token": token}, router=router)
    finally:
        monkeypatch.undo()
        app.amqp.flush_routes()
    groups = {}
    for m in _sent(sqs, queue_url, token, 3):
        [r] = [r for r in (routed, by_name, declared) if r.id in message_text(m)]
        groups[r.id] = m["Attributes"]["MessageGroupId"]
    # Then the route's group is used; the task's own message_group wins over a route (Celery's
    # order: the call, the task, the route)
    assert groups == {routed.id: "routed", by_name.id: "routed", declared.id: "plain-fixed"}


def test_what_a_plain_task_cannot_have_is_refused_with_the_reason() -> None:
    with pytest.raises(ActionDefinitionError, match=r"only an @action does that"):
        @shared_task(message_group="tenant:{tenant_id}", name="tests.plain_tasks_bad_group")
        def templated(tenant_id: str) -> None: ...
        templated.name  # noqa: B018  (a shared task is made when first used)
    with pytest.raises(ActionError, match="message_group_id= is not an SQS option; use MessageGroupId"):
        plain_add.apply_async((1, 2), message_group_id="g")
    with pytest.raises(ActionError, match="priority= is not supported: SQS FIFO has no priorities"):
        app.send_task("elsewhere.report", priority=3)
    # arguments that do not fit the function: refused at send, as Celery does (strict_typing)
    with pytest.raises(TypeError, match="missing 1 required positional argument"):
        plain_add.delay(1)
    with pytest.raises(TypeError, match="unexpected keyword argument"):
        plain_add.delay(1, 2, wrong=3)


# -- on a real worker ------------------------------------------------------------------------
@pytest.mark.e2e
def test_plain_tasks_run_with_results_order_retries_and_dlq(
    start_worker: Callable[..., Worker], queue_url: str, record_dir: Path, sqs: Any, settings: Any
) -> None:
    run = uuid.uuid4().hex[:8]
    # Given plain tasks of every kind sent before the worker starts
    added = plain_add.delay(2, 3)
    by_name = app.send_task("tests.plain_tasks.plain_add", args=(10, 20))
    squared = signature("tests.plain_tasks.PlainClassTask", args=(4,)).delay()
    ordered = [plain_record.delay(bucket=f"order-{run}", token=str(n)) for n in range(5)]
    flaky = plain_flaky.delay(bucket=f"flaky-{run}", fail_times=2)
    poison = plain_explode.delay(token=run)
    wrong = app.send_task("tests.plain_tasks.plain_add", args=(1,))  # (by name: not checked)
    gave_up = plain_retries_once.delay(run)
    rejected = plain_reject.delay(run)
    # a chain whose first step fails once: Celery hands each failure on to what is chained after
    # it; a failure that will run again must not fail (and so end) the next step
    chained = (plain_fails_once.s(f"chained-{run}") | plain_add.s(10)).delay()
    worker = start_worker(concurrency=2, env=IMPORTS)
    # Then results come back through AsyncResult
    assert added.get(timeout=60) == 5
    assert by_name.get(timeout=60) == 30
    assert squared.get(timeout=60) == {"x": 4, "square": 16}
    assert [r.get(timeout=60) for r in ordered] == [str(n) for n in range(5)]
    # in order, one at a time, in their declared group
    assert (record_dir / f"order-{run}.txt").read_text().split() == [str(n) for n in range(5)]
    assert {line["group"] for r in ordered for line in worker.lifecycle("succeeded", id=r.id)} \
        == {"plain-fixed"}
    # a retry runs the same message again (same dedup id), then succeeds
    assert flaky.get(timeout=60) == 3
    retried = worker.lifecycle("retrying", id=flaky.id)
    assert len(retried) == 2 and {line["dedup_id"] for line in retried} == \
        {keys.call_dedup_id("tests.plain_tasks.plain_flaky", flaky.id)}
    # and a task that keeps failing is dead-lettered after its attempts, with the failure
    [dead] = worker.wait_for(lambda: worker.lifecycle("dead-lettered", id=poison.id), timeout=60,
                             what="the plain task to be dead-lettered")
    assert dead["attempt"] == 2 and dead["error_type"] == "ValueError"
    [message] = _dlq(sqs, settings, "tests.plain_tasks.plain_explode", poison.id)
    assert f"plain boom {run}" in message["MessageAttributes"]["actionrunner.error"]["StringValue"]
    # a call whose arguments do not fit is dead-lettered on its first attempt (a retry cannot fix
    # it), and its result raises a TypeError
    with pytest.raises(TypeError, match="do not fit its signature"):
        wrong.get(timeout=60)
    assert wrong.state == "FAILURE"
    [dead] = worker.lifecycle("dead-lettered", id=wrong.id)
    assert dead["attempt"] == 1 and dead["error_type"] == "WrongArguments"
    # Celery's max_retries=1: one retry, then the exception it retried on (its own arguments)
    with pytest.raises(PlainGaveUp) as raised:
        gave_up.get(timeout=60)
    assert raised.value.args == (run, "gave up")
    [dead] = worker.lifecycle("dead-lettered", id=gave_up.id)
    assert dead["attempt"] == 2 and dead["error_type"] == "PlainGaveUp"
    # Reject(requeue=False): dead-lettered at once, its result FAILURE with the task's Reject
    from celery.exceptions import Reject

    with pytest.raises(Reject):
        rejected.get(timeout=60)
    assert rejected.state == "FAILURE"
    [dead] = worker.lifecycle("dead-lettered", id=rejected.id)
    assert dead["attempt"] == 1 and dead["error_type"] == "Reject"
    # while the first step waits for its second run, the next step is not failed
    worker.wait_for(lambda: worker.lifecycle("retrying", id=chained.parent.id), timeout=60,
                    what="the chain's first step to fail once")
    assert chained.state == "PENDING"
    # the chain's next step ran on the retried step's result, and ran once
    assert chained.get(timeout=60) == 12
    assert chained.parent.get(timeout=60) == 2
    assert len(worker.lifecycle("succeeded", id=chained.id)) == 1
    assert not worker.lifecycle("dead-lettered", id=chained.id)
    # lifecycle lines name the plain task like an action
    assert worker.lifecycle("started", id=added.id)[0]["action"] == "tests.plain_tasks.plain_add"


@pytest.mark.e2e
def test_a_task_no_worker_knows_is_a_warning_and_a_dlq_entry_with_the_reason(
    start_worker: Callable[..., Worker], queue_url: str, sqs: Any, settings: Any
) -> None:
    # Given a plain send of a name no worker registers (no ids given: the plain-task path)
    sent = app.send_task("tests.plain_tasks.nobody_has_this", args=(1,))
    worker = start_worker(env=IMPORTS)
    # Then the worker says so in its log, and the DLQ holds the message with the reason
    [line] = worker.wait_for(lambda: worker.lifecycle("dead-lettered", id=sent.id), timeout=30,
                             what="the unknown task's dead-lettered line")
    assert line["level"] in ("warning", "error") and line["error_type"] == "UnknownAction"
    assert "tests.plain_tasks.nobody_has_this" in line["error"]
    [message] = _dlq(sqs, settings, "tests.plain_tasks.nobody_has_this", sent.id)
    attrs = {k: v["StringValue"] for k, v in message["MessageAttributes"].items()}
    assert attrs["actionrunner.error_type"] == "UnknownAction"
    assert "no action named 'tests.plain_tasks.nobody_has_this'" in attrs["actionrunner.error"]


def _dlq(sqs: Any, settings: Any, group: str, task_id: str) -> list[dict[str, Any]]:
    """The DLQ messages of ``task_id`` (deleted, so later tests do not see them)."""
    url = sqs.get_queue_url(QueueName=settings.dlq_name)["QueueUrl"]
    found: list[dict[str, Any]] = []
    deadline = time.monotonic() + 20
    while not found and time.monotonic() < deadline:
        for m in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                                     MessageSystemAttributeNames=["All"],
                                     MessageAttributeNames=["All"]).get("Messages", []):
            if task_id in message_text(m):
                sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
                assert m["Attributes"]["MessageGroupId"] == group
                found.append(m)
    return found
