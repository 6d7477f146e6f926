"""SQS event records → the kombu messages a worker would have received.

Lambda hands a record in its own spelling (``messageId``, ``attributes``, ``messageAttributes``
with ``stringValue``...). :func:`to_sqs_message` turns it back into a ReceiveMessage entry, and
:func:`decode` runs the worker's own strict decoding on it (:mod:`actionrunner.sqs.inbound`) and
wraps the payload in the same kombu message class the worker's channel makes. So a Celery
protocol-2 message (headers ``task``, ``id``...; body ``[args, kwargs, embed]``) reads exactly as
the worker reads it, and a malformed one is refused for the same reason.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

from kombu.serialization import prepare_accept_content
from kombu.transport import virtual
from kombu.transport.SQS import Channel as SQSChannel

from ..sqs import inbound
from ..sqs.delivery import Delivery

#: Lambda's attribute keys → SQS API keys of a message attribute.
_ATTRIBUTE_KEYS = {"stringValue": "StringValue", "binaryValue": "BinaryValue",
                   "stringListValues": "StringListValues", "binaryListValues": "BinaryListValues",
                   "dataType": "DataType"}
#: Content types a worker accepts (celeryconfig: ``accept_content = ["json"]``).
ACCEPT = prepare_accept_content(["json"])


def queue_name_of(arn: str) -> str:
    """``arn:aws:sqs:us-east-1:123456789012:actions.fifo`` → ``actions.fifo``."""
    return arn.rsplit(":", 1)[-1]


def _message_attribute(value: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, api_key in _ATTRIBUTE_KEYS.items():
        item = value.get(key)
        if item in (None, [], ""):
            continue
        if key == "binaryValue":
            item = base64.b64decode(item)
        elif key == "binaryListValues":
            item = [base64.b64decode(v) for v in item]
        out[api_key] = item
    return out


def to_sqs_message(record: dict[str, Any]) -> dict[str, Any]:
    """A Lambda SQS record as the ReceiveMessage entry it came from."""
    message: dict[str, Any] = {
        "MessageId": record["messageId"],
        "ReceiptHandle": record["receiptHandle"],
        "Body": record["body"],
        "Attributes": dict(record.get("attributes") or {}),
    }
    if record.get("md5OfBody"):
        message["MD5OfBody"] = record["md5OfBody"]
    attributes = record.get("messageAttributes") or {}
    if attributes:
        message["MessageAttributes"] = {k: _message_attribute(v) for k, v in attributes.items()}
    return message


class _Decoder(SQSChannel):
    """kombu's SQS channel, used only as the channel of the messages built here (never connected)."""

    _noack_queues: frozenset[str] = frozenset()  # every message is acked after its run

    def __init__(self) -> None:  # no connection, no queues
        pass


_DECODER = _Decoder()


def decode(message: dict[str, Any], queue_name: str, *, max_bytes: int,
           is_registered: Callable[[str], bool], body: str | None = None,
           attempt: int | None = None) -> virtual.Message:
    """The kombu message of a ReceiveMessage entry, as the worker's channel builds it
    (:func:`actionrunner.sqs.inbound.decode`: raises only ``UndecodableMessage``).

    ``attempt``: the attempt this run is, in the message's
    :class:`~actionrunner.sqs.delivery.Delivery` (as the worker's consumer makes it).
    """
    payload = inbound.decode(message, queue_url=queue_name, max_bytes=max_bytes,
                             is_registered=is_registered, body=body)
    if attempt is not None:
        Delivery.from_sqs(message, headers=payload.get("headers"), attempt=attempt).attach(
            payload["properties"]["delivery_info"])
    decoded = virtual.Message(payload, channel=_DECODER)
    decoded.accept = ACCEPT
    return decoded
