"""Message group and deduplication ids.

The group comes from the action's inputs. The deduplication id comes from the *call*: by default
from the call id made when the call is sent (:data:`~actionrunner.constants.CALL_ID_HEADER`), so
each ``.delay()`` runs even with equal inputs while a redelivered or retried message stays the
same call; from the inputs only when the action opts in with ``key=`` (or the call carries a key
of its own: the API's ``Idempotency-Key``, beat's slot), so a repeated send within SQS's 5-minute
deduplication window is dropped by SQS itself.
"""

from __future__ import annotations

import hashlib
import re
import string
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from . import constants as C
from .errors import ActionDefinitionError, MessageIdError

#: What a group or key may be: a ``str.format`` template over the inputs, or a callable.
IdSpec = str | Callable[..., Any]

#: Characters SQS accepts in MessageGroupId and MessageDeduplicationId.
_ID_CHARS = re.compile(r"^[A-Za-z0-9!\"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~]+$")


def canonical_json(value: Any) -> bytes:
    """``value`` as JSON with sorted keys and no whitespace: equal inputs, equal bytes."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)


def template_fields(template: str) -> set[str]:
    """The top-level input names a ``str.format`` template refers to."""
    fields = set()
    for _, field, _, _ in string.Formatter().parse(template):
        if field is None:
            continue
        if field == "" or field.isdigit():
            raise ActionDefinitionError(
                f"template {template!r} uses a positional field; name the input, e.g. '{{tenant_id}}'"
            )
        fields.add(re.split(r"[.\[]", field, maxsplit=1)[0])
    return fields


def render(spec: IdSpec, inputs: Mapping[str, Any]) -> str:
    """Apply a template or callable ``spec`` to the validated inputs."""
    if callable(spec):
        return str(spec(**inputs))
    return spec.format_map(inputs)


def check_id(action: str, kind: str, value: str) -> str:
    """``value`` if SQS accepts it as a MessageGroupId / MessageDeduplicationId, else an error."""
    if not isinstance(value, str) or not value:
        raise MessageIdError(action, kind, value, "is empty; SQS needs 1 to 128 characters")
    if len(value) > C.SQS_MAX_ID_LENGTH:
        raise MessageIdError(
            action, kind, value, f"is {len(value)} characters; SQS accepts at most 128"
        )
    if not _ID_CHARS.match(value):
        raise MessageIdError(
            action, kind, value,
            "has characters SQS refuses (letters, digits and ASCII punctuation only, no spaces)",
        )
    return value


def dedup_id(action: str, key: str) -> str:
    """The MessageDeduplicationId of ``action`` called with idempotency key ``key``."""
    return hashlib.sha256(f"{action}\x00{key}".encode()).hexdigest()


def call_dedup_id(action: str, call_id: str) -> str:
    """The MessageDeduplicationId (and idempotency key) of a call of ``action`` with id ``call_id``
    (an action without ``key=``)."""
    return dedup_id(action, f"call:{call_id}")


def call_key(action: str, *, explicit: str | None = None, key: str | None = None,
             call_id: str | None = None, inputs: Mapping[str, Any] | None = None) -> str:
    """The one rule for a call's MessageDeduplicationId, which is also its idempotency key's:
    the call's own key (``explicit``: the API's ``Idempotency-Key``, beat's slot), else the
    action's rendered ``key=``, else its call id, else (a message from before call ids) its
    JSON ``inputs``.

    >>> call_key("a", call_id="c") == call_dedup_id("a", "c")
    True
    >>> call_key("a", explicit="k", call_id="c") == dedup_id("a", "k")
    True
    """
    if explicit:
        return dedup_id(action, str(explicit))
    if key is not None:
        return dedup_id(action, key)
    if call_id:
        return call_dedup_id(action, str(call_id))
    return dedup_id(action, default_key(inputs or {}))


def new_call_id() -> str:
    """A fresh call id."""
    return uuid.uuid4().hex


_MINTED = re.compile(r"^[0-9a-f]{32}$")


def is_minted_call_id(call_id: str, task_id: str | None) -> bool:
    """Whether ``call_id`` was made by :func:`new_call_id` for one send (not a task id the caller
    chose — a canvas member's, which may be sent again — nor a continuation's, derived from its
    step): no other message carries it, so its first delivery is its first run."""
    return call_id != task_id and _MINTED.match(call_id) is not None


def default_key(jsonable_inputs: Mapping[str, Any]) -> str:
    """A key over the canonical inputs: what a message without a call id (sent before call ids)
    is deduplicated by, and the inputs' fingerprint a key record keeps."""
    return hashlib.sha256(canonical_json(dict(jsonable_inputs))).hexdigest()
