"""An expired message (its ``expires`` passed) never ends silently: by default it is dead-lettered
as ``MessageExpired`` (tests/test_hostile.py, both runtimes); with ``ACTIONRUNNER_EXPIRED=discard``
it is deleted, and either way an ``expired`` line counts it (metric ``ActionsExpired``). Its group
goes on. Runs on moto and fauxqs.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from actionrunner.app import app
from actionrunner.aws_lambda import LambdaRunner
from actionrunner.settings import Settings
from bench.hostile import KINDS, Context, dead_letters
from tests.actions import probe
from tests.conftest import Worker

pytestmark = pytest.mark.integration


def _expired_body(settings: Settings, run: str, group: str) -> str:
    build, _ = KINDS["expired before it ran"]
    ctx = Context(app, "tests.actions.probe", {"run": run, "group": group, "seq": 1}, {},
                  settings.queue_name, None, "", "")
    return build(ctx).body


def _ran(record_dir: Path, run: str) -> list[dict[str, Any]]:
    path = record_dir / f"{run}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.mark.e2e
def test_a_worker_set_to_discard_deletes_an_expired_message_counts_it_and_its_group_goes_on(
    start_worker: Callable[..., Worker], queue_url: str, sqs: Any, settings: Settings,
    record_dir: Path,
) -> None:
    # Given a worker that discards expired messages
    worker = start_worker(env={"ACTIONRUNNER_EXPIRED": "discard"})
    run = uuid.uuid4().hex[:8]
    group = f"probe:{run}:x"
    # When an expired message arrives, a healthy one behind it in its group
    sqs.send_message(QueueUrl=queue_url, MessageBody=_expired_body(settings, run, "x"),
                     MessageGroupId=group, MessageDeduplicationId=uuid.uuid4().hex)
    probe.delay(run=run, group="x", seq=2)
    # Then the follower runs, the expired one did not, and an expired line counted it
    worker.wait_for(lambda: _ran(record_dir, run), timeout=30, what="the follower")
    [line] = worker.wait_for(lambda: worker.lifecycle("expired"), timeout=10, what="the expired line")
    assert line["outcome"] == "discarded" and line["ActionsExpired"] == 1
    assert [r["seq"] for r in _ran(record_dir, run)] == [2]
    dlq_url = sqs.get_queue_url(QueueName=settings.dlq_name)["QueueUrl"]
    assert dead_letters(sqs, dlq_url, {group}, timeout=3) == {}


def test_the_lambda_runtime_discards_or_dead_letters_an_expired_message(
    queue_url: str, sqs: Any, settings: Settings, caplog: pytest.LogCaptureFixture,
) -> None:
    from tests.test_lambda import lambda_event

    caplog.set_level(logging.INFO)
    arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    dlq_url = sqs.get_queue_url(QueueName=settings.dlq_name)["QueueUrl"]
    for setting in ("discard", "dead-letter"):
        run = uuid.uuid4().hex[:8]
        group = f"expired:{run}"
        sqs.send_message(QueueUrl=queue_url, MessageBody=_expired_body(settings, run, "x"),
                         MessageGroupId=group, MessageDeduplicationId=uuid.uuid4().hex)
        messages: list[dict[str, Any]] = []
        deadline = time.monotonic() + 20
        while not messages and time.monotonic() < deadline:
            messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=1,
                                           WaitTimeSeconds=1, MessageSystemAttributeNames=["All"],
                                           MessageAttributeNames=["All"]).get("Messages", [])
        runner = LambdaRunner(app, settings.model_copy(update={"expired": setting}), sqs=sqs)
        assert runner.handle(lambda_event(messages, arn), None) == {"batchItemFailures": []}
        sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=messages[0]["ReceiptHandle"])
        letters = dead_letters(sqs, dlq_url, {group}, timeout=3 if setting == "discard" else 15)
        if setting == "discard":
            assert letters == {}
        else:
            attrs = letters[group]["MessageAttributes"]
            assert attrs["actionrunner.error_type"]["StringValue"] == "MessageExpired"
            assert attrs["actionrunner.error"]["StringValue"].startswith("expired:")
    expired = [r.msg for r in caplog.records if isinstance(r.msg, dict) and r.msg.get("event") == "expired"]
    assert [e["outcome"] for e in expired] == ["discarded", "dead-letter"]
