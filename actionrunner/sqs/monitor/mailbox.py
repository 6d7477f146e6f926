"""Receiving from monitoring queues: a worker's mailbox (with a watchdog that restarts its receive
loop), a client's replies, event queues. Mixed into :class:`.routing.MonitorRouting`."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, cast

from botocore.exceptions import BotoCoreError, ClientError
from kombu.asynchronous.aws.sqs.connection import _query_object_encode
from kombu.asynchronous.aws.sqs.message import AsyncMessage
from kombu.transport.SQS import Channel as SQSChannel
from vine import transform

from .names import DOZING_WAIT_SECONDS, KNOCK_BODY, REPLY_WAIT_SECONDS, VISIBILITY_SECONDS, Kind, kind_of
from .replies import reply_of

if TYPE_CHECKING:
    from .listeners import Monitor

logger = logging.getLogger("actionrunner.monitor")

#: What a monitoring receive asks of each message: how often it was received.
_RECEIVE_COUNT = "ApproximateReceiveCount"


def _first_deliveries(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
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


class MonitorReceiving:
    """Receive overrides for the monitoring queues: standard, unordered, never acknowledged."""

    _monitor_declared: set[str]
    _polled: dict[str, float]  #: a mailbox's last receive (its watchdog's clock)
    _heard: dict[str, float]  #: a mailbox's last message, or the last work (its doze clock)

    if TYPE_CHECKING:  # provided by MonitorRouting
        @property
        def monitor(self) -> Monitor: ...

        def _kind(self, name: str) -> Kind | None: ...
        def canonical_queue_name(self, queue_name: str) -> str: ...
        def _new_queue(self, queue: str, **kwargs: Any) -> str: ...

    def basic_consume(self, queue: str, no_ack: bool, *args: Any, **kwargs: Any) -> Any:
        if not self._kind(queue):
            return super().basic_consume(queue, no_ack, *args, **kwargs)  # type: ignore[misc]
        tag = SQSChannel.basic_consume(cast(SQSChannel, self), queue, no_ack, *args, **kwargs)
        hub = getattr(self, "hub", None)
        if self._kind(queue) == "box" and hub is not None:  # a worker's mailbox
            from .commands import install

            install()
            now = time.monotonic()
            self._polled = {**getattr(self, "_polled", {}), queue: now}
            self._heard = {**getattr(self, "_heard", {}), queue: now}
            self.monitor.on_work(self._wake_for_work)
            hub.call_repeatedly(self._watch_every, self._watch_mailbox, queue)
        return tag

    @property
    def _watch_every(self) -> float:
        return float(self.wait_time_seconds) + 5  # type: ignore[attr-defined]

    # -- dozing: an idle worker nobody watches long-polls its mailbox 20 s at a time ----------
    def _doze_option(self, name: str, default: float) -> float:
        return float(self.transport_options.get(name, default))  # type: ignore[attr-defined]

    def _should_doze(self, queue: str) -> bool:
        """Nothing came to mailbox ``queue``, and no action to the worker, for
        ``mailbox_doze_after`` seconds, and no event listener exists (the listing is cached: at
        most two ListQueues a minute while awake)."""
        after = self._doze_option("mailbox_doze_after", 120.0)
        quiet = time.monotonic() - max(self._heard.get(queue, time.monotonic()),
                                       self.monitor.last_work)
        if not after or not self.monitor.can_doze or quiet < after:
            return False
        return not self.monitor.listeners("ev")

    def _doze(self, queue: str) -> bool:
        """Mailbox ``queue`` dozes from now on: tagged, and long-polled for
        :data:`DOZING_WAIT_SECONDS` (or ``mailbox_doze_poll``, if shorter) whatever the worker's
        own wait, so a command still reaches it at once. False: it cannot doze (its queue could
        not be tagged)."""
        if not self.monitor.dozing:
            if not self.monitor.mark_dozing(self._new_queue(queue), True):
                return False
            logger.info("remote-control mailbox %s dozes: no command, no action and no event listener for "
                        "%.0f s; long-polling it %d s at a time until one comes "
                        "(ACTIONRUNNER_MAILBOX_DOZE_AFTER=0 keeps it awake)",
                        queue, self._doze_option("mailbox_doze_after", 120.0), self._doze_wait)
        return True

    @property
    def _doze_wait(self) -> int:
        return max(1, min(DOZING_WAIT_SECONDS, int(self._doze_option("mailbox_doze_poll", 60.0))))

    def _work_arrived(self) -> None:
        """Actions were received (on this process's work channel): the worker is not idle."""
        monitor = self.__dict__.get("_work_monitor")
        if monitor is None:  # (once per channel: this runs per receive)
            monitor = self.__dict__["_work_monitor"] = self.monitor
        monitor.work_arrived()

    def _wake_for_work(self) -> None:
        """(The mailbox's channel) the worker got work while its mailbox dozed: wake it and read
        its events go to listeners again (its long poll reads commands at once anyway)."""
        for queue in getattr(self, "_heard", {}):
            self._wake(queue, self._new_queue(queue))

    def _wake(self, queue: str, url: str) -> None:
        self._heard[queue] = time.monotonic()
        if self.monitor.dozing:
            self.monitor.mark_dozing(url, False)
            logger.info("remote-control mailbox %s is awake: a command, a new listener or an action came",
                        queue)

    def _watch_mailbox(self, queue: str) -> None:
        """Restart the mailbox's receive loop if it stopped: a failed receive (the queue was
        deleted under the worker, the endpoint was down) ends kombu's loop for good, and the
        worker would stop answering `celery inspect` and Flower while it goes on running actions."""
        if queue not in self._active_queues or self.closed:  # type: ignore[attr-defined]
            return
        allowed = 2 * self._watch_every + (self._doze_wait if self.monitor.dozing else 0.0)
        if time.monotonic() - self._polled.get(queue, 0.0) < allowed:
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
        self.monitor.forget(queue)
        try:
            url = self._new_queue(queue)
        except (ClientError, BotoCoreError) as exc:
            logger.warning("could not declare %s again (%s); trying later", queue, exc)
            return False
        if kind_of(queue) == "box" and self.monitor.dozing:
            self.monitor.mark_dozing(url, True)  # a new queue: tagged again for the clients
        return True

    def _receive_message(self, queue: str, max_number_of_messages: int = 1,
                         wait_time_seconds: int | None = None) -> Any:
        kind = self._kind(queue)
        if kind == "rep":  # `celery inspect` collects for ~1 s: poll in 1 s steps
            wait_time_seconds = REPLY_WAIT_SECONDS
        response = super()._receive_message(queue, max_number_of_messages, wait_time_seconds)  # type: ignore[misc]
        if kind and isinstance(response, dict) and response.get("Messages"):
            # (the receive asks for the receive count: the transport's fetch_message_attributes)
            response = {**response, "Messages": _first_deliveries(response["Messages"])}
        return response

    # -- a control client's replies: done when every addressed mailbox answered ---------------
    def _get_bulk(self, queue: str, *args: Any, **kwargs: Any) -> Any:
        if self._kind(queue) == "rep":
            awaited = [a for a in list(self.monitor.awaited.values()) if a.reply_queue == queue]
            if awaited and all(a.complete for a in awaited):
                raise TimeoutError()  # kombu's collection ends here, not after its timeout
        return super()._get_bulk(queue, *args, **kwargs)  # type: ignore[misc]

    def _size(self, queue: str) -> int:
        if self._kind(queue):
            return 0  # (kombu asks on each declaration; nobody reads a monitoring queue's depth)
        return super()._size(queue)  # type: ignore[misc,no-any-return]

    def _message_to_python(self, message: Any, queue_name: str, q_url: str) -> Any:
        payload = super()._message_to_python(message, queue_name, q_url)  # type: ignore[misc]
        if self._kind(queue_name) == "rep" and self.monitor.awaited:
            ticket, nodes = reply_of(payload)
            awaited = self.monitor.awaited.get(ticket) if ticket is not None else None
            if awaited is not None:
                awaited.heard(nodes)
        return payload

    def after_reply_message_received(self, queue: str) -> None:
        """kombu's collection ended: a mailbox that left the command unread for long has no
        worker (deleted), and the reply queue goes, as in kombu (each command has its own)."""
        awaited = [self.monitor.awaited.pop(ticket) for ticket, a in list(self.monitor.awaited.items())
                   if a.reply_queue == queue]
        silent = {url for a in awaited if not a.complete
                  and time.monotonic() - a.sent_at >= 1.0 for url in a.silent(self.monitor.prefix)}
        if silent:
            self.monitor.delete_unread(sorted(silent))
        super().after_reply_message_received(queue)  # type: ignore[misc]

    def _get_from_sqs(self, queue_name: str, queue_url: str, connection: Any, count: int = 1,
                      callback: Any = None) -> Any:
        if not self._kind(queue_name):
            return super()._get_from_sqs(queue_name, queue_url, connection, count, callback)  # type: ignore[misc]

        def ready(response: Any) -> Any:
            # kombu raises a 4xx answer out of the event loop, which stops the worker ("Unrecoverable
            # error"): monitoring must not. The queue is declared again and polling goes on.
            try:
                return connection._on_list_ready(queue_name, [("Message", AsyncMessage)],
                                                 "ReceiveMessage", response)
            except Exception as exc:
                if getattr(self, "closed", False):
                    return {}  # the long poll outlived its channel: a stop deleted the queue
                logger.warning("receive from %s failed (%s); declaring it again", queue_name, exc)
                self._declare_again(queue_name)
                return {}

        wait = self.wait_time_seconds  # type: ignore[attr-defined]
        if self._kind(queue_name) == "box" and hasattr(self, "_heard") and self.monitor.dozing:
            wait = max(wait, self._doze_wait)
        params = {"MaxNumberOfMessages": count, "VisibilityTimeout": VISIBILITY_SECONDS,
                  "WaitTimeSeconds": wait}
        names = [_RECEIVE_COUNT]  # (see _first_deliveries)
        return connection.make_request(
            "ReceiveMessage", params, queue_url, "POST", callback=transform(ready, callback),
            protocol_params={"query": _query_object_encode({"MessageSystemAttributeName": names}),
                             "json": {"MessageSystemAttributeNames": names}})

    def _loop1(self, queue: str, messages_fetched: Any = None) -> Any:
        if getattr(self, "closed", False) or getattr(self, "connection", None) is None:
            return None  # a receive that ended after the channel closed: nothing to poll again
        if (not messages_fetched and self._kind(queue) == "box" and hasattr(self, "_heard")
                and not self.monitor.dozing and self._should_doze(queue)):
            self._doze(queue)
        return super()._loop1(queue, messages_fetched)  # type: ignore[misc]

    def _on_messages_ready(self, queue: str, qname: str, messages: Any) -> Any:
        if getattr(self, "closed", False) or getattr(self, "connection", None) is None:
            return 0  # an answer that arrives after the channel closed (a clean stop)
        if not isinstance(messages, dict):  # kombu answers a 5xx or a timeout with a list
            messages = {}
        kind = self._kind(qname)
        if kind:
            received = messages.get("Messages") or []
            first = _first_deliveries(received)
            if len(first) != len(received):  # a redelivery is counted as read, never handed on
                return (len(received) - len(first)) + self._on_messages_ready(
                    queue, qname, {**messages, "Messages": first})
            if kind == "box" and hasattr(self, "_polled"):
                self._polled[qname] = time.monotonic()
            if kind == "box" and messages.get("Messages"):
                if hasattr(self, "_heard"):
                    self._wake(qname, queue)
                self.monitor.refresh()  # e.g. Flower starting: look for its event queue now
                commands = [m for m in messages["Messages"] if m.get("Body") != KNOCK_BODY]
                # a knock is not a command: counted as read (kombu loops again at once)
                handled = len(messages["Messages"]) - len(commands)
                return handled + SQSChannel._on_messages_ready(
                    cast(SQSChannel, self), queue, qname, {**messages, "Messages": commands})
            return SQSChannel._on_messages_ready(cast(SQSChannel, self), queue, qname, messages)
        return super()._on_messages_ready(queue, qname, messages)  # type: ignore[misc]

    def _delete_message(self, queue_name: str, message: dict[str, Any]) -> None:
        if self._kind(queue_name):
            return  # received monitoring messages expire (see the module docstring)
        return super()._delete_message(queue_name, message)  # type: ignore[misc,no-any-return]

    def close(self) -> None:
        """A listener that stops deletes its queues (its mailbox, reply or event queue)."""
        declared: set[str] = getattr(self, "_monitor_declared", set())
        if declared and not getattr(self, "closed", False):
            self.monitor.flush()
            for queue in list(declared):
                cast(SQSChannel, self)._delete(queue)
            declared.clear()
        super().close()  # type: ignore[misc]

