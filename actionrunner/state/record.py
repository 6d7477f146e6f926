"""An idempotency record (the state of one key), and what claiming a key gives back.

A record goes ``IN_PROGRESS`` (with a lease) → ``COMPLETED`` (with the saved result), or is
deleted when its run fails, so that a retry can claim the key again. Either way it expires
``ttl`` seconds after its last write (DynamoDB's TTL removes it; until then reads ignore it).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

import orjson
from pydantic_core import PydanticSerializationError, to_jsonable_python

#: Largest result (JSON bytes) that is saved with a record; DynamoDB items stop at 400 KB.
MAX_RESULT_BYTES = 300_000


class Status(enum.StrEnum):
    """Where a key is in its life."""

    IN_PROGRESS = "IN_PROGRESS"
    COMPLETED = "COMPLETED"


@dataclass(frozen=True, slots=True)
class Record:
    """One key's record, as a store keeps it."""

    key: str  #: the item's ``pk``: ``idem#{action}#{dedup id}``
    status: Status
    inputs_hash: str  #: SHA-256 of the call's canonical inputs (same key, other inputs: an error)
    expires_at: int  #: epoch seconds; after this the record no longer counts (TTL deletes it)
    lease_id: str | None = None  #: the claim's fencing token (only its holder may change the record)
    lease_until: float | None = None  #: epoch seconds; an IN_PROGRESS record is free after this
    result: str | None = None  #: the saved return value, as JSON text
    result_saved: bool = True  #: False if the return value was not JSON-able or too large
    action: str | None = None
    run_id: str | None = None  #: the Celery task id of the run that claimed / completed the key

    def holds(self, now: float) -> bool:
        """True while this record keeps a new claim of its key out: a completed record until it
        expires, an in-progress one until its lease runs out (or it expires)."""
        if self.expires_at <= now:
            return False
        if self.status is Status.IN_PROGRESS:
            return (self.lease_until or 0.0) > now
        return True

    @property
    def value(self) -> Any:
        """The saved result, decoded from JSON (``None`` if it was not saved)."""
        return None if self.result is None else orjson.loads(self.result)


@dataclass(slots=True)
class Claim:
    """This run holds the key: run the action, then complete or release the claim."""

    record: Record  #: the record as this run last wrote it
    lease_id: str = field(init=False)  #: the claim's fencing token (kept after completion)

    def __post_init__(self) -> None:
        assert self.record.lease_id is not None, "a claim is an in-progress record with a lease"
        self.lease_id = self.record.lease_id

    @property
    def key(self) -> str:
        return self.record.key


@dataclass(frozen=True, slots=True)
class Replay:
    """The key was completed before: here is its saved result; do not run the action again."""

    record: Record

    @property
    def result(self) -> Any:
        return self.record.value


def encode_result(value: Any) -> tuple[str | None, bool]:
    """``(json_text, saved)`` for a return value: its JSON form (pydantic's: models, dataclasses,
    datetimes, UUIDs, Decimals... become JSON values), or ``(None, False)`` if it has none or is
    over :data:`MAX_RESULT_BYTES`."""
    try:
        text = orjson.dumps(to_jsonable_python(value)).decode()
    except (PydanticSerializationError, TypeError, ValueError, orjson.JSONEncodeError):
        return None, False
    if len(text) > MAX_RESULT_BYTES:
        return None, False
    return text, True
