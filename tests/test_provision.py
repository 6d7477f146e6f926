"""`actionrunner provision`: creates the FIFO queue, FIFO DLQ and redrive policy; idempotent; drift."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from typing import Any

import pytest

from actionrunner import provision
from actionrunner.local import LocalAWS
from actionrunner.settings import Settings

pytestmark = pytest.mark.integration


@pytest.fixture
def fresh(aws: LocalAWS) -> Settings:
    """Settings naming queues that do not exist yet."""
    name = f"p{uuid.uuid4().hex[:12]}"
    return Settings(queue_name=f"{name}.fifo", dlq_name=f"{name}-dlq.fifo", max_receive_count=4)


def _attributes(client: Any, name: str) -> dict[str, str]:
    url = client.get_queue_url(QueueName=name)["QueueUrl"]
    return dict(client.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"])


def test_creates_fifo_queue_and_dlq_with_redrive_policy(fresh: Settings) -> None:
    client = fresh.client("sqs")
    changes = provision.apply(fresh)
    assert [(c.queue, c.kind) for c in changes] == [(fresh.dlq_name, "create"), (fresh.queue_name, "create")]
    queue, dlq = _attributes(client, fresh.queue_name), _attributes(client, fresh.dlq_name)
    assert queue["FifoQueue"] == "true" and dlq["FifoQueue"] == "true"
    assert queue["VisibilityTimeout"] == str(fresh.visibility_timeout)
    policy = json.loads(queue["RedrivePolicy"])
    assert policy["deadLetterTargetArn"] == dlq["QueueArn"]
    assert int(policy["maxReceiveCount"]) == 4


def test_is_idempotent(fresh: Settings) -> None:
    provision.apply(fresh)
    assert provision.apply(fresh) == []
    assert [c for c in provision.plan(fresh) if c.kind != "unsupported"] == []


def test_reports_drift_and_fixes_it(fresh: Settings) -> None:
    # Given provisioned queues whose visibility timeout someone changed by hand
    provision.apply(fresh)
    client = fresh.client("sqs")
    url = client.get_queue_url(QueueName=fresh.queue_name)["QueueUrl"]
    client.set_queue_attributes(QueueUrl=url, Attributes={"VisibilityTimeout": "900"})
    # When the settings also ask for another maxReceiveCount
    changed = fresh.model_copy(update={"max_receive_count": 7})
    # Then the plan names both differences, with current and desired values
    drift = {(c.queue, c.attribute): c for c in provision.plan(changed) if c.kind == "update"}
    assert set(drift) == {(fresh.queue_name, "VisibilityTimeout"), (fresh.queue_name, "RedrivePolicy")}
    assert drift[(fresh.queue_name, "VisibilityTimeout")].current == "900"
    # And apply corrects them, after which nothing differs
    provision.apply(changed)
    assert [c for c in provision.plan(changed) if c.kind == "update"] == []
    assert json.loads(_attributes(client, fresh.queue_name)["RedrivePolicy"])["maxReceiveCount"] in (7, "7")


def test_cli_check_exits_nonzero_on_drift(fresh: Settings) -> None:
    env = {**os.environ, "ACTIONRUNNER_QUEUE_NAME": fresh.queue_name, "ACTIONRUNNER_DLQ_NAME": fresh.dlq_name}
    cli = [sys.executable, "-m", "actionrunner.cli"]
    missing = subprocess.run([*cli, "provision", "--check"], env=env, capture_output=True, text=True)
    assert missing.returncode == 1
    assert "create" in missing.stderr
    created = subprocess.run([*cli, "provision"], env=env, capture_output=True, text=True)
    assert created.returncode == 0, created.stderr
    clean = subprocess.run([*cli, "provision", "--check"], env=env, capture_output=True, text=True)
    assert clean.returncode == 0, clean.stderr
    drifted = subprocess.run([*cli, "provision", "--check"], capture_output=True, text=True,
                             env={**env, "ACTIONRUNNER_VISIBILITY_TIMEOUT": "45"})
    assert drifted.returncode == 1
    assert "VisibilityTimeout" in drifted.stderr
