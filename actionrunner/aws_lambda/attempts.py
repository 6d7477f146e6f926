"""How many runs of a message failed on Lambda, counted in the state table.

A worker counts the attempts of a message it holds in memory. On Lambda every report in
``batchItemFailures`` gives the message back to SQS, and a message waiting behind a failing head
of its group is given back with it: ``ApproximateReceiveCount`` counts those receives too, so it
would spend a message's attempts while the message never ran. The runner counts failed runs
instead, in items ``attempts#{queue}#{message id}`` of the state table (TTL: the queue's
retention), so ``max_attempts`` means runs, as on the worker. A first receive costs nothing (it
cannot have failed before); a later receive costs one consistent read, a failure one write.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ..logging import get_logger
from ..state.schema import ATTEMPTS_PREFIX, STATE_TTL_ATTRIBUTE, attempts_pk, expiry, key

log = get_logger("actionrunner.lambda")

__all__ = ["ATTEMPTS_PREFIX", "AttemptLog"]


class AttemptLog:
    """Failed runs per message. Errors reaching the table are logged, never raised: the count
    then falls back to what SQS says (a retry too many at worst, bounded by maxReceiveCount)."""

    def __init__(self, table: str, client: Any, ttl_seconds: int,
                 clock: Callable[[], float] = time.time) -> None:
        self.table, self.client, self.ttl_seconds, self.clock = table, client, ttl_seconds, clock

    @staticmethod
    def key(queue: str, message_id: str) -> dict[str, Any]:
        return key(attempts_pk(queue, message_id))

    def failures(self, queue: str, message_id: str, receive_count: int) -> int:
        """Failed runs of the message so far (0 on its first receive, without a request)."""
        if receive_count <= 1:
            return 0
        try:
            item = self.client.get_item(TableName=self.table, Key=self.key(queue, message_id),
                                        ConsistentRead=True).get("Item") or {}
        except Exception as exc:
            log.warning("attempts-read-failed", message_id=message_id, error=repr(exc)[:300])
            return receive_count - 1
        expired = int(item.get(STATE_TTL_ATTRIBUTE, {}).get("N", "0")) <= self.clock()
        return 0 if not item or expired else int(item["failures"]["N"])

    def record_failure(self, queue: str, message_id: str, by: int = 1) -> None:
        """Count ``by`` more failed runs of the message."""
        try:
            self.client.update_item(
                TableName=self.table, Key=self.key(queue, message_id),
                UpdateExpression="ADD failures :one SET #expires = :expires",
                ExpressionAttributeNames={"#expires": STATE_TTL_ATTRIBUTE},
                ExpressionAttributeValues={":one": {"N": str(by)},
                                           ":expires": expiry(self.ttl_seconds, self.clock())})
        except Exception as exc:
            log.warning("attempts-write-failed", message_id=message_id, error=repr(exc)[:300])
