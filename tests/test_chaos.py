"""A short `actionrunner bench chaos` (bench/chaos.py): a worker drains 60 actions in 6 groups
while 10% of its SQS and DynamoDB requests fail (500s, throttling, resets, lost answers, answers
slower than its read timeouts — shortened here to 2 s and 1 s, so that a slow answer costs
seconds, not the default 20). Every action runs, its effect is written once and in order, nothing
is dead-lettered, and the worker never exits. Runs on both emulators (pass 2 of scripts/test
serves SQS from fauxqs). Figures are the bench's to print; nothing here is timed.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from actionrunner import provision
from actionrunner.settings import Settings
from bench.chaos import drain
from tests.conftest import send_many

pytestmark = [pytest.mark.integration, pytest.mark.e2e]


def test_a_worker_rides_out_10_percent_faults(settings: Settings, aws: Any) -> None:
    # its own queues, with a 10 s visibility timeout: a receive whose answer is lost (when the
    # emulator ignores ReceiveRequestAttemptId) hides its messages 10 s, not the default 30
    name = f"chaos-{uuid.uuid4().hex[:8]}"
    env = {"ACTIONRUNNER_QUEUE_NAME": f"{name}.fifo", "ACTIONRUNNER_DLQ_NAME": f"{name}-dlq.fifo",
           "ACTIONRUNNER_VISIBILITY_TIMEOUT": "10"}
    own = settings.model_copy(update={"queue_name": env["ACTIONRUNNER_QUEUE_NAME"],
                                      "dlq_name": env["ACTIONRUNNER_DLQ_NAME"],
                                      "visibility_timeout": 10})
    provision.apply(own)
    # a slow answer is held past the read timeouts: SQS 1 s long poll + 2 s, DynamoDB 1 s
    result = drain(own, label="test", count=60, groups=6, rate=0.10, seed=13, concurrency=4,
                   timeout=50, slow_sqs=4.0, slow_dynamodb=1.5, stop_on_exit=True,
                   worker_env={"ACTIONRUNNER_READ_TIMEOUT": "2",
                               "ACTIONRUNNER_STATE_READ_TIMEOUT": "1"},
                   send=lambda calls: send_many(env, "bench.actions.chaos", calls))
    logs = ", ".join(str(path) for path in result.logs)
    assert sum(result.faults.values()) > 0, "the proxies injected faults"
    assert result.exits == [], f"the worker exited ({result.exits}); logs: {logs}"
    assert result.completed == 60 and not result.timed_out, f"{result}; logs: {logs}"
    assert result.duplicates == 0 and result.order_violations == 0, result
    assert result.dlq == 0 and result.left == 0, result
