"""DynamoDB saying "too fast" (or "not now"): recognising it, how long to back off before trying
again, and the state table's client retries and timeouts."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from ..backoff import backoff, jittered

#: Error codes with which DynamoDB says "too fast".
THROTTLING_CODES = frozenset({
    "ProvisionedThroughputExceededException", "ThrottlingException", "RequestLimitExceeded",
    "Throttling", "TooManyRequestsException",
})
#: Error codes of answers that say "not now" rather than "no": worth the same request again later.
#: (Credentials and permissions too: the state table must not be skipped because of them, so
#: the run waits until they are fixed.)
TRANSIENT_CODES = THROTTLING_CODES | frozenset({
    "InternalServerError", "InternalFailure", "InternalError", "ServiceUnavailable",
    "ServiceUnavailableException", "TransactionInProgressException", "RequestTimeout",
    "RequestTimeoutException", "AccessDeniedException", "UnrecognizedClientException",
    "ExpiredTokenException", "IncompleteSignatureException", "InvalidSignatureException",
})

def is_throttling(exc: BaseException) -> bool:
    """True if ``exc`` is DynamoDB (or another AWS service) saying "too fast"."""
    return isinstance(exc, ClientError) and exc.response.get("Error", {}).get("Code") in THROTTLING_CODES


def condition_failed(exc: BaseException) -> bool:
    """True if ``exc`` is a conditional write refused because its condition did not hold (an
    answer about the item's state, not a failure)."""
    return isinstance(exc, ClientError) and \
        exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException"


def condition_item(exc: ClientError) -> dict[str, Any] | None:
    """The item a conditional write refused with ``ReturnValuesOnConditionCheckFailure=ALL_OLD``
    found in the table (None: there was none, or the server does not send it)."""
    item = exc.response.get("Item")
    return item if isinstance(item, dict) else None


def backoff_delay(attempt: int, base: float = 0.05, cap: float = 5.0) -> float:
    """Seconds to wait before try ``attempt + 1`` (1-based): exponential, full jitter."""
    return backoff(attempt + 1, base=base, cap=cap, jitter="full")


#: Seconds a message waits (about: :func:`unavailable_wait`) when the state table cannot answer.
UNAVAILABLE_WAIT_SECONDS = 4.0


def unavailable_wait() -> float:
    """The ``when`` of a :class:`~actionrunner.errors.StateUnavailable`: 2–6 s, spread."""
    return round(jittered(UNAVAILABLE_WAIT_SECONDS), 3)


def is_transient(exc: BaseException) -> bool:
    """True if ``exc`` says the server could not answer now, not that the request was wrong:
    throttling, a 5xx answer, a connection refused, reset or timed out, bad credentials."""
    from botocore.exceptions import ConnectionError as BotoConnectionError
    from botocore.exceptions import HTTPClientError

    if isinstance(exc, BotoConnectionError | HTTPClientError):
        return True
    if not isinstance(exc, ClientError):
        return False
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
    return exc.response.get("Error", {}).get("Code") in TRANSIENT_CODES or int(status) >= 500


def state_client_config(settings: Any, max_attempts: int = 4) -> Any:
    """botocore ``Config`` of a state-table client: standard retries (throttling, 5xx, resets
    and timeouts retried with jittered exponential backoff, ``max_attempts`` tries in all), a
    read timeout of ``state_read_timeout``. What is still failing after that is the caller's
    to handle (:class:`~actionrunner.state.dynamodb.DynamoDBStore` keeps trying, then the run
    waits: :class:`~actionrunner.errors.StateUnavailable`)."""
    from botocore.config import Config

    return Config(retries={"mode": "standard", "max_attempts": max_attempts},
                  read_timeout=settings.state_read_timeout,
                  connect_timeout=min(settings.connect_timeout, settings.state_read_timeout))
