"""Serialization: compact messages, both formats readable, versions, and payloads of any size."""

from __future__ import annotations

import base64
import json
import math
import os
import time
import uuid
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kombu.serialization import loads

from actionrunner.sqs import codec
from tests.actions import echo, probe
from tests.conftest import Worker, message_text, receive_all


def decode(message: dict[str, Any]) -> tuple[dict[str, Any], list[Any]]:
    """Headers and [args, kwargs, embed] of an SQS message, decoded as kombu does for the worker."""
    envelope = json.loads(message_text(message))
    body = envelope["body"]
    if (envelope.get("properties") or {}).get("body_encoding") == "base64":
        body = base64.b64decode(body)
    if envelope["headers"].get("compression"):
        body = zlib.decompress(body)
    return envelope["headers"], loads(body, envelope["content-type"], envelope["content-encoding"])


def stock_message_size() -> tuple[int, int]:
    """Bytes of a two-int task: stock kombu's SQS body, and the compact one."""
    from celery import Celery
    from kombu.transport import memory

    app = Celery("sizes", broker="memory://")

    def add(a: int, b: int) -> int:
        return a + b

    task = app.task(name="tasks.add")(add)
    captured: list[dict[str, Any]] = []
    original = memory.Channel._put
    memory.Channel._put = lambda self, queue, message, **kw: captured.append(message)  # type: ignore[assignment,method-assign]
    try:
        task.apply_async((1, 2))
    finally:
        memory.Channel._put = original  # type: ignore[method-assign]
    stock = len(base64.b64encode(json.dumps(captured[0]).encode()))
    message = dict(captured[0])
    message["body"] = base64.b64decode(message["body"]).decode()  # what body_encoding=None leaves
    return stock, len(codec.encode(message, compress_over=None))


def test_compact_message_is_under_half_of_stock() -> None:
    stock, compact = stock_message_size()
    assert compact * 2 <= stock, (stock, compact)


def test_compression_applies_over_the_threshold_and_decodes() -> None:
    message = {"body": json.dumps({"text": "a" * 5000}), "content-type": "application/json",
               "content-encoding": "utf-8", "headers": {"id": "x", "task": "t"},
               "properties": {"delivery_info": {}}}
    text = codec.encode(message, compress_over=1000)
    envelope = json.loads(text)
    assert envelope["headers"]["compression"] == codec.ZLIB and len(text) < 1000
    assert json.loads(zlib.decompress(base64.b64decode(envelope["body"]))) == {"text": "a" * 5000}


def test_subclasses_of_json_types_are_written_as_the_stdlib_writes_them() -> None:
    """orjson writes a list subclass from its C storage: Celery's lazy ``regen`` (the tasks of
    ``group(<generator>)``) came out ``[]``, and the group sent nothing."""
    from collections import OrderedDict, namedtuple

    from celery import group, signature
    from celery.utils.functional import regen

    point = namedtuple("point", "x y")
    value = {"lazy": regen(iter([1, 2])), "point": point(3, 4), "ordered": OrderedDict(a=1),
             "sig": signature("t.add", args=(1,))}
    assert json.loads(codec.dumps(value)) == json.loads(json.dumps(value))
    lazy = group(signature("t.add", args=(n,)) for n in range(3))
    assert [t["args"] for t in json.loads(codec.dumps(lazy))["kwargs"]["tasks"]] == [[0], [1], [2]]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@pytest.mark.integration
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(value=json_values)
def test_round_trip_through_sqs_of_any_json_input(value: Any, sqs: Any, queue_url: str) -> None:
    run = uuid.uuid4().hex
    echo.delay(run=run, value=value)
    [message] = receive_all(sqs, queue_url, 1, timeout=10, token=run)
    headers, (args, kwargs, _) = decode(message)
    assert headers["task"] == "tests.actions.echo" and args == []
    assert kwargs == {"run": run, "value": value} or (
        isinstance(value, float) and math.isclose(kwargs["value"], value))


@pytest.mark.integration
@pytest.mark.e2e
def test_what_the_action_receives_equals_what_was_sent(
    start_worker: Callable[..., Worker], queue_url: str, record_dir: Path
) -> None:
    run = uuid.uuid4().hex[:8]
    values = ["naïve ☃ 𝄞 \u2028 \ufffe end", {"ключ": [1, 2.5, None, True, "\t\n\r"]}, "x" * 70_000,
              [{"deep": {"er": ["🙂" * 50]}}]]
    echo.delay_many([{"run": run, "value": v} for v in values])
    worker = start_worker()
    path = record_dir / f"{run}.jsonl"
    worker.wait_for(lambda: path.exists() and len(path.read_text().splitlines()) == len(values),
                    timeout=60, what="the echoes")
    got = [json.loads(line)["value"] for line in path.read_text().splitlines()]
    assert got == values


@pytest.mark.integration
@pytest.mark.e2e
def test_a_5_mb_input_goes_through_s3_and_the_object_is_gone_after(
    start_worker: Callable[..., Worker], queue_url: str, record_dir: Path, settings: Any, sqs: Any
) -> None:
    run = uuid.uuid4().hex[:8]
    big = base64.b64encode(os.urandom(3_900_000)).decode()  # 5.2 MB, incompressible
    s3 = settings.client("s3")

    def keys() -> set[str]:
        listed = s3.list_objects_v2(Bucket=settings.payload_bucket).get("Contents", [])
        return {o["Key"] for o in listed}

    before = keys()
    echo.delay(run=run, value=big)
    ours = keys() - before
    assert len(ours) == 1  # the payload went to S3, a pointer to the queue
    worker = start_worker()
    path = record_dir / f"{run}.jsonl"
    # the file appears before its 5 MB line is written: wait for the whole line
    worker.wait_for(lambda: path.exists() and path.read_text().endswith("\n"), timeout=90,
                    what="the big echo")
    assert json.loads(path.read_text())["value"] == big
    deadline = time.monotonic() + 15
    while ours & keys():
        assert time.monotonic() < deadline, "the payload object was not deleted"
        time.sleep(0.2)


@pytest.mark.integration
@pytest.mark.e2e
def test_a_message_in_the_stock_celery_format_still_runs(
    start_worker: Callable[..., Worker], queue_url: str, record_dir: Path, settings: Any
) -> None:
    from celery import Celery

    endpoint = settings.sqs_endpoint_url.removeprefix("http://")
    stock = Celery("stock", broker=f"sqs://{endpoint}")
    stock.conf.update(broker_transport_options={
        "region": settings.region, "predefined_queues": {settings.queue_name: {"url": queue_url}}},
        task_default_queue=settings.queue_name)
    bucket = f"stock-{uuid.uuid4().hex[:8]}"
    stock.send_task("tests.actions.record", kwargs={"bucket": bucket, "token": "old-format"},
                    MessageGroupId=f"rec:{bucket}", MessageDeduplicationId=bucket)
    worker = start_worker()
    path = record_dir / f"{bucket}.txt"
    worker.wait_for(lambda: path.exists(), timeout=30, what="the stock-format message to run")
    assert path.read_text().split() == ["old-format"]


@pytest.mark.integration
@pytest.mark.e2e
def test_an_unaccepted_schema_version_goes_to_the_dlq_with_the_reason(
    start_worker: Callable[..., Worker], queue_url: str, sqs: Any, settings: Any
) -> None:
    from celery import Task

    run = uuid.uuid4().hex[:8]
    future = Task.apply_async(probe, (), {"run": run, "group": "g", "seq": 0},
                              MessageGroupId=f"v:{run}", MessageDeduplicationId=f"v-{run}",
                              headers={"ar_schema": 99})
    worker = start_worker()
    [dead] = worker.wait_for(lambda: worker.lifecycle("dead-lettered", id=future.id), timeout=30,
                             what="the message in the DLQ")
    assert dead["error_type"] == "SchemaVersionRejected" and dead["attempt"] == 1
    assert "schema version 99" in dead["error"]


@pytest.mark.integration
@pytest.mark.e2e
def test_compression_chosen_per_action_round_trips(
    start_worker: Callable[..., Worker], queue_url: str, record_dir: Path, sqs: Any
) -> None:
    from tests.actions import echo_zipped

    run = uuid.uuid4().hex[:8]
    value = {"text": "compress me " * 500, "n": [1, 2, 3]}
    echo_zipped.delay(run=run, value=value)
    worker = start_worker()
    path = record_dir / f"{run}.jsonl"
    worker.wait_for(lambda: path.exists() and path.read_text().endswith("\n"), timeout=30,
                    what="the zipped echo")
    assert json.loads(path.read_text())["value"] == value


@pytest.mark.integration
def test_per_action_compression_is_on_the_wire(sqs: Any, queue_url: str) -> None:
    from tests.actions import echo_zipped

    run = uuid.uuid4().hex
    echo_zipped.delay(run=run, value="tiny")
    messages = receive_all(sqs, queue_url, 10, timeout=3)
    [message] = [m for m in messages if m["Attributes"]["MessageGroupId"] == f"zipped:{run}"]
    envelope = json.loads(message_text(message))
    assert envelope["headers"]["compression"] == codec.ZLIB
    headers, (_, kwargs, _) = decode(message)
    assert kwargs == {"run": run, "value": "tiny"}


def _task_message(args: Any, kwargs: Any, argsrepr: str | None, kwargsrepr: str | None) -> dict[str, Any]:
    from celery.utils.saferepr import saferepr

    headers = {"id": "x", "task": "t", "lang": "py", "origin": "gen1@host",
               "argsrepr": saferepr(args, 1024) if argsrepr is None else argsrepr,
               "kwargsrepr": saferepr(kwargs, 1024) if kwargsrepr is None else kwargsrepr}
    return {"body": json.dumps([list(args), kwargs, {}]), "content-type": "application/json",
            "content-encoding": "utf-8", "headers": headers, "properties": {"delivery_info": {}}}


@pytest.mark.parametrize("args", [(2, 3), [2, 3]])
def test_the_default_argsrepr_is_left_out_of_a_compact_message(args: Any) -> None:
    # Given a task message whose argsrepr/kwargsrepr are the ones Celery makes of its arguments
    message = _task_message(args, {"tenant": "t1"}, None, None)
    # When it is encoded in the compact format
    headers = json.loads(codec.encode(message, compress_over=None))["headers"]
    # Then the worker makes them again from the body: they are not sent
    assert "argsrepr" not in headers and "kwargsrepr" not in headers and "origin" not in headers


def test_an_explicit_argsrepr_is_kept_in_a_compact_message() -> None:
    # Given reprs the sender gave itself (apply_async(argsrepr=..., kwargsrepr=...)): one or both
    both = _task_message((2, 3), {"password": "hunter2"}, "CUSTOM ARGS", "<hidden>")
    only_kwargs = _task_message((2, 3), {"password": "hunter2"}, None, "<hidden>")
    # When encoded, Then the given ones travel (the worker's log lines and events show them)
    headers = json.loads(codec.encode(both, compress_over=None))["headers"]
    assert (headers["argsrepr"], headers["kwargsrepr"]) == ("CUSTOM ARGS", "<hidden>")
    headers = json.loads(codec.encode(only_kwargs, compress_over=None))["headers"]
    assert "argsrepr" not in headers and headers["kwargsrepr"] == "<hidden>"


@pytest.mark.integration
def test_the_worker_request_shows_the_senders_argsrepr(sqs: Any, queue_url: str) -> None:
    import tests.plain_tasks  # noqa: F401  (its @shared_task, on every app)
    from actionrunner.app import app
    from actionrunner.aws_lambda.events import decode as decode_message
    from actionrunner.worker.request import ActionRequest

    # (the ActionRunner app's own task: a @shared_task proxy follows the current app, which an
    # earlier test may have set to another one)
    plain_add = app.tasks["tests.plain_tasks.plain_add"]

    # Given one call with reprs of its own and one without, sent through SQS
    run = uuid.uuid4().hex
    sent = [plain_add.apply_async((run, "x"), argsrepr="CUSTOM ARGS", kwargsrepr="CUSTOM KWARGS"),
            plain_add.apply_async((run, "y"))]
    ids, messages = {result.id for result in sent}, []
    deadline = time.monotonic() + 20
    while len(messages) < 2 and time.monotonic() < deadline:  # (ids: in either wire format)
        for message in sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10,
                                           WaitTimeSeconds=1).get("Messages", []):
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
            if any(i in message_text(message) for i in ids):
                messages.append(message)
    assert len(messages) == 2, messages
    # When the worker's request is built from each received message
    requests = {}
    for message in messages:
        kombu_message = decode_message(message, "actions.fifo", max_bytes=10_000_000,
                                       is_registered=lambda name: True)
        request = ActionRequest(kombu_message, app=plain_add.app, task=plain_add, hostname="h")
        requests[request.args[1]] = request
    # Then it shows the sender's reprs (Celery's "received"/"succeeded" lines, events, inspect),
    # and makes the default ones from the body
    custom, default = requests["x"].info(safe=True), requests["y"].info(safe=True)
    assert (custom["args"], custom["kwargs"]) == ("CUSTOM ARGS", "CUSTOM KWARGS")
    assert (default["args"], default["kwargs"]) == (repr((run, "y")), "{}")
    # and a lone call is its own root (the compact format leaves out a root_id equal to the id)
    assert {r.root_id for r in requests.values()} == {r.id for r in requests.values()} == ids
