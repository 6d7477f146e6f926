"""A short `actionrunner bench chaos` (bench/chaos.py): a worker drains 60 actions in 6 groups
while 10% of its SQS and DynamoDB requests fail (500s, throttling, resets, lost answers, answers
slower than its read timeouts — shortened here to 2 s and 1 s, so that a slow answer costs
seconds, not the default 20). Every action runs, its effect is written once and in order, nothing
is dead-lettered, and the worker never exits. Runs on both emulators (pass 2 of scripts/test
serves SQS from fauxqs). Figures are the bench's to print; nothing here is timed.
"""

from __future__ import annotations

from typing import Any

import pytest

from actionrunner.settings import Settings
from bench.chaos import drain

pytestmark = [pytest.mark.integration, pytest.mark.e2e]


def test_a_worker_rides_out_10_percent_faults(settings: Settings, queue_url: str, aws: Any) -> None:
    # a slow answer is held past the read timeouts: SQS 1 s long poll + 2 s, DynamoDB 1 s
    result = drain(settings, label="test", count=60, groups=6, rate=0.10, seed=13, concurrency=4,
                   timeout=50, slow_sqs=4.0, slow_dynamodb=1.5, stop_on_exit=True,
                   worker_env={"ACTIONRUNNER_READ_TIMEOUT": "2",
                               "ACTIONRUNNER_STATE_READ_TIMEOUT": "1"})
    logs = ", ".join(str(path) for path in result.logs)
    assert sum(result.faults.values()) > 0, "the proxies injected faults"
    assert result.exits == [], f"the worker exited ({result.exits}); logs: {logs}"
    assert result.completed == 60 and not result.timed_out, f"{result}; logs: {logs}"
    assert result.duplicates == 0 and result.order_violations == 0, result
    assert result.dlq == 0 and result.left == 0, result
