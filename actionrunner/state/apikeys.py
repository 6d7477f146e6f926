"""The admin API's ``Idempotency-Key`` s: the first use of a key stores its run, a repeat finds it.

Items ``apikey#{action}#{key}`` of the state table (:mod:`.schema`) hold the run id and a
fingerprint of the call (inputs and group); they expire after a day.

    >>> keys = ApiKeyStore(table="actionrunner-state", client=dynamodb)     # doctest: +SKIP
    >>> keys.claim("tasks.demo.hello", "k1", run_id="5f0c…", fingerprint="ab…")  # doctest: +SKIP
    ('5f0c…', False)
"""

from __future__ import annotations

from typing import Any

from .schema import STATE_KEY, STATE_TTL_ATTRIBUTE, api_key_pk, expiry, key

#: Seconds an Idempotency-Key is remembered.
API_KEY_TTL_SECONDS = 86_400


class KeyReused(Exception):
    """The key was used before with a different call (other inputs or group)."""


class ApiKeyStore:
    """Idempotency-Keys in the state table. DynamoDB's errors are raised as they are."""

    def __init__(self, table: str, client: Any, ttl_seconds: int = API_KEY_TTL_SECONDS) -> None:
        self.table, self.client, self.ttl_seconds = table, client, ttl_seconds

    def claim(self, action: str, api_key: str, run_id: str, fingerprint: str) -> tuple[str, bool]:
        """``(run_id, False)`` on the key's first use; ``(the first run's id, True)`` on a repeat
        of the same call; :class:`KeyReused` on a repeat with a different ``fingerprint``."""
        pk = api_key_pk(action, api_key)
        item = {**key(pk), "run_id": {"S": run_id}, "fingerprint": {"S": fingerprint},
                STATE_TTL_ATTRIBUTE: expiry(self.ttl_seconds)}
        try:
            self.client.put_item(TableName=self.table, Item=item,
                                 ConditionExpression=f"attribute_not_exists({STATE_KEY})")
            return run_id, False
        except self.client.exceptions.ConditionalCheckFailedException:
            pass
        stored = self.client.get_item(TableName=self.table, Key=key(pk), ConsistentRead=True)["Item"]
        if stored["fingerprint"]["S"] != fingerprint:
            raise KeyReused("Idempotency-Key was already used with different inputs or group")
        return stored["run_id"]["S"], True
