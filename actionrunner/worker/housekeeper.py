"""The worker's housekeeper thread: batched deletes, the visibility heartbeat, releases.

Everything here talks to SQS from its own thread with its own boto3 client, so it goes on while
Celery's event loop is busy or stopped (during a warm shutdown, running actions keep their
messages alive until they finish).

* :meth:`delete` queues a message for DeleteMessageBatch (sent when ten are queued or within
  ``flush_interval``).
* :meth:`track` / :meth:`untrack`: every tracked message gets its visibility extended to
  ``visibility_timeout`` every ``heartbeat_interval`` (ChangeMessageVisibilityBatch), never past
  SQS's 12-hour cap from its receive.
* :meth:`release` sets visibility 0 now (ChangeMessageVisibilityBatch), so another worker can take
  the messages at once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from .. import constants as C

logger = logging.getLogger("actionrunner.worker")


@dataclass
class Tracked:
    queue_url: str
    receipt_handle: str
    received_at: float


class Housekeeper(threading.Thread):
    """Background SQS upkeep for one channel."""

    def __init__(
        self,
        client: Any,
        *,
        visibility_timeout: int,
        heartbeat_interval: float | None = None,
        flush_interval: float = 0.05,
    ) -> None:
        super().__init__(name="actionrunner-housekeeper", daemon=True)
        self.client = client
        self.visibility_timeout = max(visibility_timeout, 1)
        self.heartbeat_interval = heartbeat_interval or max(1.0, self.visibility_timeout / 3)
        self.flush_interval = flush_interval
        self._lock = threading.Condition()
        self._deletes: list[tuple[str, str]] = []
        self._tracked: dict[str, Tracked] = {}
        self._stopping = False
        self._last_beat = time.monotonic()
        #: Requests made, by API call (for the benchmarks and tests).
        self.requests: dict[str, int] = defaultdict(int)

    # -- API used by the channel (any thread) ------------------------------------------------
    def track(self, queue_url: str, receipt_handle: str) -> None:
        with self._lock:
            self._tracked[receipt_handle] = Tracked(queue_url, receipt_handle, time.monotonic())

    def untrack(self, receipt_handle: str) -> None:
        with self._lock:
            self._tracked.pop(receipt_handle, None)

    def delete(self, queue_url: str, receipt_handle: str) -> None:
        with self._lock:
            self._tracked.pop(receipt_handle, None)
            self._deletes.append((queue_url, receipt_handle))
            if len(self._deletes) >= C.SQS_MAX_BATCH:
                self._lock.notify()

    def release(self, messages: list[tuple[str, str]], visibility: int = 0) -> None:
        """Make ``(queue_url, receipt_handle)`` messages visible again after ``visibility`` s."""
        with self._lock:
            for _, handle in messages:
                self._tracked.pop(handle, None)
        self._change_visibility(messages, visibility)

    def flush(self) -> None:
        """Send every queued delete now."""
        with self._lock:
            deletes, self._deletes = self._deletes, []
        self._delete_batch(deletes)

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
            self._lock.notify()
        if self.is_alive():
            self.join(10)
        self.flush()

    # -- the thread ------------------------------------------------------------------------
    def run(self) -> None:
        while True:
            with self._lock:
                if not self._stopping and len(self._deletes) < C.SQS_MAX_BATCH:
                    self._lock.wait(self.flush_interval)
                if self._stopping:
                    return
                deletes, self._deletes = self._deletes, []
                beat_due = time.monotonic() - self._last_beat >= self.heartbeat_interval
            try:
                self._delete_batch(deletes)
                if beat_due:
                    self._last_beat = time.monotonic()
                    self._heartbeat()
            except Exception:  # keep the thread alive whatever SQS says
                logger.exception("housekeeping failed")

    def _heartbeat(self) -> None:
        now = time.monotonic()
        cap = C.SQS_MAX_VISIBILITY_SECONDS - 2 * self.heartbeat_interval
        with self._lock:
            due = [(t.queue_url, t.receipt_handle) for t in self._tracked.values()
                   if now - t.received_at + self.visibility_timeout < cap]
        self._change_visibility(due, self.visibility_timeout)

    # -- SQS calls -------------------------------------------------------------------------
    def _by_queue(self, items: list[tuple[str, str]]) -> dict[str, list[str]]:
        grouped: dict[str, list[str]] = defaultdict(list)
        for url, handle in items:
            grouped[url].append(handle)
        return grouped

    def _delete_batch(self, items: list[tuple[str, str]]) -> None:
        for url, handles in self._by_queue(items).items():
            for start in range(0, len(handles), C.SQS_MAX_BATCH):
                chunk = handles[start : start + C.SQS_MAX_BATCH]
                self.requests["DeleteMessageBatch"] += 1
                response = self.client.delete_message_batch(
                    QueueUrl=url,
                    Entries=[{"Id": str(i), "ReceiptHandle": h} for i, h in enumerate(chunk)],
                )
                for failure in response.get("Failed", []):
                    # The message comes back after its visibility timeout and runs again:
                    # at least once, never lost.
                    logger.warning("delete failed: %s %s", failure.get("Code"), failure.get("Message"))

    def _change_visibility(self, items: list[tuple[str, str]], visibility: int) -> None:
        for url, handles in self._by_queue(items).items():
            for start in range(0, len(handles), C.SQS_MAX_BATCH):
                chunk = handles[start : start + C.SQS_MAX_BATCH]
                self.requests["ChangeMessageVisibilityBatch"] += 1
                try:
                    response = self.client.change_message_visibility_batch(
                        QueueUrl=url,
                        Entries=[{"Id": str(i), "ReceiptHandle": h, "VisibilityTimeout": visibility}
                                 for i, h in enumerate(chunk)],
                    )
                except Exception:
                    logger.exception("ChangeMessageVisibilityBatch failed")
                    continue
                for failure in response.get("Failed", []):
                    logger.warning("visibility change failed: %s %s",
                                   failure.get("Code"), failure.get("Message"))
