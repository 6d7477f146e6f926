"""Telling the failure a worker recorded on a dead letter from attributes a sender wrote.

A worker's dead letter carries ``actionrunner.*`` message attributes (error type, error,
attempts, source queue...). A sender can put attributes of the same names on any message it sends,
and a message SQS moves to the DLQ itself (the queue's redrive policy, after maxReceiveCount
receives) keeps them. So ``dlq list``/``show`` and redrive believe only what is proven the
worker's:

* with ``ACTIONRUNNER_SIGNING_KEY`` set, the worker (and the Lambda runtime) signs its attributes
  with an HMAC-SHA256 over the body, the group and every ``actionrunner.*`` attribute
  (``actionrunner.signature``); only a dead letter whose signature checks counts as the worker's;
* without a key, a dead letter SQS moved itself (it has the ``DeadLetterQueueSourceArn`` system
  attribute; no sender can set one) is the sender's: only the worker writes to a DLQ (the IAM
  policies of deploy/ grant SendMessage on it to the worker and the function alone). The local
  emulators do not set that attribute: set a key where senders are not trusted.

The worker drops sender-supplied ``actionrunner.*`` attributes from the copy it sends to the DLQ
(:func:`actionrunner.settle.dead_letter_entry`), so a signed copy holds only its own.

::

    >>> attrs = {"actionrunner.error": {"DataType": "String", "StringValue": "boom"}}
    >>> attrs[SIGNATURE_ATTRIBUTE] = {"DataType": "String", "StringValue": sign(b"k", "body", "g", attrs)}
    >>> verify(b"k", "body", "g", attrs), verify(b"other", "body", "g", attrs)
    (True, False)
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Any

#: Prefix of the attributes a worker records on a dead letter.
PREFIX = "actionrunner."
#: The attribute that holds the signature (hex HMAC-SHA256).
SIGNATURE_ATTRIBUTE = f"{PREFIX}signature"
#: Length of a signature's text (what the size budget of a dead letter reserves).
SIGNATURE_CHARS = 64
#: The system attribute SQS puts on a message it moved to a DLQ itself.
MOVED_BY_SQS = "DeadLetterQueueSourceArn"


def _canonical(body: str, group: str, attributes: Mapping[str, Mapping[str, Any]]) -> bytes:
    parts = [hashlib.sha256(body.encode("utf-8")).hexdigest(), group]
    for name in sorted(attributes):
        if name.startswith(PREFIX) and name != SIGNATURE_ATTRIBUTE:
            value = attributes[name]
            parts.append(f"{name}={value.get('DataType', '')}:{value.get('StringValue', '')}")
    return "\n".join(parts).encode("utf-8")


def sign(key: bytes, body: str, group: str, attributes: Mapping[str, Mapping[str, Any]]) -> str:
    """The signature of a dead letter's ``actionrunner.*`` attributes, body and group."""
    return hmac.new(key, _canonical(body, group, attributes), hashlib.sha256).hexdigest()


def verify(key: bytes, body: str, group: str, attributes: Mapping[str, Mapping[str, Any]]) -> bool:
    """Whether ``attributes`` hold a valid signature of ``key``."""
    given = str((attributes.get(SIGNATURE_ATTRIBUTE) or {}).get("StringValue") or "")
    return bool(given) and hmac.compare_digest(given, sign(key, body, group, attributes))


def recorded_by_worker(message: Mapping[str, Any], key: bytes | None) -> bool:
    """Whether the ``actionrunner.*`` attributes of ``message`` (a ReceiveMessage entry of a DLQ)
    are the worker's (see the module docstring for the rule)."""
    attributes = message.get("MessageAttributes") or {}
    system = message.get("Attributes") or {}
    if key:
        return verify(key, str(message.get("Body") or ""), str(system.get("MessageGroupId") or ""),
                      attributes)
    return MOVED_BY_SQS not in system


def key_of(settings: Any) -> bytes | None:
    """The signing key of ``settings`` (None: unset)."""
    secret = getattr(settings, "signing_key", None)
    return secret.get_secret_value().encode("utf-8") if secret is not None else None


__all__ = ["MOVED_BY_SQS", "PREFIX", "SIGNATURE_ATTRIBUTE", "key_of", "recorded_by_worker", "sign",
           "verify"]
