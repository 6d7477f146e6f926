"""Group-ordered dispatch: one message per group at a time, in the order SQS handed them out.

SQS FIFO may return several messages of one group in a single receive (and never more of a group
while one is in flight). :class:`GroupDispatcher` turns that into Celery's world: the head of each
group is delivered to the worker at once, the rest wait in memory until the head is *done* (acked,
dead-lettered or released), whatever the worker's concurrency. Different groups run in parallel.

It is plain bookkeeping, with no I/O, guarded by a lock (the heartbeat thread reads it)::

    >>> d = GroupDispatcher()
    >>> d.offer("g1", "a"), d.offer("g1", "b"), d.offer("g2", "c")
    (True, False, True)
    >>> d.done("g1")
    'b'
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Hashable
from typing import Generic, TypeVar

T = TypeVar("T")


class GroupDispatcher(Generic[T]):
    """Which message of each group may run now, and which wait."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._busy: set[Hashable] = set()
        self._waiting: dict[Hashable, deque[T]] = {}
        self.closed = False

    def offer(self, group: Hashable, item: T) -> bool:
        """Accept a received message; True if it may run now, False if it waits its turn."""
        with self._lock:
            if group in self._busy or self.closed:
                self._waiting.setdefault(group, deque()).append(item)
                return False
            self._busy.add(group)
            return True

    def done(self, group: Hashable) -> T | None:
        """The group's running message is finished: its next message (now running), or None."""
        with self._lock:
            queue = self._waiting.get(group)
            if queue and not self.closed:
                item = queue.popleft()
                if not queue:
                    del self._waiting[group]
                return item
            self._busy.discard(group)
            return None

    def take_group(self, group: Hashable) -> list[T]:
        """Remove and return every waiting message of ``group`` (e.g. to release them)."""
        with self._lock:
            return list(self._waiting.pop(group, ()))

    def close(self) -> list[T]:
        """Stop handing out messages; remove and return every waiting one (to release them)."""
        with self._lock:
            self.closed = True
            items = [item for queue in self._waiting.values() for item in queue]
            self._waiting.clear()
            return items

    def waiting(self) -> list[T]:
        """A snapshot of the waiting messages."""
        with self._lock:
            return [item for queue in self._waiting.values() for item in queue]

    @property
    def waiting_count(self) -> int:
        with self._lock:
            return sum(len(queue) for queue in self._waiting.values())

    def is_busy(self, group: Hashable) -> bool:
        with self._lock:
            return group in self._busy
