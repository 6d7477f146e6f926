"""A paced backfill: write ``count`` items into a DynamoDB table, never faster than a budget.

This is what an ActionRunner action looks like: validated inputs, a message group so that two
backfills of the same table never run at once, and work that respects the database behind it:
:class:`actionrunner.dynamo.BatchWriter` sends BatchWriteItem in batches of 25 within a
writes-per-second budget, and retries UnprocessedItems and throttling with backoff.

    backfill_items.delay(table="items", start=0, count=1_000, writes_per_second=200)
"""

from __future__ import annotations

import time
from typing import Any

from pydantic import Field

from actionrunner import action
from actionrunner.dynamo import BatchWriter
from actionrunner.logging import get_logger

log = get_logger(__name__)



@action(group="backfill:{table}", time_limit=900)
def backfill_items(
    table: str = Field(min_length=3, max_length=255),
    start: int = Field(ge=0),
    count: int = Field(gt=0, le=1_000_000),
    writes_per_second: float = Field(default=100.0, gt=0, le=40_000),
) -> dict[str, Any]:
    """Write items ``start`` … ``start + count - 1`` into ``table`` at ≤ ``writes_per_second``."""
    began = time.monotonic()
    with BatchWriter(table, writes_per_second=writes_per_second) as writer:
        for i in range(start, start + count):
            writer.put({"pk": f"item#{i}", "n": i, "backfilled": True})
    elapsed = time.monotonic() - began
    stats = writer.stats
    summary = {"table": table, "written": stats.written, "requests": stats.requests,
               "retries": stats.retries, "throttled": stats.throttled, "seconds": round(elapsed, 3),
               "rate": round(stats.written / elapsed, 1) if elapsed else None}
    log.info("backfill-done", **summary)
    return summary
