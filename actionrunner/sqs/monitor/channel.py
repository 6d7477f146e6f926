"""The monitoring queues of one kombu channel: what kombu's calls do for them.

A :class:`MonitorChannel` is held by the transport's channel
(:attr:`actionrunner.sqs.transport.Channel.monitoring`), which hands it every call about a
monitoring queue (``*.pidbox``, ``celeryev.*``, or their SQS names) or exchange: names,
declarations, clients, publishing, receiving. Where kombu's own SQS handling of the queue is
wanted it is called as such (``SQSChannel.<method>(channel, ...)``), never the channel's override,
which would hand the call back here. These queues are standard, unordered and never
acknowledged: the FIFO consumer never sees them.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from kombu.asynchronous.aws.sqs.connection import AsyncSQSConnection, _query_object_encode
from kombu.asynchronous.aws.sqs.message import AsyncMessage
from kombu.transport.SQS import Channel as SQSChannel
from kombu.utils.json import dumps
from vine import transform

from ... import constants as C
from .listeners import Monitor, monitor_for
from .mailbox import Mailbox, doze_wait
from .names import (
    DEFAULT_PREFIX,
    KINDS,
    KNOCK_BODY,
    REPLY_WAIT_SECONDS,
    VISIBILITY_SECONDS,
    Kind,
    is_monitoring_exchange,
    kind_of,
)
from .replies import Awaited, command_of, reply_of

logger = logging.getLogger("actionrunner.monitor")

#: What a monitoring receive asks of each message: how often it was received.
_RECEIVE_COUNT = "ApproximateReceiveCount"


class MonitorChannel:
    """The monitoring queues of kombu channel ``channel`` (see the module docstring)."""

    def __init__(self, channel: SQSChannel) -> None:
        self.channel = channel
        options = channel.transport_options
        self.prefix = str(options.get("monitor_queue_prefix", DEFAULT_PREFIX))
        self.event_exchange = str(options.get("event_exchange", "celeryev"))
        self.task_events = str(options.get("task_events", "all"))
        self.doze_after = float(options.get("mailbox_doze_after", 120.0))
        self.doze_wait = doze_wait(float(options.get("mailbox_doze_poll", 60.0)))
        #: the monitoring queues this channel declared (kombu names): deleted when it closes
        self.declared: set[str] = set()
        #: the worker mailboxes this channel consumes on an event loop, by kombu name
        self.mailboxes: dict[str, Mailbox] = {}
        self._asynsqs: AsyncSQSConnection | None = None
        self._work_monitor: Monitor | None = None

    @property
    def monitor(self) -> Monitor:
        """This process's :class:`Monitor` for the channel's endpoint."""
        channel = self.channel

        def make_client() -> Any:
            return channel._new_boto_client(service="sqs", region=channel.region,
                                            access_key_id=channel.conninfo.userid,
                                            secret_access_key=channel.conninfo.password)

        return monitor_for(channel.endpoint_url, self.prefix, self.task_events, make_client)

    def kind(self, name: str) -> Kind | None:
        """:func:`kind_of` a kombu queue name, or of an SQS one (kombu passes either)."""
        kind = kind_of(name)
        if kind is None and name.startswith(self.prefix):
            rest = name[len(self.prefix):]
            kind = next((k for k in KINDS if rest.startswith(f"{k}-")), None)
        return kind

    def is_exchange(self, exchange: str) -> bool:
        """``exchange`` is Celery's remote control's or its events'."""
        return is_monitoring_exchange(exchange, self.event_exchange)

    # -- names, declarations, clients ---------------------------------------------------------
    def sqs_name(self, queue: str) -> str:
        return self.monitor.sqs_name(queue)

    def declare(self, queue: str) -> str:
        """The URL of monitoring queue ``queue``, created when first asked for."""
        name = self.sqs_name(queue)
        cache = self.channel._queue_cache
        url = cache.get(name)
        if url is None:
            url = self.monitor.declare(queue)
            # kombu looks URLs up by either name (clients: :meth:`client`, :meth:`async_client`)
            cache[name] = cache[queue] = url
            self.declared.add(queue)
            if self.kind(queue) == "ev":  # a new listener: wake the dozing mailboxes
                self.monitor.knock()
        return str(url)

    def declare_again(self, queue_or_name: str) -> bool:
        """Forget a monitoring queue's URL and create it again (it was deleted under us)."""
        queue = next((q for q in self.declared if q == queue_or_name or self.sqs_name(q) == queue_or_name),
                     queue_or_name)
        if not kind_of(queue):
            return False  # not one this channel declared by its kombu name
        self._forget(queue)
        self.monitor.forget(queue)
        try:
            url = self.declare(queue)
        except (ClientError, BotoCoreError) as exc:
            logger.warning("could not declare %s again (%s); trying later", queue, exc)
            return False
        if kind_of(queue) == "box" and self.monitor.dozing:
            self.monitor.mark_dozing(url, True)  # a new queue: tagged again for the clients
        return True

    def delete(self, queue: str) -> None:
        """Delete monitoring queue ``queue`` (a listener that stops)."""
        self.monitor.delete(queue)
        self._forget(queue)

    def _forget(self, queue: str) -> None:
        for key in (queue, self.sqs_name(queue)):
            self.channel._queue_cache.pop(key, None)

    def client(self) -> Any:
        """The process's :class:`Monitor` client (kombu would make a boto3 client per queue, a
        tenth of a second each, and resolve every work queue first)."""
        return self.monitor.client

    def async_client(self) -> AsyncSQSConnection:
        if self._asynsqs is None:
            self._asynsqs = AsyncSQSConnection(sqs_connection=self.monitor.client,
                                               region=self.channel.region)
        return self._asynsqs

    # -- sending -----------------------------------------------------------------------------
    def publish(self, message: dict[str, Any], exchange: str, routing_key: str) -> None:
        """Send ``message`` to every listener queue of monitoring exchange ``exchange``."""
        monitor = self.monitor
        urls = monitor.route(exchange, routing_key, self.event_exchange) or []
        command = command_of(message) if exchange.endswith(".pidbox") else None
        awaits_replies = (command is not None and not exchange.startswith("reply.")
                          and bool(command.get("reply_to")) and not monitor.has_mailbox)
        self.channel._inplace_augment_message(message, exchange, routing_key)
        if not urls:
            return
        # kombu's own format (these queues are read by stock Celery code: Flower, celery inspect)
        body = dumps(message)
        if self.channel.sqs_base64_encoding:
            body = AsyncMessage().encode(body)
        if len(body.encode("utf-8")) > C.SQS_MAX_MESSAGE_BYTES:
            logger.warning("monitoring message to %s is over SQS's size limit; not sent", exchange)
            return
        if awaits_replies and command is not None and command.get("ticket"):  # a client: .replies
            monitor.awaited[command["ticket"]] = Awaited.of(command, urls)
        monitor.send(urls, {"MessageBody": body})

    # -- consuming ---------------------------------------------------------------------------
    def consuming(self, queue: str) -> None:
        """Celery consumes monitoring queue ``queue`` (kombu's basic_consume ran): a worker's
        mailbox on an event loop gets its :class:`Mailbox` (watchdog, doze)."""
        hub = getattr(self.channel, "hub", None)
        if self.kind(queue) != "box" or hub is None:
            return
        from .commands import install

        install()
        mailbox = self.mailboxes[queue] = Mailbox(queue, self)
        self.monitor.on_work(self.wake_for_work)
        hub.call_repeatedly(mailbox.watch_every, mailbox.watch)

    def work_arrived(self) -> None:
        """Actions were received (on this process's work channel): the worker is not idle."""
        if self._work_monitor is None:  # (once per channel: this runs per receive)
            self._work_monitor = self.monitor
        self._work_monitor.work_arrived()

    def wake_for_work(self) -> None:
        """(The mailbox's channel) the worker got work while its mailbox dozed: wake it and read
        its events go to listeners again (its long poll reads commands at once anyway)."""
        for mailbox in list(self.mailboxes.values()):
            mailbox.wake(self.declare(mailbox.queue))

    def loop1(self, queue: str, messages_fetched: Any = None) -> None:
        """kombu's next poll of ``queue``; a mailbox that found nothing may doze off first."""
        mailbox = self.mailboxes.get(queue)
        if (not messages_fetched and mailbox is not None and not self.monitor.dozing
                and mailbox.should_doze()):
            mailbox.doze()
        SQSChannel._loop1(self.channel, queue, messages_fetched)

    # -- receiving ---------------------------------------------------------------------------
    def receive_message(self, queue: str, max_number_of_messages: int = 1,
                        wait_time_seconds: int | None = None) -> Any:
        """kombu's synchronous receive (Flower, ``celery events``, ``celery inspect``)."""
        if self.kind(queue) == "rep":  # `celery inspect` collects for ~1 s: poll in 1 s steps
            wait_time_seconds = REPLY_WAIT_SECONDS
        response = SQSChannel._receive_message(self.channel, queue, max_number_of_messages,
                                               wait_time_seconds)
        if isinstance(response, dict) and response.get("Messages"):
            # (the receive asks for the receive count: the transport's fetch_message_attributes)
            response = {**response, "Messages": first_deliveries(response["Messages"])}
        return response

    def get_bulk(self, queue: str, *args: Any, **kwargs: Any) -> Any:
        """kombu's synchronous collection; a control client's ends when every addressed
        mailbox has answered (:mod:`.replies`), not after its timeout."""
        if self.kind(queue) == "rep":
            awaited = [a for a in list(self.monitor.awaited.values()) if a.reply_queue == queue]
            if awaited and all(a.complete for a in awaited):
                raise TimeoutError()  # kombu's collection ends here
        return SQSChannel._get_bulk(self.channel, queue, *args, **kwargs)

    def message_to_python(self, message: Any, queue_name: str, q_url: str) -> Any:
        payload = SQSChannel._message_to_python(self.channel, message, queue_name, q_url)
        if self.kind(queue_name) == "rep" and self.monitor.awaited:
            ticket, nodes = reply_of(payload)
            awaited = self.monitor.awaited.get(ticket) if ticket is not None else None
            if awaited is not None:
                awaited.heard(nodes)
        return payload

    def after_reply_message_received(self, queue: str) -> None:
        """kombu's collection ended: a mailbox that left the command unread for long has no
        worker (deleted), and the reply queue goes, as in kombu (each command has its own)."""
        monitor = self.monitor
        awaited = [monitor.awaited.pop(ticket) for ticket, a in list(monitor.awaited.items())
                   if a.reply_queue == queue]
        silent = {url for a in awaited if not a.complete
                  and time.monotonic() - a.sent_at >= 1.0 for url in a.silent(monitor.prefix)}
        if silent:
            monitor.delete_unread(sorted(silent))
        SQSChannel.after_reply_message_received(self.channel, queue)

    def get_from_sqs(self, queue_name: str, queue_url: str, connection: Any, count: int = 1,
                     callback: Any = None) -> Any:
        """kombu's asynchronous receive (a worker's event loop), asking for the receive count
        and hiding what it receives until it expires."""

        def ready(response: Any) -> Any:
            # kombu raises a 4xx answer out of the event loop, which stops the worker ("Unrecoverable
            # error"): monitoring must not. The queue is declared again and polling goes on.
            try:
                return connection._on_list_ready(queue_name, [("Message", AsyncMessage)],
                                                 "ReceiveMessage", response)
            except Exception as exc:
                if getattr(self.channel, "closed", False):
                    return {}  # the long poll outlived its channel: a stop deleted the queue
                logger.warning("receive from %s failed (%s); declaring it again", queue_name, exc)
                self.declare_again(queue_name)
                return {}

        wait = self.channel.wait_time_seconds
        if self.kind(queue_name) == "box" and self.mailboxes and self.monitor.dozing:
            wait = max(wait, self.doze_wait)
        params = {"MaxNumberOfMessages": count, "VisibilityTimeout": VISIBILITY_SECONDS,
                  "WaitTimeSeconds": wait}
        names = [_RECEIVE_COUNT]  # (see first_deliveries)
        return connection.make_request(
            "ReceiveMessage", params, queue_url, "POST", callback=transform(ready, callback),
            protocol_params={"query": _query_object_encode({"MessageSystemAttributeName": names}),
                             "json": {"MessageSystemAttributeNames": names}})

    def on_messages_ready(self, queue: str, qname: str, messages: Any) -> int:
        """Messages an asynchronous receive brought from ``queue`` (the URL of kombu's queue
        ``qname``); how many were handled."""
        if not isinstance(messages, dict):  # kombu answers a 5xx or a timeout with a list
            messages = {}
        received = messages.get("Messages") or []
        first = first_deliveries(received)
        if len(first) != len(received):  # a redelivery is counted as read, never handed on
            return (len(received) - len(first)) + self.on_messages_ready(
                queue, qname, {**messages, "Messages": first})
        mailbox = self.mailboxes.get(qname)
        if mailbox is not None:
            mailbox.polled = time.monotonic()
        if self.kind(qname) == "box" and received:
            if mailbox is not None:
                mailbox.wake(queue)
            self.monitor.refresh()  # e.g. Flower starting: look for its event queue now
            commands = [m for m in received if m.get("Body") != KNOCK_BODY]
            # a knock is not a command: counted as read (kombu loops again at once)
            handled = len(received) - len(commands)
            return handled + int(SQSChannel._on_messages_ready(
                self.channel, queue, qname, {**messages, "Messages": commands}))
        return int(SQSChannel._on_messages_ready(self.channel, queue, qname, messages))

    def close(self) -> None:
        """A listener that stops deletes its queues (its mailbox, reply or event queue)."""
        if self.declared and not getattr(self.channel, "closed", False):
            self.monitor.flush()
            for queue in list(self.declared):
                self.channel._delete(queue)
            self.declared.clear()


def first_deliveries(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The messages received for the first time. A received monitoring message is consumed: it
    should expire (60 s retention) before its visibility (120 s) runs out, but a server that
    keeps it longer (fauxqs does) hands it out again — an event 121 s old (Flower's "clock
    drift" warning on one machine, and a stale heartbeat in its state), a command run twice."""
    first = []
    for message in messages:
        try:
            count = int((message.get("Attributes") or {}).get(_RECEIVE_COUNT) or 1)
        except (TypeError, ValueError):
            count = 1
        if count <= 1:
            first.append(message)
    return first
