"""The monitoring queues' names and timings: which kombu queue is which kind of listener, and
its SQS name (see the package docstring)."""

from __future__ import annotations

import hashlib
from typing import Literal

Kind = Literal["box", "rep", "ev"]
KINDS: tuple[Kind, ...] = ("box", "rep", "ev")
#: ``ACTIONRUNNER_MONITOR_QUEUE_PREFIX``'s default.
DEFAULT_PREFIX = "actionrunner-mon-"

#: SQS keeps a message at least this long (its minimum MessageRetentionPeriod).
RETENTION_SECONDS = 60
#: Longer than the retention: a received message expires before it could be received again.
VISIBILITY_SECONDS = 120
#: How long a listing of listener queues is trusted. A new listener is found sooner: Flower and
#: `celery events` broadcast when they start, and a worker that receives a broadcast looks again.
LISTING_TTL_SECONDS = 30.0
#: Seconds between janitor passes over the event queues (in processes that send events).
JANITOR_INTERVAL_SECONDS = 60.0
#: Long poll of a client's reply queue: ``celery inspect`` collects for about a second.
REPLY_WAIT_SECONDS = 1
#: What a new event listener sends to every worker's mailbox: a dozing worker wakes up (and
#: looks for listeners) at its next read; the worker drops it (it is not a Celery command).
KNOCK_BODY = '{"actionrunner": "knock"}'
#: The tag a dozing worker puts on its mailbox queue (which workers doze, for operators).
DOZING_TAG = "actionrunner-dozing"
#: A dozing mailbox's long poll: SQS's longest, so it costs 3 requests a minute and still hands
#: a command over the moment it arrives (``mailbox_doze_poll`` may make it shorter).
DOZING_WAIT_SECONDS = 20
#: A command unread in a mailbox this long has no reader (its worker was killed): a live worker,
#: awake or dozing, long-polls its mailbox and reads within milliseconds, seconds when loaded.
UNREAD_FOR_SECONDS = 20.0
#: SQS queue names are at most 80 characters.
MAX_QUEUE_NAME = 80

#: Events sent when ``task_events="failures"``.
FAILURE_EVENTS = frozenset({"task.failed", "task.retried", "task.rejected", "task.revoked"})


def kind_of(queue: str) -> Kind | None:
    """Which monitoring queue ``queue`` (a kombu queue name) is, if any."""
    if queue.endswith(".pidbox"):
        return "rep" if ".reply." in queue else "box"
    if queue.startswith("celeryev."):
        return "ev"
    return None


def is_monitoring_exchange(exchange: str, event_exchange: str = "celeryev") -> bool:
    """Celery's remote-control (``*.pidbox``, ``reply.*.pidbox``) or event exchange."""
    return bool(exchange) and (exchange.endswith(".pidbox") or exchange == event_exchange)


def sqs_queue_name(prefix: str, queue: str, instance: str = "") -> str:
    """The SQS name of monitoring queue ``queue``: ``<prefix><kind>-<name>[-<instance>]``, legal
    characters only, shortened with a hash when it would exceed SQS's 80 characters.

    A worker's mailbox carries its process's ``instance`` token: two workers started with the
    same node name (a second ``celery worker`` on one machine) then never share, or delete, one
    mailbox; a broadcast reaches both."""
    kind = kind_of(queue)
    assert kind is not None, queue
    if kind == "ev":
        body = queue.removeprefix("celeryev.")
    else:  # "<host>.celery.pidbox", "<oid>.reply.celery.pidbox": the namespace part goes
        body = queue.removesuffix(".pidbox").rsplit(".", 2 if kind == "rep" else 1)[0]
    if kind == "box" and instance:
        body = f"{body}-{instance}"
    safe = "".join(c if c.isalnum() or c in "-_" else "-" for c in body)
    name = f"{prefix}{kind}-{safe}"
    if len(name) > MAX_QUEUE_NAME:
        digest = hashlib.sha256(queue.encode()).hexdigest()[:16]
        name = f"{name[: MAX_QUEUE_NAME - 17]}-{digest}"
    return name

