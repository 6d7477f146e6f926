"""Shared rate limits: a token bucket in the state table that every worker on every machine
draws from.

    @action(rate_limit_shared="500/s", bucket="orders-table")
    def write_order(order_id: str) -> None: ...

Celery's ``rate_limit`` is per worker; this one is global: all the actions naming one bucket, in
all workers, start at most ``rate`` runs per second between them. (Actions that share a bucket
must declare the same rate.)

The bucket is GCRA, the "virtual scheduling" form of a token bucket (burst of one): its item
``bucket#{name}`` holds ``tat``, the earliest time the next run may start. Taking a token is one
conditional UpdateItem that moves ``tat`` on by ``1/rate`` and returns it — no read, and no
compare-and-swap retries however many workers draw at once::

    bucket busy (tat >= now):   SET tat = tat + :interval  IF tat >= :now  → start at tat - interval
    bucket idle (tat <  now):   SET tat = :now + :interval IF tat <  :now  → start now

The run then sleeps until its slot. Slots are ``1/rate`` apart, so the workers' combined rate is
the bucket's; at most one slot is reserved per worker process, so a wait is short. This is the
package's one GCRA: :class:`actionrunner.pacing.shared.SharedPace` is this bucket with a rate
that moves (a take keeps the stored rate and reads it back: ``RATE_ON_TAKE``, ``_took``).

Throttling, two ways:

* the bucket's own requests throttled → exponential backoff with jitter, then try again;
* the action's DynamoDB calls throttled (a throttling error escapes the action, or its
  :class:`~actionrunner.dynamo.BatchWriter` is throttled) → :func:`report_throttling` pushes
  the bucket's schedule back by a penalty that doubles while throttling goes on (0.5 s up to
  30 s): every worker drawing from the bucket slows down, not just the one that was throttled.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import Any

from botocore.exceptions import ClientError

from ..errors import StateError, StateUnavailable
from .schema import STATE_KEY, STATE_TTL_ATTRIBUTE, bucket_pk
from .throttling import backoff_delay, condition_failed, is_throttling, is_transient, unavailable_wait

#: First pause of a bucket after its action was throttled; it doubles up to MAX_PENALTY.
BASE_PENALTY = 0.5
MAX_PENALTY = 30.0
#: A bucket item lives this long after its last use (TTL).
BUCKET_TTL_SECONDS = 86_400
#: Failed requests (5xx, resets, timeouts: after the client's own retries) after which a run
#: stops waiting for a token and waits for the table instead (StateUnavailable).
MAX_TRANSIENT_FAILURES = 4

_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:/\s*([smh]))?\s*$")
_PER = {"s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_rate(text: str | float) -> float:
    """Runs per second of a rate in Celery's spelling: ``"500/s"``, ``"30/m"``, ``"10/h"``
    (a bare number is per second)."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        rate = float(text)
    else:
        match = _RATE.match(str(text))
        if not match:
            raise ValueError(f"rate {text!r} is not like '500/s', '30/m' or '10/h'")
        rate = float(match.group(1)) / _PER[match.group(2)]
    if rate <= 0:
        raise ValueError(f"rate {text!r} must be more than zero")
    return rate


class SharedRateLimit:
    """One bucket of the state table (see the module docstring)."""

    #: What a take writes into the item's ``rate``: this bucket's fixed rate, every time.
    RATE_ON_TAKE = "#rate = :rate"
    #: What the bucket calls its item in errors.
    KIND = "rate-limit bucket"

    def __init__(self, name: str, rate: float, *, table: str, client: Any,
                 clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.name, self.rate, self.table, self.client = name, rate, table, client
        self.clock, self.sleep = clock, sleep
        self._busy = False  # which branch to try first: the one that worked last time
        #: Requests made, throttled answers, and penalties applied (for benchmarks and tests).
        self.requests = self.throttled = self.penalties = 0

    @property
    def _key(self) -> dict[str, Any]:
        return {STATE_KEY: {"S": bucket_pk(self.name)}}

    @property
    def interval(self) -> float:
        """Seconds between two slots (at the rate known now)."""
        return 1.0 / self.rate

    def acquire(self, units: int = 1) -> float:
        """Wait for the slot of ``units`` runs (or writes); returns the seconds waited."""
        busy = self._busy
        failing: BaseException | None = None  # the last transient failure
        failures = 0  # transient failures other than throttling
        for attempt in range(1, 30):
            now = self.clock()
            try:
                slot = self._take(now, busy, units)
            except Exception as exc:
                if is_throttling(exc):
                    self.throttled += 1
                    failing = exc
                    self.sleep(backoff_delay(attempt))
                    continue
                if is_transient(exc):  # 5xx, reset, timeout (after the client's own retries)
                    failing, failures = exc, failures + 1
                    if failures >= MAX_TRANSIENT_FAILURES:
                        break
                    self.sleep(backoff_delay(attempt))
                    continue
                if not condition_failed(exc):
                    raise
                failing = None
                busy = not busy  # the bucket was in the other state: take that branch
                continue
            self._busy = busy
            wait = slot - self.clock()
            if wait > 0:
                self.sleep(wait)
            return max(0.0, wait)
        if failing is not None:  # the table is unavailable: the run waits, using no attempt
            raise StateUnavailable("UpdateItem", f"{self.KIND} {self.name!r}: {failing!r}"[:300],
                                   when=unavailable_wait())
        raise StateError(f"{self.KIND} {self.name!r}: could not take a token")

    def _take(self, now: float, busy: bool, units: int = 1) -> float:
        """One UpdateItem; the start time of the slot it reserved."""
        self.requests += 1
        step = units / self.rate
        values = {":now": _n(now), ":rate": _n(self.rate),
                  ":expires": _n(int(now) + BUCKET_TTL_SECONDS)}
        if busy:
            expression, condition = "SET tat = tat + :step", "tat >= :now"
            values[":step"] = _n(step)
        else:
            expression = "SET tat = :next"
            condition = "attribute_not_exists(tat) OR tat < :now"
            values[":next"] = _n(now + step)
        response = self.client.update_item(
            TableName=self.table, Key=self._key,
            UpdateExpression=f"{expression}, {self.RATE_ON_TAKE}, #expires = :expires",
            ConditionExpression=condition,
            ExpressionAttributeNames={"#rate": "rate", "#expires": STATE_TTL_ATTRIBUTE},
            ExpressionAttributeValues=values, ReturnValues="ALL_NEW",
        )
        self._took(response["Attributes"])
        return float(response["Attributes"]["tat"]["N"]) - step if busy else now

    def _took(self, attributes: dict[str, Any]) -> None:
        """A take's answer (the item's ``tat`` and ``rate`` after it): a fixed rate ignores it."""

    def report_throttling(self) -> float:
        """DynamoDB throttled an action of this bucket: push the bucket's schedule back (for
        every worker). Returns the pause applied (0 if the bucket is already pausing)."""
        for _ in range(5):
            now = self.clock()
            item = self.client.get_item(TableName=self.table, Key=self._key,
                                        ConsistentRead=True).get("Item") or {}
            tat = float(item["tat"]["N"]) if "tat" in item else None
            penalty = float(item.get("penalty", {}).get("N", 0))
            throttled_at = float(item.get("throttled_at", {}).get("N", 0))
            if throttled_at and now < throttled_at + penalty:
                return 0.0  # this throttling is being waited out already
            recent = throttled_at and now < throttled_at + 4 * penalty + 1
            pause = min(MAX_PENALTY, penalty * 2) if recent else BASE_PENALTY
            values = {":tat": _n(max(tat or now, now) + pause), ":pause": _n(pause), ":now": _n(now),
                      ":expires": _n(int(now) + BUCKET_TTL_SECONDS)}
            if tat is None:
                condition = "attribute_not_exists(tat)"
            else:
                condition, values[":old"] = "tat = :old", _n(tat)
            try:
                self.client.update_item(
                    TableName=self.table, Key=self._key,
                    UpdateExpression="SET tat = :tat, penalty = :pause, throttled_at = :now, "
                                     "#expires = :expires",
                    ConditionExpression=condition,
                    ExpressionAttributeNames={"#expires": STATE_TTL_ATTRIBUTE},
                    ExpressionAttributeValues=values,
                )
            except ClientError as exc:
                if condition_failed(exc):
                    continue  # others took tokens meanwhile: read again
                raise
            self.penalties += 1
            return pause
        return 0.0


def _n(value: float) -> dict[str, str]:
    return {"N": repr(float(value)) if isinstance(value, float) else str(value)}


# -- the bucket of the running action ---------------------------------------------------------
_current: ContextVar[SharedRateLimit | None] = ContextVar("actionrunner_bucket", default=None)


@contextlib.contextmanager
def drawing_from(limiter: SharedRateLimit | None) -> Iterator[None]:
    """Make ``limiter`` the running action's bucket in this block (for :func:`report_throttling`)."""
    token = _current.set(limiter)
    try:
        yield
    finally:
        _current.reset(token)


def current_limiter() -> SharedRateLimit | None:
    """The running action's shared bucket, if it has one."""
    return _current.get()


def report_throttling() -> float:
    """Tell the running action's shared bucket (if it has one) that DynamoDB throttled it."""
    limiter = _current.get()
    return limiter.report_throttling() if limiter is not None else 0.0
