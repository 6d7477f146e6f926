"""The dead-letter queue: list what is in it (with the recorded failure), redrive, purge.

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
from .settings import Settings

#: How long a listing or redrive keeps the DLQ messages it looked at hidden.
PEEK_VISIBILITY = 60


class DeadLetterSummary(BaseModel):
    """A dead-lettered message as the CLI (`actionrunner dlq show`) and the API (GET /v1/dlq) show
    it: its failure is what the worker recorded (error type and message, attempts, when)."""

    message_id: str
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


def _decode(message: dict[str, Any]) -> DeadLetter:
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
    return DeadLetter(
        message_id=message["MessageId"], group=attrs.get("MessageGroupId", ""),
        action=headers.get("task"), run_id=headers.get("id"), failure=failure,
        sent_at=int(sent) / 1000 if sent else None,
        receipt_handle=message["ReceiptHandle"], raw=message,
    )


class DeadLetterQueue:
    """Operations on the DLQ of ``settings``."""

    def __init__(self, settings: Settings, client: Any = None) -> None:
        self.settings = settings
        self.client = client or settings.client("sqs")
        self.url = self.client.get_queue_url(QueueName=settings.dlq_name)["QueueUrl"]
        self.source_url = self.client.get_queue_url(QueueName=settings.queue_name)["QueueUrl"]

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
                yield _decode(message)

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
    ) -> dict[str, int]:
        """Move matching messages back to the queue (all, or by group / action), in order."""
        operation = uuid.uuid4().hex[:12]
        moved, skipped = 0, []
        for letter in self._receive_all(None):
            matches = (group is None or letter.group == group) and (
                action is None or letter.action == action)
            if not matches or (limit is not None and moved >= limit):
                skipped.append(letter)
                continue
            attributes = {k: v for k, v in (letter.raw.get("MessageAttributes") or {}).items()
                          if not k.startswith("actionrunner.")}
            send: dict[str, Any] = {
                "QueueUrl": self.source_url, "MessageBody": letter.raw["Body"],
                "MessageGroupId": letter.group or "default",
                "MessageDeduplicationId": f"{letter.message_id}:redrive:{operation}",
            }
            if attributes:
                send["MessageAttributes"] = attributes
            self.client.send_message(**send)
            self.client.delete_message(QueueUrl=self.url, ReceiptHandle=letter.receipt_handle)
            moved += 1
            if progress:
                progress(1)
        self._release(skipped)
        return {"moved": moved, "skipped": len(skipped)}

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


def queue_stats(settings: Settings, client: Any = None) -> list[dict[str, Any]]:
    """Depth, in-flight count and (where CloudWatch has it) age of the oldest message."""
    client = client or settings.client("sqs")
    stats = []
    for role, name in (("queue", settings.queue_name), ("dlq", settings.dlq_name)):
        url = client.get_queue_url(QueueName=name)["QueueUrl"]
        attrs = client.get_queue_attributes(
            QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages",
                                          "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        stats.append({
            "role": role, "name": name, "url": url,
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
