"""ActionRunner's wire format: the same Celery message, a third of the bytes.

Stock kombu sends an SQS body that is base64 of a JSON envelope whose ``body`` is itself base64
(1,248 bytes for a task with two ints). The *compact* format (``ACTIONRUNNER_WIRE_FORMAT=compact``)
keeps Celery's protocol-2 envelope, so Celery tools still understand it, but:

* the SQS body is the envelope's JSON text (SQS bodies are text: no base64 around valid text);
* the task body inside is JSON text too (``body_encoding`` absent), serialized with orjson;
* headers and properties that hold only defaults are left out (a missing header reads as its
  default: ``eta``, ``expires``, ``retries=0``, ``root_id`` equal to ``id``...), and so are
  what only the sender needs (``argsrepr``/``kwargsrepr``: the arguments a second time, kept
  only when the sender gave its own, e.g. ``apply_async(argsrepr="<secret>")``; ``origin``;
  ``lang``), a task body's all-null embed (``{}``), and, on a FIFO queue, the
  group and dedup id in the properties (SQS carries both);
* a body over ``compress_over`` bytes (or a binary one) is zlib-compressed and base64-encoded,
  marked by kombu's own ``compression`` header and ``body_encoding``;
* ``properties["ar"] = 1`` marks the format.

Readers need nothing new: kombu decodes base64 only where the body looks like base64, and a JSON
envelope never does, so a worker reads old (stock) and new messages alike.
"""

from __future__ import annotations

import base64
import zlib
from collections.abc import Callable
from typing import Any

import orjson
from celery.utils.saferepr import saferepr
from kombu.serialization import registry
from kombu.utils import json as kombu_json
from kombu.utils.json import JSONEncoder

#: ``ACTIONRUNNER_WIRE_FORMAT`` values.
COMPACT, CELERY = "compact", "celery"
#: Name of the orjson serializer (its content type stays application/json: any JSON reader works).
SERIALIZER = "arjson"
#: Property that marks a compact message, and its version.
FORMAT_PROPERTY, FORMAT_VERSION = "ar", 1
#: kombu's name for zlib compression.
ZLIB = "application/x-gzip"

#: kombu's encoder for what JSON has no type for (datetime, UUID, Decimal...); kombu is untyped.
_kombu_default: Callable[[Any], Any] = JSONEncoder().default


def as_builtin(obj: Any) -> Any:
    """A subclass of dict, list, tuple, str or int as its plain value, as the stdlib's encoder
    writes it; ``NotImplemented`` for anything else. For orjson with ``OPT_PASSTHROUGH_SUBCLASS``:
    orjson alone writes a list subclass from its C storage, and Celery's lazy ``regen`` (the
    tasks of ``group(<generator>)``) came out ``[]``, a group that sent nothing; a namedtuple
    was refused."""
    if isinstance(obj, dict):
        return dict(obj)
    if isinstance(obj, (list, tuple)):
        return list(obj)
    if isinstance(obj, str):
        return str(obj)
    if isinstance(obj, int):
        return int(obj)
    return NotImplemented


def _default(obj: Any) -> Any:
    plain = as_builtin(obj)
    return _kombu_default(obj) if plain is NotImplemented else plain


#: Characters JSON may carry raw but SQS refuses in a body: escaped instead.
_SQS_REFUSED = {"\ufffe": "\\ufffe", "\uffff": "\\uffff"}


#: A task body's embed whose every value is one of these and None is sent as ``{}`` (Celery's
#: request reads a missing one as None).
_EMBED_KEYS = frozenset({"callbacks", "errbacks", "chain", "chord"})
#: Headers a worker does not need: ``argsrepr``/``kwargsrepr`` (the arguments again, as repr;
#: the worker's request makes them from the body for Flower's task-received event and
#: ``celery inspect``, see actionrunner.worker.request), ``origin`` (the sender's host and pid),
#: ``lang`` ("py").
_SENDER_ONLY_HEADERS = frozenset({"argsrepr", "kwargsrepr", "origin", "lang"})
#: Celery's length of a default argsrepr/kwargsrepr (``celery.app.amqp.AMQP.argsrepr_maxsize``).
_REPR_MAX = 1024
#: Properties SQS carries as the message's own attributes (a FIFO queue's group and dedup id).
_SQS_CARRIED = frozenset({"MessageGroupId", "MessageDeduplicationId"})


def dumps(obj: Any) -> str:
    """JSON text of ``obj`` (orjson; kombu's encoder for the types JSON lacks); a task body
    ``[args, kwargs, embed]`` whose embed holds only nulls is sent with ``{}``."""
    if (type(obj) is tuple and len(obj) == 3 and type(obj[2]) is dict and obj[2]
            and obj[2].keys() <= _EMBED_KEYS and not any(obj[2].values())):
        obj = (obj[0], obj[1], {})
    return orjson.dumps(obj, default=_default,
                        option=orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_SUBCLASS).decode()


def loads(text: Any) -> Any:
    """kombu's JSON decoding, by orjson when kombu's hook has nothing to do: text without a
    ``"__type__"`` marker (kombu's encoding of datetimes, UUIDs, decimals, bytes) that orjson
    reads; anything else (markers, bytes, NaN, integers past 64 bits) goes to kombu's own
    ``loads``, which returns the same values (a worker decodes every body twice: in its main
    process and in the pool)."""
    if isinstance(text, str) and '"__type__"' not in text:
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            pass
    return kombu_json.loads(text)


def register() -> None:
    """Register the ``arjson`` serializer with kombu, and :func:`loads` as the decoder of
    ``application/json`` (every JSON message of the process, whoever sent it)."""
    if SERIALIZER not in registry._encoders:
        registry.register(SERIALIZER, dumps, loads, content_type="application/json",
                          content_encoding="utf-8")


def _is_default(name: str, value: Any, headers: dict[str, Any]) -> bool:
    if value is None or value == {} or value == [] or value == "":
        return True
    if name in ("retries", "replaced_task_nesting", "group_index") and value == 0:
        return True
    if name == "ignore_result" and value is False:
        return True
    if name == "timelimit" and list(value) == [None, None]:
        return True
    return name == "root_id" and value == headers.get("id")


def _explicit_reprs(headers: dict[str, Any], body: Any) -> frozenset[str]:
    """Which of ``argsrepr``/``kwargsrepr`` the sender gave itself (they differ from the repr
    Celery makes of the arguments, which the worker makes again from the body): those are kept,
    as the worker's log lines and events must show them (a secret hidden from the log, say)."""
    given = {k: headers[k] for k in ("argsrepr", "kwargsrepr") if headers.get(k) is not None}
    if not given:
        return frozenset()
    try:
        args, kwargs = loads(body)[:2] if isinstance(body, str) else (None, None)
    except (ValueError, TypeError, KeyError):
        args = kwargs = None
    if not isinstance(args, list) or not isinstance(kwargs, dict):
        return frozenset(given)  # a body not read here (binary): keep what the sender gave
    defaults = {"argsrepr": {saferepr(tuple(args), _REPR_MAX), saferepr(args, _REPR_MAX)},
                "kwargsrepr": {saferepr(kwargs, _REPR_MAX)}}
    return frozenset(k for k, v in given.items() if v not in defaults[k])


def compact(message: dict[str, Any], compress_over: int | None, *,
            sqs_carried: bool = False) -> dict[str, Any]:
    """The compact envelope of a kombu message dict (see the module docstring); ``sqs_carried``:
    the queue is FIFO, SQS carries the group and dedup id (left out of the properties)."""
    headers = dict(message.get("headers") or {})
    properties = dict(message.get("properties") or {})
    body = message.get("body")
    if isinstance(body, str) and compress_over is not None and len(body) > compress_over:
        body = zlib.compress(body.encode("utf-8"))
        headers["compression"] = ZLIB
    if isinstance(body, bytes):  # compressed (here or by kombu), or a binary serializer
        body = base64.b64encode(body).decode("ascii")
        properties["body_encoding"] = "base64"
    task = "task" in headers
    explicit = _explicit_reprs(headers, message.get("body")) if task else frozenset()
    trimmed_headers = {k: v for k, v in headers.items()
                       if not _is_default(k, v, headers)
                       and not (task and k in _SENDER_ONLY_HEADERS and k not in explicit)}
    trimmed_properties = {
        k: v for k, v in properties.items()
        if k not in ("delivery_tag", "reply_to", "delivery_mode")
        and not (sqs_carried and k in _SQS_CARRIED)
        and not (k == "correlation_id" and v == headers.get("id"))
        and not (k in ("priority", "body_encoding") and not v)
    }
    trimmed_properties[FORMAT_PROPERTY] = FORMAT_VERSION
    envelope = {k: v for k, v in message.items() if k not in ("headers", "properties", "body")}
    return {**envelope, "body": body, "headers": trimmed_headers, "properties": trimmed_properties}


def encode(message: dict[str, Any], *, compress_over: int | None,
           sqs_carried: bool = False) -> str:
    """The SQS body of ``message`` in the compact format."""
    text = dumps(compact(message, compress_over, sqs_carried=sqs_carried))
    for char, escape in _SQS_REFUSED.items():
        if char in text:
            text = text.replace(char, escape)
    return text


def is_compact(envelope: dict[str, Any]) -> bool:
    return (envelope.get("properties") or {}).get(FORMAT_PROPERTY) == FORMAT_VERSION
