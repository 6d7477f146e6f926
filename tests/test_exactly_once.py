"""Exactly-once effects through crashes: 1,000 counters, a worker SIGKILLed twice mid-run.

Each action adds 1 to a counter item of its own (DynamoDB ``UpdateItem ADD``, staged with
:mod:`actionrunner.state.effects` and committed with its idempotency record). SQS redelivers
whatever the killed workers held; runs that completed before the kill replay their result, runs
cut short run again. Every counter must end at exactly 1.

SQS is served by fauxqs here (moto's SQS crawls with a 1,000-deep FIFO queue); DynamoDB by moto,
with a state table of the test's own and no run status: moto copies every table a transaction
touches, so its transactions slow down as the session's shared state table fills up.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from actionrunner import provision
from actionrunner.settings import Settings
from tests.conftest import Worker, send_many
from tests.test_fifo_worker import _kill_tree

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

COUNT = 1_000


@pytest.fixture
def state_table(settings: Settings) -> Iterator[str]:
    """A state table of this test's own (see the module docstring)."""
    name = f"state-{uuid.uuid4().hex[:8]}"
    provision.apply_table(settings.model_copy(update={"state_table": name}))
    yield name
    settings.client("dynamodb").delete_table(TableName=name)


@pytest.fixture
def counters(settings: Settings) -> Iterator[str]:
    client = settings.client("dynamodb")
    name = f"counters-{uuid.uuid4().hex[:8]}"
    client.create_table(TableName=name, BillingMode="PAY_PER_REQUEST",
                        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}])
    yield name
    client.delete_table(TableName=name)


def _scan(client: Any, table: str) -> dict[str, int]:
    found: dict[str, int] = {}
    kwargs: dict[str, Any] = {"TableName": table, "ConsistentRead": True}
    while True:
        page = client.scan(**kwargs)
        # (moto applies a transaction's update in steps: a concurrent Scan can see the new item
        # before its counter; such an item is not written yet)
        found.update({i["pk"]["S"]: int(i["n"]["N"]) for i in page["Items"] if "n" in i})
        if "LastEvaluatedKey" not in page:
            return found
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def _succeeded(worker: Worker) -> int:
    return len(worker.lifecycle("succeeded", action="tests.actions.bump"))


def test_a_thousand_counters_end_at_one_through_two_sigkills(
    start_worker: Callable[..., Worker], deep_queue: Callable[..., dict[str, str]],
    counters: str, state_table: str, settings: Settings,
) -> None:
    # Given 1,000 actions, each adding 1 to its own counter, in 50 groups; messages come back
    # 3 s after a crash (and leases run out as fast)
    env = deep_queue(ACTIONRUNNER_VISIBILITY_TIMEOUT="3", ACTIONRUNNER_STATE_TABLE=state_table,
                     ACTIONRUNNER_RUN_STATUS="off")
    ids = [f"c{i:04d}" for i in range(COUNT)]
    send_many(env, "tests.actions.bump", [{"table": counters, "id": id_, "shard": i % 50}
                                          for i, id_ in enumerate(ids)])
    client = settings.client("dynamodb")
    # When a worker is SIGKILLed (with its pool) a third of the way in, and its replacement too
    workers: list[Worker] = []
    for share in (COUNT // 3, COUNT // 3):
        worker = start_worker(concurrency=2, env=env)
        workers.append(worker)
        worker.wait_for(lambda w=worker, n=share: _succeeded(w) >= n, timeout=180,
                        what=f"{share} runs before the kill")
        _kill_tree(worker.proc.pid)
        worker.proc.wait(10)
    # And a third worker finishes the work
    last = start_worker(concurrency=2, env=env)
    workers.append(last)
    last.wait_for(lambda: len(_scan(client, counters)) == COUNT, timeout=300,
                  what="every counter to be written")
    sqs = settings.model_copy(update={"sqs_endpoint_url": env["AWS_ENDPOINT_URL_SQS"]}).client("sqs")
    url = sqs.get_queue_url(QueueName=env["ACTIONRUNNER_QUEUE_NAME"])["QueueUrl"]

    def drained() -> bool:
        attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=[
            "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
        return all(v == "0" for v in attrs.values())

    last.wait_for(drained, timeout=120, what="the queue to drain")
    # Then every counter is exactly 1: none missing, none twice
    values = _scan(client, counters)
    assert sorted(values) == ids
    twice = {k: v for k, v in values.items() if v != 1}
    assert twice == {}, f"{len(twice)} counters are not 1: {dict(list(twice.items())[:10])}"
    # And no key completed twice (a run that is not a replay is a completion)
    lines = [e for w in workers for e in w.lifecycle("succeeded", action="tests.actions.bump")]
    completions = [e for e in lines if not e.get("idempotent_replay")]
    assert len(completions) <= COUNT, f"{len(completions)} completions for {COUNT} keys"
