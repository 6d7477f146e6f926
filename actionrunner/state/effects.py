"""Exactly-once writes: DynamoDB writes an action stages, committed in one transaction with its
idempotency record.

Inside a running action::

    from actionrunner.state import effects

    @action(group="orders:{order_id}")
    def charge(order_id: str, cents: int) -> str:
        effects.update("ledger", {"pk": f"order#{order_id}"}, "ADD balance :c",
                       values={":c": cents})
        return "charged"

Nothing is sent when ``effects.update`` is called. When the action returns, its writes and its
idempotency record going COMPLETED are one TransactWriteItems: both happen, or neither. So a
worker killed at any moment, a redelivered message or a re-sent call never writes them twice, and
a failed run writes nothing. (Work done any other way — an HTTP call, a plain ``update_item`` —
is at least once: it can run again if the worker dies after it and before the completion.)

Without the idempotency store (``idempotent=False``), the writes are still one transaction at the
end of the run; called outside a worker (a script, a test calling the function), each write is
sent at once. Keys and values are plain Python values. At most 99 writes per run (DynamoDB
transactions hold 100 items), one per item; for bulk writes use :class:`actionrunner.dynamo.BatchWriter`.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from contextvars import ContextVar
from typing import Any

import orjson
from botocore.exceptions import ClientError

from ..dynamo import to_attribute_values
from ..errors import EffectRejected, StateError

#: Writes one run may stage (a transaction holds 100 items; one is the idempotency record).
MAX_STAGED = 99

_staged: ContextVar[list[dict[str, Any]] | None] = ContextVar("actionrunner_staged", default=None)


def put(table: str, item: Mapping[str, Any], *, condition: str | None = None,
        names: Mapping[str, str] | None = None, values: Mapping[str, Any] | None = None) -> None:
    """Stage a PutItem of ``item`` into ``table`` (``condition``: a ConditionExpression)."""
    entry: dict[str, Any] = {"TableName": table, "Item": to_attribute_values(item)}
    _stage("Put", entry, table, item, condition, names, values)


def update(table: str, key: Mapping[str, Any], expression: str, *, condition: str | None = None,
           names: Mapping[str, str] | None = None, values: Mapping[str, Any] | None = None) -> None:
    """Stage an UpdateItem of the item ``key`` with UpdateExpression ``expression``."""
    entry = {"TableName": table, "Key": to_attribute_values(key), "UpdateExpression": expression}
    _stage("Update", entry, table, key, condition, names, values)


def delete(table: str, key: Mapping[str, Any], *, condition: str | None = None,
           names: Mapping[str, str] | None = None, values: Mapping[str, Any] | None = None) -> None:
    """Stage a DeleteItem of the item ``key``."""
    entry = {"TableName": table, "Key": to_attribute_values(key)}
    _stage("Delete", entry, table, key, condition, names, values)


def check(table: str, key: Mapping[str, Any], condition: str, *,
          names: Mapping[str, str] | None = None, values: Mapping[str, Any] | None = None) -> None:
    """Stage a ConditionCheck: the commit happens only if ``condition`` holds for item ``key``."""
    entry = {"TableName": table, "Key": to_attribute_values(key)}
    _stage("ConditionCheck", entry, table, key, condition, names, values)


def _stage(kind: str, entry: dict[str, Any], table: str, key_or_item: Mapping[str, Any],
           condition: str | None, names: Mapping[str, str] | None,
           values: Mapping[str, Any] | None) -> None:
    if condition is not None:
        entry["ConditionExpression"] = condition
    if names:
        entry["ExpressionAttributeNames"] = dict(names)
    if values:
        entry["ExpressionAttributeValues"] = to_attribute_values(values)
    staged = _staged.get()
    if staged is None:  # not inside a worker run: write it now
        commit(None, [{kind: entry}])
        return
    if len(staged) >= MAX_STAGED:
        raise StateError(f"an action can stage at most {MAX_STAGED} writes (one DynamoDB "
                         "transaction); write in bulk with actionrunner.dynamo.BatchWriter")
    if "Key" in entry and any(_target(e) == _target({kind: entry}) for e in staged):
        raise StateError(f"two staged writes to the same item of {table!r} ({dict(key_or_item)}): "
                         "DynamoDB refuses that in one transaction; combine them into one")
    staged.append({kind: entry})


def _target(entry: dict[str, Any]) -> tuple[str, bytes] | None:
    ((_, body),) = entry.items()
    if "Key" not in body:
        return None
    return body["TableName"], orjson.dumps(body["Key"], option=orjson.OPT_SORT_KEYS)


class collecting:  # noqa: N801 (used as a function: ``with effects.collecting() as staged``)
    """Stage the writes made in this block (one run of an action) into the yielded list."""

    __slots__ = ("_token",)

    def __enter__(self) -> list[dict[str, Any]]:
        staged: list[dict[str, Any]] = []
        self._token = _staged.set(staged)
        return staged

    def __exit__(self, *exc: object) -> None:
        _staged.reset(self._token)


def commit(client: Any, items: list[dict[str, Any]]) -> None:
    """Write ``items`` (TransactItems entries) in one transaction (no idempotency record).

    :class:`~actionrunner.errors.EffectRejected` if a write's own condition failed (then nothing
    was written)."""
    if not items:
        return
    if client is None:
        from .table import client as state_client

        client = state_client()
    try:
        client.transact_write_items(TransactItems=items, ClientRequestToken=uuid.uuid4().hex)
    except ClientError as exc:
        reasons = exc.response.get("CancellationReasons") or []
        for index, reason in enumerate(reasons):
            if reason.get("Code") == "ConditionalCheckFailed":
                raise EffectRejected(index, "ConditionalCheckFailed", reason.get("Message", "")) from None
        raise
