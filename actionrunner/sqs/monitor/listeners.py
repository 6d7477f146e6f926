"""A process's view of the monitoring queues: the listeners it knows (cached ListQueues), the
queues it declared itself, where a message to a monitoring exchange goes; one per process and
endpoint, kept in the process's runtime (:func:`monitor_for`)."""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from ... import runtime
from ...runtime import Runtime
from .janitor import Janitor
from .names import (
    DOZING_TAG,
    FAILURE_EVENTS,
    KNOCK_BODY,
    LISTING_TTL_SECONDS,
    RETENTION_SECONDS,
    UNREAD_FOR_SECONDS,
    VISIBILITY_SECONDS,
    Kind,
    sqs_queue_name,
)
from .replies import Awaited
from .sender import Sender

logger = logging.getLogger("actionrunner.monitor")


class Monitor:
    """One per process and endpoint: the listener queues it knows, and its :class:`Sender`."""

    def __init__(self, client: Any, prefix: str, task_events: str = "all",
                 attributes: dict[str, str] | None = None) -> None:
        self.client, self.prefix, self.task_events = client, prefix, task_events
        self.attributes = {"MessageRetentionPeriod": str(RETENTION_SECONDS),
                           "VisibilityTimeout": str(VISIBILITY_SECONDS), **(attributes or {})}
        self._lock = threading.Lock()
        self._listing: dict[Kind, tuple[float, list[str]]] = {}
        self._urls: dict[str, str] = {}  # SQS name -> URL
        self._sender: Sender | None = None
        self.janitor = Janitor(client, lambda: self.listeners("ev"), self._gone)
        #: this process's token in its mailbox's name (see :func:`sqs_queue_name`)
        self.instance = uuid.uuid4().hex[:8]
        self._declared: dict[str, str] = {}  # this process's own queues: name -> URL
        self._pid = os.getpid()
        #: this process's mailbox dozes (nobody watches): its events go nowhere, unlisted
        self.dozing = False
        self.can_doze = True  #: False once its mailbox could not be tagged
        self.last_work = 0.0  #: when this process last received actions (monotonic)
        self._wakers: list[Callable[[], None]] = []
        #: a control client's commands awaiting replies, by ticket (see :mod:`.replies`)
        self.awaited: dict[str, Awaited] = {}
        atexit.register(self.close)

    def sqs_name(self, queue: str) -> str:
        return sqs_queue_name(self.prefix, queue, self.instance)

    # -- listeners ---------------------------------------------------------------------------
    def declare(self, queue: str) -> str:
        """Create (or find) the SQS queue of monitoring queue ``queue``; returns its URL."""
        name = self.sqs_name(queue)
        url = self._urls.get(name)
        if url is None:
            url = self.client.create_queue(QueueName=name, Attributes=self.attributes)["QueueUrl"]
            self._urls[name] = self._declared[name] = url
            self.refresh()
        return url

    def forget(self, queue: str) -> None:
        """Drop what is known of ``queue``'s SQS queue (it is gone; the next declare makes it)."""
        name = self.sqs_name(queue)
        self._urls.pop(name, None)
        self._declared.pop(name, None)

    def close(self) -> None:
        """Send what is pending and delete this process's own queues (also at exit: Flower exits
        on SIGTERM without closing its connections)."""
        if os.getpid() != self._pid:
            return  # a forked child: the queues are its parent's
        self.flush()
        for name, url in list(self._declared.items()):
            self._declared.pop(name, None)
            self._urls.pop(name, None)
            with contextlib.suppress(ClientError, BotoCoreError):
                self.client.delete_queue(QueueUrl=url)

    def delete(self, queue: str) -> None:
        """Delete the SQS queue of ``queue`` (a listener that stops)."""
        name = self.sqs_name(queue)
        url = self._urls.pop(name, None)
        self._declared.pop(name, None)
        if url is None:
            return
        try:
            self.client.delete_queue(QueueUrl=url)
        except (ClientError, BotoCoreError) as exc:
            logger.debug("could not delete monitoring queue %s: %s", url, exc)
        self.refresh()

    def listeners(self, kind: Kind) -> list[str]:
        """URLs of the ``kind`` queues (cached ListQueues)."""
        now = time.monotonic()
        with self._lock:
            cached = self._listing.get(kind)
            if cached is not None and now - cached[0] < LISTING_TTL_SECONDS:
                return cached[1]
        urls: list[str] = []
        try:
            paginator = self.client.get_paginator("list_queues")
            for page in paginator.paginate(QueueNamePrefix=f"{self.prefix}{kind}-", MaxResults=1000):
                urls.extend(page.get("QueueUrls") or [])
        except (ClientError, BotoCoreError) as exc:
            logger.warning("could not list monitoring queues: %s", exc)
            urls = cached[1] if cached else []
        with self._lock:
            self._listing[kind] = (now, urls)
        return urls

    def refresh(self) -> None:
        """Forget the listings (a new listener may have appeared)."""
        with self._lock:
            self._listing.clear()

    def _gone(self, url: str) -> None:
        with self._lock:
            for kind, (at, urls) in list(self._listing.items()):
                self._listing[kind] = (at, [u for u in urls if u != url])

    # -- sending -----------------------------------------------------------------------------
    def route(self, exchange: str, routing_key: str, event_exchange: str = "celeryev") -> list[str] | None:
        """The queue URLs a message to ``exchange`` goes to, or None if it is not a monitoring
        exchange."""
        if exchange.endswith(".pidbox"):
            if exchange.startswith("reply."):
                url = self.reply_url(f"{routing_key}.{exchange}")
                return [url] if url else []
            return self.listeners("box")
        if exchange == event_exchange:
            if self.dozing:  # nobody listened when it dozed off; a new listener knocks first
                return []
            # (also when a worker's Celery events were switched on remotely: Flower's
            # enable_events broadcast cannot override the setting)
            if routing_key.startswith("task.") and (
                    self.task_events == "off"
                    or (self.task_events == "failures" and routing_key not in FAILURE_EVENTS)):
                return []
            self.janitor.maybe_sweep()
            return self.listeners("ev")
        return None

    def reply_url(self, queue: str) -> str | None:
        """URL of a client's reply queue (the client created it), or None if it is gone."""
        name = sqs_queue_name(self.prefix, queue)
        url = self._urls.get(name)
        if url is None:
            try:
                url = self.client.get_queue_url(QueueName=name)["QueueUrl"]
            except (ClientError, BotoCoreError):
                return None
            self._urls[name] = url
        return url

    @property
    def has_mailbox(self) -> bool:
        """This process declared a worker's mailbox (it is a worker, not a control client)."""
        return any(name.startswith(f"{self.prefix}box-") for name in self._declared)

    def knock(self) -> None:
        """Tell every worker's mailbox that a listener appeared (a new event queue): a dozing
        worker wakes at its next read and sends its events here from then on."""
        self.send(self.listeners("box"), {"MessageBody": KNOCK_BODY})

    def delete_unread(self, urls: list[str], older_than: float = UNREAD_FOR_SECONDS) -> list[str]:
        """Delete the mailboxes among ``urls`` where a command has waited unread for
        ``older_than`` seconds; returns them.

        Called by a control client whose collection ran out of time short of a reply from these
        mailboxes: an awake worker long-polls its mailbox and a dozing one too, so a command
        that waits there that long has no reader, its worker was killed without closing it
        (a look with VisibilityTimeout=0 leaves the messages to a reader). Without this every
        later command would wait its whole timeout for a reply that never comes. (A live worker
        whose mailbox went all the same declares it again at its next receive.)"""
        gone = []
        now_ms = time.time() * 1000
        for url in urls:
            try:
                waiting = self.client.receive_message(
                    QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=0, WaitTimeSeconds=0,
                    MessageSystemAttributeNames=["SentTimestamp"]).get("Messages") or []
            except (ClientError, BotoCoreError):
                continue
            sent = [int(m.get("Attributes", {}).get("SentTimestamp", now_ms)) for m in waiting]
            if not sent or now_ms - min(sent) < older_than * 1000:
                continue
            logger.warning("deleting remote-control mailbox %s: a command waited there unread for "
                           "%.0f s (its worker stopped without closing it)", url,
                           (now_ms - min(sent)) / 1000)
            with contextlib.suppress(ClientError, BotoCoreError):
                self.client.delete_queue(QueueUrl=url)
            self._gone(url)
            gone.append(url)
        return gone

    def on_work(self, waker: Callable[[], None]) -> None:
        """Call ``waker`` (a mailbox's channel) when actions arrive while the mailbox dozes."""
        if waker not in self._wakers:
            self._wakers.append(waker)

    def work_arrived(self) -> None:
        """This process received actions (its event loop): it is not idle."""
        self.last_work = time.monotonic()
        if self.dozing:
            for waker in list(self._wakers):
                waker()

    def mark_dozing(self, url: str, dozing: bool) -> bool:
        """Tag (or untag) this worker's mailbox ``url`` as dozing, for control clients. A
        mailbox that cannot be tagged never dozes: a client would not know to wait for it."""
        try:
            if dozing:
                self.client.tag_queue(QueueUrl=url, Tags={DOZING_TAG: "true"})
            else:
                self.client.untag_queue(QueueUrl=url, TagKeys=[DOZING_TAG])
        except (ClientError, BotoCoreError) as exc:
            if dozing:
                code = exc.response.get("Error", {}).get("Code", "") if isinstance(exc, ClientError) else ""
                if "Denied" in code or "Authoriz" in code:  # for good: never doze
                    self.can_doze = False
                    logger.warning("could not tag mailbox %s as dozing (%s): it stays awake, "
                                   "long-polled (grant sqs:TagQueue on the monitoring queues)", url, exc)
                else:  # an error of the moment: awake for now, tried again at the next read
                    logger.info("could not tag mailbox %s as dozing (%s); it stays awake for now",
                                url, exc)
                return False
            logger.warning("could not untag mailbox %s: %s", url, exc)
        self.dozing = dozing
        return True

    def send(self, urls: list[str], entry: dict[str, Any]) -> None:
        if not urls:
            return
        if self._sender is None:
            with self._lock:
                if self._sender is None:
                    self._sender = Sender(self.client, self._gone)
                    atexit.register(self._sender.flush)
        for url in urls:
            self._sender.submit(url, entry)

    def flush(self, timeout: float = 2.0) -> bool:
        return self._sender.flush(timeout) if self._sender is not None else True

    @property
    def requests(self) -> int:
        return self._sender.requests if self._sender is not None else 0


    def _sweep(self) -> None:
        """One janitor pass now (tests)."""
        self.janitor.sweep()


def monitor_for(endpoint: str | None, prefix: str, task_events: str,
                make_client: Callable[[], Any], rt: Runtime | None = None) -> Monitor:
    """The :class:`Monitor` for ``endpoint`` of ``rt`` (default: this process's runtime; one
    Sender thread per process: a forked child has a new runtime, so its own)."""
    return (rt or runtime.current()).part(("monitor", endpoint, prefix, task_events),
                                          lambda _: Monitor(make_client(), prefix, task_events))
