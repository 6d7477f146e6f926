"""DynamoDB stream records, as Lambda hands them over or GetRecords returns them, made one shape.

:func:`parse` checks what the processor relies on and raises
:class:`~actionrunner.errors.MalformedStreamRecord` naming the first problem: the processor
dead-letters such a record with that reason instead of publishing something wrong.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any

from boto3.dynamodb.types import TypeDeserializer

from ..errors import MalformedStreamRecord

#: The event names DynamoDB Streams uses.
EVENT_NAMES = frozenset({"INSERT", "MODIFY", "REMOVE"})
_deserializer = TypeDeserializer()


@dataclass(frozen=True)
class StreamChange:
    """One change of one item: ``key`` (canonical JSON of the item's key, the ordering unit),
    ``sequence`` (the shard's sequence number), ``created`` (epoch seconds), the event's name and
    id, the images (DynamoDB JSON, as streamed) and the record itself."""

    key: str
    sequence: str
    created: float
    event_name: str
    event_id: str
    new_image: dict[str, Any] | None
    old_image: dict[str, Any] | None
    record: dict[str, Any]

    @property
    def group(self) -> str:
        """An SNS FIFO message group for the item (128 characters at most, any key)."""
        return hashlib.sha256(self.key.encode()).hexdigest()

    def message(self) -> str:
        """The SNS message: the change with plain values (JSON)."""
        return json.dumps({
            "eventID": self.event_id, "eventName": self.event_name,
            "sequenceNumber": self.sequence, "approximateCreationDateTime": self.created,
            "keys": _plain(json.loads(self.key)),
            "newImage": _plain(self.new_image) if self.new_image is not None else None,
            "oldImage": _plain(self.old_image) if self.old_image is not None else None,
        }, default=_json_default, separators=(",", ":"))


def _plain(image: dict[str, Any]) -> dict[str, Any]:
    return {name: _deserializer.deserialize(value) for name, value in image.items()}


def _json_default(value: Any) -> Any:
    from decimal import Decimal

    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, set | frozenset):
        return sorted(value, key=repr)
    if isinstance(value, bytes | bytearray):
        import base64

        return base64.b64encode(bytes(value)).decode()
    raise TypeError(f"{type(value).__name__} is not JSON")


def _created(value: Any) -> float:
    if isinstance(value, datetime.datetime):
        return value.timestamp()
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    raise MalformedStreamRecord(f"dynamodb.ApproximateCreationDateTime is {value!r}, not a time")


def parse(record: Any) -> StreamChange:
    """The change in ``record`` (see the module docstring)."""
    if not isinstance(record, dict):
        raise MalformedStreamRecord(f"a record is a JSON object, not {type(record).__name__}", record)
    body = record.get("dynamodb")
    if not isinstance(body, dict):
        raise MalformedStreamRecord("no 'dynamodb' object in the record", record)
    keys = body.get("Keys")
    if not isinstance(keys, dict) or not keys or not all(isinstance(v, dict) and len(v) == 1
                                                         for v in keys.values()):
        raise MalformedStreamRecord("dynamodb.Keys is missing or not DynamoDB attribute values", record)
    sequence = body.get("SequenceNumber")
    if not isinstance(sequence, str) or not sequence.isdigit():
        raise MalformedStreamRecord(f"dynamodb.SequenceNumber is {sequence!r}, not digits", record)
    event_name = record.get("eventName")
    if event_name not in EVENT_NAMES:
        raise MalformedStreamRecord(f"eventName is {event_name!r}, not one of INSERT, MODIFY, "
                                    "REMOVE", record)
    try:
        created = _created(body.get("ApproximateCreationDateTime"))
    except MalformedStreamRecord as exc:
        raise MalformedStreamRecord(exc.reason, record) from None
    images = {}
    for name in ("NewImage", "OldImage"):
        image = body.get(name)
        if image is not None and not isinstance(image, dict):
            raise MalformedStreamRecord(f"dynamodb.{name} is not an object", record)
        images[name] = image
    try:
        key = json.dumps(keys, sort_keys=True, separators=(",", ":"))
        _plain(keys)  # (the images are read when the message is made: a bad one dead-letters)
    except (TypeError, ValueError, AttributeError, KeyError) as exc:
        raise MalformedStreamRecord(f"an attribute value cannot be read: {exc}", record) from None
    return StreamChange(key=key, sequence=sequence, created=created, event_name=event_name,
                        event_id=str(record.get("eventID") or sequence),
                        new_image=images["NewImage"], old_image=images["OldImage"], record=record)
