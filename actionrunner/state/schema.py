"""The state table's schema: its key, its TTL attribute and every kind of item kept in it.

ActionRunner keeps all its state in one DynamoDB table (name from ``ACTIONRUNNER_STATE_TABLE``):
partition key ``pk`` (type S), TTL on ``expires_at`` (epoch seconds). Items are told apart by the
prefix of ``pk``; this module is the one place that names them. :mod:`actionrunner.provision`
creates the table and :mod:`actionrunner.deploy` renders it from these constants.

=====================================  ==========================================================
``idem#{action}#{dedup id}``           an action's idempotency record (:mod:`.store`)
``bucket#{name}``                      a shared rate-limit bucket (:mod:`.ratelimit`); an adaptive
                                       pacer's bucket, whose rate moves (:mod:`actionrunner.pacing`)
``watermark#{name}``                   a stream consumer's progress, read by the adaptive pacers
                                       (:mod:`actionrunner.streams`)
``run#{run id}``                       the status of a run (:mod:`actionrunner.runs`)
``apikey#{action}#{key}``              an admin API ``Idempotency-Key`` (:mod:`.apikeys`)
``attempts#{queue}#{message id}``      failed runs of a message on Lambda
                                       (:mod:`actionrunner.aws_lambda.attempts`)
``conc#{action}``                      an action's ``max_concurrency`` leases and live cap
                                       (:mod:`.concurrency`)
``celery#{celery key}``                a group's members, a chord's progress (the result backend,
                                       :mod:`actionrunner.results`)
=====================================  ==========================================================

    >>> key(run_pk("5f0c"))
    {'pk': {'S': 'run#5f0c'}}
"""

from __future__ import annotations

import time
from typing import Any

#: The table's partition key (type S).
STATE_KEY = "pk"
#: The table's TTL attribute: epoch seconds after which DynamoDB deletes the item.
STATE_TTL_ATTRIBUTE = "expires_at"

#: Prefix of idempotency records.
IDEMPOTENCY_PREFIX = "idem#"
#: Prefix of shared rate-limit buckets.
BUCKET_PREFIX = "bucket#"
#: Prefix of run status items.
RUN_PREFIX = "run#"
#: Prefix of the admin API's Idempotency-Keys.
API_KEY_PREFIX = "apikey#"
#: Prefix of the attempt counters of messages run on Lambda.
ATTEMPTS_PREFIX = "attempts#"
#: Prefix of the ``max_concurrency`` items (leases and live cap) of actions.
CONCURRENCY_PREFIX = "conc#"
#: Prefix of the stream consumers' watermarks.
WATERMARK_PREFIX = "watermark#"
#: Prefix of the result backend's group and chord items (task results are ``run#`` items).
CELERY_PREFIX = "celery#"


def idempotency_pk(action: str, dedup_id: str) -> str:
    """The ``pk`` of ``action``'s record for a call whose dedup id (the hash of the action's name
    and its idempotency key, see :func:`actionrunner.keys.dedup_id`) is ``dedup_id``."""
    return f"{IDEMPOTENCY_PREFIX}{action}#{dedup_id}"


def bucket_pk(name: str) -> str:
    """The ``pk`` of the shared rate-limit bucket ``name``."""
    return f"{BUCKET_PREFIX}{name}"


def watermark_pk(name: str) -> str:
    """The ``pk`` of the stream consumer watermark ``name``."""
    return f"{WATERMARK_PREFIX}{name}"


def run_pk(run_id: str) -> str:
    """The ``pk`` of the status of run ``run_id``."""
    return f"{RUN_PREFIX}{run_id}"


def api_key_pk(action: str, key: str) -> str:
    """The ``pk`` of the admin API's ``Idempotency-Key`` ``key`` for ``action``."""
    return f"{API_KEY_PREFIX}{action}#{key}"


def attempts_pk(queue: str, message_id: str) -> str:
    """The ``pk`` of the failed-run counter of message ``message_id`` of ``queue``."""
    return f"{ATTEMPTS_PREFIX}{queue}#{message_id}"


def concurrency_pk(action: str) -> str:
    """The ``pk`` of ``action``'s ``max_concurrency`` leases and live cap."""
    return f"{CONCURRENCY_PREFIX}{action}"


def key(pk: str) -> dict[str, Any]:
    """The DynamoDB ``Key`` of the item ``pk``."""
    return {STATE_KEY: {"S": pk}}


def expiry(ttl_seconds: float, now: float | None = None) -> dict[str, str]:
    """The TTL attribute's value (a DynamoDB number) ``ttl_seconds`` from ``now``."""
    return {"N": str(int(time.time() if now is None else now) + int(ttl_seconds))}
