"""A stream consumer's watermark in the state table: how far the downstream has got.

The consumer (:mod:`actionrunner.streams`) publishes, a few times a second and also when it has
nothing to do (so that silence means a dead consumer), one item ``watermark#{name}``::

    newest        creation time (epoch s) of the newest stream record it finished
    count         records finished in all (ADD: every shard and invocation adds its own)
    published_at  when it last said so

Pacers read it at most ``reads_per_second`` times a second (:class:`WatermarkReader`), whatever
the number of writes. Clocks: ``published_at`` and ``newest`` are compared with the pacer's own
clock, so the machines' clocks must agree to well under the lag bound (NTP does, on AWS).
DynamoDB Streams stamps records to the second (rounded down), which makes the newest record look
older than it is: the pacer then counts more backlog than there is — on the safe side.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

from botocore.exceptions import ClientError

from ..errors import PacingMisconfigured, UnknownWatermark
from ..state.schema import STATE_TTL_ATTRIBUTE, expiry, key, watermark_pk
from .controller import Watermark

#: What a watermark (and an adaptive pacer's bucket) may be called.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9_.:@/-]{1,200}$")
#: A watermark item lives this long after its consumer last published (TTL).
WATERMARK_TTL_SECONDS = 7 * 86_400


def check_name(name: str, what: str = "watermark") -> str:
    """``name`` if it is a usable watermark / bucket name, else a clear error."""
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise PacingMisconfigured(f"{what} name {name!r}: use 1-200 letters, digits and _ . : @ / -")
    return name


def _n(value: float) -> dict[str, str]:
    return {"N": repr(float(value))}


class WatermarkStore:
    """The item ``watermark#{name}`` of the state table ``table``."""

    def __init__(self, name: str, *, table: str, client: Any,
                 clock: Callable[[], float] = time.time) -> None:
        self.name, self.table, self.client, self.clock = check_name(name), table, client, clock
        self.key = key(watermark_pk(name))
        #: Requests made (for benchmarks and tests).
        self.requests = 0

    def publish(self, newest: float | None, finished: int) -> None:
        """Add ``finished`` records to the count; move ``newest`` forward (never back)."""
        now = self.clock()
        values = {":n": {"N": str(int(finished))}, ":now": _n(now),
                  ":expires": expiry(WATERMARK_TTL_SECONDS, now)}
        names = {"#count": "count", "#expires": STATE_TTL_ATTRIBUTE}
        update = "ADD #count :n SET published_at = :now, #expires = :expires"
        if newest is not None:
            self.requests += 1
            try:
                self.client.update_item(
                    TableName=self.table, Key=self.key,
                    UpdateExpression=update + ", newest = :newest",
                    ConditionExpression="attribute_not_exists(newest) OR newest <= :newest",
                    ExpressionAttributeNames=names,
                    ExpressionAttributeValues={**values, ":newest": _n(newest)})
                return
            except ClientError as exc:  # another shard or invocation got further: count only
                if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                    raise
        self.requests += 1
        self.client.update_item(TableName=self.table, Key=self.key, UpdateExpression=update,
                                ExpressionAttributeNames=names, ExpressionAttributeValues=values)

    def read(self) -> Watermark | None:
        """The watermark as published (None: never published, or expired)."""
        self.requests += 1
        item = self.client.get_item(TableName=self.table, Key=self.key,
                                    ConsistentRead=True).get("Item")
        if not item or "published_at" not in item:
            return None
        return Watermark(newest=float(item["newest"]["N"]) if "newest" in item else None,
                         count=int(float(item.get("count", {}).get("N", "0"))),
                         published_at=float(item["published_at"]["N"]))

    def require(self) -> Watermark:
        """The watermark; :class:`~actionrunner.errors.UnknownWatermark` if none was published."""
        found = self.read()
        if found is None:
            raise UnknownWatermark(self.name, self.table)
        return found


class WatermarkPublisher:
    """What a consumer calls after each batch (:meth:`finished`) and when idle
    (:meth:`heartbeat`): publishes at most once every ``every`` seconds, the counts added up."""

    def __init__(self, store: WatermarkStore, every: float = 0.25) -> None:
        self.store, self.every = store, every
        self._newest: float | None = None
        self._pending = 0
        self._last = -float("inf")

    def finished(self, newest: float | None, count: int) -> None:
        if newest is not None and (self._newest is None or newest > self._newest):
            self._newest = newest
        self._pending += count
        self.heartbeat()

    def heartbeat(self, force: bool = False) -> bool:
        """Publish if due (or ``force``); True if it did."""
        now = time.monotonic()
        if not force and now - self._last < self.every:
            return False
        self.store.publish(self._newest, self._pending)
        self._pending, self._last = 0, now
        return True

    def flush(self) -> None:
        self.heartbeat(force=True)


class WatermarkReader:
    """The watermark, read at most ``reads_per_second`` times a second (cached in between);
    a read that fails keeps the last one (which then goes stale: the floor)."""

    def __init__(self, store: WatermarkStore, reads_per_second: float = 4.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if reads_per_second <= 0:
            raise PacingMisconfigured("watermark reads_per_second must be more than 0")
        self.store, self.interval, self.clock = store, 1.0 / reads_per_second, clock
        self._cached: Watermark | None = None
        self._read_at = -float("inf")
        self.failures = 0

    def get(self) -> Watermark | None:
        now = self.clock()
        if now - self._read_at >= self.interval:
            self._read_at = now
            try:
                self._cached = self.store.read() or self._cached
            except Exception:  # the table is slow or down: what we had goes stale
                self.failures += 1
        return self._cached
