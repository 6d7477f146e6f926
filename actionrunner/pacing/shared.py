"""The pace every writer of one downstream shares: the shared rate limit's bucket, with a rate
that moves.

The item ``bucket#{name}`` of the state table is the GCRA bucket of
:mod:`actionrunner.state.ratelimit` (``tat``, the earliest time the next write may start), and
``rate`` is no constant: adaptive pacers store their decisions there and every taker reads it
back with its token, so every worker and Lambda invocation of the downstream writes at one
rate between them. Taking ``units`` is the shared rate limit's own take, one conditional
UpdateItem (no read), that keeps the stored rate and reads it back::

    busy (tat >= now):   SET tat = tat + units/rate   IF tat >= :now  → start at tat - units/rate
    idle (tat <  now):   SET tat = :now + units/rate  IF tat <  :now  → start now

(``rate`` as this taker last read it: one take later it has the new one.) Changing the rate is
conditional too: a cut applies if it is lower than the stored rate, an increase only over the
rate it was decided from — two pacers raising at once do not raise twice, and a cut always wins.
Do not give an adaptive pacer the bucket name of a ``rate_limit_shared`` action (that one writes
its fixed rate into the item on every take).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from botocore.exceptions import ClientError

from ..state.ratelimit import BUCKET_TTL_SECONDS, SharedRateLimit
from ..state.schema import STATE_TTL_ATTRIBUTE
from ..state.throttling import condition_failed
from .watermark import check_name


def _n(value: float) -> dict[str, str]:
    return {"N": repr(float(value))}


class SharedPace(SharedRateLimit):
    """One moving-rate bucket (see the module docstring): the GCRA of
    :class:`~actionrunner.state.ratelimit.SharedRateLimit`, keeping the stored rate on a take."""

    RATE_ON_TAKE = "#rate = if_not_exists(#rate, :rate)"
    KIND = "pace bucket"

    def __init__(self, name: str, rate: float, *, table: str, client: Any,
                 clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        super().__init__(check_name(name, "bucket"), rate, table=table, client=client, clock=clock,
                         sleep=sleep)

    def _took(self, attributes: dict[str, Any]) -> None:
        self.rate = float(attributes["rate"]["N"])

    def read_rate(self) -> float | None:
        """The rate stored now (None: the bucket has none yet)."""
        self.requests += 1
        item = self.client.get_item(TableName=self.table, Key=self._key,
                                    ConsistentRead=True).get("Item") or {}
        return float(item["rate"]["N"]) if "rate" in item else None
    def set_rate(self, new: float, decided_from: float, reason: str) -> float:
        """Store ``new`` (decided from the rate ``decided_from``); returns the rate stored
        after it (another pacer's, if that one won)."""
        now = self.clock()
        if new < decided_from:  # a cut: applies unless the rate is lower already
            condition = "attribute_not_exists(#rate) OR #rate > :new"
            values = {":new": _n(new)}
        else:
            condition = "attribute_not_exists(#rate) OR #rate = :old"
            values = {":new": _n(new), ":old": _n(decided_from)}
        self.requests += 1
        try:
            self.client.update_item(
                TableName=self.table, Key=self._key,
                UpdateExpression="SET #rate = :new, rate_reason = :reason, rate_at = :now, "
                                 "#expires = :expires",
                ConditionExpression=condition,
                ExpressionAttributeNames={"#rate": "rate", "#expires": STATE_TTL_ATTRIBUTE},
                ExpressionAttributeValues={**values, ":reason": {"S": reason}, ":now": _n(now),
                                           ":expires": {"N": str(int(now) + BUCKET_TTL_SECONDS)}})
        except ClientError as exc:
            if not condition_failed(exc):
                raise
            stored = self.read_rate()
            self.rate = stored if stored is not None else self.rate
            return self.rate
        self.rate = new
        return new
