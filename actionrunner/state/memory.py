"""An in-memory idempotency store: one process's stand-in for the DynamoDB store (unit tests,
scripts). It keeps the same contract (tests/test_state_contract.py), under a lock.

Effects passed to a completion are appended to :attr:`MemoryStore.committed` in the same
locked step, so a test can see that they were committed exactly when the key was completed.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from .record import Record, Status
from .store import Effect, IdempotencyStore


class MemoryStore(IdempotencyStore):
    """Records in a dict of this process.

        >>> store = MemoryStore(ttl_seconds=60, lease_seconds=5)
        >>> claim = store.begin("idem#a#k", "h")
        >>> store.complete(claim, {"ok": True}).status.value
        'COMPLETED'
        >>> store.begin("idem#a#k", "h").result
        {'ok': True}
    """

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._records: dict[str, Record] = {}
        self._lock = threading.Lock()
        #: Every effect committed with a completion, in commit order.
        self.committed: list[Effect] = []

    def _get_record(self, key: str) -> Record | None:
        with self._lock:
            return self._records.get(key)

    def _put_record(self, record: Record, now: float) -> Record | None:
        with self._lock:
            existing = self._records.get(record.key)
            if existing is not None and existing.holds(now):
                return existing
            self._records[record.key] = record
            return None

    def _held_by(self, key: str, lease_id: str) -> bool:
        current = self._records.get(key)
        return (current is not None and current.status is Status.IN_PROGRESS
                and current.lease_id == lease_id)

    def _update_record(self, record: Record, lease_id: str, effects: Sequence[Effect]) -> bool:
        with self._lock:
            if not self._held_by(record.key, lease_id):
                return False
            self._records[record.key] = record
            self.committed.extend(effects)
            return True

    def _put_completed(self, record: Record, token: str, now: float,
                       effects: Sequence[Effect]) -> Record | None:
        with self._lock:
            existing = self._records.get(record.key)
            if existing is not None and existing.holds(now):
                return existing
            self._records[record.key] = record
            self.committed.extend(effects)
            return None

    def _delete_record(self, key: str, lease_id: str) -> bool:
        with self._lock:
            if not self._held_by(key, lease_id):
                return False
            del self._records[key]
            return True
