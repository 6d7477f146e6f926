"""Helpers for actions that write to DynamoDB as good citizens: a writes-per-second budget,
BatchWriteItem 25 at a time, UnprocessedItems and throttling retried with backoff.

    from actionrunner.dynamo import BatchWriter

    @action(group="backfill:{table}")
    def backfill(table: str, start: int, count: int) -> dict:
        with BatchWriter(table, writes_per_second=200) as writer:
            for i in range(start, start + count):
                writer.put({"pk": f"item#{i}", "n": i})
        return writer.summary()

Adaptive pacing (the rate follows the stream consumer's watermark, shared by every worker:
:mod:`actionrunner.pacing`)::

    from actionrunner.pacing import AdaptivePacer, PaceLimits

    pacer = AdaptivePacer.from_settings("items", PaceLimits(floor=20, ceiling=1000, lag_bound=5))
    with BatchWriter("items", pacer=pacer) as writer:
        ...

Items are plain Python values (boto3's TypeSerializer: ``str``, ``int``, ``float``, ``Decimal``,
``bool``, ``bytes``, ``None``, lists, dicts, sets). These writes are at least once (a retried
action writes again); for exactly-once writes, stage them with :mod:`actionrunner.state.effects`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import TypeSerializer
from botocore.exceptions import ClientError

from .state.ratelimit import report_throttling
from .state.throttling import THROTTLING_CODES, backoff_delay, is_throttling

__all__ = ["MAX_BATCH_WRITE", "THROTTLING_CODES", "BatchWriter", "Pacer", "WriteStats",
           "backoff_delay", "is_throttling", "to_attribute_values", "write_batch"]

#: DynamoDB's cap on one BatchWriteItem call.
MAX_BATCH_WRITE = 25
_serializer = TypeSerializer()


def to_attribute_values(item: Mapping[str, Any]) -> dict[str, Any]:
    """A plain Python mapping as DynamoDB attribute values (floats go through ``Decimal``)."""
    return {name: _serializer.serialize(_decimals(value)) for name, value in item.items()}


def _decimals(value: Any) -> Any:
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, Mapping):
        return {k: _decimals(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_decimals(v) for v in value]
    return value


class Pacer:
    """Spaces out work so that ``rate`` units start per second (in this process), on a fixed
    schedule: unit n may start at ``next_at + n / rate``.

    When the work itself is slow and falls behind, the pacer lets it catch up, but by no more than
    ``slack`` seconds of schedule, so the rate over any second stays at the budget instead of
    drifting below it (or bursting after a pause).
    """

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep, slack: float = 0.2) -> None:
        self.rate, self.clock, self.sleep, self.slack = rate, clock, sleep, slack
        self.next_at = clock()

    def take(self, units: int = 1) -> float:
        """Wait until ``units`` more may start; returns the seconds waited."""
        now = self.clock()
        waited = 0.0
        if self.next_at > now:
            waited = self.next_at - now
            self.sleep(waited)
        self.next_at = max(self.next_at, now - self.slack) + units / self.rate
        return waited


@dataclass
class WriteStats:
    """What batch writes did: items written, BatchWriteItem calls, calls that were retries,
    throttled answers, items that came back unprocessed, seconds waited for the budget."""

    written: int = 0
    requests: int = 0
    retries: int = 0
    throttled: int = 0
    unprocessed: int = 0
    paced_s: float = 0.0


def write_batch(client: Any, table: str, requests: list[dict[str, Any]], *,
                max_attempts: int = 10, on_throttle: Callable[[], Any] | None = None,
                sleep: Callable[[float], None] = time.sleep, stats: WriteStats | None = None,
                on_unprocessed: Callable[[], Any] | None = None) -> int:
    """BatchWriteItem ``requests`` (at most 25, DynamoDB's own format) into ``table``; items left
    unprocessed and throttled calls are sent again after an exponential, jittered backoff, up to
    ``max_attempts`` calls. ``on_throttle`` is called on each throttled answer,
    ``on_unprocessed`` on each answer with UnprocessedItems. Returns the calls made; adds to
    ``stats`` if given."""
    stats = stats if stats is not None else WriteStats()
    pending = list(requests)
    for attempt in range(1, max_attempts + 1):
        stats.requests += 1
        stats.retries += attempt > 1
        try:
            response = client.batch_write_item(RequestItems={table: pending})
        except ClientError as exc:
            if not is_throttling(exc) or attempt == max_attempts:
                raise
            stats.throttled += 1
            if on_throttle is not None:
                on_throttle()
        else:
            left = (response.get("UnprocessedItems") or {}).get(table, [])
            stats.written += len(pending) - len(left)
            if not left:
                return attempt
            stats.unprocessed += len(left)
            if on_unprocessed is not None:
                on_unprocessed()
            pending = left
        sleep(backoff_delay(attempt))
    raise RuntimeError(f"{table}: {len(pending)} items still unprocessed after {max_attempts} "
                       "BatchWriteItem calls")


class BatchWriter:
    """Paced BatchWriteItem into one table.

    ``put`` / ``delete`` queue requests; every 25 (and on :meth:`flush` / leaving the ``with``
    block) they are sent in one BatchWriteItem (:func:`write_batch`), after waiting for the
    ``writes_per_second`` budget (``None``: no budget). ``on_throttle`` (default: tell the
    running action's shared rate-limit bucket, if it has one) is called on each throttling answer.
    ``raw=True``: items and keys are already in DynamoDB's attribute-value format (from a Scan).
    ``pacer``: instead of a fixed budget, anything with ``take(units) -> seconds waited`` — an
    :class:`~actionrunner.pacing.AdaptivePacer` (told of throttling and UnprocessedItems too).
    """

    def __init__(self, table: str, *, client: Any = None, writes_per_second: float | None = None,
                 max_attempts: int = 10, on_throttle: Callable[[], Any] | None = None,
                 raw: bool = False, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic, pacer: Any = None) -> None:
        if pacer is not None and writes_per_second is not None:
            raise ValueError("BatchWriter: give writes_per_second or pacer, not both")
        if client is None:
            from .settings import get_settings

            client = get_settings().client("dynamodb")
        if on_throttle is None:
            on_throttle = report_throttling
        self.on_unprocessed = getattr(pacer, "throttled", None)
        if self.on_unprocessed is not None:
            told, tell_pacer = on_throttle, self.on_unprocessed

            def on_throttle() -> None:
                tell_pacer()
                told()
        self.table, self.client, self.max_attempts = table, client, max_attempts
        self.on_throttle, self.sleep, self.raw = on_throttle, sleep, raw
        self.pacer = pacer if pacer is not None else \
            Pacer(writes_per_second, clock=clock, sleep=sleep) if writes_per_second else None
        self.stats = WriteStats()
        self._pending: list[dict[str, Any]] = []

    def put(self, item: Mapping[str, Any]) -> None:
        """Queue a PutRequest of ``item``."""
        self._queue({"PutRequest": {"Item": dict(item) if self.raw else to_attribute_values(item)}})

    def delete(self, key: Mapping[str, Any]) -> None:
        """Queue a DeleteRequest of the item with primary key ``key``."""
        self._queue({"DeleteRequest": {"Key": dict(key) if self.raw else to_attribute_values(key)}})

    def _queue(self, request: dict[str, Any]) -> None:
        self._pending.append(request)
        if len(self._pending) >= MAX_BATCH_WRITE:
            self.flush()

    def flush(self) -> None:
        """Send what is queued (in batches of 25, within the budget)."""
        while self._pending:
            batch, self._pending = self._pending[:MAX_BATCH_WRITE], self._pending[MAX_BATCH_WRITE:]
            if self.pacer is not None:
                self.stats.paced_s += self.pacer.take(len(batch))
            write_batch(self.client, self.table, batch, max_attempts=self.max_attempts,
                        on_throttle=self.on_throttle, sleep=self.sleep, stats=self.stats,
                        on_unprocessed=self.on_unprocessed)

    def summary(self) -> dict[str, Any]:
        """What it did so far (for the action's result or a log line)."""
        return {"table": self.table, **asdict(self.stats), "paced_s": round(self.stats.paced_s, 3)}

    def __enter__(self) -> BatchWriter:
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        if exc_type is None:
            self.flush()
