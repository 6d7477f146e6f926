"""DynamoDB saying "too fast": recognising it, and how long to back off before trying again."""

from __future__ import annotations

import random

from botocore.exceptions import ClientError

#: Error codes with which DynamoDB says "too fast".
THROTTLING_CODES = frozenset({
    "ProvisionedThroughputExceededException", "ThrottlingException", "RequestLimitExceeded",
    "Throttling", "TooManyRequestsException",
})

def is_throttling(exc: BaseException) -> bool:
    """True if ``exc`` is DynamoDB (or another AWS service) saying "too fast"."""
    return isinstance(exc, ClientError) and exc.response.get("Error", {}).get("Code") in THROTTLING_CODES


def backoff_delay(attempt: int, base: float = 0.05, cap: float = 5.0) -> float:
    """Seconds to wait before try ``attempt + 1`` (1-based): exponential, full jitter."""
    return random.uniform(0, min(cap, base * 2 ** attempt))
