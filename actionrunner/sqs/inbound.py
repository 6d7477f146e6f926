"""A received SQS message → the kombu payload of a call of a registered action, or a clear refusal.

Whatever the body holds, :func:`decode` either returns a payload Celery can run without decoding
anything risky again (the task body as plain JSON text: no base64, no compression left) or raises
one :class:`~actionrunner.errors.UndecodableMessage` subclass that names the problem. It never
raises anything else, so nothing a message contains can throw into kombu's event loop. The worker
and the Lambda runtime dead-letter what it refuses, in its group's order.

Checked, in order: the body is JSON or base64 of JSON; the envelope is an object whose
``properties`` and ``headers`` are objects and whose ``body`` is text; the content type is JSON
(nothing else is ever deserialized: no pickle); a body marked base64 is strict base64; compressed
data is zlib, whole, and decompresses to at most ``max_bytes`` (stopped as soon as it would go over,
never after); the task body is ``[args, kwargs, embed]``; Celery's headers have their types; the
action is registered here. (Inputs and schema versions are checked by the action when it runs:
such failures are not retried either.)
"""

from __future__ import annotations

import base64
import binascii
import time
import zlib
from collections.abc import Callable
from datetime import datetime
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from ..errors import (
    BadCompression,
    BadEncoding,
    BadEnvelope,
    BadTaskHeader,
    ContentTypeRefused,
    MessageTooLarge,
    NotJson,
    UndecodableMessage,
)
from ..runnable import check_eta, check_task
from .codec import ZLIB

#: The only content type a worker deserializes.
JSON_CONTENT_TYPE = "application/json"
#: Names of zlib compression in kombu's ``compression`` header.
ZLIB_NAMES = frozenset({ZLIB, "zlib"})


class CeleryHeaders(BaseModel):
    """The protocol-2 headers Celery's worker reads, with the types it needs."""

    model_config = ConfigDict(extra="allow", strict=False)

    task: str
    id: str
    lang: str | None = None
    root_id: str | None = None
    parent_id: str | None = None
    group: str | None = None
    group_index: int | None = None
    retries: int | None = None
    eta: str | None = None
    expires: str | float | None = None
    timelimit: tuple[float | None, float | None] | None = None
    argsrepr: str | None = None
    kwargsrepr: str | None = None
    origin: str | None = None
    shadow: str | None = None
    ignore_result: bool | None = None
    replaced_task_nesting: int | None = None
    ar_schema: int | None = None

    @field_validator("task", "id")
    @classmethod
    def _not_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value

    @field_validator("eta")
    @classmethod
    def _iso_time(cls, value: str | None) -> str | None:
        if value is not None:
            datetime.fromisoformat(value)
        return value

    @field_validator("expires")
    @classmethod
    def _iso_or_number(cls, value: str | float | None) -> str | float | None:
        if isinstance(value, str):
            datetime.fromisoformat(value)
        return value


def _text_of_body(body: Any) -> str:
    """The envelope's JSON text: the body itself (compact format) or its base64 (stock kombu)."""
    if not isinstance(body, str):
        raise BadEnvelope(f"the SQS body is {type(body).__name__}, not text")
    stripped = body.lstrip()
    if stripped.startswith("{") or stripped.startswith("["):
        return body
    try:
        raw = base64.b64decode(body.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise NotJson(f"the body is neither JSON nor base64 of JSON (starts {body[:40]!r})") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise NotJson("the body is base64 of bytes that are not UTF-8 text") from None


def _json(text: str | bytes, what: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise NotJson(f"{what} is not JSON: {exc}") from None


def decompress(data: bytes, max_bytes: int) -> bytes:
    """zlib-decompress ``data``, stopping as soon as the output would pass ``max_bytes``."""
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(data, max_bytes + 1)
    except zlib.error as exc:
        raise BadCompression(f"the compressed body is corrupt: {exc}") from None
    if len(out) > max_bytes or inflater.unconsumed_tail:
        raise MessageTooLarge(f"the body decompresses to more than {max_bytes:,} bytes "
                              "(ACTIONRUNNER_MAX_DECODED_BYTES); stopped there")
    if not inflater.eof:
        raise BadCompression("the compressed body is truncated")
    if inflater.unused_data:
        raise BadCompression(f"{len(inflater.unused_data)} bytes follow the compressed body")
    return out


def decode_envelope(body: Any, *, max_bytes: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(envelope, headers)`` of an SQS body, the envelope's task body made plain JSON text."""
    envelope = _json(_text_of_body(body), "the envelope")
    if not isinstance(envelope, dict):
        raise BadEnvelope(f"the envelope is a JSON {type(envelope).__name__}, not an object")
    properties = envelope.get("properties", {})
    headers = envelope.get("headers")
    task_body = envelope.get("body")
    if not isinstance(properties, dict):
        raise BadEnvelope(f"'properties' is a {type(properties).__name__}, not an object")
    if headers is None:
        raise BadTaskHeader("the envelope has no 'headers': not a Celery protocol-2 message")
    if not isinstance(headers, dict):
        raise BadEnvelope(f"'headers' is a {type(headers).__name__}, not an object")
    if not isinstance(task_body, str):
        raise BadEnvelope(f"'body' is a {type(task_body).__name__}, not text")
    content_type = envelope.get("content-type", JSON_CONTENT_TYPE)
    if content_type != JSON_CONTENT_TYPE:
        raise ContentTypeRefused(f"content type {content_type!r} is refused: workers accept only "
                                 f"{JSON_CONTENT_TYPE}")
    encoding = envelope.get("content-encoding", "utf-8")
    if str(encoding).lower() not in ("utf-8", "utf8"):
        raise ContentTypeRefused(f"content encoding {encoding!r} is refused: only utf-8")
    body_encoding = properties.get("body_encoding")
    data: bytes
    if body_encoding in (None, ""):
        data = task_body.encode("utf-8")
    elif body_encoding == "base64":
        try:
            data = base64.b64decode(task_body, validate=True)
        except (binascii.Error, ValueError):
            raise BadEncoding("the body is marked base64 but is not base64") from None
    else:
        raise BadEncoding(f"body_encoding {body_encoding!r} is not one this worker reads")
    compression = headers.get("compression")
    if compression is not None:
        if compression not in ZLIB_NAMES:
            raise BadCompression(f"compression {compression!r} is refused (only zlib)")
        data = decompress(data, max_bytes)
    elif len(data) > max_bytes:
        raise MessageTooLarge(f"the body is {len(data):,} bytes, over {max_bytes:,}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise BadEncoding("the task body is not UTF-8 text") from None
    call = _json(text, "the task body")
    if not (isinstance(call, list) and len(call) == 3 and isinstance(call[0], list)
            and isinstance(call[1], dict) and (call[2] is None or isinstance(call[2], dict))):
        raise BadEnvelope("the task body is not [args, kwargs, embed]")
    headers = {k: v for k, v in headers.items() if k != "compression"}
    if headers.get("id") and not headers.get("root_id"):
        # the compact format leaves out a root_id equal to the task's id (a chain's first task,
        # a lone call); Celery's request reads it as it is (``self.request.root_id``)
        headers["root_id"] = headers["id"]
    properties = {k: v for k, v in properties.items() if k not in ("body_encoding", "delivery_info")}
    try:
        CeleryHeaders.model_validate(headers)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'headers'}: {e['msg']}"
                             for e in exc.errors(include_url=False))
        raise BadTaskHeader(f"Celery headers: {problems}") from None
    plain = {**envelope, "body": text, "headers": headers, "properties": properties,
             "content-type": JSON_CONTENT_TYPE, "content-encoding": "utf-8"}
    return plain, headers


def decode(message: dict[str, Any], *, queue_url: str, max_bytes: int,
           is_registered: Callable[[str], bool], body: str | None = None) -> dict[str, Any]:
    """The kombu payload of ``message`` (a ReceiveMessage entry), as kombu's SQS channel builds it
    (``properties.delivery_info.sqs_message`` and ``sqs_queue``, ``delivery_tag``); ``body``: the
    text to read instead of the SQS body (a claim-checked payload). Raises only
    :class:`~actionrunner.errors.UndecodableMessage`."""
    try:
        envelope, headers = decode_envelope(message.get("Body") if body is None else body,
                                            max_bytes=max_bytes)
        check_task(headers["task"], is_registered)
        check_eta(headers, time.time(), sending=False)
    except UndecodableMessage:
        raise
    except RecursionError:
        raise BadEnvelope("the message is nested too deeply") from None
    except Exception as exc:  # a shape nobody foresaw: refused all the same, never raised on
        raise BadEnvelope(f"cannot read the message: {type(exc).__name__}: {exc}"[:500]) from None
    envelope["properties"]["delivery_info"] = {"sqs_message": message, "sqs_queue": queue_url}
    envelope["properties"]["delivery_tag"] = message["ReceiptHandle"]
    return envelope


def describe(message: dict[str, Any], body: str | None = None) -> dict[str, Any]:
    """What can be read safely of a message that failed to decode (for its log line)."""
    fields: dict[str, Any] = {"message_id": message.get("MessageId")}
    try:
        envelope = orjson.loads(_text_of_body(message.get("Body") if body is None else body))
        headers = envelope.get("headers") if isinstance(envelope, dict) else None
        if isinstance(headers, dict):
            for key, name in (("task", "action"), ("id", "id")):
                if isinstance(headers.get(key), str):
                    fields[name] = headers[key][:200]
    except Exception:  # noqa: S110  (best effort: the line names the message by its id anyway)
        pass
    return fields


__all__ = ["CeleryHeaders", "decode", "decode_envelope", "decompress", "describe"]
