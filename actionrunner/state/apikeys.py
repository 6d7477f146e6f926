"""The admin API's ``Idempotency-Key`` s: the first use of a key stores its run, a repeat finds it.

Items ``apikey#{action}#{key}`` of the state table (:mod:`.schema`) hold the run id and a
fingerprint of the call (inputs and group), and whether its message was sent; they expire after
``ACTIONRUNNER_IDEMPOTENCY_TTL_SECONDS`` (24 h by default), as the worker's record of the key does
(the message carries the key; its run's idempotency key derives from it).

    >>> keys = ApiKeyStore(table="actionrunner-state", client=dynamodb)     # doctest: +SKIP
    >>> keys.claim("tasks.demo.hello", "k1", run_id="5f0c…", fingerprint="ab…")  # doctest: +SKIP
    ('5f0c…', False, False)
"""

from __future__ import annotations

import time
from typing import Any

from .schema import STATE_KEY, STATE_TTL_ATTRIBUTE, api_key_pk, expiry, key

#: Seconds an Idempotency-Key is remembered (the API passes ACTIONRUNNER_IDEMPOTENCY_TTL_SECONDS).
API_KEY_TTL_SECONDS = 86_400


class KeyReused(Exception):
    """The key was used before with a different call (other inputs or group)."""


class ApiKeyStore:
    """Idempotency-Keys in the state table. DynamoDB's errors are raised as they are."""

    def __init__(self, table: str, client: Any, ttl_seconds: int = API_KEY_TTL_SECONDS) -> None:
        self.table, self.client, self.ttl_seconds = table, client, ttl_seconds

    def claim(self, action: str, api_key: str, run_id: str,
              fingerprint: str) -> tuple[str, bool, bool]:
        """``(run_id, replayed, sent)``: ``(run_id, False, False)`` on the key's first use (or
        after it expired); ``(the first run's id, True, sent)`` on a repeat of the same call,
        ``sent`` once :meth:`mark_sent` recorded its message; :class:`KeyReused` on a repeat with
        a different ``fingerprint``."""
        pk = api_key_pk(action, api_key)
        item = {**key(pk), "run_id": {"S": run_id}, "fingerprint": {"S": fingerprint},
                STATE_TTL_ATTRIBUTE: expiry(self.ttl_seconds)}
        try:
            self.client.put_item(
                TableName=self.table, Item=item,
                ConditionExpression=(f"attribute_not_exists({STATE_KEY}) OR "
                                     f"{STATE_TTL_ATTRIBUTE} <= :now"),
                ExpressionAttributeValues={":now": {"N": str(int(time.time()))}})
            return run_id, False, False
        except self.client.exceptions.ConditionalCheckFailedException:
            pass
        stored = self.client.get_item(TableName=self.table, Key=key(pk), ConsistentRead=True)["Item"]
        if stored["fingerprint"]["S"] != fingerprint:
            raise KeyReused("Idempotency-Key was already used with different inputs or group")
        return stored["run_id"]["S"], True, stored.get("sent", {}).get("BOOL", False)

    def mark_sent(self, action: str, api_key: str) -> None:
        """Record that the key's message is on the queue: a repeat then sends nothing."""
        self.client.update_item(TableName=self.table, Key=key(api_key_pk(action, api_key)),
                                UpdateExpression="SET sent = :t",
                                ExpressionAttributeValues={":t": {"BOOL": True}})
