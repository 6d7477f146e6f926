"""One batch of an SQS FIFO event source mapping, run with the worker's semantics.

Records run one at a time, in the order Lambda gives them (FIFO order within each group; the
SequenceNumber is not re-sorted: Lambda already orders a group, and emulators number at random).
Each goes through Celery's tracer exactly as in a worker's pool process, so ``Action.__call__``
validates the inputs and claims the idempotency key, and the ``started`` / ``succeeded`` /
``failed`` lines come from the same signals. After a failure, the outcome is the worker's own
(:func:`actionrunner.settle.decide`; compare :mod:`actionrunner.worker.request`):

==================================  ==========================================================
the run                             the record
==================================  ==========================================================
succeeded, or replayed (the key     left to Lambda, which deletes it; its group goes on
was completed before)
failed, attempts left               reported, hidden for the action's backoff (``retrying``)
another run holds the key           reported, hidden for the wait asked (``waiting``; not an
                                    attempt)
the action's ``max_concurrency`` is  waits in the invocation for a slot (up to
reached                             ``ACTIONRUNNER_CONCURRENCY_LAMBDA_WAIT_SECONDS``), then
                                    reported like a wait (``waiting``; not an attempt)
failed for good, ``continue``       sent to the DLQ with the failure attributes; group goes on
failed for good, ``hold``           reported, hidden ``hold_seconds`` (``held``)
unknown action / undecodable        sent to the DLQ at once (:mod:`actionrunner.sqs.inbound`)
the DLQ send failed                 reported; on its next receive it goes to the DLQ without
                                    running again
==================================  ==========================================================

A claim-checked message (its body a pointer to S3, :mod:`actionrunner.sqs.claimcheck`) is read
from S3 first; its object is deleted once the action succeeded, and kept (the pointer goes to
the DLQ) otherwise, as on the worker.

A reported record blocks the rest of its group in the batch: they are reported too, unstarted,
and released at once (SQS keeps them behind their head). Other groups go on (AWS Powertools'
``SqsFifoPartialProcessor(skip_group_on_error=True)``). When less than ``time_margin`` seconds of
the invocation are left, the remaining records are reported unstarted.
"""

from __future__ import annotations

import math
import os
import socket
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any

from celery import Celery
from celery.app.trace import trace_task
from celery.states import IGNORED

from .. import constants as C
from ..action import is_action
from ..batch import in_batches
from ..errors import UndecodableMessage
from ..events import emit
from ..logging import get_logger
from ..runnable import expired
from ..settings import Settings
from ..settle import (
    UNDECODABLE,
    Hold,
    Policy,
    Reason,
    Release,
    Retry,
    Wait,
    announce,
    dead_letter_entry,
    decide,
    expired_outcome,
)
from ..signing import key_of
from ..sqs import claimcheck
from ..sqs.delivery import Delivery
from ..sqs.inbound import describe
from ..state.concurrency import waiting_until
from ..worker.request import ActionRequest
from .attempts import AttemptLog
from .events import decode, queue_name_of, to_sqs_message

log = get_logger("actionrunner.lambda")

def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


#: Records are not started with less than this many seconds of the invocation left.
TIME_MARGIN_SECONDS = 10.0


@dataclass(frozen=True)
class Outcome:
    """What became of one record: ``report`` it in ``batchItemFailures`` (SQS keeps it) and block
    the rest of its group; ``visibility``: seconds before SQS hands it out again."""

    status: str
    report: bool = False
    visibility: float = 0.0


class LambdaRunner:
    """Runs the records of SQS events; :meth:`handle` returns the partial batch response."""

    def __init__(self, app: Celery, settings: Settings, *, sqs: Any = None, dynamodb: Any = None,
                 s3: Any = None, time_margin: float = TIME_MARGIN_SECONDS,
                 hostname: str | None = None) -> None:
        self.app, self.settings, self.time_margin = app, settings, time_margin
        self.sqs = sqs or settings.client("sqs")
        self._s3 = s3
        self.attempts = AttemptLog(settings.state_table, dynamodb or settings.client("dynamodb"),
                                   settings.message_retention_seconds)
        function = os.environ.get("AWS_LAMBDA_FUNCTION_NAME") or socket.gethostname()
        self.hostname = hostname or f"lambda@{function}"
        self._urls: dict[str, str] = {}

    # -- the batch -------------------------------------------------------------------------
    def handle(self, event: dict[str, Any], context: Any = None) -> dict[str, Any]:
        records = event.get("Records") or []
        failures: list[dict[str, str]] = []
        visibility: list[tuple[str, str, float]] = []  # (queue ARN, receipt handle, seconds)
        blocked: set[str] = set()
        counts: Counter[str] = Counter()
        out_of_time = False
        for record in records:
            group = (record.get("attributes") or {}).get("MessageGroupId", "")
            out_of_time = out_of_time or self._seconds_left(context) < self.time_margin
            if out_of_time or group in blocked:
                outcome = Outcome("not-started", report=True)
            else:  # a record over its action's max_concurrency may wait here a while for a slot
                patience = min(self.settings.concurrency_lambda_wait_seconds,
                               self._seconds_left(context) - self.time_margin)
                with waiting_until(time.monotonic() + patience if patience > 0 else None):
                    outcome = self.run(record)
            counts[outcome.status] += 1
            if outcome.report:
                blocked.add(group)
                failures.append({"itemIdentifier": record["messageId"]})
                visibility.append((record["eventSourceARN"], record["receiptHandle"],
                                   outcome.visibility))
        self._set_visibility(visibility)
        summary = {k.replace("-", "_"): v for k, v in counts.items()}
        if out_of_time:
            summary["out_of_time"] = True
        log.info("lambda-batch", records=len(records), reported=len(failures), **summary)
        return {"batchItemFailures": failures}

    @staticmethod
    def _seconds_left(context: Any) -> float:
        remaining = getattr(context, "get_remaining_time_in_millis", None)
        return remaining() / 1000 if remaining else math.inf

    # -- one record ------------------------------------------------------------------------
    def run(self, record: dict[str, Any]) -> Outcome:
        message = to_sqs_message(record)
        queue = queue_name_of(record["eventSourceARN"])
        attrs = message["Attributes"]
        receive_count = _int(attrs.get("ApproximateReceiveCount")) or 1
        fields: dict[str, Any] = {"group": attrs.get("MessageGroupId"),
                                  "dedup_id": attrs.get("MessageDeduplicationId"),
                                  "receive_count": receive_count}
        try:
            pointer = claimcheck.pointer_of(message["Body"])
            body = None
            if pointer is not None:  # the payload is in S3 (only from the payload bucket)
                claimcheck.check(pointer, message.get("MessageAttributes"),
                                 bucket=self.settings.payload_bucket,
                                 max_bytes=self.settings.max_decoded_bytes)
                try:
                    body = claimcheck.fetch(self.s3, *pointer, self.settings.max_decoded_bytes)
                except UndecodableMessage:
                    raise
                except Exception as exc:  # reported: its group waits behind it, in order
                    log.error("payload-fetch-failed", message_id=message["MessageId"],
                              location=f"s3://{pointer[0]}/{pointer[1]}", error=repr(exc)[:300])
                    # one fetch per receive: after the bound, dead-lettered (never held on)
                    if receive_count >= claimcheck.give_up_after(
                            exc, self.settings.payload_fetch_attempts):
                        raise claimcheck.unreadable(*pointer, exc, receive_count) from None
                    return Outcome("retrying", report=True, visibility=30)
            kombu_message = decode(message, queue, max_bytes=self.settings.max_decoded_bytes,
                                   is_registered=lambda name: is_action(self.app.tasks.get(name)),
                                   body=body)
        except UndecodableMessage as exc:  # nothing to run: dead-lettered at once, as on a worker
            described = describe(message)
            fields.update(action=described.get("action") or "(undecodable)", id=described.get("id"),
                          attempt=1)
            return self._apply(decide(UNDECODABLE, exc, attempt=1, receive_count=receive_count),
                               message, queue, fields)
        if expired(kombu_message.headers, time.time()):  # as on a worker: never silent
            described = describe(message)
            fields.update(action=described.get("action"), id=described.get("id"), attempt=1)
            emit("expired", **fields, level=30, expires=str(kombu_message.headers.get("expires"))[:40],
                      outcome="discarded" if self.settings.expired == "discard" else "dead-letter")
            outcome = expired_outcome(self.settings.expired, kombu_message.headers, attempt=1,
                                      receive_count=receive_count)
            if outcome is None:
                return Outcome("succeeded")
            return self._apply(outcome, message, queue, fields)
        attempt = self.attempts.failures(queue, message["MessageId"], receive_count) + 1
        name = kombu_message.headers["task"]
        task = self.app.tasks[name]
        policy = Policy.of(task)
        fields.update(action=name, id=kombu_message.headers.get("id"), attempt=attempt)
        if attempt > policy.max_attempts:  # failed for good before, but the DLQ did not take it
            reason = Reason("AttemptsExhausted", f"failed {attempt - 1} times; dead-lettered now "
                            "(an earlier DLQ send failed)", attempt - 1, receive_count)
            return self._dead_letter(message, queue, fields, reason, policy)
        # the same Delivery a worker's consumer attaches (actionrunner.sqs.delivery)
        Delivery.from_sqs(message, headers=kombu_message.headers, attempt=attempt,
                          pointer=pointer).attach(kombu_message.delivery_info)
        request = ActionRequest(kombu_message, app=self.app, task=task, hostname=self.hostname)
        args, kwargs, embed = kombu_message.decode()
        context = {**request.request_dict, "loglevel": None, "logfile": None, "is_eager": False,
                   **(embed or {})}
        _, info, _, _ = trace_task(task, request.id, args, kwargs, context, hostname=self.hostname,
                                   loader=self.app.loader, app=self.app)
        if info is None or info.state == IGNORED:
            if pointer is not None:  # done: the claim-checked payload goes too
                self._delete_payload(*pointer)
            return Outcome("succeeded")
        error = info.retval
        when = getattr(error, "when", None)
        decided = decide(policy, error, attempt=attempt, receive_count=receive_count,
                         countdown=float(when) if isinstance(when, int | float) else None)
        if isinstance(decided, Retry):
            self.attempts.record_failure(queue, message["MessageId"])
        return self._apply(decided, message, queue, fields, policy)

    def _apply(self, outcome: Any, message: dict[str, Any], queue: str,
               fields: dict[str, Any], policy: Policy | None = None) -> Outcome:
        """What Lambda does with the record for ``outcome`` (the worker applies the same
        outcomes through its channel)."""
        announce(outcome, fields)
        if isinstance(outcome, Retry | Wait):
            return Outcome(outcome.event, report=True, visibility=outcome.delay)
        if isinstance(outcome, Hold):
            return Outcome("held", report=True, visibility=outcome.seconds)
        if isinstance(outcome, Release):
            return Outcome("released", report=True)
        return self._dead_letter(message, queue, fields, outcome.reason, policy)

    def _dead_letter(self, message: dict[str, Any], queue: str, fields: dict[str, Any],
                     reason: Reason, policy: Policy | None = None) -> Outcome:
        """Send the message to the DLQ as the worker does (:func:`dead_letter_entry`); Lambda then
        deletes it. If the DLQ refuses it, it is reported and tried again on its next receive."""
        entry = dead_letter_entry(message, reason, source_queue=self._url(queue),
                                  signing_key=key_of(self.settings))
        try:
            self.sqs.send_message(QueueUrl=self._url(self.settings.dlq_of(queue)), **entry.params)
        except Exception as exc:
            emit("dead-letter-failed", **{"action": "(unknown)", **fields},
                      error_type=type(exc).__name__, error=repr(exc)[:300], level=40)
            if policy is not None:  # its next receive dead-letters it without running it again
                self.attempts.record_failure(queue, message["MessageId"], by=policy.max_attempts)
            return Outcome("retrying", report=True, visibility=30)
        emit("dead-lettered", **fields, outcome="dead-lettered", **reason.fields(), level=40)
        return Outcome("dead-lettered")

    # -- SQS and S3 ------------------------------------------------------------------------
    @property
    def s3(self) -> Any:
        if self._s3 is None:
            self._s3 = self.settings.client("s3")
        return self._s3

    def _delete_payload(self, bucket: str, key: str) -> None:
        try:
            self.s3.delete_object(Bucket=bucket, Key=key)
        except Exception as exc:  # the bucket's lifecycle rule expires it
            log.warning("payload-delete-failed", location=f"s3://{bucket}/{key}", error=repr(exc)[:300])

    def _url(self, queue: str) -> str:
        if queue not in self._urls:
            self._urls[queue] = self.sqs.get_queue_url(QueueName=queue)["QueueUrl"]
        return self._urls[queue]

    def _set_visibility(self, entries: list[tuple[str, str, float]]) -> None:
        """Hide each reported record for its delay (0: back at once), ten per request; best
        effort: a record left alone comes back after the queue's visibility timeout."""
        by_queue: dict[str, list[tuple[str, float]]] = defaultdict(list)
        for arn, receipt, seconds in entries:
            by_queue[queue_name_of(arn)].append((receipt, seconds))
        for queue, items in by_queue.items():
            def call(batch: list[dict[str, Any]], queue: str = queue) -> Any:
                return self.sqs.change_message_visibility_batch(QueueUrl=self._url(queue), Entries=batch)

            for chunk in in_batches(call, items, lambda item: {
                    "ReceiptHandle": item[0],
                    "VisibilityTimeout": min(C.SQS_MAX_VISIBILITY_SECONDS, math.ceil(max(0.0, item[1])))}):
                failed = ([{"Code": repr(chunk.error)[:300]}] if chunk.error is not None
                          else [f for _, f in chunk.failed()])
                if failed:
                    log.warning("visibility-not-changed", queue=queue, failed=len(failed),
                                first=str(failed[0].get("Code")))
