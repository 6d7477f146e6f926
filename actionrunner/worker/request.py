"""The Celery request of an action: what happens after it ran.

Celery keeps only ``exchange``/``routing_key``/``priority`` of a message's delivery info when it
hands a task to a pool process. :class:`ActionRequest` copies what ActionRunner needs from the SQS
message (group, dedup id, receive count, sent time, attempt) into the request, where the pool
process sees it as ``task.request.sqs``.

After the run (in the worker's main process), success acks the message (Celery's own path). A
failure is never acked and never republished: :func:`actionrunner.settle.decide` chooses the
outcome (retry on the same message after the backoff, wait for another run's idempotency key,
hold, or dead-letter), and the channel applies it through the
:class:`~actionrunner.settle.MessageSettler` interface — the same decision the Lambda runtime
applies (:mod:`actionrunner.aws_lambda.runner`).
"""

from __future__ import annotations

from typing import Any, cast

from billiard.einfo import ExceptionWithTraceback
from celery.exceptions import Ignore, Retry, Terminated, WorkerLostError
from celery.utils.saferepr import saferepr
from celery.worker.request import Request
from celery.worker.state import task_ready
from kombu.utils.encoding import safe_repr

from ..events import emit
from ..settle import DeadLetter, Hold, MessageSettler, Policy, announce, decide, expired_outcome
from ..settle import Retry as RetryOutcome
from ..sqs.delivery import Delivery

#: Longest argsrepr/kwargsrepr made here (Celery's own at send: ``Task.argsrepr_maxsize``).
REPR_MAX = 1024


def sqs_attributes(message: Any) -> dict[str, Any]:
    """What the pool process sees as ``task.request.sqs``: the :class:`~actionrunner.sqs.delivery.Delivery`
    of a received kombu message, as plain data."""
    return Delivery.of(message).request_fields()


class ActionRequest(Request):
    """A request that forwards the SQS attributes and keeps failed messages (retry / DLQ)."""

    def __init__(self, message: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(message, *args, **kwargs)
        self.delivery = Delivery.of(message)
        self.sqs = self.delivery.request_fields()
        self._request_dict["sqs"] = self.sqs
        # what goes to the pool process is pickled: not the raw SQS message again (its body,
        # attributes and receipt handle; the pool has the decoded body and ``sqs``)
        properties = self._request_dict.get("properties")
        if isinstance(properties, dict) and "sqs_message" in (properties.get("delivery_info") or {}):
            self._request_dict["properties"] = {**properties, "delivery_info": {
                k: v for k, v in properties["delivery_info"].items() if k != "sqs_message"}}

    # -- the arguments as text (Flower's task-received event, celery inspect, log lines) ------
    # A compact message leaves argsrepr/kwargsrepr out (the body holds the arguments once):
    # they are made from the body here, only when something asks for them.
    _argsrepr: str | None  # Celery's Request sets both from the message's headers
    _kwargsrepr: str | None

    @property
    def argsrepr(self) -> str:
        if not self._argsrepr:
            # (a tuple, as Celery's sender makes it of apply_async's args: "(2, 2)")
            self._argsrepr = saferepr(tuple(self._request_dict.get("args") or ()), REPR_MAX)
        return str(self._argsrepr)

    @property
    def kwargsrepr(self) -> str:
        if not self._kwargsrepr:
            self._kwargsrepr = saferepr(self._request_dict.get("kwargs") or {}, REPR_MAX)
        return str(self._kwargsrepr)

    def info(self, safe: bool = False) -> dict[str, Any]:
        if safe:
            self.argsrepr, self.kwargsrepr  # noqa: B018  (made before Celery reads them)
        return cast("dict[str, Any]", super().info(safe))  # (Celery's Request is untyped)

    # -- helpers ---------------------------------------------------------------------------
    def _channel(self) -> MessageSettler | None:
        channel = getattr(self.message, "channel", None)
        return channel if isinstance(channel, MessageSettler) else None

    def _fields(self) -> dict[str, Any]:
        return {"action": self.task.name, "id": self.id, "group": self.sqs.get("group"),
                "dedup_id": self.sqs.get("dedup_id"), "attempt": self.sqs.get("attempt"),
                "receive_count": self.sqs.get("receive_count"),
                "api_run": True if self.delivery.api_run else None}

    def _after_failure(self, exc: BaseException, countdown: float | None, traceback: str) -> None:
        """Settle a failed run: never ack, never republish."""
        if getattr(self, "_failure_handled", False):  # a hard timeout reports twice
            return
        self._failure_handled = True
        channel = self._channel()
        assert channel is not None
        outcome = decide(Policy.of(self.task), exc, attempt=int(self.sqs.get("attempt") or 1),
                         receive_count=self.sqs.get("receive_count"), countdown=countdown)
        task_ready(self)
        fields = self._fields()
        announce(outcome, fields)
        if isinstance(outcome, RetryOutcome):
            self.send_event("task-retried", exception=safe_repr(exc), traceback=traceback)
        elif isinstance(outcome, Hold | DeadLetter):
            self.send_event("task-failed", exception=safe_repr(exc), traceback=traceback)
        channel.settle(self.message.delivery_tag, outcome, fields)

    # -- Celery's hooks --------------------------------------------------------------------
    _hard_timeout: float | None = None

    def execute_using_pool(self, pool: Any, **kwargs: Any) -> Any:
        channel = self._channel()
        if channel is not None and not channel.holds(self.message.delivery_tag):
            # its visibility was lost before it started: it runs wherever SQS hands it out next
            emit("skipped", **self._fields(), reason="the message is no longer this worker's")
            task_ready(self)
            return None
        return super().execute_using_pool(pool, **kwargs)

    def _announce_revoked(self, reason: Any, terminated: Any, signum: Any, expired: Any) -> None:
        """An expired message (its ``expires`` passed, on receipt or at its turn) is not deleted
        silently as Celery does: an ``expired`` line (metric ``ActionsExpired``), then the DLQ
        (error type ``MessageExpired``) unless ``ACTIONRUNNER_EXPIRED=discard``."""
        channel = self._channel()
        if not expired or channel is None:
            super()._announce_revoked(reason, terminated, signum, expired)
            return
        from ..settings import get_settings

        setting = get_settings().expired
        fields = self._fields()
        emit("expired", **fields, outcome="discarded" if setting == "discard" else "dead-letter",
                  expires=str(self._request_dict.get("expires"))[:40], level=30)
        outcome = expired_outcome(setting, self._request_dict, attempt=int(self.sqs.get("attempt") or 1),
                                  receive_count=self.sqs.get("receive_count"))
        if outcome is None:
            super()._announce_revoked(reason, terminated, signum, expired)
            return
        task_ready(self)
        self.send_event("task-revoked", terminated=terminated, signum=signum, expired=expired)
        self._already_revoked = True
        channel.settle(self.message.delivery_tag, outcome, fields)

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
            super().on_retry(exc_info)
            return
        exc = exc_info.exception
        exc = exc.exc if isinstance(exc, ExceptionWithTraceback) else exc
        when = getattr(exc, "when", None)
        countdown = float(when) if isinstance(when, int | float) else None
        self._after_failure(exc, countdown, str(exc_info.traceback))

    def on_failure(self, exc_info: Any, send_failed_event: bool = True, return_ok: bool = False) -> None:
        exc = exc_info.exception
        exc = exc.exc if isinstance(exc, ExceptionWithTraceback) else exc
        # (a Reject is settled here too: requeue=True releases the message, with its group
        # behind it; requeue=False dead-letters it, its result FAILURE with the task's Reject)
        special = (Terminated, Ignore, Retry, MemoryError, SystemExit, KeyboardInterrupt)
        if self._channel() is None or isinstance(exc, special):
            super().on_failure(exc_info, send_failed_event, return_ok)
            return
        if isinstance(exc, WorkerLostError):
            emit("failed", **self._fields(), outcome="failed", error_type="WorkerLostError",
                      error=str(exc)[:500], level=40)
        self._after_failure(exc, None, str(exc_info.traceback))
