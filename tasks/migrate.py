"""A paced migration: rewrite every item of a DynamoDB table, at a writes-per-second budget.

The incident this product exists for is an admin endpoint doing this inline — hundreds of
thousands of writes as fast as it can, the table and its stream falling behind. Here the endpoint
sends one action and returns; the action rewrites the items in BatchWriteItem batches of 25,
never faster than the budget, retrying UnprocessedItems and throttling with backoff, in steps of
``chunk`` items that continue themselves (a cursor chain in the table's own group: ordered,
resumable, never near a timeout). The pacing schedule carries over from step to step, so the
rate holds across the chain.

    migrate_table.delay(table="items", writes_per_second=1000)
    migrate_table.delay(table="items", writes_per_second=1000, watermark="items", lag_bound=5)

With ``watermark`` the pace is adaptive (:mod:`actionrunner.pacing`): ``writes_per_second`` is
the ceiling, ``floor`` the floor, and the rate follows the stream consumer that publishes that
watermark, keeping its lag under ``lag_bound`` seconds — one rate for every migration and
worker writing to that downstream (the state table's bucket named after the watermark).
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from botocore.config import Config
from pydantic import Field

from actionrunner import action, get_settings
from actionrunner.dynamo import MAX_BATCH_WRITE as DYNAMODB_MAX_BATCH
from actionrunner.dynamo import Pacer, write_batch
from actionrunner.logging import get_logger
from actionrunner.pacing import AdaptivePacer, PaceLimits
from actionrunner.pacing.watermark import NAME_PATTERN

log = get_logger(__name__)

#: Items read per Scan page (DynamoDB stops a page at 1 MB anyway). Few large pages: each Scan
#: page is one round trip, read ahead while the previous page is written.
SCAN_PAGE = 5000
#: BatchWriteItem calls in flight at most. The budget sets when each call starts; calls in flight
#: keep slow answers (a latency spike, a retry of UnprocessedItems, a pause of the table) from
#: delaying the ones scheduled after them, so the rate holds in every second, not only on average.
WRITERS = 64
#: Scan pages read ahead of the writes (a slow Scan does not hold the schedule up).
READ_AHEAD = 2


_clients: dict[int, Any] = {}


def _client() -> Any:
    """This process's DynamoDB client (making one costs tens of ms: not once per step)."""
    pid = os.getpid()
    if pid not in _clients:
        # a connection for each write in flight (and the reader), not boto3's default pool of 10
        _clients[pid] = get_settings().client(
            "dynamodb", config=Config(max_pool_connections=WRITERS + 2))
    return _clients[pid]


def _read_ahead(client: Any, table: str, after: dict[str, Any] | None, chunk: int,
                stop: threading.Event) -> queue.Queue[dict[str, Any] | BaseException | None]:
    """Scan up to ``chunk`` items after ``after`` in a thread of its own, at most
    ``READ_AHEAD`` pages ahead of the writes; the queue ends with None (or the read's error).
    ``stop`` ends the thread early (the step failed)."""
    pages: queue.Queue[dict[str, Any] | BaseException | None] = queue.Queue(READ_AHEAD)

    def put(item: dict[str, Any] | BaseException | None) -> None:
        while not stop.is_set():
            try:
                pages.put(item, timeout=0.5)
                return
            except queue.Full:
                continue

    def run(key: dict[str, Any] | None) -> None:
        left = chunk
        try:
            while left > 0 and not stop.is_set():
                page = dict(client.scan(TableName=table, Limit=min(SCAN_PAGE, left),
                                        **({"ExclusiveStartKey": key} if key else {})))
                put(page)
                left -= len(page.get("Items", []))
                key = page.get("LastEvaluatedKey")
                if not key:
                    break
        except BaseException as exc:  # the step fails with it
            put(exc)
            return
        put(None)

    threading.Thread(target=run, args=(after,), name="migrate-reader", daemon=True).start()
    return pages


def transform(item: dict[str, Any]) -> dict[str, Any]:
    """The migration itself: schema version 2 of an item."""
    return {**item, "schema_version": {"N": "2"}, "migrated_at": {"N": repr(time.time())}}


@action(group="migrate:{table}", time_limit=3600)
def migrate_table(
    table: str = Field(min_length=3, max_length=255),
    writes_per_second: float = Field(default=500.0, gt=0, le=40_000),
    chunk: int = Field(default=20_000, gt=0, le=1_000_000),
    cursor: str | None = None,
    done: int = Field(default=0, ge=0),
    schedule_start: float | None = None,
    watermark: str | None = Field(default=None, pattern=NAME_PATTERN.pattern),
    lag_bound: float = Field(default=5.0, gt=0, le=3600),
    floor: float = Field(default=10.0, gt=0, le=40_000),
) -> dict[str, Any]:
    """Rewrite up to ``chunk`` items after ``cursor``, then continue with the next chunk."""
    client = _client()
    adaptive = AdaptivePacer.from_settings(watermark, PaceLimits(
        floor=floor, ceiling=writes_per_second, lag_bound=lag_bound)) if watermark else None
    stop_reading = threading.Event()
    pages = _read_ahead(client, table, {"pk": {"S": cursor}} if cursor else None, chunk, stop_reading)
    first_page = pages.get()  # the schedule starts once there is something to write
    # One schedule for the whole chain: write n may start at schedule_start + n / rate.
    start = schedule_start if schedule_start is not None else time.time()
    pacer = Pacer(writes_per_second, clock=time.time)
    pacer.next_at = max(start + done / writes_per_second, time.time() - 1.0)
    written, key, waited_read, waited_writers = 0, None, 0.0, 0.0

    with ThreadPoolExecutor(WRITERS) as writers, contextlib.ExitStack() as cleanup:
        cleanup.callback(stop_reading.set)
        in_flight = threading.BoundedSemaphore(WRITERS)
        sent: list[Future[int]] = []

        told = adaptive.throttled if adaptive is not None else None

        def write(requests: list[dict[str, Any]]) -> int:
            try:
                return write_batch(client, table, requests, on_throttle=told, on_unprocessed=told)
            finally:
                in_flight.release()

        page: dict[str, Any] | BaseException | None = first_page
        while page is not None:
            if isinstance(page, BaseException):
                raise page
            items, key = page.get("Items", []), page.get("LastEvaluatedKey")
            for first in range(0, len(items), DYNAMODB_MAX_BATCH):
                batch = items[first : first + DYNAMODB_MAX_BATCH]
                began = time.monotonic()
                in_flight.acquire()
                waited_writers += time.monotonic() - began
                if adaptive is not None:
                    adaptive.take(len(batch))
                else:
                    pacer.take(len(batch))
                sent.append(writers.submit(write, [{"PutRequest": {"Item": transform(i)}} for i in batch]))
            written += len(items)
            for future in sent:  # a batch that failed after its retries fails the step (re-runnable)
                if future.done():
                    future.result()
            sent = [f for f in sent if not f.done()]
            began = time.monotonic()
            page = pages.get()
            waited_read += time.monotonic() - began
        for future in sent:
            future.result()
    # (time the schedule waited for a Scan page, or for a free writer: ~0 when neither held it up)
    summary = {"table": table, "written": done + written, "step_items": written,
               "waited_for_reads_s": round(waited_read, 3),
               "waited_for_writers_s": round(waited_writers, 3)}
    if adaptive is not None:
        summary.update(paced_rate=round(adaptive.rate, 1), rate_changes=adaptive.stats.changes,
                       cuts=adaptive.stats.cuts, throttled=adaptive.stats.throttled)
    if key:
        migrate_table.continue_with(cursor=key["pk"]["S"], done=done + written, schedule_start=start,
                                    watermark=watermark, lag_bound=lag_bound, floor=floor)
    else:
        log.info("migration-done", **summary)
    return summary
