"""Flower, ``celery inspect`` and ``celery events`` over SQS, with no server besides SQS.

Celery watches and steers workers through three exchanges that kombu's SQS transport cannot
route: remote control broadcasts on a fanout exchange (``celery.pidbox``), the replies on a
direct exchange (``reply.celery.pidbox``), and events on a topic exchange (``celeryev``). kombu's
virtual transports keep exchange bindings in each process's memory, so a worker never learns of
the reply queue ``celery inspect`` declared, nor of Flower's event queue: stock Celery on SQS
disables both ("No nodes replied"; Flower stays empty).

Here the bindings live in SQS itself, in queue names. Each listener gets a standard queue named
``<prefix><kind>-<name>``:

========  =========================================  =======================================
kind      the queue                                  who sends to it
========  =========================================  =======================================
``box``   a worker's mailbox (``<host>.celery.pidbox``)  a broadcast: every ``box`` queue
``rep``   a client's replies (``<oid>.reply.celery.pidbox``)  a worker's reply: that one queue
``ev``    an event listener (``celeryev.<uuid>``)    an event: every ``ev`` queue
========  =========================================  =======================================

A sender finds the listeners with ListQueues (by prefix, cached for a few seconds, refreshed at
once when a broadcast arrives, as Flower sends one when it starts), and sends from a background
thread with SendMessageBatch, so the worker's loop never waits on monitoring and events to one
queue share requests. With nobody listening, an event costs no request at all.

The queues keep messages 60 s (SQS's minimum) and hide what was received for longer than that,
so a received message is never deleted: it expires. Events are one-way notices and control
messages carry their own deadlines; neither needs more. Listeners delete their queue when they
close; a workers' janitor deletes event queues whose listener died (messages waiting, none
received for a minute).
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import logging
import os
import queue as queue_module
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any, Literal

from botocore.exceptions import BotoCoreError, ClientError
from kombu.asynchronous.aws.sqs.message import AsyncMessage
from kombu.transport.SQS import Channel as SQSChannel
from kombu.utils.json import dumps
from vine import transform

from .. import constants as C

logger = logging.getLogger("actionrunner.monitor")

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


class Sender:
    """A background thread that sends monitoring messages, batched per queue.

    ``submit`` never blocks and never raises: monitoring must not slow down or break the work.
    Messages to a queue that no longer exists (its listener stopped) are dropped.
    """

    def __init__(self, client: Any, on_gone: Callable[[str], None]) -> None:
        self.client, self.on_gone = client, on_gone
        self._queue: queue_module.Queue[tuple[str, dict[str, Any]] | None] = queue_module.Queue(10_000)
        self._idle = threading.Event()
        self._idle.set()
        self._thread = threading.Thread(target=self._run, name="actionrunner-monitor", daemon=True)
        self._thread.start()
        self.sent = 0
        self.requests = 0

    def submit(self, url: str, entry: dict[str, Any]) -> None:
        self._idle.clear()
        try:
            self._queue.put_nowait((url, entry))
        except queue_module.Full:  # a listener that cannot keep up loses events, not the worker
            logger.warning("monitoring backlog full; dropping a message for %s", url)

    def flush(self, timeout: float = 2.0) -> bool:
        """Wait until everything submitted so far was sent (True) or ``timeout`` passed."""
        return self._idle.wait(timeout)

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            batch = [first]
            while len(batch) < 100:
                try:
                    batch.append(self._queue.get_nowait())
                except queue_module.Empty:
                    break
            by_url: dict[str, list[dict[str, Any]]] = {}
            for item in batch:
                if item is not None:
                    by_url.setdefault(item[0], []).append(item[1])
            for url, entries in by_url.items():
                for start in range(0, len(entries), C.SQS_MAX_BATCH):
                    self._send(url, entries[start : start + C.SQS_MAX_BATCH])
            if self._queue.empty():
                self._idle.set()

    def _send(self, url: str, entries: list[dict[str, Any]]) -> None:
        self.requests += 1
        try:
            if len(entries) == 1:
                self.client.send_message(QueueUrl=url, **entries[0])
            else:
                self.client.send_message_batch(
                    QueueUrl=url, Entries=[{"Id": str(i), **e} for i, e in enumerate(entries)])
            self.sent += len(entries)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if "NonExistentQueue" in code or "QueueDoesNotExist" in code:
                self.on_gone(url)
            else:
                logger.warning("could not send %d monitoring message(s) to %s: %s", len(entries), url, exc)
        except BotoCoreError as exc:
            logger.warning("could not send %d monitoring message(s) to %s: %s", len(entries), url, exc)


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
        self._janitor_at = time.monotonic() + JANITOR_INTERVAL_SECONDS
        self._suspects: dict[str, float] = {}
        #: this process's token in its mailbox's name (see :func:`sqs_queue_name`)
        self.instance = uuid.uuid4().hex[:8]
        self._declared: dict[str, str] = {}  # this process's own queues: name -> URL
        self._pid = os.getpid()
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
            # (also when a worker's Celery events were switched on remotely: Flower's
            # enable_events broadcast cannot override the setting)
            if routing_key.startswith("task.") and (
                    self.task_events == "off"
                    or (self.task_events == "failures" and routing_key not in FAILURE_EVENTS)):
                return []
            self._janitor()
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

    # -- janitor -----------------------------------------------------------------------------
    def _janitor(self) -> None:
        """Delete event queues whose listener is gone: messages wait there and none was received
        in the last minute (received ones stay in flight until they expire), twice in a row."""
        now = time.monotonic()
        if now < self._janitor_at:
            return
        self._janitor_at = now + JANITOR_INTERVAL_SECONDS
        threading.Thread(target=self._sweep, name="actionrunner-monitor-janitor", daemon=True).start()

    def _sweep(self) -> None:
        now = time.monotonic()
        for url in self.listeners("ev"):
            try:
                attrs = self.client.get_queue_attributes(
                    QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages",
                                                  "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
            except (ClientError, BotoCoreError):
                continue
            abandoned = (int(attrs.get("ApproximateNumberOfMessages", 0)) > 0
                         and int(attrs.get("ApproximateNumberOfMessagesNotVisible", 0)) == 0)
            if not abandoned:
                self._suspects.pop(url, None)
            elif url not in self._suspects:
                self._suspects[url] = now
            else:
                logger.info("deleting abandoned event queue %s", url)
                with contextlib.suppress(ClientError, BotoCoreError):
                    self.client.delete_queue(QueueUrl=url)
                self._suspects.pop(url, None)
                self._gone(url)


class MonitorRouting:
    """Channel overrides that put Celery's control and event exchanges on monitoring queues
    (mixed into :class:`actionrunner.sqs.transport.Channel`, before the FIFO consumer, which
    they bypass: these queues are standard, unordered and never acknowledged)."""

    _monitor_declared: set[str]
    _polled: dict[str, float]  #: a mailbox's last receive (its watchdog's clock)

    @property
    def monitor(self) -> Monitor:
        options = self.transport_options  # type: ignore[attr-defined]

        def make_client() -> Any:
            return self._new_boto_client(  # type: ignore[attr-defined]
                service="sqs", region=self.region,  # type: ignore[attr-defined]
                access_key_id=self.conninfo.userid,  # type: ignore[attr-defined]
                secret_access_key=self.conninfo.password)  # type: ignore[attr-defined]

        return monitor_for(self.endpoint_url,  # type: ignore[attr-defined]
                           options.get("monitor_queue_prefix", DEFAULT_PREFIX),
                           options.get("task_events", "all"), make_client)

    def _kind(self, name: str) -> Kind | None:
        """:func:`kind_of` a kombu queue name, or of an SQS one (kombu passes either)."""
        kind = kind_of(name)
        prefix = self.transport_options.get("monitor_queue_prefix", DEFAULT_PREFIX)  # type: ignore[attr-defined]
        if kind is None and name.startswith(prefix):
            rest = name[len(prefix):]
            kind = next((k for k in KINDS if rest.startswith(f"{k}-")), None)
        return kind

    # -- names and declarations --------------------------------------------------------------
    def canonical_queue_name(self, queue_name: str) -> str:
        if self._kind(queue_name):
            return self.monitor.sqs_name(queue_name)
        return super().canonical_queue_name(queue_name)  # type: ignore[misc,no-any-return]

    def _new_queue(self, queue: str, **kwargs: Any) -> str:
        if not self._kind(queue):
            return super()._new_queue(queue, **kwargs)  # type: ignore[misc,no-any-return]
        name = self.canonical_queue_name(queue)
        url = self._queue_cache.get(name)  # type: ignore[attr-defined]
        if url is None:
            url = self.monitor.declare(queue)
            # kombu looks clients and URLs up by either name
            self.predefined_queues[queue] = self.predefined_queues[name] = {"url": url}  # type: ignore[attr-defined]
            self._queue_cache[name] = self._queue_cache[queue] = url  # type: ignore[attr-defined]
            if not hasattr(self, "_monitor_declared"):
                self._monitor_declared = set()
            self._monitor_declared.add(queue)
        return str(url)

    def _delete(self, queue: str, *args: Any, **kwargs: Any) -> None:
        if not self._kind(queue):
            return super()._delete(queue, *args, **kwargs)  # type: ignore[misc,no-any-return]
        self.monitor.delete(queue)
        name = self.canonical_queue_name(queue)
        for key in (queue, name):
            self._queue_cache.pop(key, None)  # type: ignore[attr-defined]
            self.predefined_queues.pop(key, None)  # type: ignore[attr-defined]
        return None

    def _queue_bind(self, exchange: str, routing_key: str, pattern: str, queue: str) -> None:
        if self._kind(queue):
            return  # the binding is the queue's name
        return super()._queue_bind(exchange, routing_key, pattern, queue)  # type: ignore[misc,no-any-return]

    # -- sending -----------------------------------------------------------------------------
    def basic_publish(self, message: dict[str, Any], exchange: str, routing_key: str, **kwargs: Any) -> Any:
        event_exchange = self.transport_options.get("event_exchange", "celeryev")  # type: ignore[attr-defined]
        if not is_monitoring_exchange(exchange, event_exchange):  # actions: no monitor lookup
            return super().basic_publish(message, exchange, routing_key, **kwargs)  # type: ignore[misc]
        urls = self.monitor.route(exchange, routing_key, event_exchange) or []
        self._inplace_augment_message(message, exchange, routing_key)  # type: ignore[attr-defined]
        if not urls:
            return None
        # kombu's own format (these queues are read by stock Celery code: Flower, celery inspect)
        body = dumps(message)
        if self.sqs_base64_encoding:  # type: ignore[attr-defined]
            body = AsyncMessage().encode(body)
        if len(body.encode("utf-8")) > C.SQS_MAX_MESSAGE_BYTES:
            logger.warning("monitoring message to %s is over SQS's size limit; not sent", exchange)
            return None
        self.monitor.send(urls, {"MessageBody": body})
        return None

    # -- receiving ---------------------------------------------------------------------------
    def basic_consume(self, queue: str, no_ack: bool, *args: Any, **kwargs: Any) -> Any:
        if not self._kind(queue):
            return super().basic_consume(queue, no_ack, *args, **kwargs)  # type: ignore[misc]
        tag = SQSChannel.basic_consume(self, queue, no_ack, *args, **kwargs)  # type: ignore[arg-type]
        hub = getattr(self, "hub", None)
        if self._kind(queue) == "box" and hub is not None:  # a worker's mailbox
            self._polled = {**getattr(self, "_polled", {}), queue: time.monotonic()}
            hub.call_repeatedly(self._watch_every, self._watch_mailbox, queue)
        return tag

    @property
    def _watch_every(self) -> float:
        return float(self.wait_time_seconds) + 5  # type: ignore[attr-defined]

    def _watch_mailbox(self, queue: str) -> None:
        """Restart the mailbox's receive loop if it stopped: a failed receive (the queue was
        deleted under the worker, the endpoint was down) ends kombu's loop for good, and the
        worker would stop answering `celery inspect` and Flower while it goes on running actions."""
        if queue not in self._active_queues or self.closed:  # type: ignore[attr-defined]
            return
        if time.monotonic() - self._polled.get(queue, 0.0) < 2 * self._watch_every:
            return
        logger.warning("the remote-control mailbox %s stopped answering; declaring it again", queue)
        if self._declare_again(queue):
            self._polled[queue] = time.monotonic()
            self._schedule_queue(queue)  # type: ignore[attr-defined]

    def _declare_again(self, queue_or_name: str) -> bool:
        """Forget a monitoring queue's URL and create it again (it was deleted under us)."""
        queue = next((q for q in getattr(self, "_monitor_declared", set())
                      if q == queue_or_name or self.canonical_queue_name(q) == queue_or_name),
                     queue_or_name)
        if not kind_of(queue):
            return False  # not one this channel declared by its kombu name
        name = self.canonical_queue_name(queue)
        for key in (queue, name):
            self._queue_cache.pop(key, None)  # type: ignore[attr-defined]
            self.predefined_queues.pop(key, None)  # type: ignore[attr-defined]
        self.monitor.forget(queue)
        try:
            self._new_queue(queue)
        except (ClientError, BotoCoreError) as exc:
            logger.warning("could not declare %s again (%s); trying later", queue, exc)
            return False
        return True

    def _receive_message(self, queue: str, max_number_of_messages: int = 1,
                         wait_time_seconds: int | None = None) -> Any:
        if self._kind(queue) == "rep":  # `celery inspect` collects for ~1 s: poll in 1 s steps
            wait_time_seconds = REPLY_WAIT_SECONDS
        return super()._receive_message(queue, max_number_of_messages, wait_time_seconds)  # type: ignore[misc]

    def _get_from_sqs(self, queue_name: str, queue_url: str, connection: Any, count: int = 1,
                      callback: Any = None) -> Any:
        if not self._kind(queue_name):
            return super()._get_from_sqs(queue_name, queue_url, connection, count, callback)  # type: ignore[misc]

        def ready(response: Any) -> Any:
            # kombu raises a 4xx answer out of the event loop, which stops the worker ("Unrecoverable
            # error"): monitoring must not. The queue is declared again and polling goes on.
            try:
                result = connection._on_list_ready(queue_name, [("Message", AsyncMessage)],
                                                   "ReceiveMessage", response)
            except Exception as exc:
                logger.warning("receive from %s failed (%s); declaring it again", queue_name, exc)
                self._declare_again(queue_name)
                return {}
            if not isinstance(result, dict):  # a 5xx answer comes back as a list: poll again
                logger.warning("receive from %s failed (HTTP %s); polling again", queue_name,
                               getattr(response, "status", "?"))
                return {}
            return result

        params = {"MaxNumberOfMessages": count, "VisibilityTimeout": VISIBILITY_SECONDS,
                  "WaitTimeSeconds": self.wait_time_seconds}  # type: ignore[attr-defined]
        return connection.make_request("ReceiveMessage", params, queue_url, "POST",
                                       callback=transform(ready, callback),
                                       protocol_params={"query": {}, "json": {}})

    def _on_messages_ready(self, queue: str, qname: str, messages: dict[str, Any]) -> Any:
        kind = self._kind(qname)
        if kind:
            if kind == "box" and hasattr(self, "_polled"):
                self._polled[qname] = time.monotonic()
            if kind == "box" and messages.get("Messages"):
                self.monitor.refresh()  # e.g. Flower starting: look for its event queue now
            return SQSChannel._on_messages_ready(self, queue, qname, messages)  # type: ignore[arg-type]
        return super()._on_messages_ready(queue, qname, messages)  # type: ignore[misc]

    def _delete_message(self, queue_name: str, message: dict[str, Any]) -> None:
        if self._kind(queue_name):
            return  # received monitoring messages expire (see the module docstring)
        return super()._delete_message(queue_name, message)  # type: ignore[misc,no-any-return]

    def close(self) -> None:
        """A listener that stops deletes its queues (its mailbox, reply or event queue)."""
        declared = getattr(self, "_monitor_declared", set())
        if declared and not getattr(self, "closed", False):
            self.monitor.flush()
            for queue in list(declared):
                self._delete(queue)
            declared.clear()
        super().close()  # type: ignore[misc]


_MONITORS: dict[tuple[int, str | None, str, str], Monitor] = {}
_MONITORS_LOCK = threading.Lock()


def monitor_for(endpoint: str | None, prefix: str, task_events: str,
                make_client: Callable[[], Any]) -> Monitor:
    """This process's :class:`Monitor` for ``endpoint`` (one Sender thread per process)."""
    key = (os.getpid(), endpoint, prefix, task_events)  # a forked child starts its own thread
    with _MONITORS_LOCK:
        monitor = _MONITORS.get(key)
        if monitor is None:
            monitor = _MONITORS[key] = Monitor(make_client(), prefix, task_events)
        return monitor


__all__ = ["FAILURE_EVENTS", "Monitor", "MonitorRouting", "Sender", "kind_of", "monitor_for",
           "sqs_queue_name"]
