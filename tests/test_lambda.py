"""The Lambda runtime (actionrunner/aws_lambda/) on events built from real ReceiveMessage output.

Actions are sent with ``.delay()`` / ``apply_async`` to the session's local SQS, received with
boto3 (all attributes, not deleted), turned into the event an SQS event source mapping would
hand the function, and run in this process by :class:`LambdaRunner`. Like the mapping, the test
then deletes what the handler did not report.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from actionrunner.app import app
from actionrunner.aws_lambda import LambdaRunner
from actionrunner.deploy import core
from actionrunner.settings import Settings
from actionrunner.settle import failure_attributes
from actionrunner.sqs import claimcheck
from tests.actions import explode, fragile_head, record, tally
from tests.conftest import SQS_SERVER, message_text

pytestmark = pytest.mark.integration
#: Batches that hold several messages of one group, as SQS (and moto) hands them out.
several_per_group = pytest.mark.skipif(
    SQS_SERVER == "fauxqs", reason="fauxqs returns at most one message per group per receive")


# -- factories -------------------------------------------------------------------------------
def receive(sqs: Any, url: str, count: int, token: str, timeout: float = 15.0) -> list[dict[str, Any]]:
    """Receive (without deleting) the ``count`` messages whose body holds ``token``, with every
    attribute, in the order SQS hands them out; other messages are deleted."""
    got: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while len(got) < count and time.monotonic() < deadline:
        response = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                                       MessageSystemAttributeNames=["All"],
                                       MessageAttributeNames=["All"])
        for message in response.get("Messages", []):
            if token in _text(message):
                got.append(message)
            else:
                sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    assert len(got) == count, f"received {len(got)} of {count} messages"
    return got


def _text(message: dict[str, Any]) -> str:
    try:
        return message_text(message)
    except ValueError:  # not kombu's base64 envelope
        return str(message["Body"])


def lambda_record(message: dict[str, Any], queue_arn: str) -> dict[str, Any]:
    """One record of the event Lambda builds from a received SQS message."""
    attributes = {}
    for name, value in (message.get("MessageAttributes") or {}).items():
        attributes[name] = {"stringValue": value.get("StringValue"), "binaryValue": None,
                            "stringListValues": [], "binaryListValues": [],
                            "dataType": value["DataType"]}
    return {
        "messageId": message["MessageId"], "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"], "attributes": dict(message["Attributes"]),
        "messageAttributes": attributes, "md5OfBody": message["MD5OfBody"],
        "eventSource": "aws:sqs", "eventSourceARN": queue_arn, "awsRegion": "us-east-1",
    }


def lambda_event(messages: list[dict[str, Any]], queue_arn: str) -> dict[str, Any]:
    return {"Records": [lambda_record(m, queue_arn) for m in messages]}


def finish(sqs: Any, url: str, event: dict[str, Any], response: dict[str, Any]) -> None:
    """What the event source mapping does after the function returned: delete every record
    that is not in ``batchItemFailures``."""
    reported = {f["itemIdentifier"] for f in response["batchItemFailures"]}
    for item in event["Records"]:
        if item["messageId"] not in reported:
            sqs.delete_message(QueueUrl=url, ReceiptHandle=item["receiptHandle"])


class Context:
    """The part of Lambda's context object the handler reads."""

    def __init__(self, seconds_left: float = 60.0) -> None:
        self.deadline = time.monotonic() + seconds_left

    def get_remaining_time_in_millis(self) -> int:
        return int((self.deadline - time.monotonic()) * 1000)


def lines(caplog: pytest.LogCaptureFixture, event: str) -> list[dict[str, Any]]:
    return [r.msg for r in caplog.records if r.name == "actionrunner.lifecycle"
            and isinstance(r.msg, dict) and r.msg.get("event") == event]


def recorded(record_dir: Path, bucket: str) -> list[str]:
    path = record_dir / f"{bucket}.txt"
    return path.read_text().split() if path.exists() else []


@pytest.fixture
def queue_arn(sqs: Any, queue_url: str) -> str:
    return str(sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])
               ["Attributes"]["QueueArn"])


@pytest.fixture
def runner(settings: Settings, sqs: Any, caplog: pytest.LogCaptureFixture,
           runtime_logging: None) -> LambdaRunner:
    caplog.set_level(logging.INFO)
    return LambdaRunner(app, settings, sqs=sqs, hostname="lambda@test")


def dlq_messages(sqs: Any, settings: Settings, token: str, count: int) -> list[dict[str, Any]]:
    url = sqs.get_queue_url(QueueName=settings.dlq_name)["QueueUrl"]
    messages = receive(sqs, url, count, token)
    for message in messages:
        sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    return messages


# -- group order, partial batch responses, retries, DLQ ---------------------------------------
@several_per_group
def test_a_failure_reports_the_rest_of_its_group_and_other_groups_go_on(
        sqs: Any, queue_url: str, queue_arn: str, runner: LambdaRunner, record_dir: Path,
        settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    # Given group A: record a1, a failing action, record a3; and group B: b1, b2
    run = uuid.uuid4().hex[:12]
    a, b = f"{run}-a", f"{run}-b"
    record.delay(bucket=a, token=f"{run}-a1")
    explode.apply_async(kwargs={"token": f"{run}-a2"}, MessageGroupId=f"rec:{a}")
    record.delay(bucket=a, token=f"{run}-a3")
    record.delay(bucket=b, token=f"{run}-b1")
    record.delay(bucket=b, token=f"{run}-b2")
    messages = receive(sqs, queue_url, 5, run)
    by_token = {message_text(m): m for m in messages}  # (the token is in the inputs)
    order = [m["MessageId"] for m in messages]
    ids = {t: next(m["MessageId"] for r, m in by_token.items() if f"{run}-{t}" in r)
           for t in ("a1", "a2", "a3", "b1", "b2")}
    assert order.index(ids["a1"]) < order.index(ids["a2"]) < order.index(ids["a3"])
    assert order.index(ids["b1"]) < order.index(ids["b2"])

    # When the function handles them as one batch
    event = lambda_event(messages, queue_arn)
    response = runner.handle(event, Context())
    finish(sqs, queue_url, event, response)

    # Then the failing message and the rest of its group are reported, in order, and nothing
    # after the failure ran in its group; group B ran in order
    assert response == {"batchItemFailures": [{"itemIdentifier": ids["a2"]},
                                              {"itemIdentifier": ids["a3"]}]}
    assert recorded(record_dir, a) == [f"{run}-a1"]
    assert recorded(record_dir, b) == [f"{run}-b1", f"{run}-b2"]
    [retrying] = lines(caplog, "retrying")
    assert (retrying["action"], retrying["attempt"], retrying["group"]) == (
        "tests.actions.explode", 1, f"rec:{a}")

    # When SQS hands out group A again (the failure after its backoff), twice more
    for attempt in (2, 3):
        again = receive(sqs, queue_url, 2, run)
        assert [m["MessageId"] for m in again] == [ids["a2"], ids["a3"]]  # order kept
        event = lambda_event(again, queue_arn)
        response = runner.handle(event, Context())
        finish(sqs, queue_url, event, response)
        if attempt == 2:
            assert [f["itemIdentifier"] for f in response["batchItemFailures"]] == [ids["a2"], ids["a3"]]
            assert recorded(record_dir, a) == [f"{run}-a1"]

    # Then on its third attempt (explode: max_attempts=3) it went to the DLQ with the failure
    # recorded as the worker records it, and its group went on
    assert response == {"batchItemFailures": []}
    assert recorded(record_dir, a) == [f"{run}-a1", f"{run}-a3"]
    [letter] = dlq_messages(sqs, settings, f"{run}-a2", 1)
    failure = failure_attributes(letter)
    assert (failure["error_type"], failure["attempts"]) == ("ValueError", "3")
    assert failure["error"] == f"boom {run}-a2"
    assert letter["Attributes"]["MessageGroupId"] == f"rec:{a}"
    # a3 waited behind the failure for three receives, but ran on its first attempt
    [a3_started] = [line for line in lines(caplog, "started") if line["group"] == f"rec:{a}"
                    and line["action"] == "tests.actions.record" and line["receive_count"] == 3]
    assert a3_started["attempt"] == 1
    assert lines(caplog, "dead-lettered")[0]["attempts"] == 3


def test_the_lifecycle_lines_carry_the_metrics_the_failure_rate_alarm_reads(
        sqs: Any, queue_url: str, queue_arn: str, runner: LambdaRunner,
        caplog: pytest.LogCaptureFixture) -> None:
    # Given an action that succeeds and one that fails, run by the function
    run = uuid.uuid4().hex[:12]
    record.delay(bucket=run, token=f"{run}-1")
    explode.delay(token=f"{run}-2")
    event = lambda_event(receive(sqs, queue_url, 2, run), queue_arn)
    response = runner.handle(event, Context())
    for message in event["Records"]:  # the failure too: this test is about its lines
        sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["receiptHandle"])
    assert len(response["batchItemFailures"]) == 1
    # Then their lines carry, as CloudWatch Embedded Metric Format totals (no dimension), the
    # metrics the stacks' failure-rate alarm divides
    alarm = core.alarms()["FailureRateAlarm"]["Properties"]["Metrics"]
    wanted = {(m["MetricStat"]["Metric"]["Namespace"], m["MetricStat"]["Metric"]["MetricName"])
              for m in alarm if "MetricStat" in m}
    emitted = {(directive["Namespace"], metric["Name"])
               for line in lines(caplog, "started") + lines(caplog, "failed")
               for directive in line["_aws"]["CloudWatchMetrics"] if [] in directive["Dimensions"]
               for metric in directive["Metrics"]}
    assert wanted == {("ActionRunner", "ActionsFailed"), ("ActionRunner", "ActionsStarted")}
    assert wanted <= emitted


class CountingClient:
    """Wraps a boto3 client and counts the API calls made through it."""

    def __init__(self, client: Any) -> None:
        self.client, self.calls = client, Counter()

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.client, name)
        if not callable(attribute) or name.startswith(("get_paginator", "get_waiter", "can_")):
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            return attribute(*args, **kwargs)

        return call


def test_succeeded_records_cost_the_function_no_sqs_request(
        sqs: Any, queue_url: str, queue_arn: str, settings: Settings, record_dir: Path) -> None:
    # Given a batch of three actions that succeed
    run = uuid.uuid4().hex[:12]
    for n in range(3):
        record.delay(bucket=f"{run}-{n}", token=f"{run}-{n}")
    event = lambda_event(receive(sqs, queue_url, 3, run), queue_arn)
    counting = CountingClient(sqs)
    runner = LambdaRunner(app, settings, sqs=counting, hostname="lambda@test")
    # When the function runs them
    response = runner.handle(event, Context())
    finish(sqs, queue_url, event, response)
    # Then it made no SQS request (the event source mapping deletes them, in batches)
    assert response == {"batchItemFailures": []}
    assert [recorded(record_dir, f"{run}-{n}") for n in range(3)] == [[f"{run}-{n}"] for n in range(3)]
    assert counting.calls == Counter()


# -- idempotency ------------------------------------------------------------------------------
def test_duplicates_are_skipped_by_the_idempotency_store(
        sqs: Any, queue_url: str, queue_arn: str, runner: LambdaRunner, record_dir: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    # Given the same call sent twice past SQS's deduplication (other dedup ids; the copy in a
    # group of its own, so that any SQS server hands both out at once), in one batch
    run = uuid.uuid4().hex[:12]
    tally.apply_async(kwargs={"run": run, "token": "t"}, MessageDeduplicationId=f"{run}-1")
    tally.apply_async(kwargs={"run": run, "token": "t"}, MessageDeduplicationId=f"{run}-2",
                      MessageGroupId=f"copy:{run}")
    messages = receive(sqs, queue_url, 2, run)
    event = lambda_event(messages, queue_arn)
    # When the function handles the batch, and then the same batch again (a redelivery)
    first = runner.handle(event, Context())
    second = runner.handle(event, Context())
    finish(sqs, queue_url, event, second)
    # Then the action ran once; the three duplicates returned its saved result
    assert first == second == {"batchItemFailures": []}
    assert (record_dir / f"{run}.tally").read_text() == "t\n"
    succeeded = lines(caplog, "succeeded")
    assert len(succeeded) == 4
    assert [bool(s.get("idempotent_replay")) for s in succeeded] == [False, True, True, True]


# -- claim check -----------------------------------------------------------------------------
def test_a_claim_checked_payload_is_read_from_s3_and_deleted_after_the_run(
        sqs: Any, queue_url: str, queue_arn: str, runner: LambdaRunner, record_dir: Path,
        settings: Settings) -> None:
    # Given an action whose message travels as a pointer to S3 (as a sender with a payload
    # bucket sends one over the size limit): the real envelope, offloaded
    run = uuid.uuid4().hex[:12]
    bucket = settings.payload_bucket
    assert bucket is not None
    s3 = settings.client("s3")
    record.delay(bucket=run, token=f"{run}-big")
    [original] = receive(sqs, queue_url, 1, run)
    sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=original["ReceiptHandle"])
    pointer, attributes = claimcheck.offload(s3, bucket, original["Body"])
    sqs.send_message(QueueUrl=queue_url, MessageBody=pointer, MessageAttributes=attributes,
                     MessageGroupId=original["Attributes"]["MessageGroupId"],
                     MessageDeduplicationId=f"{run}-pointer")
    event = lambda_event(receive(sqs, queue_url, 1, pointer.split('"s3Key": "')[1][:40]), queue_arn)
    assert claimcheck.pointer_of(event["Records"][0]["body"]) is not None
    key = claimcheck.pointer_of(event["Records"][0]["body"])[1]
    # When the function handles it
    response = runner.handle(event, Context())
    finish(sqs, queue_url, event, response)
    # Then the action ran with the payload from S3, and the object is gone
    assert response == {"batchItemFailures": []}
    assert recorded(record_dir, run) == [f"{run}-big"]
    assert s3.list_objects_v2(Bucket=bucket, Prefix=key).get("KeyCount") == 0


# -- hold, bad messages, time budget ------------------------------------------------------------
@several_per_group
def test_hold_keeps_the_head_and_its_group_in_the_queue(
        sqs: Any, queue_url: str, queue_arn: str, runner: LambdaRunner, record_dir: Path) -> None:
    # Given an action that fails once with on_exhausted="hold" (hold_seconds=2), and one behind it
    run = uuid.uuid4().hex[:12]
    fragile_head.delay(run=run)
    record.apply_async(kwargs={"bucket": run, "token": f"{run}-behind"},
                       MessageGroupId=f"hold:{run}")
    messages = receive(sqs, queue_url, 2, run)
    event = lambda_event(messages, queue_arn)
    # When the function handles them, the head fails and both are reported (not dead-lettered)
    response = runner.handle(event, Context())
    finish(sqs, queue_url, event, response)
    assert len(response["batchItemFailures"]) == 2
    assert recorded(record_dir, run) == []
    # Then SQS hands the group out again after the hold, head first, and both run
    again = receive(sqs, queue_url, 2, run, timeout=20)
    assert [m["MessageId"] for m in again] == [m["MessageId"] for m in messages]
    event = lambda_event(again, queue_arn)
    response = runner.handle(event, Context())
    finish(sqs, queue_url, event, response)
    assert response == {"batchItemFailures": []}
    assert recorded(record_dir, run) == [f"{run}-behind"]


def test_an_unknown_action_and_a_foreign_message_go_to_the_dlq_at_once(
        sqs: Any, queue_url: str, queue_arn: str, runner: LambdaRunner, settings: Settings) -> None:
    # Given a message for an action this function does not have, and one that is not Celery's
    run = uuid.uuid4().hex[:12]
    app.send_task("tests.no_such_action", kwargs={"run": run}, MessageGroupId=f"x:{run}",
                  MessageDeduplicationId=f"{run}-1")
    sqs.send_message(QueueUrl=queue_url, MessageBody=f"plain text {run}",
                     MessageGroupId=f"y:{run}", MessageDeduplicationId=f"{run}-2")
    event = lambda_event(receive(sqs, queue_url, 2, run), queue_arn)
    # When the function handles them
    response = runner.handle(event, Context())
    # Then neither is reported (Lambda deletes them) and both are in the DLQ, the failure named
    assert response == {"batchItemFailures": []}
    finish(sqs, queue_url, event, response)
    letters = dlq_messages(sqs, settings, run, 2)
    errors = sorted(failure_attributes(m)["error"] for m in letters)
    assert "no action named 'tests.no_such_action'" in errors[0]
    assert "neither JSON nor base64 of JSON" in errors[1]


def test_records_are_not_started_near_the_end_of_the_invocation(
        sqs: Any, queue_url: str, queue_arn: str, runner: LambdaRunner, record_dir: Path) -> None:
    # Given an invocation with less time left than the runner's margin
    run = uuid.uuid4().hex[:12]
    record.delay(bucket=run, token=f"{run}-1")
    record.delay(bucket=f"{run}-other", token=f"{run}-2")
    messages = receive(sqs, queue_url, 2, run)
    event = lambda_event(messages, queue_arn)
    # When the function gets the batch
    response = runner.handle(event, Context(seconds_left=runner.time_margin / 2))
    # Then nothing ran, every record is reported and released at once for the next invocation
    assert [f["itemIdentifier"] for f in response["batchItemFailures"]] == [
        m["MessageId"] for m in messages]
    assert recorded(record_dir, run) == []
    again = receive(sqs, queue_url, 2, run, timeout=5)
    for message in again:
        sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
