"""Claim check: a message too large for SQS travels through S3, with a pointer on the queue.

The pointer is the one AWS's SQS extended client libraries write (so their consumers, and other
AWS tools, can read it): the body is
``["software.amazon.payloadoffloading.PayloadS3Pointer", {"s3BucketName": B, "s3Key": K}]`` and
the ``ExtendedPayloadSize`` message attribute holds the payload's size.

A pointer is a claim on the worker's S3 permissions, so it is checked before anything is read
(:func:`check`): only keys under :data:`KEY_PREFIX` of the configured payload bucket are fetched;
any other pointer (or any pointer when no payload bucket is configured) is refused with
:class:`~actionrunner.errors.PointerRefused` without an S3 request, and so is a declared size over
the bound. :func:`fetch` reads at most the bound. The object is deleted only after the message's
SQS delete succeeded (a dead-lettered message keeps it; the bucket's lifecycle rule expires what
is left). An object that cannot be read is tried a bounded number of times (:func:`give_up_after`),
then its message is dead-lettered: a group never waits on S3 without end.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from ..errors import MessageTooLarge, PayloadMissing, PointerRefused

#: The class name AWS's extended client libraries put first in a pointer body.
POINTER_CLASS = "software.amazon.payloadoffloading.PayloadS3Pointer"
#: The message attribute with the payload's size in bytes.
SIZE_ATTRIBUTE = "ExtendedPayloadSize"
#: Key prefix of ActionRunner's payload objects.
KEY_PREFIX = "actionrunner/payloads/"


def offload(s3: Any, bucket: str, body: str) -> tuple[str, dict[str, Any]]:
    """Store ``body`` in S3; the pointer body and the message attributes to send instead."""
    key = f"{KEY_PREFIX}{uuid.uuid4()}"
    data = body.encode("utf-8")
    s3.put_object(Bucket=bucket, Key=key, Body=data, ContentType="application/json")
    pointer = json.dumps([POINTER_CLASS, {"s3BucketName": bucket, "s3Key": key}])
    return pointer, {SIZE_ATTRIBUTE: {"DataType": "Number", "StringValue": str(len(data))}}


def pointer_of(body: Any) -> tuple[str, str] | None:
    """``(bucket, key)`` if ``body`` is an extended-client pointer, else None; a body that names
    the pointer class but is not a well-formed pointer is refused (:class:`PointerRefused`)."""
    if not isinstance(body, str) or POINTER_CLASS not in body[:200]:
        return None
    try:
        kind, location = json.loads(body)
        bucket, key = location["s3BucketName"], location["s3Key"]
    except (ValueError, KeyError, TypeError):
        raise PointerRefused("a malformed claim-check pointer") from None
    if kind != POINTER_CLASS or not isinstance(bucket, str) or not isinstance(key, str):
        raise PointerRefused("a malformed claim-check pointer") from None
    return bucket, key


def stored_bound(max_decoded_bytes: int) -> int:
    """The largest stored payload that can hold a task body of ``max_decoded_bytes``: stock
    kombu's format base64-encodes the body inside a base64-encoded envelope (4/3 × 4/3), plus
    room for the envelope's headers."""
    return max_decoded_bytes * 16 // 9 + 65_536


def declared_size(attributes: dict[str, Any] | None) -> int | None:
    """The ``ExtendedPayloadSize`` a message declares, if any."""
    value = (attributes or {}).get(SIZE_ATTRIBUTE) or {}
    try:
        return int(str(value.get("StringValue")))
    except (TypeError, ValueError):
        return None


def check(pointer: tuple[str, str], attributes: dict[str, Any] | None, *, bucket: str | None,
          max_bytes: int, prefix: str = KEY_PREFIX) -> None:
    """Refuse a pointer this worker must not follow (before any S3 request)."""
    where = f"s3://{pointer[0]}/{pointer[1]}"
    if not bucket:
        raise PointerRefused(f"a claim-check pointer to {where}, and no payload bucket is "
                             "configured (ACTIONRUNNER_PAYLOAD_BUCKET): not fetched")
    if pointer[0] != bucket or not pointer[1].startswith(prefix) or ".." in pointer[1]:
        raise PointerRefused(f"a claim-check pointer to {where}, outside the payload bucket "
                             f"s3://{bucket}/{prefix}: not fetched")
    size = declared_size(attributes)
    if size is not None and size > stored_bound(max_bytes):
        raise MessageTooLarge(f"the claim-checked payload declares {size:,} bytes, over what a "
                              f"task body of {max_bytes:,} bytes (ACTIONRUNNER_MAX_DECODED_BYTES) "
                              "needs: not fetched")


#: S3 error codes of an object that cannot be read: gone, where the reader lacks s3:ListBucket
#: (S3 then answers 403 instead of 404), or refused.
DENIED_CODES = frozenset({"AccessDenied", "403", "Forbidden"})
#: Tries of an error of the moment (5xx, throttling, a reset) for each try of a 403.
TRANSIENT_FACTOR = 4


def give_up_after(exc: BaseException, attempts: int) -> int:
    """How many failed fetches end a claim-checked message (then dead-lettered as
    :class:`PayloadMissing`): ``attempts`` for a 403, :data:`TRANSIENT_FACTOR` times more for
    any other error (S3 down for a while must not dead-letter what is there)."""
    code = str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))
    return attempts if code in DENIED_CODES else attempts * TRANSIENT_FACTOR


def unreadable(bucket: str, key: str, exc: BaseException, failures: int) -> PayloadMissing:
    """The error a claim-checked message is dead-lettered with after ``failures`` fetches."""
    code = str(getattr(exc, "response", {}).get("Error", {}).get("Code", "")) or type(exc).__name__
    why = (" (403: the object is gone, and s3:ListBucket is not granted to tell it from a refusal;"
           " or the worker may not read it)" if code in DENIED_CODES else "")
    return PayloadMissing(f"the claim-checked payload s3://{bucket}/{key} could not be read in "
                          f"{failures} tries: {code}{why}")


def fetch(s3: Any, bucket: str, key: str, max_bytes: int | None = None) -> str:
    """The payload text; at most :func:`stored_bound` of ``max_bytes`` are read
    (:class:`MessageTooLarge` past them; the task body inside is bounded by ``max_bytes`` when it
    is decoded).
    A missing object is :class:`PayloadMissing`; any other error is raised as it is (transient:
    the caller tries again later)."""
    try:
        response = s3.get_object(Bucket=bucket, Key=key)
    except Exception as exc:
        code = getattr(exc, "response", {}).get("Error", {}).get("Code", "")
        if code in ("NoSuchKey", "404", "NotFound"):
            raise PayloadMissing(f"the claim-checked payload s3://{bucket}/{key} does not exist") from None
        raise
    stream = response["Body"]
    limit = None if max_bytes is None else stored_bound(max_bytes)
    data = stream.read() if limit is None else stream.read(limit + 1)
    if limit is not None and len(data) > limit:
        stream.close()
        raise MessageTooLarge(f"the claim-checked payload s3://{bucket}/{key} is over "
                              f"{limit:,} bytes: stopped reading there")
    try:
        return str(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise PayloadMissing(f"the claim-checked payload s3://{bucket}/{key} is not UTF-8 text") from None
