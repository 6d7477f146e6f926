"""What a run learns of its delivery: one typed :class:`Delivery`, built by the worker's consumer
and by the Lambda runtime alike.

A received SQS message becomes a kombu payload (:func:`.inbound.decode`); the consumer then
attaches a :class:`Delivery` to its ``delivery_info`` under :data:`DELIVERY_KEY` — the attempt
this run is, how many times it was handed to Celery, SQS's receive count, the claim-checked
payload's pointer, whether the API made the call, and the first run's key as read (see
:mod:`actionrunner.state.completions`). The worker's request reads it back with
:meth:`Delivery.of` and hands the pool process :meth:`Delivery.request_fields` as
``task.request.sqs``. No other module spells these keys::

    >>> m = {"MessageId": "m1", "ReceiptHandle": "h",
    ...      "Attributes": {"MessageGroupId": "g", "ApproximateReceiveCount": "2"}}
    >>> d = Delivery.from_sqs(m, attempt=3)
    >>> d.group, d.receive_count, d.attempt, d.redelivered
    ('g', 2, 3, True)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from ..runs import API_RUN_HEADER

#: The ``delivery_info`` key a :class:`Delivery` travels under (in the worker's main process).
DELIVERY_KEY = "actionrunner_delivery"


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True, kw_only=True)
class Delivery:
    """One delivery of one SQS message to one run."""

    message_id: str | None = None
    group: str | None = None
    dedup_id: str | None = None
    sequence_number: str | None = None
    sent_timestamp_ms: int | None = None
    first_receive_timestamp_ms: int | None = None
    #: SQS's ApproximateReceiveCount (None: not reported)
    receive_count: int | None = None
    #: the attempt this run is (a wait for another run's key uses none)
    attempt: int = 1
    #: times handed to Celery (waits included: the guard's count)
    runs: int = 1
    #: the claim-checked payload (bucket, key), deleted once the message is
    pointer: tuple[str, str] | None = None
    #: the call was made by the admin API (its run status is recorded)
    api_run: bool = False
    #: the first run's idempotency key as the main process read it (None: not read)
    seen: Any = None
    #: where the first run sends its completion (None: nowhere, the run writes it itself)
    sink: Any = None

    @classmethod
    def from_sqs(cls, message: Mapping[str, Any], *, headers: Mapping[str, Any] | None = None,
                 **fields: Any) -> Delivery:
        """The delivery of ``message`` (a ReceiveMessage entry) with ``fields`` set."""
        attrs = message.get("Attributes") or {}
        return cls(
            message_id=message.get("MessageId"),
            group=attrs.get("MessageGroupId"),
            dedup_id=attrs.get("MessageDeduplicationId"),
            sequence_number=attrs.get("SequenceNumber"),
            sent_timestamp_ms=_int(attrs.get("SentTimestamp")),
            first_receive_timestamp_ms=_int(attrs.get("ApproximateFirstReceiveTimestamp")),
            receive_count=_int(attrs.get("ApproximateReceiveCount")),
            api_run=bool((headers or {}).get(API_RUN_HEADER)),
            **fields,
        )

    @classmethod
    def of(cls, message: Any) -> Delivery:
        """The delivery a kombu message carries (made from its SQS message if none is attached)."""
        delivery_info = getattr(message, "delivery_info", None) or {}
        attached = delivery_info.get(DELIVERY_KEY)
        if isinstance(attached, Delivery):
            return attached
        headers = getattr(message, "headers", None)
        return cls.from_sqs(delivery_info.get("sqs_message") or {},
                            headers=headers if isinstance(headers, Mapping) else None)

    @property
    def redelivered(self) -> bool:
        """AMQP's flag as Celery's tasks read it: delivered before (run here, or received again
        from SQS after a release or a visibility timeout)."""
        return self.runs > 1 or (self.receive_count or 1) > 1

    def but(self, **fields: Any) -> Delivery:
        """This delivery with ``fields`` changed."""
        return replace(self, **fields)

    def attach(self, delivery_info: dict[str, Any]) -> None:
        """Attach this delivery to a kombu message's ``delivery_info``."""
        delivery_info[DELIVERY_KEY] = self

    def tell_celery(self, payload: dict[str, Any]) -> None:
        """Set what Celery itself reads of a redelivery in ``payload``: ``redelivered`` and, from
        the second attempt, the ``retries`` header (``self.request.retries``, Flower's)."""
        payload["properties"]["delivery_info"]["redelivered"] = self.redelivered
        if self.attempt > 1:
            payload.setdefault("headers", {})["retries"] = self.attempt - 1

    def request_fields(self) -> dict[str, Any]:
        """What the pool process sees as ``task.request.sqs`` (plain data: it is pickled)."""
        return {
            "message_id": self.message_id, "group": self.group, "dedup_id": self.dedup_id,
            "receive_count": self.receive_count, "attempt": self.attempt, "runs": self.runs,
            "sent_timestamp_ms": self.sent_timestamp_ms,
            "first_receive_timestamp_ms": self.first_receive_timestamp_ms,
            "sequence_number": self.sequence_number, "seen": self.seen, "sink": self.sink,
        }


__all__ = ["DELIVERY_KEY", "Delivery"]
