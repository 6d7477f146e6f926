"""Every error ActionRunner raises.

The tree::

    ActionRunnerError
    ├── ConfigurationError          settings or infrastructure are not usable
    │   ├── InvalidSettings         a setting (ACTIONRUNNER_*) does not validate
    │   ├── EndpointUnreachable     nothing answers at the configured AWS endpoint
    │   ├── QueueMissing            the queue or DLQ does not exist (run `actionrunner provision`)
    │   ├── TableMissing            the DynamoDB state table does not exist (same remedy)
    │   ├── QueueMisconfigured      the queue exists but is not what the settings describe
    │   ├── PacingMisconfigured     a pacer's bounds are wrong (a lag bound <= 0, floor > ceiling...)
    │   └── UnknownWatermark        no stream consumer ever published the watermark a pacer names
    ├── ActionError                 a call of an action is wrong; nothing was sent
    │   ├── ActionInputError        the inputs do not match the action's type hints
    │   ├── WrongArguments          a plain task's arguments do not fit its signature (not retried)
    │   ├── SchemaVersionRejected   a message's inputs have a schema version this code does not run
    │   ├── ActionDefinitionError   the @action declaration itself is wrong
│   │   └── ConcurrencyLimitInvalid  a max_concurrency (declared, or set live) not a whole number >= 1
    │   ├── MessageIdError          a group or dedup id is empty, too long or has bad characters
    │   ├── PayloadTooLarge         the encoded message exceeds the queue's size limit
    │   └── EtaOutOfRange           an eta/countdown beyond what SQS can hold a message for
    ├── SendError                   SQS did not accept a message (after retries)
    ├── UndecodableMessage          a received message cannot become a call of an action
    │   ├── NotJson                 its body is neither JSON nor base64 of JSON
    │   ├── BadEnvelope             the envelope, its properties, headers or body have the wrong shape
    │   ├── BadEncoding             a body marked base64 is not base64 (or not UTF-8 text)
    │   ├── BadCompression          compressed data that is corrupt, truncated or of an unknown kind
    │   ├── MessageTooLarge         decompressed (or claim-checked) data over the bound
    │   ├── ContentTypeRefused      a content type other than JSON (pickle included)
    │   ├── BadTaskHeader           the Celery headers are missing or of the wrong type
    │   ├── UnknownAction           no action of that name is registered here
    │   │   └── BuiltinTaskRefused  one of Celery's built-in tasks (celery.starmap...): never run
    │   ├── EtaTooFar               an eta/countdown beyond what SQS can hold a message for
    │   ├── MessageExpired          its ``expires`` time passed before it ran (marked ``expired``)
    │   ├── PointerRefused          a claim-check pointer outside the payload bucket (never fetched)
    │   ├── Rejected                Celery refused it (an unknown or invalid message)
    │   └── PayloadMissing          the claim-checked object is gone (or stays unreadable)
    └── StateError                  the state table (idempotency, shared rate limits) failed a run
        ├── IdempotencyKeyReused    the key was already used with other inputs (not retried)
        ├── LeaseLost               another run took the key after this run's lease ran out
        └── EffectRejected          a staged write's own condition failed; nothing was written
    MalformedStreamRecord           a DynamoDB stream record the stream processor cannot read
                                    (dead-lettered with this reason)

Control-flow signals (not failures): :class:`RetryLater` (raised by ``self.retry()`` in an action),
and its subclasses :class:`IdempotencyInProgress` (another run holds the key: wait, without using
an attempt), :class:`StateUnavailable` (the state table does not answer: wait, the same way) and
:class:`ConcurrencyLimited` (the action's fleet-wide ``max_concurrency`` is reached: wait, the same
way).

Errors carry the context a caller needs to act on them (``field_errors``, ``size``, ``limit``,
``failed``...).
"""

from __future__ import annotations

from typing import Any


def error_code(exc: BaseException) -> str:
    """AWS's error code of ``exc`` (``ConditionalCheckFailedException``, ``ThrottlingException``…),
    or the exception's class name when it has none (a connection error, a timeout)."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        code = (response.get("Error") or {}).get("Code")
        if code:
            return str(code)
    return type(exc).__name__


def error_module_of(exc: BaseException | None) -> str | None:
    """The module of ``exc``'s class, or None for a builtin (or no exception)."""
    module = getattr(type(exc), "__module__", None) if exc is not None else None
    return module if isinstance(module, str) and module != "builtins" else None


def error_args_of(exc: BaseException | None) -> str | None:
    """``exc.args`` as JSON text when they are not just its message (``E("a", "b")``, ``E(3)``)
    and JSON can hold them in a few hundred bytes: the result backend rebuilds the exception with
    them. None otherwise (the message is enough)."""
    import json

    args = getattr(exc, "args", None) if exc is not None else None
    if not isinstance(args, tuple) or not args or (len(args) == 1 and isinstance(args[0], str)):
        return None
    try:
        text = json.dumps(list(args), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError):
        return None
    return text if len(text) <= 500 else None


def _rebuild(cls: type[BaseException], args: tuple[Any, ...], kwargs: dict[str, Any]) -> BaseException:
    return cls(*args, **kwargs)


class ActionRunnerError(Exception):
    """Base class of every ActionRunner error.

    It keeps the arguments it was made with, so every subclass survives pickling between worker
    processes (Celery's prefork pool sends a failed run's exception to the main process) as
    itself, rebuilt by its own ``__init__``: no subclass needs a ``__reduce__`` of its own.
    """

    _made_with: tuple[tuple[Any, ...], dict[str, Any]] = ((), {})

    def __new__(cls, *args: Any, **kwargs: Any) -> ActionRunnerError:
        self = super().__new__(cls, *args)
        self._made_with = (args, kwargs)
        return self

    def __reduce__(self) -> Any:
        args, kwargs = self._made_with
        return _rebuild, (type(self), args, kwargs)


# -- configuration -------------------------------------------------------------------------------
class ConfigurationError(ActionRunnerError):
    """The settings or the infrastructure they point at are not usable."""


class InvalidSettings(ConfigurationError):
    """A setting does not validate; ``details``: ``field: what is wrong``, one per field."""

    def __init__(self, details: list[str]):
        self.details = details
        super().__init__(f"invalid settings: {'; '.join(details)}")

    @classmethod
    def of(cls, exc: Any) -> InvalidSettings:
        """The error of pydantic's ``ValidationError`` ``exc``."""
        return cls([f"{'.'.join(map(str, e['loc'])) or 'settings'}: "
                    f"{e['msg'].removeprefix('Value error, ')}" for e in exc.errors(include_url=False)])


class EndpointUnreachable(ConfigurationError):
    """Nothing answers at the configured AWS endpoint."""

    def __init__(self, service: str, endpoint: str | None, cause: BaseException | str | None = None):
        self.service = service
        self.endpoint = endpoint
        self.cause = str(cause)
        where = endpoint or f"the default AWS {service} endpoint"
        hint = (
            "start the local emulator with `actionrunner local-aws` (or the whole stack with "
            "`actionrunner dev`), or point AWS_ENDPOINT_URL at a running endpoint"
            if endpoint
            else "check network access and credentials, or set AWS_ENDPOINT_URL for a local emulator"
        )
        super().__init__(f"cannot reach {service} at {where}: {cause!s}; {hint}")

    def __reduce__(self) -> Any:  # the cause (a botocore error) need not pickle: its text does
        return _rebuild, (type(self), (self.service, self.endpoint, self.cause), {})


class QueueMissing(ConfigurationError):
    """The queue (or its dead-letter queue) does not exist."""

    def __init__(self, queue_name: str, endpoint: str | None):
        self.queue_name = queue_name
        self.endpoint = endpoint
        super().__init__(
            f"SQS queue {queue_name!r} does not exist at {endpoint or 'AWS'}; "
            "create it with `actionrunner provision` (or set ACTIONRUNNER_QUEUE_NAME)"
        )


class TableMissing(ConfigurationError):
    """The DynamoDB state table does not exist."""

    def __init__(self, table: str, endpoint: str | None):
        self.table = table
        self.endpoint = endpoint
        super().__init__(
            f"DynamoDB table {table!r} does not exist at {endpoint or 'AWS'}; "
            "create it with `actionrunner provision` (or set ACTIONRUNNER_STATE_TABLE)"
        )


class QueueMisconfigured(ConfigurationError):
    """The queue exists but differs from what the settings describe."""

    def __init__(self, queue_name: str, problems: list[str]):
        self.queue_name = queue_name
        self.problems = problems
        super().__init__(
            f"SQS queue {queue_name!r} differs from the settings: {'; '.join(problems)}; "
            "run `actionrunner provision --fix` to apply the settings"
        )


class PacingMisconfigured(ConfigurationError, ValueError):
    """A pacer's limits are wrong: a lag bound or floor <= 0, a floor above the ceiling..."""


class UnknownWatermark(ConfigurationError):
    """A pacer names a watermark that no stream consumer has ever published."""

    def __init__(self, name: str, table: str):
        self.name, self.table = name, table
        super().__init__(
            f"no stream consumer has published a watermark named {name!r} in the state table "
            f"{table!r}; start the stream processor with --watermark {name} (or fix the name)")


class MalformedStreamRecord(ActionRunnerError, ValueError):
    """A DynamoDB stream record the stream processor cannot read; ``record`` is what came."""

    def __init__(self, reason: str, record: object = None):
        self.reason, self.record = reason, record
        super().__init__(f"malformed stream record: {reason}")


# -- calls of actions ----------------------------------------------------------------------------
class ActionError(ActionRunnerError):
    """A call of an action is wrong. Nothing was sent."""


class ActionDefinitionError(ActionError):
    """The ``@action(...)`` declaration itself is wrong."""


class ConcurrencyLimitInvalid(ActionDefinitionError, ValueError):
    """A ``max_concurrency`` (``@action(max_concurrency=N)``, ``actionrunner concurrency set``,
    ``PUT /v1/concurrency/{action}``) that is not a whole number from 1 to ``limit``."""

    def __init__(self, owner: str, value: object, limit: int):
        self.owner, self.value, self.limit = owner, value, limit
        super().__init__(f"{owner}: max_concurrency must be a whole number from 1 to {limit}, "
                         f"not {value!r} ({type(value).__name__})")


class WrongArguments(ActionError, TypeError):
    """A plain task's call whose arguments do not fit its function's signature (a task with
    ``typing=False``, or a message sent by name): a retry cannot fix it, so it is dead-lettered on
    its first attempt (Celery's own ``TypeError``, a subclass of it)."""


class ActionInputError(ActionError, ValueError):
    """The inputs do not match the action's type hints.

    ``field_errors`` maps each bad field (dotted path) to what is wrong with it.
    """

    def __init__(self, action: str, field_errors: dict[str, str]):
        self.action = action
        self.field_errors = field_errors
        details = "; ".join(f"{field}: {msg}" for field, msg in field_errors.items())
        super().__init__(f"invalid input for action {action!r}: {details}")


class SchemaVersionRejected(ActionError):
    """A message's inputs were sent with a schema version this code does not run."""

    def __init__(self, action: str, version: int, accepted: tuple[int, ...]):
        self.action = action
        self.version = version
        self.accepted = accepted
        super().__init__(
            f"action {action!r}: the message's inputs have schema version {version}, this worker "
            f"runs versions {list(accepted)}; deploy code that accepts it, then redrive the DLQ"
        )


class MessageIdError(ActionError, ValueError):
    """A MessageGroupId or MessageDeduplicationId is not acceptable to SQS."""

    def __init__(self, action: str, kind: str, value: Any, problem: str):
        self.action = action
        self.kind = kind
        self.value = value
        self.problem = problem
        super().__init__(f"action {action!r}: {kind} {value!r} {problem}")


class PayloadTooLarge(ActionError, ValueError):
    """The encoded message is larger than the queue accepts."""

    def __init__(self, action: str, size: int, limit: int,
                 setting: str = "ACTIONRUNNER_MAX_MESSAGE_BYTES"):
        self.action = action
        self.size = size
        self.limit = limit
        what = "the message" if setting.endswith("MESSAGE_BYTES") else "its body"
        super().__init__(
            f"action {action!r}: {what} is {size:,} bytes, over the limit of {limit:,} bytes "
            f"({setting}); pass a reference (an S3 key, a table key) instead of the data itself"
        )


# -- sending -------------------------------------------------------------------------------------
class ResultsNotKept(ActionError):
    """``AsyncResult.get()`` / ``.state`` of an action whose results are not kept."""

    def __init__(self, action: str):
        self.action = action
        super().__init__(
            f"results of action {action!r} are not kept, so .get(), .state, .ready() and .result "
            "cannot answer: set ACTIONRUNNER_RUN_STATUS=all (in the sender's and the workers' "
            "environment) or declare it with @action(ignore_result=False); the run's lifecycle "
            "is in the worker's log lines either way"
        )


class EtaOutOfRange(ActionError, ValueError):
    """An ``eta``/``countdown`` further ahead than a worker can hold a message (SQS hides a
    received message at most 12 hours): refused at send, nothing sent. Schedule it with beat, or
    send it later."""


class SendError(ActionRunnerError):
    """SQS did not accept one or more messages, even after retries.

    ``failed`` lists ``(index, code, message)`` for each message that was not sent; every other
    message of the call was accepted.
    """

    def __init__(self, message: str, failed: list[tuple[int, str, str]] | None = None):
        self.failed = failed or []
        super().__init__(message)


# -- receiving -----------------------------------------------------------------------------------
class UndecodableMessage(ActionRunnerError):
    """A received message cannot become a valid call of a registered action. Never retried: it is
    dead-lettered at once with its class name as ``actionrunner.error_type`` and this text as the
    reason, and the next message of its group follows it."""

    def __init__(self, reason: str):
        self.reason = reason
        super().__init__(reason)


class NotJson(UndecodableMessage):
    """The body is neither JSON nor base64 of JSON."""


class BadEnvelope(UndecodableMessage):
    """The envelope is not an object, or its ``properties``, ``headers`` or ``body`` have the
    wrong type, or the task body is not ``[args, kwargs, embed]``."""


class BadEncoding(UndecodableMessage):
    """A body marked base64 is not base64, or the bytes are not UTF-8 text."""


class BadCompression(UndecodableMessage):
    """Compressed data that is corrupt or truncated, or a compression this worker refuses."""


class MessageTooLarge(UndecodableMessage):
    """Decompressed or claim-checked data over ``ACTIONRUNNER_MAX_DECODED_BYTES`` (checked while
    reading it, never after)."""


class ContentTypeRefused(UndecodableMessage):
    """A content type other than JSON (pickle, yaml, msgpack... are never deserialized)."""


class BadTaskHeader(UndecodableMessage):
    """Celery's headers (``task``, ``id``, ``eta``, ``retries``...) are missing or of the wrong type."""


class UnknownAction(UndecodableMessage):
    """No action of that name is registered in this process (``ACTIONRUNNER_IMPORTS``?)."""


class BuiltinTaskRefused(UnknownAction):
    """One of Celery's built-in tasks (``celery.starmap``, ``celery.chunks``, ``celery.map``,
    ``celery.backend_cleanup``...) arrived on the queue: it would run actions in-process without
    their lifecycle, guard, rate limit or time limit, so it is never run
    (:mod:`actionrunner.runnable`; ``celery.accumulate``, which calls nothing, runs)."""


class EtaTooFar(UndecodableMessage):
    """A message whose ``eta`` lies beyond what SQS can hold it for (a received message stays
    hidden at most 12 hours): holding it would stall its group, so it is dead-lettered."""


class MessageExpired(UndecodableMessage):
    """A message whose ``expires`` time passed before it could run: dead-lettered, marked
    ``expired`` (or discarded, ``ACTIONRUNNER_EXPIRED=discard``), and counted."""


class PointerRefused(UndecodableMessage):
    """A claim-check pointer outside the configured payload bucket and prefix (or with no payload
    bucket configured): never fetched, never deleted."""


class Rejected(UndecodableMessage):
    """Celery refused a received message (``basic_reject`` without requeue: an unknown or
    invalid message): dead-lettered, never deleted unprocessed."""


class PayloadMissing(UndecodableMessage):
    """The claim-checked object does not exist (any more), or could not be read after a bounded
    number of tries (403 AccessDenied: gone where s3:ListBucket is not granted, or refused)."""


# -- state (actionrunner/state/) -----------------------------------------------------------------
class StateError(ActionRunnerError):
    """The state table could not do what a run needed (see the subclasses)."""


class IdempotencyKeyReused(StateError):
    """The idempotency key was already used with different inputs.

    Raised when an action's ``key=`` maps two different calls to the same key. Not retried (the
    next attempt would find the same record): the message goes to the DLQ.
    """

    def __init__(self, action: str, key: str, inputs_hash: str, stored_hash: str):
        self.action, self.key = action, key
        self.inputs_hash, self.stored_hash = inputs_hash, stored_hash
        super().__init__(
            f"action {action!r}: idempotency key {key!r} was already used with different inputs "
            f"(inputs hash {stored_hash[:12]}…, this call {inputs_hash[:12]}…); give different "
            "calls different keys (the action's key=), or reuse the key only for the same inputs"
        )


class LeaseLost(StateError):
    """This run's claim of an idempotency key ran out and another run took the key.

    Nothing this run staged was written; a retry finds the other run's record (and waits for it,
    or returns its saved result).
    """

    def __init__(self, key: str):
        self.key = key
        super().__init__(
            f"lost the lease on idempotency key {key!r} (it ran out and another run took it); "
            "nothing staged was written. Renewals failing? Check the state table's endpoint, or "
            "raise ACTIONRUNNER_IDEMPOTENCY_LEASE_SECONDS"
        )


class EffectRejected(StateError):
    """A write the action staged was refused by its own ``condition``: the transaction was
    cancelled, so nothing the run staged was written (and its key was not completed)."""

    def __init__(self, index: int, code: str, message: str = ""):
        self.index, self.code, self.detail = index, code, message
        super().__init__(f"staged write #{index} was refused ({code}{': ' + message if message else ''}); "
                         "nothing the action staged was written")


# -- control flow --------------------------------------------------------------------------------
from celery.exceptions import Retry as _CeleryRetry  # noqa: E402


class RetryLater(_CeleryRetry):
    """Run this action again later, on the same message (raised by ``Action.retry``).

    ``when`` is the delay in seconds (``None``: the action's backoff). Unlike Celery's ``Retry``,
    nothing is republished: the worker keeps the message and its place in the group.
    """

    def __init__(self, message: str | None = None, exc: BaseException | None = None,
                 when: float | None = None, **kwargs: Any) -> None:
        super().__init__(message, exc, when, **kwargs)

    def __reduce__(self) -> Any:
        return type(self), (self.message, self.exc, self.when)


class IdempotencyInProgress(RetryLater):
    """Another run holds this action's idempotency key (its lease has not run out).

    The worker runs the message again after ``when`` seconds *without using an attempt*: a
    duplicate waits for as long as the first run is alive, then returns its saved result (or runs,
    if the first run crashed and its lease ran out).
    """

    #: Waiting for another run is not a failed attempt (see actionrunner/worker/request.py).
    counts_as_attempt = False

    def __init__(self, key: str, lease_until: float | None = None, when: float | None = None):
        self.key, self.lease_until = key, lease_until
        super().__init__(f"idempotency key {key!r} is held by another run", None, when)

    def __reduce__(self) -> Any:
        return type(self), (self.key, self.lease_until, self.when)


class StateUnavailable(RetryLater):
    """The state table (idempotency store, shared rate limits) kept failing — throttled, 5xx,
    unreachable, timing out, refusing the credentials — for longer than a run waits for it.

    Like :class:`IdempotencyInProgress`, the worker runs the message again after ``when`` seconds
    *without using an attempt*: while DynamoDB is unreachable, actions wait; they neither run
    without their guard nor go to the DLQ. ``operation`` names what failed (e.g. ``PutItem``),
    ``cause`` the last error.
    """

    counts_as_attempt = False

    def __init__(self, operation: str, cause: str = "", when: float | None = None):
        self.operation, self.cause = operation, cause
        super().__init__(f"the state table is unavailable ({operation}: {cause}); waiting",
                         None, when)

    def __reduce__(self) -> Any:
        return type(self), (self.operation, self.cause, self.when)


class ConcurrencyLimited(RetryLater):
    """The action's fleet-wide cap (``@action(max_concurrency=N)``) is reached: ``limit`` runs of
    it hold a lease in the state table right now.

    Like :class:`IdempotencyInProgress`, the worker runs the message again after ``when`` seconds
    *without using an attempt*, its group behind it (see :mod:`actionrunner.state.concurrency`).
    """

    counts_as_attempt = False

    def __init__(self, action: str, limit: int, when: float | None = None):
        self.action, self.limit = action, limit
        super().__init__(f"{action!r} is at its max_concurrency of {limit} runs; waiting",
                         None, when)

    def __reduce__(self) -> Any:
        return type(self), (self.action, self.limit, self.when)
