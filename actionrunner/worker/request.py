"""The Celery request of an action: what happens after it ran.

Celery keeps only ``exchange``/``routing_key``/``priority`` of a message's delivery info when it
hands a task to a pool process. :class:`ActionRequest` copies what ActionRunner needs from the SQS
message (group, dedup id, receive count, sent time, attempt) into the request, where the pool
process sees it as ``task.request.sqs``.

After the run (in the worker's main process), success acks the message (Celery's own path). A
failure does not delete it, and is never republished:

* retryable and attempts left → the channel hands the same message to the worker again after the
  action's backoff (exponential, jittered); its group waits;
* :class:`~actionrunner.errors.IdempotencyInProgress` (another run holds the action's key) → the
  same, after the wait it asks for, without using an attempt (logged as ``waiting``);
* otherwise → ``on_exhausted="continue"``: moved to the DLQ with the failure recorded, the group
  goes on; ``"hold"``: left at the head of its group for the queue's redrive policy.
"""

from __future__ import annotations

from typing import Any

from billiard.einfo import ExceptionWithTraceback
from celery.exceptions import Ignore, Reject, Retry, Terminated, WorkerLostError
from celery.worker.request import Request
from celery.worker.state import task_ready
from kombu.utils.encoding import safe_repr

from ..errors import ActionInputError, IdempotencyKeyReused, SchemaVersionRejected
from ..logging import log_event

#: Failures that a retry cannot fix: dead-lettered at once.
NOT_RETRYABLE = (ActionInputError, IdempotencyKeyReused, SchemaVersionRejected)


def sqs_attributes(message: Any) -> dict[str, Any]:
    """The SQS system attributes of a received kombu message (empty if it has none)."""
    delivery_info = getattr(message, "delivery_info", None) or {}
    raw = delivery_info.get("sqs_message") or {}
    attrs = raw.get("Attributes") or {}

    def _int(name: str) -> int | None:
        value = attrs.get(name)
        return int(value) if value not in (None, "") else None

    return {
        "message_id": raw.get("MessageId"),
        "group": attrs.get("MessageGroupId"),
        "dedup_id": attrs.get("MessageDeduplicationId"),
        "receive_count": _int("ApproximateReceiveCount"),
        "attempt": delivery_info.get("actionrunner_attempt") or 1,
        "sent_timestamp_ms": _int("SentTimestamp"),
        "first_receive_timestamp_ms": _int("ApproximateFirstReceiveTimestamp"),
        "sequence_number": attrs.get("SequenceNumber"),
    }


class ActionRequest(Request):
    """A request that forwards the SQS attributes and keeps failed messages (retry / DLQ)."""

    def __init__(self, message: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(message, *args, **kwargs)
        self.sqs = sqs_attributes(message)
        self._request_dict["sqs"] = self.sqs

    # -- helpers ---------------------------------------------------------------------------
    def _channel(self) -> Any:
        channel = getattr(self.message, "channel", None)
        return channel if hasattr(channel, "retry_later") else None

    def _fields(self) -> dict[str, Any]:
        return {"action": self.task.name, "id": self.id, "group": self.sqs.get("group"),
                "dedup_id": self.sqs.get("dedup_id"), "attempt": self.sqs.get("attempt"),
                "receive_count": self.sqs.get("receive_count"),
                "api_run": True if self._request_dict.get("ar_api_run") else None}

    def _after_failure(self, exc: BaseException, countdown: float | None, traceback: str) -> None:
        """Retry on the same message, or dead-letter / hold it: never ack, never republish."""
        if getattr(self, "_failure_handled", False):  # a hard timeout reports twice
            return
        self._failure_handled = True
        task, channel = self.task, self._channel()
        attempt = int(self.sqs.get("attempt") or 1)
        error = {"error_type": type(exc).__name__, "error": str(exc)[:1000], "attempts": attempt}
        retryable = isinstance(exc, Retry) or (
            isinstance(exc, tuple(task.retry_for)) and not isinstance(exc, NOT_RETRYABLE)
        )  # a message whose inputs do not validate will not validate next time either
        task_ready(self)
        if isinstance(exc, Retry) and not getattr(exc, "counts_as_attempt", True):
            # another run holds the action's idempotency key: wait for it, using no attempt
            delay = float(countdown) if countdown is not None else 1.0
            log_event("waiting", **self._fields(), outcome="waiting", retry_in_s=round(delay, 3),
                      reason=str(exc)[:300])
            channel.retry_later(self.message.delivery_tag, delay, count_attempt=False)
            return
        if retryable and attempt < task.max_attempts:
            delay = float(countdown) if countdown is not None else task.backoff(attempt)
            log_event("retrying", **self._fields(), outcome="retrying", retry_in_s=round(delay, 3),
                      **error, level=30)
            self.send_event("task-retried", exception=safe_repr(exc), traceback=traceback)
            channel.retry_later(self.message.delivery_tag, delay)
            return
        self.send_event("task-failed", exception=safe_repr(exc), traceback=traceback)
        if task.on_exhausted == "hold":
            log_event("held", **self._fields(), outcome="held", hold_s=task.hold_seconds, **error,
                      level=40)
            channel.hold(self.message.delivery_tag, task.hold_seconds)
        elif channel.dead_letter(self.message.delivery_tag, error):
            log_event("dead-lettered", **self._fields(), outcome="dead-lettered", **error, level=40)

    # -- Celery's hooks --------------------------------------------------------------------
    _hard_timeout: float | None = None

    def on_timeout(self, soft: bool, timeout: float) -> None:
        if not soft:
            self._hard_timeout = timeout  # Celery rejects the message next: see reject()
        super().on_timeout(soft, timeout)

    def reject(self, requeue: bool = False) -> None:
        if self._hard_timeout is not None and self._channel() is not None:
            # a hard time limit is a failed attempt like any other: retry with backoff, then DLQ
            from celery.exceptions import TimeLimitExceeded

            self._after_failure(TimeLimitExceeded(self._hard_timeout), None, "")
            return
        super().reject(requeue)

    def on_accepted(self, pid: Any, time_accepted: float) -> None:
        super().on_accepted(pid, time_accepted)
        channel = self._channel()
        if channel is not None:
            channel.mark_running(self.message.delivery_tag)

    def on_retry(self, exc_info: Any) -> None:
        if self._channel() is None:
            return super().on_retry(exc_info)  # type: ignore[no-any-return]
        exc = exc_info.exception
        exc = exc.exc if isinstance(exc, ExceptionWithTraceback) else exc
        when = getattr(exc, "when", None)
        countdown = float(when) if isinstance(when, (int, float)) else None
        self._after_failure(exc, countdown, str(exc_info.traceback))

    def on_failure(self, exc_info: Any, send_failed_event: bool = True, return_ok: bool = False) -> None:
        exc = exc_info.exception
        exc = exc.exc if isinstance(exc, ExceptionWithTraceback) else exc
        special = (Terminated, Reject, Ignore, Retry, MemoryError, SystemExit, KeyboardInterrupt)
        if self._channel() is None or isinstance(exc, special):
            return super().on_failure(exc_info, send_failed_event, return_ok)  # type: ignore[no-any-return]
        if isinstance(exc, WorkerLostError):
            log_event("failed", **self._fields(), outcome="failed", error_type="WorkerLostError",
                      error=str(exc)[:500], level=40)
        self._after_failure(exc, None, str(exc_info.traceback))
