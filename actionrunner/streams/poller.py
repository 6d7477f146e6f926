"""The stream processor as a local process: polls a table's DynamoDB stream (DescribeStream,
GetShardIterator, GetRecords — moto serves them over HTTP) and hands each batch to a
:class:`~.processor.StreamProcessor`, as Lambda's event source mapping does on AWS.

    python -m actionrunner.streams --table items --topic items-changes.fifo --watermark items

A batch with failures is retried from its first failed record (after a backoff), like the
mapping's retries; the watermark is published after every batch and, when there is nothing to
read, as a heartbeat. ``capacity`` (records per second) holds the processor to a fixed
throughput — a Lambda function with fixed concurrency — for the benchmarks.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, TextIO

from ..logging import get_logger
from ..state.throttling import backoff_delay
from .processor import StreamProcessor

log = get_logger("actionrunner.streams")


class Capacity:
    """At most ``rate`` records per second (None: no limit), spaced out on a schedule."""

    def __init__(self, rate: float | None, clock: Callable[[], float] = time.monotonic) -> None:
        if rate is not None and rate <= 0:
            raise ValueError(f"capacity must be more than 0 records/s, not {rate!r}")
        self.rate, self.clock = rate, clock
        self.next_at = clock()

    def take(self, records: int) -> None:
        if self.rate is None or records <= 0:
            return
        now = self.clock()
        self.next_at = max(self.next_at, now - 0.05) + records / self.rate
        if self.next_at > now:
            time.sleep(self.next_at - now)

    def set(self, rate: float | None) -> None:
        self.rate = rate


class StreamPoller:
    """Polls every shard of one stream (a thread each) until :meth:`stop`."""

    def __init__(self, streams: Any, stream_arn: str, processor: StreamProcessor, *,
                 batch_size: int = 100, capacity: Capacity | None = None,
                 start: str = "LATEST", idle_wait: float = 0.1,
                 trace: TextIO | None = None) -> None:
        if not 1 <= batch_size <= 1000:
            raise ValueError(f"batch_size must be 1-1000 (GetRecords' limit), not {batch_size!r}")
        if start not in ("LATEST", "TRIM_HORIZON"):
            raise ValueError(f"start must be LATEST or TRIM_HORIZON, not {start!r}")
        self.streams, self.stream_arn, self.processor = streams, stream_arn, processor
        self.batch_size, self.capacity, self.start = batch_size, capacity or Capacity(None), start
        self.idle_wait, self.trace = idle_wait, trace
        self._stop = threading.Event()
        self._trace_lock = threading.Lock()
        #: Records finished (published or dead-lettered), batches retried.
        self.finished = self.retries = 0

    def stop(self) -> None:
        self._stop.set()

    def shards(self) -> list[str]:
        shards, start = [], None
        while True:
            description = self.streams.describe_stream(
                StreamArn=self.stream_arn, **({"ExclusiveStartShardId": start} if start else {}))
            page = description["StreamDescription"]
            shards += [s["ShardId"] for s in page.get("Shards", [])]
            start = page.get("LastEvaluatedShardId")
            if not start:
                return shards

    def run(self) -> None:
        """Poll until :meth:`stop` (a thread per shard found at the start)."""
        threads = [threading.Thread(target=self.poll_shard, args=(shard,), daemon=True,
                                    name=f"stream-{shard[-8:]}") for shard in self.shards()]
        for thread in threads:
            thread.start()
        log.info("stream-processor-started", stream=self.stream_arn, shards=len(threads),
                 topic=self.processor.topic_arn, capacity=self.capacity.rate)
        while not self._stop.wait(0.25):
            if self.processor.watermark is not None:
                self.processor.watermark.heartbeat()
        for thread in threads:
            thread.join(10)
        if self.processor.watermark is not None:
            self.processor.watermark.flush()

    def _iterator(self, shard: str, kind: str, sequence: str | None = None) -> str:
        extra = {"SequenceNumber": sequence} if sequence else {}
        answer = self.streams.get_shard_iterator(StreamArn=self.stream_arn, ShardId=shard,
                                                 ShardIteratorType=kind, **extra)
        return str(answer["ShardIterator"])

    def poll_shard(self, shard: str) -> None:
        iterator: str | None = self._iterator(shard, self.start)
        attempt = 0
        while iterator and not self._stop.is_set():
            try:
                page = self.streams.get_records(ShardIterator=iterator, Limit=self.batch_size)
            except Exception as exc:  # the stream's endpoint is slow or down: try again
                log.warning("stream-read-failed", shard=shard, error=repr(exc)[:300])
                self._stop.wait(backoff_delay(3, base=0.1, cap=2.0))
                continue
            records = page.get("Records", [])
            if not records:
                iterator = page.get("NextShardIterator")
                self._stop.wait(self.idle_wait)
                continue
            self.capacity.take(len(records))
            outcome = self.processor.process(records)
            self.finished += outcome.published + len(outcome.dead)
            if self.trace is not None and outcome.finished:
                with self._trace_lock:
                    self.trace.write("".join(f"{s} {c:.6f} {f:.6f}\n" for s, c, f in outcome.finished))
                    self.trace.flush()
            if outcome.failed:  # again from the first failure, as the event source mapping does
                attempt += 1
                self.retries += 1
                self._stop.wait(backoff_delay(min(attempt, 6), base=0.1, cap=5.0))
                iterator = self._iterator(shard, "AT_SEQUENCE_NUMBER", outcome.failed[0])
                continue
            attempt = 0
            iterator = page.get("NextShardIterator")
