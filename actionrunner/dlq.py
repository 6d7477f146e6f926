"""The dead-letter queues: list what is in them (with the recorded failure), redrive, purge.

Every queue actions travel on (``queue_name`` and each lane of ``ACTIONRUNNER_LANES``) has a DLQ
of its own (:meth:`Settings.dlq_of <actionrunner.settings.Settings.dlq_of>`). A dead letter goes
back to the queue it came from: the one its ``actionrunner.source_queue`` attribute names (the
worker and the Lambda runner record it), or, for a message SQS moved itself (its redrive policy:
no attribute), the queue whose DLQ holds it.

Redrive works by receive / send / delete, so it runs on any SQS endpoint (moto and fauxqs have no
StartMessageMoveTask). Within a group, messages are received and sent back in order, so a
redriven group replays in its original order.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from pydantic import BaseModel, Field

from . import constants as C
from .errors import ActionRunnerError
from .settings import Settings

#: How long a listing or redrive keeps the DLQ messages it looked at hidden.
PEEK_VISIBILITY = 60


class UnknownQueue(ActionRunnerError):
    """A queue name that is neither a queue of the settings nor one's DLQ."""


class DeadLetterSummary(BaseModel):
    """A dead-lettered message as the CLI (`actionrunner dlq show`) and the API (GET /v1/dlq) show
    it: its failure is what the worker recorded (error type and message, attempts, when); ``queue``
    is the queue it came from and goes back to on redrive, ``dlq`` the DLQ that holds it."""

    message_id: str
    queue: str = ""
    dlq: str = ""
    group: str
    action: str | None
    run_id: str | None
    failure: dict[str, str]
    sent_at: float | None


class DeadLetter(DeadLetterSummary):
    """One message in the DLQ: its summary, and what redriving or deleting it needs."""

    receipt_handle: str = Field(repr=False, exclude=True)
    raw: dict[str, Any] = Field(repr=False, exclude=True)

    def summary(self) -> DeadLetterSummary:
        """What the CLI and the admin API show of it (everything but the handle and the raw
        message)."""
        return DeadLetterSummary.model_validate(self.model_dump())


def _decode(message: dict[str, Any], dlq: str, source: str) -> DeadLetter:
    headers: dict[str, Any] = {}
    try:
        envelope = json.loads(base64.b64decode(message["Body"], validate=False))
        headers = envelope.get("headers") or {}
    except (ValueError, TypeError):
        try:
            headers = json.loads(message["Body"]).get("headers") or {}
        except (ValueError, TypeError, AttributeError):
            headers = {}
    attrs = message.get("Attributes") or {}
    failure = {k.removeprefix("actionrunner."): v.get("StringValue", "")
               for k, v in (message.get("MessageAttributes") or {}).items()
               if k.startswith("actionrunner.")}
    sent = attrs.get("SentTimestamp")
    recorded = failure.get("source_queue", "").rstrip("/").rsplit("/", 1)[-1]
    return DeadLetter(
        message_id=message["MessageId"], queue=recorded or source, dlq=dlq,
        group=attrs.get("MessageGroupId", ""),
        action=headers.get("task"), run_id=headers.get("id"), failure=failure,
        sent_at=int(sent) / 1000 if sent else None,
        receipt_handle=message["ReceiptHandle"], raw=message,
    )


def queue_url(settings: Settings, client: Any, name: str) -> str:
    """The URL of queue ``name``; :class:`~actionrunner.errors.QueueMissing` (run provision) if
    it does not exist."""
    from .sqs.transport import resolve_queue_url

    return resolve_queue_url(client, name, settings.sqs_endpoint_url)


def resolve_queue(settings: Settings, name: str | None) -> str:
    """The queue ``name`` means: one of ``settings.queues``, or the queue whose DLQ it is
    (``bulk-dlq.fifo`` → ``bulk.fifo``); None: the default queue."""
    if name is None:
        return settings.queue_name
    for queue in settings.queues:
        if name in (queue, settings.dlq_of(queue)):
            return queue
    known = ", ".join(settings.queues)
    raise UnknownQueue(f"{name!r} is not one of this deployment's queues ({known}) nor one's "
                       "DLQ; lanes are declared by ACTIONRUNNER_LANES")


class DeadLetterQueue:
    """Operations on the DLQ of one queue of ``settings`` (``queue``: the queue or its DLQ's name;
    default: ``queue_name``)."""

    def __init__(self, settings: Settings, client: Any = None, queue: str | None = None) -> None:
        self.settings = settings
        self.client = client or settings.client("sqs")
        self.queue = resolve_queue(settings, queue)
        self.name = settings.dlq_of(self.queue)
        self.url = queue_url(settings, self.client, self.name)
        self.source_url = queue_url(settings, self.client, self.queue)
        self._urls = {self.queue: self.source_url}

    def _source_url(self, letter: DeadLetter) -> str | None:
        """Where ``letter`` goes back to: its recorded source queue if that is one of the
        settings' queues (looked up here: the recorded URL may be another endpoint's), else None."""
        if letter.queue not in self._urls:
            if letter.queue not in self.settings.queues:
                return None
            self._urls[letter.queue] = queue_url(self.settings, self.client, letter.queue)
        return self._urls[letter.queue]

    def _receive_all(self, limit: int | None) -> Iterator[DeadLetter]:
        seen = 0
        while limit is None or seen < limit:
            batch = self.client.receive_message(
                QueueUrl=self.url, MaxNumberOfMessages=C.SQS_MAX_BATCH, WaitTimeSeconds=0,
                VisibilityTimeout=PEEK_VISIBILITY, MessageSystemAttributeNames=["All"],
                MessageAttributeNames=["All"],
            ).get("Messages", [])
            if not batch:
                return
            for message in batch:
                seen += 1
                yield _decode(message, self.name, self.queue)

    def _release(self, letters: list[DeadLetter]) -> None:
        for start in range(0, len(letters), C.SQS_MAX_BATCH):
            chunk = letters[start : start + C.SQS_MAX_BATCH]
            self.client.change_message_visibility_batch(
                QueueUrl=self.url,
                Entries=[{"Id": str(i), "ReceiptHandle": d.receipt_handle, "VisibilityTimeout": 0}
                         for i, d in enumerate(chunk)],
            )

    def list(self, limit: int = 100) -> list[DeadLetter]:
        """Up to ``limit`` messages, oldest group first; they stay in the DLQ."""
        letters = list(self._receive_all(limit))
        self._release(letters)
        return letters

    def depth(self) -> int:
        attrs = self.client.get_queue_attributes(
            QueueUrl=self.url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"])

    def redrive(
        self,
        *,
        group: str | None = None,
        action: str | None = None,
        limit: int | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> dict[str, Any]:
        """Move matching messages (all, or by group / action) back to the queue each came from,
        in order. A message whose recorded source is no queue of the settings (a lane since
        removed from ``ACTIONRUNNER_LANES``) stays in the DLQ, counted in ``unknown_source``."""
        operation = uuid.uuid4().hex[:12]
        moved, skipped, unknown = 0, [], 0
        by_queue: dict[str, int] = {}
        for letter in self._receive_all(None):
            matches = (group is None or letter.group == group) and (
                action is None or letter.action == action)
            if not matches or (limit is not None and moved >= limit):
                skipped.append(letter)
                continue
            target = self._source_url(letter)
            if target is None:
                unknown += 1
                skipped.append(letter)
                continue
            attributes = {k: v for k, v in (letter.raw.get("MessageAttributes") or {}).items()
                          if not k.startswith("actionrunner.")}
            send: dict[str, Any] = {
                "QueueUrl": target, "MessageBody": letter.raw["Body"],
                "MessageGroupId": letter.group or "default",
                "MessageDeduplicationId": f"{letter.message_id}:redrive:{operation}",
            }
            if attributes:
                send["MessageAttributes"] = attributes
            self.client.send_message(**send)
            self.client.delete_message(QueueUrl=self.url, ReceiptHandle=letter.receipt_handle)
            moved += 1
            by_queue[letter.queue] = by_queue.get(letter.queue, 0) + 1
            if progress:
                progress(1)
        self._release(skipped)
        return {"moved": moved, "skipped": len(skipped), "by_queue": by_queue,
                "unknown_source": unknown}

    def purge(self, progress: Callable[[int], None] | None = None, wait: float = 0.0,
              sleep: Callable[[float], None] = time.sleep) -> int:
        """Delete every message in the DLQ; returns how many were there.

        SQS purges in the background (up to 60 s): with ``wait``, follow the depth down for up to
        that many seconds, calling ``progress(n)`` with the messages gone since the last call."""
        count = self.depth()
        self.client.purge_queue(QueueUrl=self.url)
        left, deadline = count, time.monotonic() + wait
        while left and time.monotonic() < deadline:
            now = self.depth()
            if progress and now < left:
                progress(left - now)
            left = min(left, now)
            if left:
                sleep(0.5)
        return count


def dead_letter_queues(settings: Settings, client: Any = None,
                       queue: str | None = None) -> list[DeadLetterQueue]:
    """The DLQ of ``queue`` (a queue or its DLQ's name), or of every queue when None."""
    client = client or settings.client("sqs")
    queues = settings.queues if queue is None else [resolve_queue(settings, queue)]
    return [DeadLetterQueue(settings, client, q) for q in queues]


def list_all(dlqs: list[DeadLetterQueue], limit: int = 100) -> list[DeadLetter]:
    """Up to ``limit`` messages of the DLQs ``dlqs``, theirs in order (each DLQ's oldest group
    first)."""
    letters: list[DeadLetter] = []
    for dlq in dlqs:
        if len(letters) >= limit:
            break
        letters += dlq.list(limit - len(letters))
    return letters


def redrive_all(dlqs: list[DeadLetterQueue], progress: Callable[[int], None] | None = None,
                **filters: Any) -> dict[str, Any]:
    """:meth:`DeadLetterQueue.redrive` over ``dlqs``, the results added up (``limit``: in all)."""
    total: dict[str, Any] = {"moved": 0, "skipped": 0, "by_queue": {}, "unknown_source": 0}
    limit = filters.pop("limit", None)
    for dlq in dlqs:
        left = None if limit is None else limit - total["moved"]
        if left is not None and left <= 0:
            break
        done = dlq.redrive(limit=left, progress=progress, **filters)
        for key in ("moved", "skipped", "unknown_source"):
            total[key] += done[key]
        for queue, n in done["by_queue"].items():
            total["by_queue"][queue] = total["by_queue"].get(queue, 0) + n
    return total


def queue_stats(settings: Settings, client: Any = None,
                queue: str | None = None) -> list[dict[str, Any]]:
    """Depth, in-flight count and (where CloudWatch has it) age of the oldest message of each
    queue (``queue``: only that one, by its name or its DLQ's; default: every queue) and its DLQ."""
    client = client or settings.client("sqs")
    queues = settings.queues if queue is None else [resolve_queue(settings, queue)]
    stats = []
    for source, role, name in ((q, role, n) for q in queues
                               for role, n in (("queue", q), ("dlq", settings.dlq_of(q)))):
        url = queue_url(settings, client, name)
        attrs = client.get_queue_attributes(
            QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages",
                                          "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        stats.append({
            "queue": source, "role": role, "name": name, "url": url,
            "visible": int(attrs["ApproximateNumberOfMessages"]),
            "in_flight": int(attrs["ApproximateNumberOfMessagesNotVisible"]),
            "oldest_age_s": oldest_age(settings, name),
        })
    return stats


def oldest_age(settings: Settings, queue_name: str) -> float | None:
    """ApproximateAgeOfOldestMessage from CloudWatch (None where it has no data, e.g. locally).

    SQS itself does not report it, and peeking would count as a receive."""
    try:
        cloudwatch = settings.client("cloudwatch")
        now = time.time()
        points = cloudwatch.get_metric_statistics(
            Namespace="AWS/SQS", MetricName="ApproximateAgeOfOldestMessage",
            Dimensions=[{"Name": "QueueName", "Value": queue_name}],
            StartTime=now - 600, EndTime=now, Period=60, Statistics=["Maximum"],
        ).get("Datapoints", [])
    except Exception:
        return None
    if not points:
        return None
    return float(max(points, key=lambda p: p["Timestamp"])["Maximum"])
