"""The paced batch writer (actionrunner.dynamo) and the backfill action that uses it, against
moto's DynamoDB over HTTP. DynamoDB's refusals that moto never makes (UnprocessedItems,
throttling) come from a client that passes every call on to moto after answering some itself."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError

from actionrunner.dynamo import MAX_BATCH_WRITE, BatchWriter, Pacer, write_batch
from actionrunner.settings import Settings
from tasks.backfill import backfill_items

pytestmark = pytest.mark.integration


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


class Refusing:
    """Passes BatchWriteItem to the real client, except that it answers the first ``throttle``
    calls with a throttling error, and leaves the last ``leave`` requests of each of the next
    ``partial`` calls unprocessed (unsent), as DynamoDB does under load."""

    def __init__(self, client: Any, throttle: int = 0, partial: int = 0, leave: int = 5) -> None:
        self.client, self.throttle, self.partial, self.leave = client, throttle, partial, leave
        self.calls: list[int] = []

    def batch_write_item(self, RequestItems: dict[str, list[Any]]) -> dict[str, Any]:  # noqa: N803
        [(table, requests)] = RequestItems.items()
        self.calls.append(len(requests))
        if self.throttle:
            self.throttle -= 1
            raise ClientError({"Error": {"Code": "ProvisionedThroughputExceededException",
                                         "Message": "slow down"}}, "BatchWriteItem")
        if self.partial and len(requests) > self.leave:
            self.partial -= 1
            sent, left = requests[: -self.leave], requests[-self.leave :]
            self.client.batch_write_item(RequestItems={table: sent})
            return {"UnprocessedItems": {table: left}}
        return dict(self.client.batch_write_item(RequestItems=RequestItems))


@pytest.fixture
def table(settings: Settings) -> Iterator[str]:
    client = settings.client("dynamodb")
    name = f"items-{uuid.uuid4().hex[:8]}"
    client.create_table(TableName=name, BillingMode="PAY_PER_REQUEST",
                        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}])
    yield name
    client.delete_table(TableName=name)


def _count(settings: Settings, table: str) -> int:
    return int(settings.client("dynamodb").scan(TableName=table, Select="COUNT")["Count"])


def test_batches_of_25_within_the_budget(settings: Settings, table: str) -> None:
    # Given a budget of 100 writes a second, on a clock that moves only when the writer waits
    time_ = FakeTime()
    writer = BatchWriter(table, client=Refusing(settings.client("dynamodb")),
                         writes_per_second=100, sleep=time_.sleep, clock=time_.clock)
    # When it writes 260 items
    with writer:
        for i in range(260):
            writer.put({"pk": f"item#{i}", "n": i, "price": 1.5, "tags": ["a"]})
    # Then they went out 25 at a time, a batch every 0.25 s (the last one starts at 2.5 s)
    assert writer.client.calls == [25] * 10 + [10]
    assert time_.now == pytest.approx(2.5)
    assert writer.stats.written == 260 and _count(settings, table) == 260
    item = settings.client("dynamodb").get_item(TableName=table, Key={"pk": {"S": "item#7"}})["Item"]
    assert item["n"] == {"N": "7"} and item["price"] == {"N": "1.5"}


def test_unprocessed_items_and_throttling_are_sent_again_after_a_backoff(
    settings: Settings, table: str
) -> None:
    time_ = FakeTime()
    refusing = Refusing(settings.client("dynamodb"), throttle=2, partial=2, leave=5)
    writer = BatchWriter(table, client=refusing, sleep=time_.sleep, clock=time_.clock,
                         on_throttle=lambda: None)
    with writer:
        for i in range(50):
            writer.put({"pk": f"k{i}"})
    assert _count(settings, table) == 50
    assert writer.stats.throttled == 2 and writer.stats.unprocessed == 10
    assert writer.stats.retries == 4 and len(time_.slept) == 4
    assert refusing.calls == [25, 25, 25, 5, 25, 5]


class Overloaded:
    """A table that never takes its last item."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def batch_write_item(self, RequestItems: dict[str, list[Any]]) -> dict[str, Any]:  # noqa: N803
        [(table, requests)] = RequestItems.items()
        if len(requests) > 1:
            self.client.batch_write_item(RequestItems={table: requests[:-1]})
        return {"UnprocessedItems": {table: requests[-1:]}}


def test_gives_up_after_max_attempts_with_a_clear_error(settings: Settings, table: str) -> None:
    with pytest.raises(RuntimeError, match="1 items still unprocessed after 3 BatchWriteItem"):
        write_batch(Overloaded(settings.client("dynamodb")), table,
                    [{"PutRequest": {"Item": {"pk": {"S": "a"}}}},
                     {"PutRequest": {"Item": {"pk": {"S": "b"}}}}],
                    max_attempts=3, sleep=lambda _: None)
    assert _count(settings, table) == 1


def test_the_pacer_keeps_a_fixed_schedule() -> None:
    time_ = FakeTime()
    pacer = Pacer(10, clock=time_.clock, sleep=time_.sleep)
    for _ in range(5):
        pacer.take(1)
    assert time_.now == pytest.approx(0.4)
    time_.now += 5  # the work fell behind: catch up by at most `slack` (0.2 s) of schedule
    pacer.take(1)
    assert pacer.next_at == pytest.approx(time_.now - 0.2 + 0.1)
    assert MAX_BATCH_WRITE == 25


def test_the_backfill_action_writes_through_the_writer(settings: Settings, table: str) -> None:
    summary = backfill_items(table=table, start=10, count=60, writes_per_second=10_000)
    assert summary["written"] == 60 and summary["requests"] == 3
    assert _count(settings, table) == 60


def test_the_migration_rewrites_every_item_with_writes_in_flight(settings: Settings, table: str) -> None:
    from tasks.migrate import WRITERS, migrate_table

    client = settings.client("dynamodb")
    write_batch(client, table, [{"PutRequest": {"Item": {"pk": {"S": f"i{n:04d}"},
                                                          "schema_version": {"N": "1"}}}}
                                for n in range(25)])
    with BatchWriter(table, client=client) as writer:
        for n in range(25, 2_060):
            writer.put({"pk": f"i{n:04d}", "schema_version": 1})
    assert WRITERS > 1
    summary = migrate_table(table=table, writes_per_second=20_000, chunk=1_000_000)
    assert {k: summary[k] for k in ("table", "written", "step_items")} == {
        "table": table, "written": 2_060, "step_items": 2_060}
    items = client.scan(TableName=table)["Items"]
    assert len(items) == 2_060
    assert {i["schema_version"]["N"] for i in items} == {"2"}
