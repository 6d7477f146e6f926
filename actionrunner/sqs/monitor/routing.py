"""The channel overrides that put Celery's control and event exchanges on monitoring queues:
names, declarations and publishing (receiving: :mod:`.mailbox`)."""

from __future__ import annotations

import logging
from typing import Any

from kombu.asynchronous.aws.sqs.connection import AsyncSQSConnection
from kombu.asynchronous.aws.sqs.message import AsyncMessage
from kombu.utils.json import dumps, loads

from ... import constants as C
from .listeners import Monitor, monitor_for
from .mailbox import MonitorReceiving
from .names import DEFAULT_PREFIX, KINDS, Kind, is_monitoring_exchange, kind_of
from .replies import Awaited

logger = logging.getLogger("actionrunner.monitor")


class MonitorRouting(MonitorReceiving):
    """Channel overrides that put Celery's control and event exchanges on monitoring queues
    (mixed into :class:`actionrunner.sqs.transport.Channel`, before the FIFO consumer, which
    they bypass: these queues are standard, unordered and never acknowledged)."""

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
        return str(super().canonical_queue_name(queue_name))

    def _new_queue(self, queue: str, **kwargs: Any) -> str:
        if not self._kind(queue):
            return str(super()._new_queue(queue, **kwargs))
        name = self.canonical_queue_name(queue)
        url = self._queue_cache.get(name)  # type: ignore[attr-defined]
        if url is None:
            url = self.monitor.declare(queue)
            # kombu looks URLs up by either name (clients: :meth:`sqs`, :meth:`asynsqs`)
            self._queue_cache[name] = self._queue_cache[queue] = url  # type: ignore[attr-defined]
            if not hasattr(self, "_monitor_declared"):
                self._monitor_declared = set()
            self._monitor_declared.add(queue)
            if self._kind(queue) == "ev":  # a new listener: wake the dozing mailboxes
                self.monitor.knock()
        return str(url)

    def sqs(self, queue: str | None = None) -> Any:
        """The monitoring queues share the process's :class:`Monitor` client (kombu would make
        a boto3 client per queue, a tenth of a second each, and resolve every work queue first)."""
        if queue is not None and self._kind(queue):
            return self.monitor.client
        return super().sqs(queue)  # type: ignore[misc]

    def asynsqs(self, queue: str | None = None) -> Any:
        if queue is None or not self._kind(queue):
            return super().asynsqs(queue)  # type: ignore[misc]
        connection = self.__dict__.get("_monitor_asynsqs")
        if connection is None:
            connection = self.__dict__["_monitor_asynsqs"] = AsyncSQSConnection(
                sqs_connection=self.monitor.client, region=self.region)  # type: ignore[attr-defined]
        return connection

    def _delete(self, queue: str, *args: Any, **kwargs: Any) -> None:
        if not self._kind(queue):
            return super()._delete(queue, *args, **kwargs)  # type: ignore[misc,no-any-return]
        self.monitor.delete(queue)
        name = self.canonical_queue_name(queue)
        for key in (queue, name):
            self._queue_cache.pop(key, None)  # type: ignore[attr-defined]
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
        command = _command(message) if exchange.endswith(".pidbox") else None
        awaits_replies = (command is not None and not exchange.startswith("reply.")
                          and bool(command.get("reply_to")) and not self.monitor.has_mailbox)
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
        if awaits_replies and command is not None and command.get("ticket"):  # a client: .replies
            destination = command.get("destination")
            nodes = destination if isinstance(destination, list) and destination else None
            reply_queue = f"{command['reply_to'].get('routing_key')}.{command['reply_to'].get('exchange')}"
            self.monitor.awaited[command["ticket"]] = Awaited(
                reply_queue, urls, len(nodes) if nodes else len(urls), nodes)
        self.monitor.send(urls, {"MessageBody": body})
        return None


def _command(message: dict[str, Any]) -> dict[str, Any] | None:
    """The remote-control command of a pidbox message (kombu's Mailbox puts ``reply_to`` and
    ``destination`` in the body, still serialized here; commands are JSON), or None."""
    try:
        body = loads(message.get("body") or "{}")
    except ValueError:
        return None
    return body if isinstance(body, dict) else None
