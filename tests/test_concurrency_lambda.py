"""The Lambda runtime respects ``max_concurrency``: a record over the cap waits in the invocation
for a while, then is reported (hidden for the poll delay) without using an attempt, its group
behind it; it runs once a slot is free. Events are built from real ReceiveMessage output."""

from __future__ import annotations

import json
import logging
import uuid
from pathlib import Path
from typing import Any

import pytest

from actionrunner.app import app
from actionrunner.aws_lambda import LambdaRunner
from actionrunner.settings import Settings
from actionrunner.state.concurrency import FleetLimit, read
from tests.capped_actions import capped
from tests.test_lambda import Context, finish, lambda_event, lines, queue_arn, receive

pytestmark = pytest.mark.integration
__all__ = ["queue_arn"]  # the fixture, used by name


def test_a_record_over_the_cap_is_reported_without_using_an_attempt_then_runs(
        sqs: Any, queue_url: str, queue_arn: str, settings: Settings, record_dir: Path,
        caplog: pytest.LogCaptureFixture, runtime_logging: None) -> None:
    caplog.set_level(logging.INFO)
    # Given the capped action's 3 slots held by runs elsewhere (other invocations, workers)
    others = FleetLimit(capped.name, 3, table=settings.state_table,
                        client=settings.client("dynamodb"), lease_seconds=60)
    held = [others.acquire() for _ in range(3)]
    assert all(held)
    run = uuid.uuid4().hex[:10]
    try:
        for n in range(2):
            capped.delay(run=run, n=n, sleep_s=0.0)
        patient = settings.model_copy(update={"concurrency_lambda_wait_seconds": 0.5,
                                              "concurrency_poll_seconds": 0.5})
        runner = LambdaRunner(app, patient, sqs=sqs, hostname="lambda@test")
        # When the function gets them
        event = lambda_event(receive(sqs, queue_url, 2, run), queue_arn)
        response = runner.handle(event, Context())
        finish(sqs, queue_url, event, response)
        # Then both are reported (SQS keeps them), nothing ran, and no attempt was used
        assert len(response["batchItemFailures"]) == 2
        assert not (record_dir / f"{run}.capped").exists()
        waiting = lines(caplog, "waiting")
        assert len(waiting) == 2 and all("max_concurrency of 3" in w["reason"] for w in waiting)
        assert not lines(caplog, "retrying")
        # When a slot comes free and SQS hands them out again
        others.release(held.pop())
        event = lambda_event(receive(sqs, queue_url, 2, run), queue_arn)
        response = runner.handle(event, Context())
        finish(sqs, queue_url, event, response)
        # Then both ran, one after the other in the free slot, on their first attempt
        assert response == {"batchItemFailures": []}
        ran = [line for line in lines(caplog, "succeeded") if line["action"] == capped.name]
        assert len(ran) == 2 and all(line["attempt"] == 1 for line in ran)
        assert all(line["receive_count"] == 2 for line in ran)
        assert sorted(line["n"] for line in map(json.loads, (record_dir / f"{run}.capped")
                                                .read_text().splitlines())
                      if line["event"] == "end") == [0, 1]
        seen = read(settings.state_table, settings.client("dynamodb"), capped.name)
        assert len(seen.running) == 2  # theirs given back; the two others' still held
    finally:
        for lease in held:
            if lease is not None:
                others.release(lease)
