"""ActionRunner's state on DynamoDB: exactly-once effects on an at-least-once queue.

* :mod:`.store` — the idempotency store: a state machine (in progress with a lease → completed
  with the saved result, TTL) over four primitives; backends :mod:`.dynamodb` (the state table)
  and :mod:`.memory` (one process), checked by one contract test;
* :mod:`.effects` — DynamoDB writes an action stages, committed in one transaction with its
  completion (exactly once);
* :mod:`.ratelimit` — shared rate limits: a token bucket in the state table for all workers;
* :mod:`.lease` — renews the leases of running actions;
* :mod:`.guard` — puts them around each run of an action (``Action.__call__``);
* :mod:`.schema` — the state table: its key, TTL attribute and every kind of item in it;
* :mod:`.apikeys` — the admin API's Idempotency-Keys;
* :mod:`.table` — this process's client of the table.
"""

from __future__ import annotations

from .dynamodb import DynamoDBStore
from .memory import MemoryStore
from .record import Claim, Record, Replay, Status
from .store import IdempotencyStore

__all__ = ["Claim", "DynamoDBStore", "IdempotencyStore", "MemoryStore", "Record", "Replay",
           "Status"]
