"""The worker's housekeeper thread: batched deletes, the visibility heartbeat, releases, dead letters.

Everything here talks to SQS from its own thread with its own boto3 client, so it goes on while
Celery's event loop is busy or stopped (during a warm shutdown, running actions keep their
messages alive until they finish), and no SQS error ever reaches the event loop. Every request is
retried until it succeeds or there is nothing left to do:

* :meth:`delete` queues a message for DeleteMessageBatch: sent ten at a time as they queue up,
  the rest when the oldest has waited ``linger`` seconds (0.25 s: batches fill), or at once when
  the worker has nothing else to run (``urgent``: lingering would only add latency). A failed call, or a
  ``Failed`` entry, is sent again with the same receipt handle, and the message keeps its
  heartbeat meanwhile, so the handle stays valid. A delete that
  finally fails (the handle expired) is a ``delete-failed`` line and metric: the message runs
  again, and the idempotency store turns that run into a replay. ``then`` runs after the delete
  succeeded (e.g. deleting a claim-checked payload).
* :meth:`track` / :meth:`untrack`: every tracked message gets its visibility extended to
  ``visibility_timeout`` every ``heartbeat_interval`` (ChangeMessageVisibilityBatch), never past
  SQS's 12-hour cap from its receive. A failed extension is tried again a second later; a message
  whose visibility ran out (or that SQS says is no longer ours) is reported to ``on_lost``.
* :meth:`release` sets visibility 0 (or a delay) so another worker can take the messages.
* :meth:`dead_letter` sends a message to the DLQ and, once SQS took it, deletes it and calls
  ``done``. A failed send is tried again with backoff, the message kept alive meanwhile; each
  failure is a ``dead-letter-failed`` line and metric (an alarm can watch it). A job whose
  message is no longer ours (its visibility ran out) is given up: ``dropped`` is called (the
  channel frees its group; the message comes back from SQS and is dead-lettered then).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .. import constants as C
from ..batch import in_batches
from ..events import emit
from .receiver import Episode, backoff, error_code

logger = logging.getLogger("actionrunner.worker")

#: Entry error codes meaning the receipt handle is no longer valid: nothing more to do with it.
GONE_CODES = frozenset({"ReceiptHandleIsInvalid", "MessageNotInflight", "InvalidReceiptHandle",
                        "AWS.SimpleQueueService.MessageNotInflight"})
#: How long a delete is tried before it is given up (its message then runs again: a replay).
DELETE_GIVE_UP_SECONDS = 900.0


@dataclass
class Tracked:
    queue_url: str
    receipt_handle: str
    received_at: float
    extended_at: float  #: when its visibility was last set to the full timeout


@dataclass
class _Delete:
    queue_url: str
    receipt_handle: str
    then: Callable[[], None] | None = None
    since: float = field(default_factory=time.monotonic)
    failures: int = 0
    due: float = 0.0


@dataclass
class DeadLetterJob:
    """A message on its way to the DLQ: ``params`` for SendMessage (without QueueUrl)."""

    dlq_url: str
    params: dict[str, Any]
    queue_url: str
    receipt_handle: str
    done: Callable[[], None]
    describe: dict[str, Any] = field(default_factory=dict)
    failures: int = 0
    due: float = 0.0
    #: Called when the job is given up: the DLQ did not take it and the message is no longer
    #: ours (its visibility ran out). The message comes back from SQS and is dead-lettered then;
    #: meanwhile its group must not wait for a ``done`` that never comes.
    dropped: Callable[[], None] | None = None


class Housekeeper(threading.Thread):
    """Background SQS upkeep for one channel."""

    def __init__(
        self,
        client: Any,
        *,
        visibility_timeout: int,
        heartbeat_interval: float | None = None,
        flush_interval: float = 0.02,
        linger: float = 0.25,
        on_lost: Callable[[list[str]], None] | None = None,
        dlq_client: Any = None,
    ) -> None:
        super().__init__(name="actionrunner-housekeeper", daemon=True)
        self.client = client
        self.dlq_client = dlq_client or client
        self.visibility_timeout = max(visibility_timeout, 1)
        self.heartbeat_interval = heartbeat_interval or max(1.0, self.visibility_timeout / 3)
        self.flush_interval = flush_interval
        self.linger = linger
        self._urgent = False
        self.on_lost = on_lost
        self._lock = threading.Condition()
        self._deletes: list[_Delete] = []
        self._releases: list[tuple[str, str, int]] = []
        self._dead_letters: list[DeadLetterJob] = []
        self._tracked: dict[str, Tracked] = {}
        self._stopping = False
        self._last_beat = time.monotonic()
        self._beat_retry_at: float | None = None
        self._episodes = {name: Episode(name) for name in (
            "DeleteMessageBatch", "ChangeMessageVisibilityBatch", "SendMessage to the DLQ")}
        #: Requests made, by API call; failures, by kind (for the benchmarks and tests).
        self.requests: dict[str, int] = defaultdict(int)
        self.failures: dict[str, int] = defaultdict(int)

    # -- API used by the channel (any thread) ------------------------------------------------
    def track(self, queue_url: str, receipt_handle: str) -> None:
        now = time.monotonic()
        with self._lock:
            self._tracked[receipt_handle] = Tracked(queue_url, receipt_handle, now, now)

    def track_many(self, queue_url: str, receipt_handles: list[str]) -> None:
        """:meth:`track` each of a receive's messages, under one lock."""
        now = time.monotonic()
        with self._lock:
            for handle in receipt_handles:
                self._tracked[handle] = Tracked(queue_url, handle, now, now)

    def untrack(self, receipt_handle: str) -> None:
        with self._lock:
            self._tracked.pop(receipt_handle, None)

    def visible_for(self, receipt_handle: str) -> float:
        """Seconds the message surely stays invisible to others (its last extension's timeout
        left); 0 if it is not tracked."""
        with self._lock:
            tracked = self._tracked.get(receipt_handle)
            if tracked is None:
                return 0.0
            return self.visibility_timeout - (time.monotonic() - tracked.extended_at)

    def is_tracked(self, receipt_handle: str) -> bool:
        with self._lock:
            return receipt_handle in self._tracked

    def delete(self, queue_url: str, receipt_handle: str, then: Callable[[], None] | None = None,
               *, urgent: bool = False) -> None:
        """Delete the message (batched, retried); it keeps its heartbeat until SQS confirms.
        ``urgent``: send the batch now (the worker has nothing else to do)."""
        with self._lock:
            self._deletes.append(_Delete(queue_url, receipt_handle, then))
            self._urgent = self._urgent or urgent
            if len(self._deletes) >= C.SQS_MAX_BATCH or urgent:
                self._lock.notify()

    def release(self, messages: list[tuple[str, str]], visibility: int = 0) -> None:
        """Make ``(queue_url, receipt_handle)`` messages visible again after ``visibility`` s
        (sent by the thread, retried)."""
        with self._lock:
            for url, handle in messages:
                self._tracked.pop(handle, None)
                self._releases.append((url, handle, visibility))
            self._lock.notify()

    def dead_letter(self, job: DeadLetterJob) -> None:
        """Send ``job`` to the DLQ, then delete its message and call ``job.done`` (retried until
        the DLQ takes it; the message keeps its heartbeat meanwhile)."""
        with self._lock:
            self._dead_letters.append(job)
            self._lock.notify()

    def flush(self) -> None:
        """Send every queued delete and release now (one try each)."""
        with self._lock:
            deletes, self._deletes = self._deletes, []
            releases, self._releases = self._releases, []
        self._send_deletes(deletes, final=True)
        self._send_releases(releases, final=True)

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
            self._lock.notify()
        if self.is_alive():
            self.join(10)
        self.flush()

    # -- the thread ------------------------------------------------------------------------
    def _sendable(self, now: float) -> list[_Delete]:
        """(Under the lock) the deletes to send now: every ready one when the worker is idle or
        stopping or one has waited ``linger``; else whole batches of ten only, the rest left for
        the next ten or the linger (11 queued sent at once are two requests, one of them for a
        single message)."""
        ready = [d for d in self._deletes if d.due <= now]
        if self._urgent or self._stopping or any(now - d.since >= self.linger for d in ready):
            return ready
        return ready[: len(ready) // C.SQS_MAX_BATCH * C.SQS_MAX_BATCH]

    def _deletes_due(self, now: float) -> bool:
        return self._urgent or self._stopping or bool(self._sendable(now))

    def _take_deletes(self, now: float) -> list[_Delete]:
        """(Under the lock, when :meth:`_deletes_due`) take :meth:`_sendable`'s deletes."""
        taken = self._sendable(now)
        ids = {id(d) for d in taken}
        self._deletes = [d for d in self._deletes if id(d) not in ids]
        self._urgent = False
        return taken

    def run(self) -> None:
        while True:
            with self._lock:
                now = time.monotonic()
                if not self._stopping and not self._deletes_due(now) and not self._releases:
                    self._lock.wait(self.flush_interval)
                if self._stopping:
                    return
                now = time.monotonic()
                deletes: list[_Delete] = []
                if self._deletes_due(now):
                    deletes = self._take_deletes(now)
                releases, self._releases = self._releases, []
                letters = [j for j in self._dead_letters if j.due <= now]
                self._dead_letters = [j for j in self._dead_letters if j.due > now]
                beat_due = (now - self._last_beat >= self.heartbeat_interval
                            or (self._beat_retry_at is not None and now >= self._beat_retry_at))
            try:
                self._send_releases(releases)
                self._send_dead_letters(letters)
                self._send_deletes(deletes)
                if beat_due:
                    self._heartbeat()
            except Exception:  # keep the thread alive whatever happens
                logger.exception("housekeeping failed")

    # -- heartbeat ----------------------------------------------------------------------------
    def _heartbeat(self) -> None:
        now = time.monotonic()
        self._last_beat, self._beat_retry_at = now, None
        cap = C.SQS_MAX_VISIBILITY_SECONDS - 2 * self.heartbeat_interval
        lost: list[str] = []
        with self._lock:
            for t in list(self._tracked.values()):
                if now - t.extended_at >= self.visibility_timeout:  # ran out before we extended it
                    lost.append(t.receipt_handle)
                    del self._tracked[t.receipt_handle]
            due = [(t.queue_url, t.receipt_handle) for t in self._tracked.values()
                   if now - t.received_at + self.visibility_timeout < cap]
        failed, gone = self._change_visibility(due, self.visibility_timeout)
        with self._lock:
            for _url, handle in due:
                tracked = self._tracked.get(handle)
                if tracked is None:
                    continue
                if handle in gone:
                    del self._tracked[handle]
                elif handle not in failed:
                    tracked.extended_at = now
        lost += gone
        if failed:
            self._beat_retry_at = time.monotonic() + 1.0
        if lost and self.on_lost is not None:
            self.on_lost(lost)

    # -- SQS calls -------------------------------------------------------------------------
    @staticmethod
    def _by_queue(items: list[Any], url: Callable[[Any], str]) -> dict[str, list[Any]]:
        grouped: dict[str, list[Any]] = defaultdict(list)
        for item in items:
            grouped[url(item)].append(item)
        return grouped

    def _send_deletes(self, items: list[_Delete], final: bool = False) -> None:
        retry: list[_Delete] = []
        episode = self._episodes["DeleteMessageBatch"]
        for url, entries in self._by_queue(items, lambda d: d.queue_url).items():
            def call(batch: list[dict[str, Any]], url: str = url) -> Any:
                self.requests["DeleteMessageBatch"] += 1
                return self.client.delete_message_batch(QueueUrl=url, Entries=batch)

            for chunk in in_batches(call, entries, lambda d: {"ReceiptHandle": d.receipt_handle}):
                if chunk.error is not None:
                    episode.failed(chunk.error)
                    self.failures["DeleteMessageBatch"] += 1
                    retry.extend(chunk.items)
                    continue
                episode.succeeded()
                for item in chunk.succeeded():
                    self._deleted(item)
                for item, failure in chunk.failed():
                    if failure.get("Code") in GONE_CODES:
                        self._delete_gave_up(item, str(failure.get("Code")))
                    else:
                        self.failures["DeleteMessageBatch"] += 1
                        retry.append(item)
        now = time.monotonic()
        for item in retry:
            item.failures += 1
            if final or now - item.since > DELETE_GIVE_UP_SECONDS:
                self._delete_gave_up(item, "retries exhausted" if not final else "worker stopping")
                continue
            item.due = now + backoff(item.failures, cap=10.0)
        if retry and not final:
            with self._lock:
                self._deletes.extend(i for i in retry if i.due > 0)

    def _deleted(self, item: _Delete) -> None:
        with self._lock:
            self._tracked.pop(item.receipt_handle, None)
        if item.then is not None:
            try:
                item.then()
            except Exception:
                logger.exception("after-delete step failed")

    def _delete_gave_up(self, item: _Delete, why: str) -> None:
        with self._lock:
            self._tracked.pop(item.receipt_handle, None)
        emit("delete-failed", action="(worker)", queue=item.queue_url.rsplit("/", 1)[-1],
                  reason=why, failures=item.failures, level=40)

    def _send_releases(self, items: list[tuple[str, str, int]], final: bool = False) -> None:
        by_visibility: dict[int, list[tuple[str, str]]] = defaultdict(list)
        for url, handle, visibility in items:
            by_visibility[visibility].append((url, handle))
        for visibility, messages in by_visibility.items():
            failed, _ = self._change_visibility(messages, visibility)
            if failed and not final:  # tried again next round (they come back anyway at timeout)
                with self._lock:
                    self._releases.extend((u, h, visibility) for u, h in messages if h in failed)

    def _change_visibility(self, items: list[tuple[str, str]], visibility: int) -> tuple[set[str], set[str]]:
        """Set the visibility of ``items``; ``(failed handles to try again, handles gone)``."""
        failed: set[str] = set()
        gone: set[str] = set()
        episode = self._episodes["ChangeMessageVisibilityBatch"]
        for url, entries in self._by_queue(items, lambda i: i[0]).items():
            def call(batch: list[dict[str, Any]], url: str = url) -> Any:
                self.requests["ChangeMessageVisibilityBatch"] += 1
                return self.client.change_message_visibility_batch(QueueUrl=url, Entries=batch)

            handles = [h for _, h in entries]
            for chunk in in_batches(call, handles, lambda h: {"ReceiptHandle": h,
                                                              "VisibilityTimeout": visibility}):
                if chunk.error is not None:
                    episode.failed(chunk.error)
                    self.failures["ChangeMessageVisibilityBatch"] += 1
                    failed.update(chunk.items)
                    continue
                episode.succeeded()
                for handle, failure in chunk.failed():
                    if failure.get("Code") in GONE_CODES:
                        gone.add(handle)
                    else:
                        self.failures["ChangeMessageVisibilityBatch"] += 1
                        failed.add(handle)
        return failed, gone

    def _send_dead_letters(self, jobs: list[DeadLetterJob]) -> None:
        episode = self._episodes["SendMessage to the DLQ"]
        for job in jobs:
            self.requests["SendMessage"] += 1
            try:
                self.dlq_client.send_message(QueueUrl=job.dlq_url, **job.params)
            except Exception as exc:
                episode.failed(exc)
                job.failures += 1
                self.failures["SendMessage"] += 1
                job.due = time.monotonic() + backoff(job.failures, base=0.5, cap=30.0)
                emit("dead-letter-failed", **{"action": "(unknown)", **job.describe},
                          error_type=error_code(exc), error=str(exc)[:300], failures=job.failures,
                          retry_in_s=round(job.due - time.monotonic(), 3), level=40)
                with self._lock:  # a message no longer ours comes back and is dead-lettered again
                    keep = job.receipt_handle in self._tracked
                    if keep:
                        self._dead_letters.append(job)
                if not keep:
                    emit("dead-letter-dropped", **{"action": "(unknown)", **job.describe},
                              reason="the message is no longer this worker's; it comes back from "
                                     "SQS and is dead-lettered then", failures=job.failures, level=40)
                    if job.dropped is not None:
                        try:
                            job.dropped()
                        except Exception:
                            logger.exception("after-dead-letter-dropped step failed")
                continue
            episode.succeeded()
            self.delete(job.queue_url, job.receipt_handle)
            try:
                job.done()
            except Exception:
                logger.exception("after-dead-letter step failed")


__all__ = ["DeadLetterJob", "Housekeeper", "Tracked"]
