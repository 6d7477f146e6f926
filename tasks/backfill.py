"""A paced backfill: write ``count`` items into a DynamoDB table, never faster than a budget.

This is what an ActionRunner action looks like: validated inputs, a message group so that two
backfills of the same table never run at once, and work that respects the database behind it:
:class:`actionrunner.dynamo.BatchWriter` sends BatchWriteItem in batches of 25 within a
writes-per-second budget, and retries UnprocessedItems and throttling with backoff.

    backfill_items.delay(table="items", start=0, count=1_000, writes_per_second=200)
    backfill_items.delay(table="items", start=0, count=100_000, writes_per_second=1000,
                         watermark="items", lag_bound=5)     # adaptive: follows the stream consumer
"""

from __future__ import annotations

import time
from typing import Any

from pydantic import Field

from actionrunner import action
from actionrunner.dynamo import BatchWriter
from actionrunner.logging import get_logger
from actionrunner.pacing import AdaptivePacer, PaceLimits
from actionrunner.pacing.watermark import NAME_PATTERN

log = get_logger(__name__)



@action(group="backfill:{table}", time_limit=900)
def backfill_items(
    table: str = Field(min_length=3, max_length=255),
    start: int = Field(ge=0),
    count: int = Field(gt=0, le=1_000_000),
    writes_per_second: float = Field(default=100.0, gt=0, le=40_000),
    watermark: str | None = Field(default=None, pattern=NAME_PATTERN.pattern),
    lag_bound: float = Field(default=5.0, gt=0, le=3600),
    floor: float = Field(default=10.0, gt=0, le=40_000),
) -> dict[str, Any]:
    """Write items ``start`` … ``start + count - 1`` into ``table`` at ≤ ``writes_per_second``
    (with ``watermark``: adaptively, between ``floor`` and that, within ``lag_bound``)."""
    began = time.monotonic()
    pacer = AdaptivePacer.from_settings(watermark, PaceLimits(
        floor=floor, ceiling=writes_per_second, lag_bound=lag_bound)) if watermark else None
    with BatchWriter(table, writes_per_second=None if pacer else writes_per_second,
                     pacer=pacer) as writer:
        for i in range(start, start + count):
            writer.put({"pk": f"item#{i}", "n": i, "backfilled": True})
    elapsed = time.monotonic() - began
    stats = writer.stats
    summary = {"table": table, "written": stats.written, "requests": stats.requests,
               "retries": stats.retries, "throttled": stats.throttled, "seconds": round(elapsed, 3),
               "rate": round(stats.written / elapsed, 1) if elapsed else None}
    if pacer is not None:
        summary.update(paced_rate=round(pacer.rate, 1), rate_changes=pacer.stats.changes,
                       cuts=pacer.stats.cuts)
    log.info("backfill-done", **summary)
    return summary
