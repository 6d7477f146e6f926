"""Nothing a message contains stops a worker or vanishes (the catalogue of bench/hostile.py).

Each kind of malformed or hostile message is put on the queue around every sender-side check,
followed by a healthy message in its group. Given a real worker (and, below, the Lambda runtime),
every kind ends in the DLQ with its reason, its follower runs after it, the worker never exits,
and an object outside the payload bucket is neither read nor deleted. Runs on moto (several
messages of a group per receive) and, in the suite's second pass, on fauxqs (one).
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
from bench.hostile import KINDS, Context, dead_letters, error_type, plant_foreign_object, send_kinds
from tests.actions import probe
from tests.conftest import Worker

pytestmark = pytest.mark.integration


def _context(settings: Settings, run: str, foreign: tuple[str, str]) -> Context:
    return Context(app, "tests.actions.probe", {"run": run, "group": "f", "seq": 1},
                   {"run": run, "group": "f", "seq": "not a number"}, settings.queue_name,
                   settings.payload_bucket, *foreign)


def _runs(record_dir: Path, run: str) -> dict[str, dict[str, Any]]:
    path = record_dir / f"{run}.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return {r["group"]: r for r in map(json.loads, lines) if r["ok"]}


@pytest.fixture
def foreign(settings: Settings) -> tuple[str, str]:
    bucket = "actionrunner-foreign-test"
    return bucket, plant_foreign_object(settings.client("s3"), bucket)


def _foreign_intact(settings: Settings, foreign: tuple[str, str]) -> bool:
    body = settings.client("s3").get_object(Bucket=foreign[0], Key=foreign[1])["Body"].read()
    return bool(body == b"secret")


@pytest.mark.e2e
def test_every_hostile_message_is_dead_lettered_with_its_reason_and_its_group_goes_on(
    start_worker: Callable[..., Worker], queue_url: str, sqs: Any, settings: Settings,
    record_dir: Path, foreign: tuple[str, str],
) -> None:
    # Given a running worker
    worker = start_worker(concurrency=2)
    run = uuid.uuid4().hex[:8]
    # When every kind arrives, each followed by a healthy message of its group, beside healthy
    # traffic in other groups
    groups = send_kinds(sqs, queue_url, _context(settings, run, foreign),
                        group_of=lambda g: f"probe:{run}:{g}",
                        follower=lambda g: probe.delay(run=run, group=g, seq=2))
    probe.delay_many([{"run": run, "group": f"healthy{i}", "seq": 0} for i in range(4)])
    dlq_url = sqs.get_queue_url(QueueName=settings.dlq_name)["QueueUrl"]
    letters = dead_letters(sqs, dlq_url, set(groups.values()), timeout=settings.visibility_timeout + 15)
    worker.wait_for(lambda: len(_runs(record_dir, run)) >= len(KINDS) + 4, timeout=30,
                    what="every follower and the healthy traffic")
    ran = _runs(record_dir, run)
    # Then each is in the DLQ with the reason expected, and its follower ran after it
    wrong = {}
    for kind, (_, expected) in KINDS.items():
        letter = letters.get(groups[kind])
        follower = ran.get(groups[kind].rsplit(":", 1)[-1])
        got = error_type(letter) if letter else "not in the DLQ"
        if got != expected or follower is None:
            wrong[kind] = (expected, got, "follower ran" if follower else "follower did not run")
        elif follower["start"] + 0.05 < int(letter["Attributes"]["SentTimestamp"]) / 1000:
            wrong[kind] = (expected, got, "follower ran before it was dead-lettered")
        elif letter and not letter["MessageAttributes"]["actionrunner.error"]["StringValue"]:
            wrong[kind] = (expected, got, "no readable reason")
    assert wrong == {}
    # And the other groups ran, the worker is still running, the foreign object is untouched
    assert all(f"healthy{i}" in ran for i in range(4))
    assert worker.proc.poll() is None
    assert _foreign_intact(settings, foreign)
    # And each dead letter has its lifecycle line with the reason
    lines = worker.lifecycle("dead-lettered")
    assert {e["error_type"] for e in lines} >= {expected for _, expected in KINDS.values()}


# -- the Lambda runtime -------------------------------------------------------------------------
def _record(message: dict[str, Any], queue_arn: str) -> dict[str, Any]:
    from tests.test_lambda import lambda_record

    return lambda_record(message, queue_arn)


def _receive_groups(sqs: Any, url: str, groups: set[str], count: int,
                    timeout: float = 20.0) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while len(got) < count and time.monotonic() < deadline:
        for message in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                                           MessageSystemAttributeNames=["All"],
                                           MessageAttributeNames=["All"]).get("Messages", []):
            if message["Attributes"]["MessageGroupId"] in groups:
                got.append(message)
            else:
                sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    return got


def test_the_lambda_runtime_dead_letters_every_hostile_message_the_same_way(
    queue_url: str, sqs: Any, settings: Settings, record_dir: Path, foreign: tuple[str, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    runner = LambdaRunner(app, settings, sqs=sqs, hostname="lambda@test")
    arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    run = uuid.uuid4().hex[:8]
    # Given every kind, each followed by a healthy message in its group
    groups = send_kinds(sqs, queue_url, _context(settings, run, foreign),
                        group_of=lambda g: f"probe:{run}:{g}",
                        follower=lambda g: probe.delay(run=run, group=g, seq=2))
    # When the function handles them as the event source mapping hands them out
    pending = set(groups.values())
    handled = 0
    deadline = time.monotonic() + 60
    while handled < 2 * len(KINDS) and time.monotonic() < deadline:
        batch = _receive_groups(sqs, queue_url, pending, 10, timeout=2)
        if not batch:
            continue
        event = {"Records": [_record(m, arn) for m in batch]}
        response = runner.handle(event, None)
        # Then nothing is reported (nothing is retried): each record is settled
        assert response == {"batchItemFailures": []}
        for message in batch:
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
        handled += len(batch)
    dlq_url = sqs.get_queue_url(QueueName=settings.dlq_name)["QueueUrl"]
    letters = dead_letters(sqs, dlq_url, set(groups.values()), timeout=20)
    ran = _runs(record_dir, run)
    got = {kind: error_type(letters[g]) if g in letters else "not in the DLQ" for kind, g in groups.items()}
    assert got == {kind: expected for kind, (_, expected) in KINDS.items()}
    assert set(ran) == {g.rsplit(":", 1)[-1] for g in groups.values()}
    assert _foreign_intact(settings, foreign)


def test_with_no_payload_bucket_every_pointer_is_dead_lettered_unread(
    queue_url: str, sqs: Any, settings: Settings, foreign: tuple[str, str],
) -> None:
    # Given a function with no payload bucket configured, and a pointer into a bucket it can read
    runner = LambdaRunner(app, settings.model_copy(update={"payload_bucket": None}), sqs=sqs)
    arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    run = uuid.uuid4().hex[:8]
    build, _ = KINDS["pointer to a foreign bucket"]
    hostile = build(_context(settings, run, (settings.payload_bucket or "", foreign[1])))
    group = f"nobucket:{run}"
    sqs.send_message(QueueUrl=queue_url, MessageBody=hostile.body, MessageGroupId=group,
                     MessageDeduplicationId=run, MessageAttributes=hostile.attributes)
    [message] = _receive_groups(sqs, queue_url, {group}, 1)
    # When it handles it
    assert runner.handle({"Records": [_record(message, arn)]}, None) == {"batchItemFailures": []}
    sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
    # Then it is in the DLQ, refused for want of a payload bucket
    dlq_url = sqs.get_queue_url(QueueName=settings.dlq_name)["QueueUrl"]
    letter = dead_letters(sqs, dlq_url, {group}, timeout=10)[group]
    assert error_type(letter) == "PointerRefused"
    assert "no payload bucket" in letter["MessageAttributes"]["actionrunner.error"]["StringValue"]
