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
import builtins
import json
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from pydantic import BaseModel, Field

from . import constants as C
from .batch import in_batches
from .errors import ActionRunnerError, error_code
from .settings import Settings
from .settle import ATTRIBUTE_PREFIX, REDRIVES_ATTRIBUTE, failure_attributes
from .signing import key_of, recorded_by_worker

#: How long a listing or redrive keeps the DLQ messages it looked at hidden.
PEEK_VISIBILITY = 60
#: Most messages a redrive's result names with the reason each was left in the DLQ.
MAX_REASONS = 20


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
    #: Times it was redriven (it stays in the DLQ after ``ACTIONRUNNER_MAX_REDRIVES`` unless forced).
    redrives: int = 0
    #: ``actionrunner.*`` attributes the worker did not record (a sender's, on a message SQS moved
    #: itself; see actionrunner/signing.py): shown apart, never taken for the failure.
    sender_attributes: dict[str, str] = Field(default_factory=dict)


class DeadLetter(DeadLetterSummary):
    """One message in the DLQ: its summary, and what redriving or deleting it needs."""

    receipt_handle: str = Field(repr=False, exclude=True)
    raw: dict[str, Any] = Field(repr=False, exclude=True)
    sent_ms: int | None = Field(default=None, repr=False, exclude=True)

    def summary(self) -> DeadLetterSummary:
        """What the CLI and the admin API show of it (everything but the handle and the raw
        message)."""
        return DeadLetterSummary.model_validate(self.model_dump())


def _decode(message: dict[str, Any], dlq: str, source: str,
            signing_key: bytes | None = None) -> DeadLetter:
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
    recorded_attributes = failure_attributes(message)
    redrives = _count(recorded_attributes.pop("redrives", None))
    recorded_attributes.pop("signature", None)
    failure, foreign = ({**recorded_attributes}, {}) if recorded_by_worker(message, signing_key) \
        else ({}, recorded_attributes)
    sent = attrs.get("SentTimestamp")
    recorded = failure.get("source_queue", "").rstrip("/").rsplit("/", 1)[-1]
    return DeadLetter(
        message_id=message["MessageId"], queue=recorded or source, dlq=dlq,
        group=attrs.get("MessageGroupId", ""),
        action=_text(headers.get("task")), run_id=_text(headers.get("id")), failure=failure,
        sent_at=int(sent) / 1000 if sent else None, redrives=redrives, sender_attributes=foreign,
        receipt_handle=message["ReceiptHandle"], raw=message, sent_ms=int(sent) if sent else None,
    )



def _count(value: str | None) -> int:
    try:
        return max(0, int(str(value)))
    except (TypeError, ValueError):
        return 0


def _text(value: Any) -> str | None:
    return value[:256] if isinstance(value, str) else None


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


#: Messages; messages each with a string (the URL it goes back to, or why it stays). Aliases,
#: because in :class:`DeadLetterQueue` ``list`` is its method.
Letters = list[DeadLetter]
Tagged = list[tuple[DeadLetter, str]]


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
        self.signing_key = key_of(settings)

    def _source_url(self, letter: DeadLetter) -> str | None:
        """Where ``letter`` goes back to: its recorded source queue if that is one of the
        settings' queues (looked up here: the recorded URL may be another endpoint's), else None."""
        if letter.queue not in self._urls:
            if letter.queue not in self.settings.queues:
                return None
            self._urls[letter.queue] = queue_url(self.settings, self.client, letter.queue)
        return self._urls[letter.queue]

    def _receive_all(self, limit: int | None, *, max_receives: int | None = None,
                     stop: Callable[[], bool] | None = None) -> Iterator[DeadLetter]:
        """Each message of the DLQ once (by message id), hidden as it is read, until ``limit``
        were read, a receive comes back empty, ``max_receives`` receives were made (default:
        enough for ``limit``, or for the depth now, three times over) or ``stop()``. A read never
        runs on: messages that arrive while it reads can keep a receive from ever being empty."""
        for batch in self._receive_batches(limit, max_receives=max_receives, stop=stop):
            yield from batch

    def _receive_batches(self, limit: int | None, *, max_receives: int | None = None,
                         stop: Callable[[], bool] | None = None) -> Iterator[list[DeadLetter]]:
        """:meth:`_receive_all`, a receive's messages at a time."""
        if max_receives is None:
            size = limit if limit is not None else self.depth()
            max_receives = 3 * (size // C.SQS_MAX_BATCH + 1) + 2
        seen: set[str] = set()
        for _ in range(max_receives):
            if (limit is not None and len(seen) >= limit) or (stop is not None and stop()):
                return
            batch = self.client.receive_message(
                QueueUrl=self.url, MaxNumberOfMessages=C.SQS_MAX_BATCH, WaitTimeSeconds=0,
                VisibilityTimeout=PEEK_VISIBILITY, MessageSystemAttributeNames=["All"],
                MessageAttributeNames=["All"],
            ).get("Messages", [])
            if not batch:
                return
            letters, extra = [], []
            for message in batch:
                if message["MessageId"] in seen:  # read before (its hide ran out): once only
                    continue
                if limit is not None and len(seen) >= limit:
                    extra.append(_decode(message, self.name, self.queue))
                    continue
                seen.add(message["MessageId"])
                letters.append(_decode(message, self.name, self.queue, self.signing_key))
            self._release(extra)
            yield letters

    def _release(self, letters: list[DeadLetter]) -> None:
        def call(entries: list[dict[str, Any]]) -> Any:
            return self.client.change_message_visibility_batch(QueueUrl=self.url, Entries=entries)

        for _ in in_batches(call, letters, lambda d: {"ReceiptHandle": d.receipt_handle,
                                                      "VisibilityTimeout": 0}, catch=()):
            pass  # best effort: a letter left hidden comes back after its visibility timeout

    def list(self, limit: int = 100) -> Letters:
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
        force: bool = False,
        progress: Callable[[int], None] | None = None,
        stop: Callable[[], bool] | None = None,
        now: Callable[[], float] = time.time,
    ) -> dict[str, Any]:
        """Move what the DLQ held when the redrive started (all, or by group / action) back to
        the queue each came from, in order, each message once, then end.

        The snapshot is by sent time and id: a dead letter sent after the start (a redriven
        message that failed again) is left for the next redrive, and a message is read at most
        once; reads are bounded (:meth:`_receive_all`), so a worker failing messages back as fast
        as they go cannot keep it going. A message carries how often it was redriven
        (``actionrunner.redrives``); one redriven ``max_redrives`` times stays in the DLQ, with
        the reason in ``left``, unless ``force``. A message whose recorded source is no queue of
        the settings (a lane since removed) stays too (``unknown_source``). ``stop()`` ends it
        early (``stopped``); what it looked at and did not move is made visible again."""
        started_ms = int(now() * 1000)
        snapshot = self.depth()
        moved, skipped, unknown, newer, undeleted = 0, [], 0, 0, 0
        left: builtins.list[dict[str, str]] = []
        by_queue: dict[str, int] = {}
        max_redrives = self.settings.max_redrives

        def leave(letter: DeadLetter, reason: str) -> None:
            skipped.append(letter)
            if len(left) < MAX_REASONS:
                left.append({"message_id": letter.message_id, "group": letter.group,
                             "reason": reason})

        receives = 3 * (snapshot // C.SQS_MAX_BATCH + 1) + 2
        for batch in self._receive_batches(None, max_receives=receives, stop=stop):
            going: Tagged = []
            for letter in batch:
                if letter.sent_ms is not None and letter.sent_ms >= started_ms:
                    newer += 1  # dead-lettered after this redrive began: not part of it
                    skipped.append(letter)
                    continue
                matches = (group is None or letter.group == group) and (
                    action is None or letter.action == action)
                if not matches or (limit is not None and moved + len(going) >= limit):
                    skipped.append(letter)
                    continue
                if letter.redrives >= max_redrives and not force:
                    leave(letter, f"redriven {letter.redrives} times already "
                                  f"(ACTIONRUNNER_MAX_REDRIVES={max_redrives}): left in the DLQ; "
                                  "force to redrive it again")
                    continue
                target = self._source_url(letter)
                if target is None:
                    unknown += 1
                    leave(letter, f"its source queue {letter.queue!r} is not one of the settings' "
                                  "queues (a lane no longer in ACTIONRUNNER_LANES?)")
                    continue
                going.append((letter, target))
            sent, refused = self._send_back(going)
            for letter, reason in refused:
                leave(letter, reason)
            for letter, reason in self._delete(sent):
                undeleted += 1
                if len(left) < MAX_REASONS:
                    left.append({"message_id": letter.message_id, "group": letter.group,
                                 "reason": reason})
            for letter in sent:
                by_queue[letter.queue] = by_queue.get(letter.queue, 0) + 1
            moved += len(sent)
            if progress and sent:
                progress(len(sent))
        self._release(skipped)
        return {"moved": moved, "skipped": len(skipped), "by_queue": by_queue,
                "unknown_source": unknown, "newer": newer, "left": left,
                "not_deleted": undeleted, "stopped": bool(stop and stop())}

    def _send_back(self, going: Tagged) -> tuple[Letters, Tagged]:
        """Send each ``(letter, target queue URL)`` back (SendMessageBatch, per queue, in order);
        ``(sent, [(refused, why)])``. The dedup id is the DLQ message's own: a send repeated (a
        lost answer, a redrive run again after a failed delete) is dropped by SQS, never a second
        copy. Once a message of a group is refused, the rest of its group stays (order)."""
        sent: Letters = []
        refused: Tagged = []
        by_target: dict[str, Letters] = {}
        for letter, target in going:
            by_target.setdefault(target, []).append(letter)
        for target, letters in by_target.items():
            broken: set[str] = set()
            entries = []
            for index, letter in enumerate(letters):
                attributes = {k: v for k, v in (letter.raw.get("MessageAttributes") or {}).items()
                              if not k.startswith(ATTRIBUTE_PREFIX)}
                attributes[REDRIVES_ATTRIBUTE] = {"DataType": "Number",
                                                  "StringValue": str(letter.redrives + 1)}
                entries.append({"Id": str(index), "MessageBody": letter.raw["Body"],
                                "MessageGroupId": letter.group or "default",
                                "MessageDeduplicationId": f"{letter.message_id}:redrive",
                                "MessageAttributes": attributes})
            try:
                failed = {f["Id"]: f for f in self.client.send_message_batch(
                    QueueUrl=target, Entries=entries).get("Failed", [])}
            except (ClientError, BotoCoreError) as exc:
                failed = {e["Id"]: {"Code": error_code(exc)} for e in entries}
            for index, letter in enumerate(letters):
                failure = failed.get(str(index))
                if failure is None and letter.group not in broken:
                    sent.append(letter)
                    continue
                if failure is not None:
                    broken.add(letter.group)
                    why = f"not sent back: {failure.get('Code')} (tried again by the next redrive)"
                else:
                    why = "an earlier message of its group was not sent back: left to keep order"
                refused.append((letter, why))
        return sent, refused

    def _delete(self, letters: Letters) -> Tagged:
        """Delete the DLQ copies of messages sent back (DeleteMessageBatch); those that could not
        be, with why."""
        kept: Tagged = []

        def call(entries: list[dict[str, Any]]) -> Any:
            return self.client.delete_message_batch(QueueUrl=self.url, Entries=entries)

        for chunk in in_batches(call, letters, lambda d: {"ReceiptHandle": d.receipt_handle},
                                catch=(ClientError, BotoCoreError)):
            kept += [(d, f"sent back, but its DLQ copy was not deleted ({f.get('Code')}): a "
                         "redrive within 5 minutes is dropped by SQS's deduplication")
                     for d, f in chunk.failed()]
        return kept

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
    """:meth:`DeadLetterQueue.redrive` over ``dlqs``, the results added up (``limit``: in all;
    ``stop``: ends the whole redrive)."""
    total: dict[str, Any] = {"moved": 0, "skipped": 0, "by_queue": {}, "unknown_source": 0,
                             "newer": 0, "not_deleted": 0, "left": [], "stopped": False}
    limit = filters.pop("limit", None)
    for dlq in dlqs:
        left = None if limit is None else limit - total["moved"]
        if (left is not None and left <= 0) or total["stopped"]:
            break
        done = dlq.redrive(limit=left, progress=progress, **filters)
        for key in ("moved", "skipped", "unknown_source", "newer", "not_deleted"):
            total[key] += done[key]
        total["left"] = (total["left"] + done["left"])[:MAX_REASONS]
        total["stopped"] = done["stopped"]
        for queue, n in done["by_queue"].items():
            total["by_queue"][queue] = total["by_queue"].get(queue, 0) + n
    return total


class RedriveJob:
    """A redrive running in a thread of its own (the admin API's large redrives): its
    :attr:`status` can be read at any time, :meth:`stop` ends it between two messages."""

    def __init__(self, dlqs: list[DeadLetterQueue], **filters: Any) -> None:
        import threading

        self.id = uuid.uuid4().hex[:16]
        self.total = sum(d.depth() for d in dlqs)
        self.done = 0
        self.state = "running"
        self.result: dict[str, Any] | None = None
        self.error: str | None = None
        self.started_at = time.time()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(dlqs, filters), daemon=True,
                                        name=f"redrive-{self.id}")

    def start(self) -> RedriveJob:
        self._thread.start()
        return self

    def _advance(self, n: int) -> None:
        self.done += n

    def _run(self, dlqs: list[DeadLetterQueue], filters: dict[str, Any]) -> None:
        try:
            self.result = redrive_all(dlqs, progress=self._advance, stop=self._stopping.is_set,
                                      **filters)
            self.state = "stopped" if self.result["stopped"] else "succeeded"
        except Exception as exc:  # reported in the status, never raised into the server
            self.error = f"{type(exc).__name__}: {exc}"[:500]
            self.state = "failed"

    def stop(self, timeout: float = 10.0) -> None:
        """Ask it to end and wait up to ``timeout`` s (what it looked at goes back to the DLQ)."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def wait(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    @property
    def status(self) -> dict[str, Any]:
        return {"id": self.id, "state": self.state, "moved": self.done, "total_at_start": self.total,
                "result": self.result, "error": self.error, "started_at": self.started_at}


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
