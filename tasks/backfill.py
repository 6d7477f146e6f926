"""A paced backfill: write ``count`` items into a DynamoDB table, never faster than a budget.

This is what an ActionRunner action looks like: validated inputs, a message group so that two
backfills of the same table never run at once, and work that respects the database behind it
(BatchWriteItem in batches of 25, a writes-per-second budget, UnprocessedItems and throttling
retried with backoff).

    backfill_items.delay(table="items", start=0, count=1_000, writes_per_second=200)
"""

from __future__ import annotations

import random
import time
from typing import Any

from botocore.exceptions import ClientError
from pydantic import Field

from actionrunner import action, get_settings
from actionrunner.logging import get_logger

log = get_logger(__name__)

#: DynamoDB's cap on one BatchWriteItem call.
DYNAMODB_MAX_BATCH = 25
_THROTTLED = {"ProvisionedThroughputExceededException", "ThrottlingException", "RequestLimitExceeded"}


class Pacer:
    """Spaces out work so that ``rate`` units start per second, on a fixed schedule.

    Unit n may start at ``next_at`` + n / rate. When the work itself is slow and falls behind,
    the pacer lets it catch up, but by no more than ``slack`` seconds of schedule, so the rate over
    any second stays at the budget instead of drifting below it (or bursting after a pause).
    """

    def __init__(self, rate: float, clock: Any = time.monotonic, sleep: Any = time.sleep,
                 slack: float = 0.2):
        self.rate, self.clock, self.sleep, self.slack = rate, clock, sleep, slack
        self.next_at = clock()

    def take(self, units: int) -> None:
        now = self.clock()
        if self.next_at > now:
            self.sleep(self.next_at - now)
        self.next_at = max(self.next_at, now - self.slack) + units / self.rate


def write_batch(client: Any, table: str, requests: list[dict[str, Any]], max_attempts: int = 8) -> int:
    """BatchWriteItem ``requests``, retrying UnprocessedItems and throttling; returns attempts."""
    pending = {table: requests}
    for attempt in range(1, max_attempts + 1):
        try:
            response = client.batch_write_item(RequestItems=pending)
        except ClientError as exc:
            if exc.response["Error"]["Code"] not in _THROTTLED or attempt == max_attempts:
                raise
        else:
            pending = response.get("UnprocessedItems") or {}
            if not pending:
                return attempt
        time.sleep(min(5.0, 0.05 * 2**attempt) * random.uniform(0.5, 1.0))
    raise RuntimeError(f"{table}: {len(pending.get(table, []))} items still unprocessed")


@action(group="backfill:{table}", time_limit=900)
def backfill_items(
    table: str = Field(min_length=3, max_length=255),
    start: int = Field(ge=0),
    count: int = Field(gt=0, le=1_000_000),
    writes_per_second: float = Field(default=100.0, gt=0, le=40_000),
) -> dict[str, Any]:
    """Write items ``start`` … ``start + count - 1`` into ``table`` at ≤ ``writes_per_second``."""
    client = get_settings().client("dynamodb")
    pacer = Pacer(writes_per_second)
    began = time.monotonic()
    written = calls = 0
    for first in range(start, start + count, DYNAMODB_MAX_BATCH):
        ids = range(first, min(first + DYNAMODB_MAX_BATCH, start + count))
        pacer.take(len(ids))
        requests = [
            {"PutRequest": {"Item": {"pk": {"S": f"item#{i}"}, "n": {"N": str(i)},
                                     "backfilled": {"BOOL": True}}}}
            for i in ids
        ]
        calls += write_batch(client, table, requests)
        written += len(ids)
    elapsed = time.monotonic() - began
    summary = {"table": table, "written": written, "requests": calls,
               "seconds": round(elapsed, 3), "rate": round(written / elapsed, 1) if elapsed else None}
    log.info("backfill-done", **summary)
    return summary
