"""Shared rate limits: one token bucket in the state table for every worker.

The bucket is exercised against moto's DynamoDB over HTTP with a clock of its own (so slots are
checked without waiting); the acceptance test runs two real workers against one bucket and
measures their combined rate.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from actionrunner import action
from actionrunner.dynamo import BatchWriter
from actionrunner.settings import Settings
from actionrunner.state.ratelimit import (
    BASE_PENALTY,
    SharedRateLimit,
    drawing_from,
    parse_rate,
)
from tests.actions import paced
from tests.conftest import Worker, send_many

pytestmark = pytest.mark.integration


class Clock:
    """Epoch seconds that move only when something sleeps."""

    def __init__(self) -> None:
        self.now = 1_900_000_000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


class Throttling:
    """A DynamoDB client that answers the first ``times`` calls of ``operation`` with
    ProvisionedThroughputExceededException, then passes every call to the real client."""

    def __init__(self, client: Any, operation: str, times: int) -> None:
        self.client, self.operation, self.left = client, operation, times

    def __getattr__(self, name: str) -> Any:
        call = getattr(self.client, name)
        if name != self.operation:
            return call

        def maybe_throttled(**kwargs: Any) -> Any:
            if self.left > 0:
                self.left -= 1
                raise ClientError({"Error": {"Code": "ProvisionedThroughputExceededException",
                                             "Message": "slow down"}}, name)
            return call(**kwargs)

        return maybe_throttled


def bucket(settings: Settings, rate: float, clock: Clock, client: Any = None,
           name: str | None = None) -> SharedRateLimit:
    return SharedRateLimit(name or f"test-{uuid.uuid4().hex[:8]}", rate, table=settings.state_table,
                           client=client or settings.client("dynamodb"), clock=clock,
                           sleep=clock.sleep)


def tat(settings: Settings, limiter: SharedRateLimit) -> float:
    item = settings.client("dynamodb").get_item(TableName=settings.state_table, Key=limiter._key,
                                                ConsistentRead=True)["Item"]
    return float(item["tat"]["N"])


def test_rates_are_read_in_celerys_spelling() -> None:
    assert parse_rate("500/s") == 500 and parse_rate("30/m") == 0.5 and parse_rate("36/h") == 0.01
    assert parse_rate("2.5") == 2.5 and parse_rate(7) == 7.0
    for bad in ("fast", "0/s", "10/d", "-1/s"):
        with pytest.raises(ValueError):
            parse_rate(bad)


def test_slots_are_one_interval_apart_whoever_takes_them(settings: Settings) -> None:
    # Given one bucket at 10/s, drawn from by two workers (two limiters) on one clock
    clock = Clock()
    one = bucket(settings, 10, clock)
    two = bucket(settings, 10, clock, name=one.name)
    start = clock.now
    # When they take 20 tokens between them, at once
    waits = [(one if i % 2 else two).acquire() for i in range(20)]
    # Then the first runs at once and each next one 0.1 s later: 20 runs in 2 s of schedule
    assert waits[0] == 0
    assert clock.now == pytest.approx(start + 1.9)
    assert tat(settings, one) == pytest.approx(start + 2.0)
    assert one.requests + two.requests <= 22  # one UpdateItem a token (two when the bucket was idle)


def test_an_idle_bucket_does_not_save_up_tokens(settings: Settings) -> None:
    clock = Clock()
    limiter = bucket(settings, 10, clock)
    limiter.acquire()
    clock.now += 60  # a minute without runs
    assert [limiter.acquire() for _ in range(3)] == pytest.approx([0, 0.1, 0.1], abs=1e-4)


def test_the_buckets_own_requests_back_off_when_throttled(settings: Settings) -> None:
    clock = Clock()
    limiter = bucket(settings, 10, clock, client=Throttling(settings.client("dynamodb"),
                                                            "update_item", times=3))
    assert limiter.acquire() == 0
    assert limiter.throttled == 3 and len(clock.slept) == 3  # backed off, then got its token


def test_throttling_reported_by_an_action_slows_every_worker_of_the_bucket(settings: Settings) -> None:
    # Given a busy bucket
    clock = Clock()
    one = bucket(settings, 10, clock)
    other = bucket(settings, 10, clock, name=one.name)  # another worker's
    one.acquire()
    before = tat(settings, one)
    # When an action of it is throttled by DynamoDB
    assert one.report_throttling() == BASE_PENALTY
    # Then the schedule of the whole bucket moves back by the penalty
    assert tat(settings, one) == pytest.approx(before + BASE_PENALTY, abs=1e-4)
    # And more reports while it pauses change nothing
    assert other.report_throttling() == 0
    now = clock.now
    assert other.acquire() == pytest.approx(before + BASE_PENALTY - now, abs=1e-4)
    # And throttling again soon after the pause doubles the penalty; after a quiet spell it
    # starts small again
    clock.now += 1
    assert other.report_throttling() == 2 * BASE_PENALTY
    clock.now += 600
    assert one.report_throttling() == BASE_PENALTY


def test_a_throttled_batch_writer_reports_to_the_running_actions_bucket(settings: Settings) -> None:
    # Given a batch writer in a run that draws from a shared bucket
    clock = Clock()
    limiter = bucket(settings, 100, clock)
    client = settings.client("dynamodb")
    table = f"bw-{uuid.uuid4().hex[:8]}"
    client.create_table(TableName=table, BillingMode="PAY_PER_REQUEST",
                        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}])
    throttled = Throttling(client, "batch_write_item", times=1)
    # When DynamoDB throttles the writer once
    with drawing_from(limiter), BatchWriter(table, client=throttled, sleep=clock.sleep) as writer:
        for i in range(30):
            writer.put({"pk": f"k{i}", "n": i})
    # Then every item was written, and the bucket was told (its schedule moved back)
    assert writer.stats.written == 30 and writer.stats.throttled == 1
    assert limiter.penalties == 1
    assert client.scan(TableName=table, Select="COUNT")["Count"] == 30


@action(name="tests.rate.throttled", idempotent=False, rate_limit_shared="1000/s",
        bucket="tests-throttled")
def throttled_write() -> None:
    raise ClientError({"Error": {"Code": "ProvisionedThroughputExceededException",
                                 "Message": "slow down"}}, "PutItem")


def test_an_action_throttled_by_dynamodb_pauses_its_bucket(settings: Settings) -> None:
    # When an action of a shared bucket is throttled by DynamoDB (after boto3's own retries)
    result = throttled_write.apply()
    # Then it fails as usual (the worker retries it after its backoff)...
    assert result.state == "FAILURE" and "ProvisionedThroughputExceeded" in str(result.result)
    # ...and the bucket's schedule was pushed back for every worker
    item = settings.client("dynamodb").get_item(
        TableName=settings.state_table, Key={"pk": {"S": "bucket#tests-throttled"}},
        ConsistentRead=True)["Item"]
    assert float(item["penalty"]["N"]) == BASE_PENALTY
    assert float(item["tat"]["N"]) >= float(item["throttled_at"]["N"]) + BASE_PENALTY


# -- acceptance: two workers, one bucket ---------------------------------------------------------------
RATE = 20.0  # tests.actions.paced: rate_limit_shared="20/s", bucket="tests-paced"
WINDOW = 20.0


@pytest.mark.e2e
def test_two_workers_on_one_shared_bucket_keep_its_rate(
    start_worker: Callable[..., Worker], deep_queue: Callable[..., dict[str, str]],
    record_dir: Path,
) -> None:
    # Given a backlog of more runs than 20/s allows in the window, in 40 groups
    assert paced.rate_limit_shared == "20/s"
    env = deep_queue()
    run = uuid.uuid4().hex[:8]
    total = int(RATE * (WINDOW + 6))
    send_many(env, "tests.actions.paced", [{"run": run, "shard": i % 40, "n": i}
                                           for i in range(total)])
    # When two workers (two processes each) drain it
    workers = [start_worker(concurrency=2, env=env, wait=False) for _ in range(2)]
    path = record_dir / f"{run}.paced"

    def runs() -> list[dict[str, Any]]:
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    for worker in workers:
        worker.wait_ready(timeout=60)
    workers[0].wait_for(lambda: len(runs()) >= total, timeout=WINDOW * 4, what="every run")
    # Then over a 20 s window (after a 2 s warm-up) they ran at the bucket's rate, within 10 %
    records = sorted(runs(), key=lambda r: r["at"])
    start = records[0]["at"] + 2.0
    inside = [r for r in records if start <= r["at"] < start + WINDOW]
    rate = len(inside) / WINDOW
    assert abs(rate - RATE) <= 0.1 * RATE, f"combined rate {rate:.2f}/s, bucket {RATE}/s"
    # And both workers drew from the bucket
    pools = [_pool_pids(worker) for worker in workers]
    by_worker = [sum(1 for r in inside if r["pid"] in pool) for pool in pools]
    assert min(by_worker) >= 0.25 * len(inside), f"runs per worker in the window: {by_worker}"


def _pool_pids(worker: Worker) -> set[int]:
    """The pids of a running worker's pool processes."""
    out = subprocess.run(["pgrep", "-P", str(worker.proc.pid)], capture_output=True, text=True)
    return {int(pid) for pid in out.stdout.split()}
