"""How every received message ends: one decision, shared by the Celery worker and the Lambda runtime.

Each received message ends exactly one way (DESIGN.md §3.7): it **runs** (then is deleted), is
**retried** on the same message after a backoff, **waits** (another run holds its idempotency key:
no attempt used), is **held** at the head of its group for the queue's redrive policy, is
**released** (back to the queue at once, its group behind it), or is **dead-lettered** with a reason.

:func:`decide` makes that choice from the action's :class:`Policy`, what went wrong (an exception
from the run, or an :class:`~actionrunner.errors.UndecodableMessage` from decoding) and the attempt.
It does no I/O; each runtime only applies the :data:`Outcome`::

    >>> policy = Policy(max_attempts=3)
    >>> decide(policy, ValueError("boom"), attempt=1, receive_count=1, jitter=False)
    Retry(delay=1.0, reason=Reason(error_type='ValueError', error='boom', attempts=1, receive_count=1))
    >>> decide(policy, ValueError("boom"), attempt=3, receive_count=1).__class__.__name__
    'DeadLetter'

:func:`dead_letter_entry` builds the one DLQ message both runtimes send: the original body and
group, the original message attributes that fit, and the reason as ``actionrunner.*`` attributes,
within SQS's limits (10 message attributes, 1 MiB in all).

:class:`MessageSettler` is the interface a runtime's channel implements; the worker's request
(:mod:`actionrunner.worker.request`) reaches the channel only through it.
"""

from __future__ import annotations

import abc
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from celery.exceptions import Reject
from celery.exceptions import Retry as CeleryRetry

from . import constants as C
from .backoff import backoff
from .errors import (
    ActionInputError,
    IdempotencyKeyReused,
    SchemaVersionRejected,
    UndecodableMessage,
    WrongArguments,
    error_args_of,
    error_module_of,
)
from .events import emit
from .signing import PREFIX, SIGNATURE_ATTRIBUTE, SIGNATURE_CHARS, sign

#: Failures that a retry cannot fix: dead-lettered (or held) on their first attempt.
NOT_RETRYABLE: tuple[type[BaseException], ...] = (
    ActionInputError, IdempotencyKeyReused, SchemaVersionRejected, UndecodableMessage,
    WrongArguments)
#: Set on the exception a plain task's ``self.retry()`` raises once Celery's ``max_retries`` is
#: spent (Celery raises it then): dead-lettered, not retried again.
RETRIES_EXHAUSTED = "_actionrunner_retries_exhausted"
#: SQS's cap on message attributes per message.
MAX_MESSAGE_ATTRIBUTES = 10
#: Longest ``actionrunner.error`` text kept.
MAX_ERROR_CHARS = 1000
#: Prefix of the attributes that record the failure on a dead-lettered message.
ATTRIBUTE_PREFIX = PREFIX
#: How often a message was redriven from its DLQ (set by redrive, kept by each dead letter).
REDRIVES_ATTRIBUTE = f"{ATTRIBUTE_PREFIX}redrives"


# -- the inputs of the decision -------------------------------------------------------------------
@dataclass(frozen=True)
class Policy:
    """What an action declares about its failures (see :class:`actionrunner.action.Action`)."""

    max_attempts: int = 3
    retry_for: tuple[type[BaseException], ...] = (Exception,)
    on_exhausted: Literal["continue", "hold"] = "continue"
    hold_seconds: int = 300
    retry_backoff: float = 1.0
    retry_backoff_max: float = 60.0
    retry_jitter: bool = True
    #: A plain Celery task: its ``self.retry()`` is bounded by Celery's ``max_retries`` (checked
    #: where it is called), its other failures by ``max_attempts``.
    retries_by_task: bool = False

    @classmethod
    def of(cls, task: Any) -> Policy:
        """The policy an action (or any task with the same attributes) declares."""
        return cls(
            max_attempts=int(getattr(task, "max_attempts", cls.max_attempts)),
            retries_by_task=_retries_by_task(task),
            retry_for=tuple(getattr(task, "retry_for", cls.retry_for)),
            on_exhausted=getattr(task, "on_exhausted", cls.on_exhausted),
            hold_seconds=int(getattr(task, "hold_seconds", cls.hold_seconds)),
            retry_backoff=float(getattr(task, "retry_backoff", cls.retry_backoff)),
            retry_backoff_max=float(getattr(task, "retry_backoff_max", cls.retry_backoff_max)),
            retry_jitter=bool(getattr(task, "retry_jitter", cls.retry_jitter)),
        )

    def backoff(self, attempt: int, *, jitter: bool | None = None) -> float:
        """Seconds to wait after failed attempt ``attempt`` (1-based): exponential, capped,
        jittered between half and all of it."""
        use_jitter = self.retry_jitter if jitter is None else jitter
        return backoff(attempt, base=self.retry_backoff, cap=self.retry_backoff_max,
                       jitter="half" if use_jitter else "none")


def _retries_by_task(task: Any) -> bool:
    """Whether ``task``'s ``self.retry()`` is bounded by Celery's ``max_retries`` (a plain
    Celery task: :meth:`actionrunner.action.Action.retry` raises its exception past it), not by
    ``max_attempts``."""
    task = task._get_current_object() if hasattr(task, "_get_current_object") else task  # (a proxy)
    return getattr(task, "input_model", None) is None and hasattr(task, "max_retries")


#: The policy of a message that is not a call of a known action (nothing to retry).
UNDECODABLE = Policy(max_attempts=1)


@dataclass(frozen=True)
class Reason:
    """Why a message failed: recorded in the lifecycle line and on the dead letter."""

    error_type: str
    error: str
    attempts: int
    receive_count: int | None = None
    #: the module of the exception's class when it is not a builtin (the result backend rebuilds
    #: the class from it if that module is already imported by the reader)
    error_module: str | None = None
    #: the exception's arguments as JSON when they are more than its message
    #: (:func:`~actionrunner.errors.error_args_of`): the result backend rebuilds it with them
    error_args: str | None = None

    @classmethod
    def of(cls, exc: BaseException, attempt: int, receive_count: int | None = None) -> Reason:
        text = getattr(exc, "reason", None) or str(exc)
        return cls(type(exc).__name__, text[:MAX_ERROR_CHARS], attempt, receive_count,
                   error_module_of(exc), error_args_of(exc))

    def fields(self) -> dict[str, Any]:
        fields: dict[str, Any] = {"error_type": self.error_type, "error": self.error,
                                  "attempts": self.attempts}
        if self.error_module:
            fields["error_module"] = self.error_module
        if self.error_args:
            fields["error_args"] = self.error_args
        return fields



# -- the outcomes ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Retry:
    """Run the same message again after ``delay`` s; its group waits. Uses an attempt."""

    delay: float
    reason: Reason
    event = "retrying"


@dataclass(frozen=True)
class Wait:
    """Run the same message again after ``delay`` s, without using an attempt (another run holds
    the call's idempotency key)."""

    delay: float
    reason: Reason
    event = "waiting"


@dataclass(frozen=True)
class Hold:
    """Leave the message at the head of its group, hidden for ``seconds``, for the queue's redrive
    policy to move after maxReceiveCount receives."""

    seconds: int
    reason: Reason
    event = "held"


@dataclass(frozen=True)
class Release:
    """Give the message back to the queue at once, the rest of its group behind it."""

    reason: Reason | None = None
    event = "released"


@dataclass(frozen=True)
class DeadLetter:
    """Move the message to the DLQ with ``reason``; its group goes on."""

    reason: Reason
    event = "dead-lettered"


Outcome = Retry | Wait | Hold | Release | DeadLetter


def decide(policy: Policy, failure: BaseException, *, attempt: int, receive_count: int | None = None,
           countdown: float | None = None, jitter: bool | None = None) -> Outcome:
    """The outcome of a message whose attempt ``attempt`` (1-based) ended with ``failure``.

    ``countdown``: the delay the action asked for (``self.retry(countdown=...)``).
    """
    if getattr(failure, RETRIES_EXHAUSTED, False):  # a plain task's self.retry() past max_retries
        return DeadLetter(Reason.of(failure, attempt, receive_count))
    reason = Reason.of(failure, attempt, receive_count)
    if isinstance(failure, Reject):
        return Release(reason) if failure.requeue else DeadLetter(reason)
    if isinstance(failure, CeleryRetry) and not getattr(failure, "counts_as_attempt", True):
        return Wait(countdown if countdown is not None else 1.0, reason)
    if isinstance(failure, CeleryRetry) and policy.retries_by_task:
        delay = countdown if countdown is not None else policy.backoff(attempt, jitter=jitter)
        return Retry(max(0.0, float(delay)), reason)
    retryable = isinstance(failure, CeleryRetry) or (
        isinstance(failure, policy.retry_for) and not isinstance(failure, NOT_RETRYABLE))
    if retryable and attempt < policy.max_attempts:
        delay = countdown if countdown is not None else policy.backoff(attempt, jitter=jitter)
        return Retry(max(0.0, float(delay)), reason)
    if isinstance(failure, CeleryRetry) and isinstance(failure.exc, BaseException):
        reason = Reason.of(failure.exc, attempt, receive_count)  # the failure it retried on
    if policy.on_exhausted == "hold" and not isinstance(failure, UndecodableMessage):
        return Hold(policy.hold_seconds, reason)
    return DeadLetter(reason)


def expired_outcome(setting: str, headers: Mapping[str, Any], *, attempt: int,
                    receive_count: int | None = None) -> DeadLetter | None:
    """The outcome of a message whose ``expires`` passed before it ran: dead-lettered as
    ``MessageExpired`` (``ACTIONRUNNER_EXPIRED=dead-letter``, the default) or None: discarded
    (``discard``: deleted). Either way the runtime writes an ``expired`` line (a metric)."""
    if setting == "discard":
        return None
    return DeadLetter(Reason("MessageExpired", f"expired: its expires time "
                             f"({str(headers.get('expires'))[:40]}) passed before it could run",
                             attempt, receive_count))


# -- the dead letter ----------------------------------------------------------------------------
def _attribute_bytes(name: str, value: Mapping[str, Any]) -> int:
    size = len(name.encode()) + len(str(value.get("DataType", "")).encode())
    if "StringValue" in value:
        size += len(str(value["StringValue"]).encode())
    if "BinaryValue" in value:
        size += len(value["BinaryValue"])
    return size


def _api_attribute(value: Mapping[str, Any]) -> dict[str, Any]:
    """A received message attribute as SendMessage takes it (no list values: SQS refuses them)."""
    return {k: v for k, v in value.items() if k in ("DataType", "StringValue", "BinaryValue")}


@dataclass
class DeadLetterEntry:
    """The SendMessage parameters of a dead letter (without ``QueueUrl``), and what did not fit."""

    params: dict[str, Any]
    dropped_attributes: list[str] = field(default_factory=list)


def dead_letter_entry(message: Mapping[str, Any], reason: Reason, *, source_queue: str,
                      body: str | None = None, group: str | None = None,
                      max_bytes: int = C.SQS_MAX_MESSAGE_BYTES,
                      now: Callable[[], float] = time.time,
                      signing_key: bytes | None = None) -> DeadLetterEntry:
    """The DLQ message for ``message`` (a ReceiveMessage entry): its original ``body`` (default: its
    SQS body), group and attributes, plus the reason. ActionRunner's own attributes come first;
    the original ones fill what is left of SQS's 10 (the names of those dropped are recorded).
    The error text is shortened, then original attributes dropped, until it fits ``max_bytes``.
    The dedup id is the message id's own, so a DLQ send repeated after a lost answer or a failed
    delete is dropped by SQS instead of dead-lettering the message twice.

    Attributes of the message named ``actionrunner.*`` are a sender's (or an earlier DLQ's):
    dropped, except the redrive count (``actionrunner.redrives``, set by redrive), which travels
    on. With ``signing_key`` the copy's own attributes are signed (:mod:`actionrunner.signing`)."""
    attrs = message.get("Attributes") or {}
    text = body if body is not None else str(message.get("Body") or "")
    ours = {
        "error_type": reason.error_type,
        "error": reason.error[:MAX_ERROR_CHARS] or None,
        "attempts": reason.attempts,
        "receive_count": attrs.get("ApproximateReceiveCount") or reason.receive_count,
        "source_queue": source_queue,
        "failed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now())),
        "redrives": _redrives(message),
    }
    own = {f"{ATTRIBUTE_PREFIX}{k}": {"DataType": "String", "StringValue": str(v)}
           for k, v in ours.items() if v is not None}
    original = [(name, _api_attribute(value))
                for name, value in (message.get("MessageAttributes") or {}).items()
                if not name.startswith(ATTRIBUTE_PREFIX)]
    if signing_key:  # its place is kept now; signed once the rest is final
        own[SIGNATURE_ATTRIBUTE] = {"DataType": "String", "StringValue": "0" * SIGNATURE_CHARS}
    room = MAX_MESSAGE_ATTRIBUTES - len(own) - 1  # one left for the names of dropped attributes
    kept, dropped = (original, []) if len(original) <= room + 1 else (original[:room], original[room:])
    attributes = {**own, **dict(kept)}

    def size() -> int:
        return len(text.encode()) + sum(_attribute_bytes(n, v) for n, v in attributes.items())

    while size() > max_bytes and kept:  # what does not fit: the original attributes go first
        dropped.insert(0, kept.pop())
        attributes = {**own, **dict(kept)}
    if dropped:
        attributes[f"{ATTRIBUTE_PREFIX}dropped_attributes"] = {
            "DataType": "String", "StringValue": ",".join(n for n, _ in dropped)[:1000]}
    over = size() - max_bytes
    if over > 0 and f"{ATTRIBUTE_PREFIX}error" in attributes:  # then the error text shrinks
        error = attributes[f"{ATTRIBUTE_PREFIX}error"]["StringValue"]
        attributes[f"{ATTRIBUTE_PREFIX}error"]["StringValue"] = error[: max(1, len(error) - over)]
    message_id = str(message.get("MessageId") or "")
    group_id = attrs.get("MessageGroupId") or group or "default"
    if signing_key:
        attributes[SIGNATURE_ATTRIBUTE] = {"DataType": "String",
                                           "StringValue": sign(signing_key, text, group_id, attributes)}
    params: dict[str, Any] = {
        "MessageBody": text,
        "MessageGroupId": group_id,
        "MessageDeduplicationId": f"{message_id[:120]}:dlq" if message_id else f"{time.time_ns()}:dlq",
        "MessageAttributes": attributes,
    }
    return DeadLetterEntry(params, [n for n, _ in dropped])


def _redrives(message: Mapping[str, Any]) -> int | None:
    """How often ``message`` was redriven (its ``actionrunner.redrives``); None: never."""
    value = (message.get("MessageAttributes") or {}).get(REDRIVES_ATTRIBUTE) or {}
    try:
        count = int(str(value.get("StringValue")))
    except (TypeError, ValueError):
        return None
    return count if count > 0 else None


def failure_attributes(message: Mapping[str, Any]) -> dict[str, str]:
    """The failure ActionRunner recorded on a dead-lettered message (for ``actionrunner dlq``)."""
    attrs = message.get("MessageAttributes") or {}
    return {k.removeprefix(ATTRIBUTE_PREFIX): v.get("StringValue", "") for k, v in attrs.items()
            if k.startswith(ATTRIBUTE_PREFIX)}


# -- the log line of an outcome ------------------------------------------------------------------
def announce(outcome: Outcome, fields: Mapping[str, Any]) -> None:
    """The lifecycle line of a retry, wait or hold (a dead letter is announced by the runtime once
    the DLQ took it: ``dead-lettered``)."""
    if isinstance(outcome, Wait):
        emit("waiting", **fields, outcome="waiting", retry_in_s=round(outcome.delay, 3),
                  reason=outcome.reason.error[:300])
    elif isinstance(outcome, Retry):
        emit("retrying", **fields, outcome="retrying", retry_in_s=round(outcome.delay, 3),
                  **outcome.reason.fields(), level=30)
    elif isinstance(outcome, Hold):
        emit("held", **fields, outcome="held", hold_s=outcome.seconds,
                  **outcome.reason.fields(), level=40)


# -- the interface a runtime applies outcomes through ------------------------------------------
class MessageSettler(abc.ABC):
    """What a consuming channel offers the code that ran a message (the worker's request)."""

    @abc.abstractmethod
    def mark_running(self, delivery_tag: str) -> None:
        """The message started running (it is no longer only reserved)."""

    @abc.abstractmethod
    def holds(self, delivery_tag: str) -> bool:
        """Whether the message is still this worker's to run (its visibility was kept)."""

    @abc.abstractmethod
    def settle(self, delivery_tag: str, outcome: Outcome, fields: Mapping[str, Any]) -> None:
        """Apply ``outcome`` to the message; ``fields`` name it in the log lines."""


__all__ = ["NOT_RETRYABLE", "UNDECODABLE", "DeadLetter", "DeadLetterEntry", "Hold", "MessageSettler",
           "Outcome", "Policy", "Reason", "Release", "Retry", "Wait", "announce", "dead_letter_entry",
           "decide", "expired_outcome", "failure_attributes"]
