"""The stream processor: DynamoDB stream records → SNS, as the seed did it.

    processor = StreamProcessor(sns, topic_arn, watermark=WatermarkPublisher(store))
    outcome = processor.process(records)          # Lambda's event["Records"] or GetRecords'
    outcome.batch_item_failures                    # → Lambda's {"batchItemFailures": [...]}

* **Batches**: PublishBatch, 10 entries a call (:func:`actionrunner.batch.in_batches`, as SQS's
  batch calls).
* **Order per item key**: a key's changes are published in sequence order; on a FIFO topic with
  the key's hash as message group and the event id as deduplication id (a retried record is not
  published twice within SNS's five-minute window). One batch holds at most one change of a key,
  so a failed entry never has a later change of its key published before it.
* **Parallel across keys**: keys are spread over ``parallelism`` lanes (a stable hash); lanes
  publish at once, each in order.
* **Partial failures**: an entry SNS refuses (or a call that fails) fails its record and every
  later record of the same key (they wait: order). The outcome names them; the first failed
  sequence number is Lambda's ``batchItemFailures`` (Lambda retries the shard from there).
* **Bad records** (:func:`~.records.parse` refuses them, or their message cannot be made or is
  over SNS's 256 KiB): sent to ``dead_letter`` with the reason, and counted as finished; without
  a dead letter they fail like a refused entry, so the event source mapping's retries, bisection
  and on-failure destination take them (nothing is lost either way).
* **Watermark**: after each batch, the newest creation time before the first failure and the
  records finished, to ``watermark`` (:class:`~actionrunner.pacing.WatermarkPublisher`).
"""

from __future__ import annotations

import json
import time
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from .. import constants as C
from ..batch import in_batches
from ..errors import MalformedStreamRecord
from ..logging import get_logger
from ..pacing.watermark import WatermarkPublisher
from .records import StreamChange, parse

log = get_logger("actionrunner.streams")

#: SNS's cap on one PublishBatch call (as SQS's batch calls), and on one message.
MAX_PUBLISH_BATCH = C.SQS_MAX_BATCH
MAX_MESSAGE_BYTES = 256 * 1024

#: ``dead_letter(record, reason)``: keep a record that cannot be published, with why.
DeadLetter = Callable[[Any, str], None]


@dataclass
class Outcome:
    """What one batch came to: records published, dead-lettered (sequence or index, reason),
    failed (sequence numbers, in order: retry from the first), the newest creation time
    finished before the first failure."""

    published: int = 0
    dead: list[tuple[str, str]] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    newest: float | None = None
    #: (sequence, created, finished at) of each published record (for benchmarks' lag figures).
    finished: list[tuple[str, float, float]] = field(default_factory=list)

    @property
    def batch_item_failures(self) -> list[dict[str, str]]:
        """Lambda's partial batch response for a stream (the first failure: it retries from it)."""
        return [{"itemIdentifier": self.failed[0]}] if self.failed else []


class StreamProcessor:
    """Publishes stream records to one SNS topic (see the module docstring)."""

    def __init__(self, sns: Any, topic_arn: str, *, fifo: bool | None = None, parallelism: int = 4,
                 watermark: WatermarkPublisher | None = None,
                 dead_letter: DeadLetter | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        if parallelism < 1:
            raise ValueError(f"parallelism must be at least 1, not {parallelism!r}")
        self.sns, self.topic_arn = sns, topic_arn
        self.fifo = topic_arn.endswith(".fifo") if fifo is None else fifo
        self.parallelism, self.watermark, self.dead_letter = parallelism, watermark, dead_letter
        self.clock = clock
        self._pool = ThreadPoolExecutor(parallelism, thread_name_prefix="stream-publish") \
            if parallelism > 1 else None
        #: PublishBatch calls made (for benchmarks and tests).
        self.calls = 0

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()

    # -- one batch -----------------------------------------------------------------------------
    def process(self, records: Sequence[Any]) -> Outcome:
        outcome = Outcome()
        order: list[tuple[int, StreamChange | None, str]] = []  # (position, change, sequence)
        lanes: list[list[StreamChange]] = [[] for _ in range(self.parallelism)]
        failed_at: dict[str, int] = {}  # sequence → position, for the failures
        for position, record in enumerate(records):
            try:
                change = parse(record)
            except MalformedStreamRecord as exc:
                sequence = _sequence_of(record) or f"#{position}"
                order.append((position, None, sequence))
                if not self._dead_letter(record, exc.reason, outcome, sequence):
                    failed_at[sequence] = position
                continue
            order.append((position, change, change.sequence))
            lanes[zlib.crc32(change.key.encode()) % self.parallelism].append(change)
        busy = [lane for lane in lanes if lane]
        results = self._pool.map(self._publish_lane, busy) if self._pool and len(busy) > 1 \
            else map(self._publish_lane, busy)
        failed: set[str] = set()
        for lane_outcome in results:
            outcome.published += lane_outcome.published
            outcome.dead += lane_outcome.dead
            outcome.finished += lane_outcome.finished
            failed.update(lane_outcome.failed)
        positions = {seq: pos for pos, _, seq in order}
        failed_at.update({seq: positions[seq] for seq in failed})
        outcome.failed = sorted(failed_at, key=failed_at.__getitem__)
        first_failure = min(failed_at.values(), default=len(order))
        outcome.newest = max((c.created for pos, c, _ in order if c is not None and pos < first_failure),
                             default=None)
        if self.watermark is not None:
            finished = outcome.published + len(outcome.dead)
            self.watermark.finished(outcome.newest, finished)
        if outcome.failed or outcome.dead:
            log.warning("stream-batch-partial", records=len(records), published=outcome.published,
                        dead_lettered=len(outcome.dead), failed=len(outcome.failed),
                        first_failed=outcome.failed[0] if outcome.failed else None)
        return outcome

    def _dead_letter(self, record: Any, reason: str, outcome: Outcome, sequence: str) -> bool:
        if self.dead_letter is None:
            return False
        try:
            self.dead_letter(record, reason)
        except Exception as exc:  # it stays a failure: retried, nothing lost
            log.error("stream-dead-letter-failed", sequence=sequence, reason=reason, error=repr(exc)[:300])
            return False
        outcome.dead.append((sequence, reason))
        log.warning("stream-record-dead-lettered", sequence=sequence, reason=reason)
        return True

    def _publish_lane(self, changes: list[StreamChange]) -> Outcome:
        """Publish one lane's changes in order, at most one change of a key per call."""
        outcome = Outcome()
        waiting = list(changes)
        blocked: set[str] = set()  # keys with a failed change: their later changes wait
        while waiting:
            batch: list[StreamChange] = []
            later: list[StreamChange] = []
            in_batch: set[str] = set()
            for change in waiting:
                if change.key in blocked:
                    outcome.failed.append(change.sequence)
                elif len(batch) < MAX_PUBLISH_BATCH and change.key not in in_batch:
                    batch.append(change)
                    in_batch.add(change.key)
                else:
                    later.append(change)
                    in_batch.add(change.key)  # a key's later changes stay behind its first
            waiting = later
            ready: list[tuple[StreamChange, str]] = []
            for change in batch:
                try:
                    message = change.message()
                except Exception as exc:
                    if not self._dead_letter(change.record, f"the change cannot be made a message: "
                                             f"{exc}", outcome, change.sequence):
                        outcome.failed.append(change.sequence)
                        blocked.add(change.key)
                    continue
                if len(message.encode()) > MAX_MESSAGE_BYTES:
                    if not self._dead_letter(change.record, f"{len(message.encode())} bytes, over "
                                             "SNS's 256 KiB", outcome, change.sequence):
                        outcome.failed.append(change.sequence)
                        blocked.add(change.key)
                    continue
                ready.append((change, message))
            if not ready:
                continue
            for chunk in in_batches(self._publish_batch, ready, self._entry):
                if chunk.error is not None:
                    log.warning("stream-publish-failed", entries=len(chunk.items),
                                error=repr(chunk.error)[:300])
                for (change, _), failure in chunk.failed():
                    if chunk.error is None:
                        log.warning("stream-publish-refused", sequence=change.sequence,
                                    code=failure.get("Code"), message=failure.get("Message"))
                    outcome.failed.append(change.sequence)
                    blocked.add(change.key)
                now = self.clock()
                for change, _ in chunk.succeeded():
                    outcome.published += 1
                    outcome.finished.append((change.sequence, change.created, now))
        return outcome

    def _publish_batch(self, entries: list[dict[str, Any]]) -> Any:
        self.calls += 1
        return self.sns.publish_batch(TopicArn=self.topic_arn, PublishBatchRequestEntries=entries)

    def _entry(self, item: tuple[StreamChange, str]) -> dict[str, Any]:
        change, message = item
        entry: dict[str, Any] = {"Message": message, "MessageAttributes": {
            "eventName": {"DataType": "String", "StringValue": change.event_name}}}
        if self.fifo:
            entry["MessageGroupId"] = change.group
            entry["MessageDeduplicationId"] = change.event_id[:128]
        return entry


def _sequence_of(record: Any) -> str | None:
    try:
        sequence = record["dynamodb"]["SequenceNumber"]
    except (TypeError, KeyError):
        return None
    return sequence if isinstance(sequence, str) else None


def sqs_dead_letter(sqs: Any, queue_url: str) -> DeadLetter:
    """A dead letter that sends the record and its reason to an SQS queue (standard)."""

    def send(record: Any, reason: str) -> None:
        body = json.dumps({"reason": reason, "record": record}, default=str)
        sqs.send_message(QueueUrl=queue_url, MessageBody=body[:262_144],
                         MessageAttributes={"reason": {"DataType": "String",
                                                       "StringValue": reason[:1000]}})

    return send
