"""The Celery request of an action: carries the SQS message's attributes to the action.

Celery keeps only ``exchange``/``routing_key``/``priority`` of a message's delivery info when it
hands a task to a pool process. :class:`ActionRequest` copies what ActionRunner needs from the SQS
message (group, dedup id, receive count, sent time, sequence number) into the request, where the
pool process sees it as ``task.request.sqs``.
"""

from __future__ import annotations

from typing import Any

from celery.worker.request import Request


def sqs_attributes(message: Any) -> dict[str, Any]:
    """The SQS system attributes of a received kombu message (empty if it has none)."""
    delivery_info = getattr(message, "delivery_info", None) or {}
    raw = delivery_info.get("sqs_message") or {}
    attrs = raw.get("Attributes") or {}

    def _int(name: str) -> int | None:
        value = attrs.get(name)
        return int(value) if value not in (None, "") else None

    return {
        "message_id": raw.get("MessageId"),
        "group": attrs.get("MessageGroupId"),
        "dedup_id": attrs.get("MessageDeduplicationId"),
        "receive_count": _int("ApproximateReceiveCount"),
        "sent_timestamp_ms": _int("SentTimestamp"),
        "first_receive_timestamp_ms": _int("ApproximateFirstReceiveTimestamp"),
        "sequence_number": attrs.get("SequenceNumber"),
    }


class ActionRequest(Request):
    """A request that forwards the SQS message's attributes as ``task.request.sqs``."""

    def __init__(self, message: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(message, *args, **kwargs)
        self._request_dict["sqs"] = sqs_attributes(message)
