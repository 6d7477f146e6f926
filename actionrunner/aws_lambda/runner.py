"""One batch of an SQS FIFO event source mapping, run with the worker's semantics.

Records run one at a time, in the order Lambda gives them (FIFO order within each group; the
SequenceNumber is not re-sorted: Lambda already orders a group, and emulators number at random).
Each goes through Celery's tracer exactly as in a worker's pool process, so ``Action.__call__``
validates the inputs and claims the idempotency key, and the ``started`` / ``succeeded`` /
``failed`` lines come from the same signals. After a failure (compare
:mod:`actionrunner.worker.request`):

==================================  ==========================================================
the run                             the record
==================================  ==========================================================
succeeded, or replayed (the key     left to Lambda, which deletes it; its group goes on
was completed before)
failed, attempts left               reported, hidden for the action's backoff (``retrying``)
another run holds the key           reported, hidden for the wait asked (``waiting``; not an
                                    attempt)
failed for good, ``continue``       sent to the DLQ with the failure attributes; group goes on
failed for good, ``hold``           reported, hidden ``hold_seconds`` (``held``)
unknown action / undecodable        sent to the DLQ at once
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
from celery.exceptions import Reject, Retry
from celery.states import IGNORED, REJECTED

from .. import constants as C
from ..action import is_action
from ..logging import get_logger, log_event
from ..settings import Settings
from ..sqs import claimcheck
from ..worker.request import NOT_RETRYABLE, ActionRequest
from .attempts import AttemptLog
from .events import decode, queue_name_of, to_sqs_message

log = get_logger("actionrunner.lambda")

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
            else:
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
        pointer = claimcheck.pointer_of(message["Body"])
        readable = message
        if pointer is not None:  # the payload is in S3
            try:
                readable = {**message, "Body": claimcheck.fetch(self.s3, *pointer)}
            except Exception as exc:
                log.error("payload-fetch-failed", message_id=message["MessageId"],
                          location=f"s3://{pointer[0]}/{pointer[1]}", error=repr(exc)[:300])
                return Outcome("retrying", report=True, visibility=30)
        attrs = message["Attributes"]
        receive_count = int(attrs.get("ApproximateReceiveCount") or 1)
        attempt = self.attempts.failures(queue, message["MessageId"], receive_count) + 1
        fields: dict[str, Any] = {"group": attrs.get("MessageGroupId"), "attempt": attempt,
                                  "dedup_id": attrs.get("MessageDeduplicationId"),
                                  "receive_count": receive_count}
        try:
            kombu_message = decode(readable, queue, attempt=attempt)
            name = kombu_message.headers["task"]
            fields.update(action=name, id=kombu_message.headers.get("id"))
            task = self.app.tasks.get(name)
            if not is_action(task):
                raise LookupError(f"no action named {name!r} in this function (ACTIONRUNNER_IMPORTS?)")
            request = ActionRequest(kombu_message, app=self.app, task=task, hostname=self.hostname)
        except Exception as exc:  # nothing to run: the worker dead-letters these at once too
            return self._dead_letter(message, queue, fields, {
                "error_type": type(exc).__name__, "error": str(exc), "attempts": attempt})
        args, kwargs, embed = kombu_message.decode()
        context = {**request.request_dict, "loglevel": None, "logfile": None, "is_eager": False,
                   **(embed or {})}
        _, info, _, _ = trace_task(task, request.id, args, kwargs, context, hostname=self.hostname,
                                   loader=self.app.loader, app=self.app)
        if info is None or info.state == IGNORED:
            if pointer is not None:  # done: the claim-checked payload goes too
                self._delete_payload(*pointer)
            return Outcome("succeeded")
        exc = info.retval
        if info.state == REJECTED and isinstance(exc, Reject) and exc.requeue:
            return Outcome("released", report=True)
        return self._after_failure(task, exc, message, queue, fields, attempt)

    def _after_failure(self, task: Any, exc: BaseException, message: dict[str, Any], queue: str,
                       fields: dict[str, Any], attempt: int) -> Outcome:
        error = {"error_type": type(exc).__name__, "error": str(exc)[:1000], "attempts": attempt}
        when = getattr(exc, "when", None)
        countdown = float(when) if isinstance(when, int | float) else None
        if isinstance(exc, Retry) and not getattr(exc, "counts_as_attempt", True):
            delay = countdown if countdown is not None else 1.0  # another run holds the key
            log_event("waiting", **fields, outcome="waiting", retry_in_s=round(delay, 3),
                      reason=str(exc)[:300])
            return Outcome("waiting", report=True, visibility=delay)
        retryable = isinstance(exc, Retry) or (
            isinstance(exc, tuple(task.retry_for)) and not isinstance(exc, NOT_RETRYABLE))
        if isinstance(exc, Reject) or not retryable or attempt >= task.max_attempts:
            if task.on_exhausted == "hold" and not isinstance(exc, Reject):
                log_event("held", **fields, outcome="held", hold_s=task.hold_seconds, **error,
                          level=40)
                return Outcome("held", report=True, visibility=task.hold_seconds)
            return self._dead_letter(message, queue, fields, error)
        self.attempts.record_failure(queue, message["MessageId"])
        delay = countdown if countdown is not None else task.backoff(attempt)
        log_event("retrying", **fields, outcome="retrying", retry_in_s=round(delay, 3), **error,
                  level=30)
        return Outcome("retrying", report=True, visibility=delay)

    def _dead_letter(self, message: dict[str, Any], queue: str, fields: dict[str, Any],
                     failure: dict[str, Any]) -> Outcome:
        """Send the message to the DLQ as the worker does (body, group, attributes, failure);
        Lambda then deletes it. If the DLQ refuses it, it is reported and tried again later."""
        attrs = message["Attributes"]
        attributes = dict(message.get("MessageAttributes") or {})
        for key, value in {
            "actionrunner.error_type": failure.get("error_type"),
            "actionrunner.error": (failure.get("error") or "")[:1000] or None,
            "actionrunner.attempts": failure.get("attempts"),
            "actionrunner.receive_count": attrs.get("ApproximateReceiveCount"),
            "actionrunner.source_queue": self._url(queue),
            "actionrunner.failed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }.items():
            if value is not None:
                attributes[key] = {"DataType": "String", "StringValue": str(value)}
        try:
            self.sqs.send_message(
                QueueUrl=self._url(self.settings.dlq_name), MessageBody=message["Body"],
                MessageGroupId=attrs.get("MessageGroupId") or "default",
                MessageDeduplicationId=f"{message['MessageId']}:dlq:"
                                       f"{attrs.get('ApproximateReceiveCount', '0')}",
                MessageAttributes=attributes)
        except Exception as exc:
            log.error("dead-letter-failed", message_id=message["MessageId"], error=repr(exc)[:300])
            return Outcome("retrying", report=True, visibility=30)
        log_event("dead-lettered", **fields, outcome="dead-lettered", **failure, level=40)
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
            for start in range(0, len(items), C.SQS_MAX_BATCH):
                chunk = items[start:start + C.SQS_MAX_BATCH]
                batch = [{"Id": str(i), "ReceiptHandle": receipt,
                          "VisibilityTimeout": min(C.SQS_MAX_VISIBILITY_SECONDS, math.ceil(max(0.0, s)))}
                         for i, (receipt, s) in enumerate(chunk)]
                try:
                    failed = self.sqs.change_message_visibility_batch(
                        QueueUrl=self._url(queue), Entries=batch).get("Failed") or []
                except Exception as exc:
                    failed = [{"Code": repr(exc)[:300]}]
                if failed:
                    log.warning("visibility-not-changed", queue=queue, failed=len(failed),
                                first=str(failed[0].get("Code")))
