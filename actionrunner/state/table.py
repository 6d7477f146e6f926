"""The items ActionRunner keeps in its one state table, told apart by the prefix of ``pk``.

The table itself (name from ``ACTIONRUNNER_STATE_TABLE``, partition key ``pk`` of type S, TTL on
``expires_at`` in epoch seconds) is defined once, in :mod:`actionrunner.provision`, which creates
it. This module names the items the state package writes there:

=================================  ==============================================================
``idem#{action}#{dedup id}``       an action's idempotency record (:mod:`.store`)
``bucket#{name}``                  a shared rate-limit bucket (:mod:`.ratelimit`)
=================================  ==============================================================

(Other parts of ActionRunner add their own kinds, e.g. ``run#{id}`` for run status.)
"""

from __future__ import annotations

import os
from typing import Any

from ..provision import STATE_KEY, STATE_TTL_ATTRIBUTE

#: Prefix of idempotency records.
IDEMPOTENCY_PREFIX = "idem#"
#: Prefix of shared rate-limit buckets.
BUCKET_PREFIX = "bucket#"

__all__ = ["BUCKET_PREFIX", "IDEMPOTENCY_PREFIX", "STATE_KEY", "STATE_TTL_ATTRIBUTE",
           "bucket_pk", "client", "idempotency_pk"]


def idempotency_pk(action: str, dedup_id: str) -> str:
    """The ``pk`` of ``action``'s record for a call whose dedup id (the hash of the action's name
    and its idempotency key, see :func:`actionrunner.keys.dedup_id`) is ``dedup_id``."""
    return f"{IDEMPOTENCY_PREFIX}{action}#{dedup_id}"


def bucket_pk(name: str) -> str:
    """The ``pk`` of the shared rate-limit bucket ``name``."""
    return f"{BUCKET_PREFIX}{name}"


_clients: dict[int, Any] = {}


def client() -> Any:
    """This process's DynamoDB client for the state table (pool processes are forked: one each)."""
    pid = os.getpid()
    if pid not in _clients:
        from ..dynamo import state_client_config
        from ..settings import get_settings

        settings = get_settings()
        _clients.clear()
        _clients[pid] = settings.client("dynamodb", config=state_client_config(settings))
    return _clients[pid]
