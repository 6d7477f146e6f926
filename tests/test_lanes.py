"""Lanes: ``@action(queue=...)`` on a queue of ``ACTIONRUNNER_LANES``, with its own DLQ."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from actionrunner import action, provision
from actionrunner.errors import ActionDefinitionError
from actionrunner.settings import Settings
from tests.conftest import ROOT, Worker, message_text, receive_all

pytestmark = [pytest.mark.integration, pytest.mark.e2e]
LANE, LANE_DLQ = "tests-bulk.fifo", "tests-bulk-dlq.fifo"  # (tests/lanes.py: imported in subprocesses)
ENV = {"ACTIONRUNNER_LANES": LANE, "ACTIONRUNNER_IMPORTS": "tests.actions,tests.lanes"}


def test_an_action_on_an_unknown_queue_is_refused_at_declaration() -> None:
    with pytest.raises(ActionDefinitionError, match="not one of this deployment's queues.*"
                                                    "ACTIONRUNNER_LANES"):
        action(name="tests.lanes.nowhere", queue="nowhere.fifo")(lambda x: x)


def test_a_lane_has_its_own_dlq_and_a_worker_runs_it_with_q(
    settings: Settings, sqs: Any, start_worker: Callable[..., Worker]
) -> None:
    # Given the lane provisioned: the queue, its own DLQ, and a redrive policy between them
    laned = settings.model_copy(update={"lanes": [LANE]})
    provision.apply(laned)
    assert provision.plan(laned) == [] or all(c.kind == "unsupported" for c in provision.plan(laned))
    url = sqs.get_queue_url(QueueName=LANE)["QueueUrl"]
    policy = json.loads(sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["RedrivePolicy"])
                        ["Attributes"]["RedrivePolicy"])
    assert policy["deadLetterTargetArn"].endswith(":" + LANE_DLQ)
    dlq_url = sqs.get_queue_url(QueueName=LANE_DLQ)["QueueUrl"]
    # When a worker consumes the lane only (-Q) and its actions are sent
    worker = start_worker(env=ENV, args=("-Q", LANE))
    run = uuid.uuid4().hex[:8]
    code = ("import sys\n"
            "from tests.lanes import bulk_ok, bulk_fail\n"
            f"print(bulk_ok.delay(run={run!r}).id, bulk_fail.delay(run={run!r}).id)\n")
    sent = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**os.environ, **ENV},
                          capture_output=True, text=True, timeout=60)
    assert sent.returncode == 0, sent.stderr[-3000:]
    ok_id, fail_id = sent.stdout.split()
    # Then they run there, and the failure is dead-lettered into the lane's own DLQ
    worker.wait_for(lambda: worker.lifecycle("succeeded", id=ok_id), what="the lane's action")
    worker.wait_for(lambda: worker.lifecycle("dead-lettered", id=fail_id), what="the lane's failure")
    [dead] = receive_all(sqs, dlq_url, 1, timeout=20, token=fail_id)
    assert json.loads(message_text(dead))["headers"]["id"] == fail_id
