"""Claim check: a message too large for SQS travels through S3, with a pointer on the queue.

The pointer is the one AWS's SQS extended client libraries write (so their consumers, and other
AWS tools, can read it): the body is
``["software.amazon.payloadoffloading.PayloadS3Pointer", {"s3BucketName": B, "s3Key": K}]`` and
the ``ExtendedPayloadSize`` message attribute holds the payload's size. The worker fetches the
payload when it receives the pointer and deletes the object once the action has succeeded (a
dead-lettered message keeps it; the bucket's lifecycle rule expires what is left).
"""

from __future__ import annotations

import json
import uuid
from typing import Any

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


def pointer_of(body: str) -> tuple[str, str] | None:
    """``(bucket, key)`` if ``body`` is an extended-client pointer, else None."""
    if not body.startswith('["' + POINTER_CLASS):
        return None
    try:
        _, location = json.loads(body)
        return str(location["s3BucketName"]), str(location["s3Key"])
    except (ValueError, KeyError, TypeError):
        return None


def fetch(s3: Any, bucket: str, key: str) -> str:
    return str(s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode("utf-8"))
