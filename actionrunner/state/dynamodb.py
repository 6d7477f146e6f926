"""The idempotency store on DynamoDB: records are items of the state table, changed only by
conditional writes.

A claim is a conditional PutItem; completing, renewing and releasing are writes conditional on the
claim's lease id (a fencing token), so a run whose lease ran out cannot overwrite the run that took
the key after it. The lease timeline of one key::

    run A: PutItem IN_PROGRESS (lease a, until t0+L) ── renew ── renew ── complete ✓
           │                                                              (status = IN_PROGRESS
    run B:      PutItem ✗ (lease a holds) → wait ── PutItem ✗ → COMPLETED: saved result
                                                                           AND lease_id = a)
    crash: run A: PutItem (lease a) ─ ✗ killed; no renewal
           run B:          PutItem ✗ (lease a holds) → wait ──── t0+L ── PutItem ✓ (lease b) → runs
           run A's late complete/renew/release (lease a) ✗ → LeaseLost: nothing written

A failed claim returns the stored item in the same request (ReturnValuesOnConditionCheckFailure),
so a replay costs one request. Effects staged by the action go in one TransactWriteItems with the
completion: both are written, or neither.

A first delivery of a per-call key writes no claim: its completion is one PutItem (or, with
staged effects, one TransactWriteItems whose last item is that Put) on the claim's condition —
no record, an expired one, or a claim whose lease ran out. A redelivery that claimed the key
while the first delivery ran (or completed it) makes that condition fail: nothing of the first
delivery is written. Its ``completed_by`` is a token of its own, so a lost answer is recognised
as for a claimed completion::

    first delivery A: ── runs ──────────────────── PutItem COMPLETED ✓ (1 write)
    with a redelivery: ── runs ──────────────────── PutItem ✗ (B holds) → waits, then replays B
    redelivery B:           PutItem IN_PROGRESS ✓ ── runs ── complete ✓

When DynamoDB misbehaves: the client retries throttling, 5xx answers, resets and timeouts
(botocore's standard retries, :func:`actionrunner.dynamo.state_client_config`); past those, the
store tries the request again for ``patience`` seconds, then raises
:class:`~actionrunner.errors.StateUnavailable` (the run waits, without using an attempt). A
conditional write whose answer was lost and that is sent again finds its own first try applied,
and fails its condition: that is told apart from another run's write by the fencing token — a
claim by its ``lease_id``, a completion by ``completed_by`` (the lease id of the run that
completed the key), a release by the item being gone. So a lost answer is never "someone else
holds the key" nor a lost lease.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from botocore.exceptions import ClientError

from ..errors import EffectRejected, StateError, StateUnavailable, error_code
from ..settings import Settings
from .record import Record, Status
from .schema import IDEMPOTENCY_PREFIX, STATE_KEY, STATE_TTL_ATTRIBUTE
from .store import Effect, IdempotencyStore
from .throttling import backoff_delay, condition_item, is_transient, unavailable_wait

#: The item is free to claim: no record, or it expired, or it is a claim whose lease ran out.
_CLAIMABLE = ("attribute_not_exists(#pk) OR #expires <= :now OR "
              "(#status = :in_progress AND #lease_until <= :now)")
#: The item is still this run's claim.
_HELD_BY = "#status = :in_progress AND #lease_id = :lease_id"
#: Placeholders for every attribute name (several are DynamoDB reserved words).
_NAMES = {
    "#pk": STATE_KEY, "#status": "status", "#expires": STATE_TTL_ATTRIBUTE,
    "#lease_id": "lease_id", "#lease_until": "lease_until", "#inputs_hash": "inputs_hash",
    "#result": "result", "#result_saved": "result_saved", "#completed_by": "completed_by",
}
#: Seconds a store call keeps trying a state table that fails transiently (beyond the client's
#: own retries) before the run is told to wait (StateUnavailable).
PATIENCE_SECONDS = 5.0
#: Transaction cancellations worth trying again.
_TRANSIENT_REASONS = frozenset({"TransactionConflict", "ThrottlingError",
                                "ProvisionedThroughputExceeded", "RequestLimitExceeded"})


def _n(value: float) -> dict[str, str]:
    return {"N": repr(value) if isinstance(value, float) else str(value)}


def to_item(record: Record) -> dict[str, Any]:
    """The DynamoDB item of a record (the action is in ``pk``; ``result_saved`` only when False)."""
    item: dict[str, Any] = {
        STATE_KEY: {"S": record.key}, "status": {"S": record.status.value},
        "inputs_hash": {"S": record.inputs_hash}, STATE_TTL_ATTRIBUTE: _n(record.expires_at),
    }
    for name, value in (("lease_id", record.lease_id), ("result", record.result),
                        ("run_id", record.run_id)):
        if value is not None:
            item[name] = {"S": value}
    if record.lease_until is not None:
        item["lease_until"] = _n(record.lease_until)
    if not record.result_saved:
        item["result_saved"] = {"BOOL": False}
    return item


def from_item(item: dict[str, Any]) -> Record:
    """The record of a DynamoDB item."""

    def text(name: str) -> str | None:
        return item[name]["S"] if name in item else None

    key = item[STATE_KEY]["S"]
    return Record(
        key=key, status=Status(item["status"]["S"]),
        inputs_hash=item["inputs_hash"]["S"], expires_at=int(float(item[STATE_TTL_ATTRIBUTE]["N"])),
        lease_id=text("lease_id"),
        lease_until=float(item["lease_until"]["N"]) if "lease_until" in item else None,
        result=text("result"), result_saved=item.get("result_saved", {}).get("BOOL", True),
        action=key.removeprefix(IDEMPOTENCY_PREFIX).rsplit("#", 1)[0], run_id=text("run_id"),
    )


class DynamoDBStore(IdempotencyStore):
    """Idempotency records in the state table.

        >>> store = DynamoDBStore.from_settings(get_settings())       # doctest: +SKIP
        >>> store.begin("idem#tasks.x#3f…", inputs_hash)               # doctest: +SKIP
        Claim(record=Record(key='idem#tasks.x#3f…', status=<Status.IN_PROGRESS...>, ...))
    """

    def __init__(self, *, table: str, client: Any, patience: float = PATIENCE_SECONDS,
                 sleep: Callable[[float], None] = time.sleep, **options: Any) -> None:
        super().__init__(**options)
        self.table, self.client = table, client
        self.patience, self.sleep = patience, sleep

    @classmethod
    def from_settings(cls, settings: Settings, client: Any | None = None,
                      **options: Any) -> DynamoDBStore:
        """The store the settings describe (table, TTL, lease) at their DynamoDB endpoint."""
        options = {"ttl_seconds": settings.idempotency_ttl_seconds,
                   "lease_seconds": settings.lease_seconds, **options}
        return cls(table=settings.state_table, client=client or settings.client("dynamodb"),
                   **options)

    def _key(self, key: str) -> dict[str, Any]:
        return {STATE_KEY: {"S": key}}

    def _call(self, operation: str, **params: Any) -> Any:
        """``client.<operation>(**params)``, tried again while it fails transiently, for
        ``patience`` seconds; then :class:`StateUnavailable`."""
        method = getattr(self.client, operation)
        deadline = time.monotonic() + self.patience
        attempt = 0
        while True:
            attempt += 1
            try:
                return method(**params)
            except Exception as exc:
                if not is_transient(exc):
                    if attempt > 1:
                        exc.actionrunner_retried = True  # type: ignore[attr-defined]
                    raise
                if time.monotonic() >= deadline:
                    api = "".join(part.title() for part in operation.split("_"))
                    raise StateUnavailable(api, repr(exc)[:300],
                                           when=unavailable_wait()) from exc
            self.sleep(backoff_delay(attempt, base=0.02, cap=2.0))

    def _item(self, key: str) -> dict[str, Any] | None:
        item: dict[str, Any] | None = self._call(
            "get_item", TableName=self.table, Key=self._key(key), ConsistentRead=True).get("Item")
        return item

    def _completed_by(self, key: str, lease_id: str) -> bool:
        """Whether the run holding ``lease_id`` completed ``key`` (an answer lost on the way)."""
        item = self._item(key) or {}
        return bool(item.get("status", {}).get("S") == Status.COMPLETED.value
                    and item.get("completed_by", {}).get("S") == lease_id)

    # -- the four primitives ---------------------------------------------------------------
    def _get_record(self, key: str) -> Record | None:
        item = self._item(key)
        return from_item(item) if item else None

    def _put_record(self, record: Record, now: float) -> Record | None:
        for _ in range(5):
            try:
                self._call(
                    "put_item",
                    TableName=self.table, Item=to_item(record), ConditionExpression=_CLAIMABLE,
                    ExpressionAttributeNames=_names("#pk", "#expires", "#status", "#lease_until"),
                    ExpressionAttributeValues={":now": _n(now),
                                               ":in_progress": {"S": Status.IN_PROGRESS.value}},
                    ReturnValuesOnConditionCheckFailure="ALL_OLD",
                )
                return None
            except ClientError as exc:
                if error_code(exc) != "ConditionalCheckFailedException":
                    raise
                item = condition_item(exc)  # servers without ALL_OLD: read it
                existing = from_item(item) if item else self._get_record(record.key)
                if (existing is not None and existing.lease_id == record.lease_id
                        and existing.status is Status.IN_PROGRESS):
                    return None  # this very claim: a try before was applied, its answer lost
                if existing is not None:
                    return existing
                # released between the check and the read: claim again
        raise StateError(f"could not claim {record.key!r}: it keeps changing under this run")

    def _update_record(self, record: Record, lease_id: str, effects: Sequence[Effect]) -> bool:
        update = self._update(record, lease_id)
        if not effects:
            try:
                self._call("update_item", **update)
            except ClientError as exc:
                if error_code(exc) != "ConditionalCheckFailedException":
                    raise
                # a completion whose answer was lost finds its own write when tried again
                return (record.status is Status.COMPLETED and _retried(exc)
                        and self._completed_by(record.key, lease_id))
            return True
        return self._transact([*effects, {"Update": update}], record.key, lease_id,
                              token=f"{lease_id}-complete")

    def _delete_record(self, key: str, lease_id: str) -> bool:
        try:
            self._call(
                "delete_item",
                TableName=self.table, Key=self._key(key), ConditionExpression=_HELD_BY,
                ExpressionAttributeNames=_names("#status", "#lease_id"),
                ExpressionAttributeValues={":in_progress": {"S": Status.IN_PROGRESS.value},
                                           ":lease_id": {"S": lease_id}},
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as exc:
            if error_code(exc) != "ConditionalCheckFailedException":
                raise
            # no item left after a retry: released (a try before was applied, its answer lost)
            return _retried(exc) and "Item" not in exc.response and self._item(key) is None
        return True

    def _put_completed(self, record: Record, token: str, now: float,
                       effects: Sequence[Effect]) -> Record | None:
        item = {**to_item(record), "completed_by": {"S": token}}
        put = {
            "TableName": self.table, "Item": item, "ConditionExpression": _CLAIMABLE,
            "ExpressionAttributeNames": _names("#pk", "#expires", "#status", "#lease_until"),
            "ExpressionAttributeValues": {":now": _n(now),
                                          ":in_progress": {"S": Status.IN_PROGRESS.value}},
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        }
        for _ in range(5):
            stored: dict[str, Any] | None
            if effects:
                if self._transact([*effects, {"Put": put}], record.key, token,
                                  token=f"{token}-first"):
                    return None
                stored = self._item(record.key)
            else:
                try:
                    self._call("put_item", **put)
                    return None
                except ClientError as exc:
                    if error_code(exc) != "ConditionalCheckFailedException":
                        raise
                    stored = condition_item(exc) or self._item(record.key)
            if stored is not None and stored.get("completed_by", {}).get("S") == token:
                return None  # this very write: a try before was applied, its answer lost
            if stored is not None:
                return from_item(stored)
            # released between the check and the read: write again
        raise StateError(f"could not complete {record.key!r}: it keeps changing under this run")

    # -- helpers ---------------------------------------------------------------------------
    def _update(self, record: Record, lease_id: str) -> dict[str, Any]:
        """An UpdateItem (or transaction Update) that writes ``record`` if ``lease_id`` holds it:
        a renewal sets the lease's end; a completion sets the result, removes the lease and
        keeps its id as ``completed_by`` (to recognise its own write after a lost answer)."""
        item = to_item(record)
        sets, removes = ["#status = :status", "#expires = :expires"], []
        names = ["#status", "#lease_id", "#expires"]
        values: dict[str, Any] = {":in_progress": {"S": Status.IN_PROGRESS.value},
                                  ":lease_id": {"S": lease_id}, ":status": item["status"],
                                  ":expires": item[STATE_TTL_ATTRIBUTE]}
        for attribute, placeholder in (("lease_until", "#lease_until"), ("result", "#result"),
                                       ("result_saved", "#result_saved")):
            if attribute in item:
                sets.append(f"{placeholder} = :{attribute}")
                values[f":{attribute}"] = item[attribute]
                names.append(placeholder)
        for attribute, placeholder in (("lease_id", "#lease_id"), ("lease_until", "#lease_until")):
            if attribute not in item:
                removes.append(placeholder)
                names.append(placeholder)
        if record.status is Status.COMPLETED:
            sets.append("#completed_by = :lease_id")
            names.append("#completed_by")
        expression = "SET " + ", ".join(sets) + (" REMOVE " + ", ".join(removes) if removes else "")
        return {
            "TableName": self.table, "Key": self._key(record.key), "UpdateExpression": expression,
            "ConditionExpression": _HELD_BY, "ExpressionAttributeNames": _names(*names),
            "ExpressionAttributeValues": values,
        }

    def _transact(self, items: list[dict[str, Any]], key: str, lease_id: str, token: str) -> bool:
        """TransactWriteItems; False if the last item's (the record's) condition failed.

        The request token makes a repeated call (after a lost response) a no-op that succeeds,
        not a second write; a server that does not keep tokens cancels the repeat (the record
        is no longer in progress): then the record says whether it was this run's completion."""
        for attempt in range(1, 9):
            try:
                self._call("transact_write_items", TransactItems=items,
                           ClientRequestToken=token[:36])
                return True
            except ClientError as exc:
                if error_code(exc) != "TransactionCanceledException":
                    raise
                cancelled = exc.response.get("CancellationReasons", [])
                reasons = [r.get("Code", "None") for r in cancelled]
                if ("ConditionalCheckFailed" in reasons and (attempt > 1 or _retried(exc))
                        and self._completed_by(key, lease_id)):
                    return True
                if reasons and reasons[-1] == "ConditionalCheckFailed":
                    return False
                for index, reason in enumerate(reasons[:-1]):
                    if reason == "ConditionalCheckFailed":
                        detail = cancelled[index].get("Message", "")
                        raise EffectRejected(index, reason, detail) from None
                if set(reasons) - {"None"} <= _TRANSIENT_REASONS:
                    if attempt < 8:
                        self.sleep(backoff_delay(attempt, base=0.02, cap=2.0))
                        continue
                    raise StateUnavailable("TransactWriteItems", f"cancelled: {reasons}",
                                           when=unavailable_wait()) from exc
                raise StateError(f"the completion transaction was cancelled: {reasons}") from exc
        raise StateError("the completion transaction kept conflicting")  # pragma: no cover


def _names(*placeholders: str) -> dict[str, str]:
    return {p: _NAMES[p] for p in dict.fromkeys(placeholders)}


def _retried(exc: ClientError) -> bool:
    """Whether the request that failed was a retry (botocore's, or the store's own): only then
    can its condition have failed because of its own earlier try."""
    retries = exc.response.get("ResponseMetadata", {}).get("RetryAttempts") or 0
    return bool(retries) or getattr(exc, "actionrunner_retried", False)
