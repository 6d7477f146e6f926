"""Every error ActionRunner raises.

The tree::

    ActionRunnerError
    ├── ConfigurationError          settings or infrastructure are not usable
    │   ├── EndpointUnreachable     nothing answers at the configured AWS endpoint
    │   ├── QueueMissing            the queue or DLQ does not exist (run `actionrunner provision`)
    │   ├── TableMissing            the DynamoDB state table does not exist (same remedy)
    │   └── QueueMisconfigured      the queue exists but is not what the settings describe
    ├── ActionError                 a call of an action is wrong; nothing was sent
    │   ├── ActionInputError        the inputs do not match the action's type hints
    │   ├── ActionDefinitionError   the @action declaration itself is wrong
    │   ├── MessageIdError          a group or dedup id is empty, too long or has bad characters
    │   └── PayloadTooLarge         the encoded message exceeds the queue's size limit
    └── SendError                   SQS did not accept a message (after retries)

Control-flow signals (not failures): :class:`RetryLater` (raised by ``self.retry()`` in an action).

Errors carry the context a caller needs to act on them (``field_errors``, ``size``, ``limit``,
``failed``...).
"""

from __future__ import annotations

from typing import Any


class ActionRunnerError(Exception):
    """Base class of every ActionRunner error."""


# -- configuration -------------------------------------------------------------------------------
class ConfigurationError(ActionRunnerError):
    """The settings or the infrastructure they point at are not usable."""


class EndpointUnreachable(ConfigurationError):
    """Nothing answers at the configured AWS endpoint."""

    def __init__(self, service: str, endpoint: str | None, cause: BaseException | None = None):
        self.service = service
        self.endpoint = endpoint
        where = endpoint or f"the default AWS {service} endpoint"
        hint = (
            "start the local emulator with `actionrunner local-aws` (or the whole stack with "
            "`actionrunner dev`), or point AWS_ENDPOINT_URL at a running endpoint"
            if endpoint
            else "check network access and credentials, or set AWS_ENDPOINT_URL for a local emulator"
        )
        super().__init__(f"cannot reach {service} at {where}: {cause!s}; {hint}")

    def __reduce__(self) -> Any:  # survive pickling between worker processes
        return type(self), (self.service, self.endpoint, None)


class QueueMissing(ConfigurationError):
    """The queue (or its dead-letter queue) does not exist."""

    def __init__(self, queue_name: str, endpoint: str | None):
        self.queue_name = queue_name
        self.endpoint = endpoint
        super().__init__(
            f"SQS queue {queue_name!r} does not exist at {endpoint or 'AWS'}; "
            "create it with `actionrunner provision` (or set ACTIONRUNNER_QUEUE_NAME)"
        )

    def __reduce__(self) -> Any:  # survive pickling between worker processes
        return type(self), (self.queue_name, self.endpoint)


class TableMissing(ConfigurationError):
    """The DynamoDB state table does not exist."""

    def __init__(self, table: str, endpoint: str | None):
        self.table = table
        self.endpoint = endpoint
        super().__init__(
            f"DynamoDB table {table!r} does not exist at {endpoint or 'AWS'}; "
            "create it with `actionrunner provision` (or set ACTIONRUNNER_STATE_TABLE)"
        )

    def __reduce__(self) -> Any:  # survive pickling between worker processes
        return type(self), (self.table, self.endpoint)


class QueueMisconfigured(ConfigurationError):
    """The queue exists but differs from what the settings describe."""

    def __init__(self, queue_name: str, problems: list[str]):
        self.queue_name = queue_name
        self.problems = problems
        super().__init__(
            f"SQS queue {queue_name!r} differs from the settings: {'; '.join(problems)}; "
            "run `actionrunner provision --fix` to apply the settings"
        )

    def __reduce__(self) -> Any:  # survive pickling between worker processes
        return type(self), (self.queue_name, self.problems)


# -- calls of actions ----------------------------------------------------------------------------
class ActionError(ActionRunnerError):
    """A call of an action is wrong. Nothing was sent."""


class ActionDefinitionError(ActionError):
    """The ``@action(...)`` declaration itself is wrong."""


class ActionInputError(ActionError, ValueError):
    """The inputs do not match the action's type hints.

    ``field_errors`` maps each bad field (dotted path) to what is wrong with it.
    """

    def __init__(self, action: str, field_errors: dict[str, str]):
        self.action = action
        self.field_errors = field_errors
        details = "; ".join(f"{field}: {msg}" for field, msg in field_errors.items())
        super().__init__(f"invalid input for action {action!r}: {details}")

    def __reduce__(self) -> Any:  # survive pickling between worker processes
        return type(self), (self.action, self.field_errors)


class MessageIdError(ActionError, ValueError):
    """A MessageGroupId or MessageDeduplicationId is not acceptable to SQS."""

    def __init__(self, action: str, kind: str, value: Any, problem: str):
        self.action = action
        self.kind = kind
        self.value = value
        self.problem = problem
        super().__init__(f"action {action!r}: {kind} {value!r} {problem}")

    def __reduce__(self) -> Any:  # survive pickling between worker processes
        return type(self), (self.action, self.kind, self.value, self.problem)


class PayloadTooLarge(ActionError, ValueError):
    """The encoded message is larger than the queue accepts."""

    def __init__(self, action: str, size: int, limit: int):
        self.action = action
        self.size = size
        self.limit = limit
        super().__init__(
            f"action {action!r}: the message is {size:,} bytes, over the queue's limit of "
            f"{limit:,} bytes (ACTIONRUNNER_MAX_MESSAGE_BYTES); pass a reference (an S3 key, "
            "a table key) instead of the data itself"
        )

    def __reduce__(self) -> Any:  # survive pickling between worker processes
        return type(self), (self.action, self.size, self.limit)


# -- sending -------------------------------------------------------------------------------------
class SendError(ActionRunnerError):
    """SQS did not accept one or more messages, even after retries.

    ``failed`` lists ``(index, code, message)`` for each message that was not sent; every other
    message of the call was accepted.
    """

    def __init__(self, message: str, failed: list[tuple[int, str, str]] | None = None):
        self.failed = failed or []
        super().__init__(message)

    def __reduce__(self) -> Any:  # survive pickling between worker processes
        return type(self), (str(self), self.failed)


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
