"""kombu's SQS transport, extended for ActionRunner.

What it adds to ``kombu.transport.SQS``:

* the endpoint comes from the settings (boto3's ``AWS_ENDPOINT_URL`` conventions), not from the
  broker URL;
* queue URLs are resolved once with GetQueueUrl, and never created implicitly: a missing queue
  is a :class:`~actionrunner.errors.QueueMissing` that says to run ``actionrunner provision``;
* every message is checked against the queue's size limit before it is sent
  (:class:`~actionrunner.errors.PayloadTooLarge`);
* :meth:`Channel.batch` collects the messages published inside it and sends them with
  SendMessageBatch, retrying the entries SQS refused;
* its FIFO queues are consumed by the :class:`~.consumer.Consumer` it holds (made when Celery
  first consumes one), its monitoring queues (Celery's remote control and events) by the
  :class:`~.monitor.MonitorChannel` it holds: the channel only hands them kombu's calls (this
  module is the adapter).

Select it with ``broker_url = "actionrunner://"`` (the alias is registered on import).
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Iterator
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError
from kombu.transport import TRANSPORT_ALIASES, virtual
from kombu.transport.SQS import Channel as SQSChannel
from kombu.transport.SQS import Transport as SQSTransport
from kombu.utils.json import dumps
from kombu.utils.objects import cached_property

from .. import constants as C
from .. import runtime
from ..backoff import backoff
from ..batch import in_batches
from ..errors import EndpointUnreachable, PayloadTooLarge, QueueMissing, SendError
from ..runnable import check_eta
from ..settle import MessageSettler, Outcome
from . import claimcheck, codec
from .consumer import Consumer
from .monitor import Monitor, MonitorChannel
from .options import ConsumerOptions

#: Error codes of a batch entry that are worth sending again.
RETRYABLE_ENTRY_CODES = frozenset(
    {"InternalError", "ServiceUnavailable", "ThrottlingException", "RequestThrottled",
     "KmsThrottled", "InternalFailure"}
)


def register() -> None:
    """Make ``actionrunner://`` broker URLs select this transport."""
    TRANSPORT_ALIASES.setdefault(C.TRANSPORT_ALIAS, f"{__name__}:Transport")


def find_queue_url(client: Any, name: str, endpoint: str | None) -> str | None:
    """The URL of queue ``name``, or None if it does not exist; a clear error if nothing answers."""
    try:
        return str(client.get_queue_url(QueueName=name)["QueueUrl"])
    except EndpointConnectionError as exc:
        raise EndpointUnreachable("SQS", endpoint, exc) from exc
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if "NonExistentQueue" in code or code == "QueueDoesNotExist":
            return None
        raise


def resolve_queue_url(client: Any, name: str, endpoint: str | None) -> str:
    """The URL of queue ``name``; a clear error when it is missing or nothing answers."""
    url = find_queue_url(client, name, endpoint)
    if url is None:
        raise QueueMissing(name, endpoint)
    return url


class _Batch:
    """Messages collected by :meth:`Channel.batch`, sent on exit."""

    def __init__(self) -> None:
        self.entries: list[tuple[str, dict[str, Any]]] = []


class _Port:
    """The :class:`~.consumer.ChannelPort` of a :class:`Channel`: what its consumer may use."""

    def __init__(self, channel: Channel) -> None:
        self.channel = channel

    @property
    def s3(self) -> Any:
        return self.channel.s3

    def new_queue(self, name: str) -> str:
        return self.channel._new_queue(name)

    def is_active(self, name: str) -> bool:
        return name in self.channel._active_queues

    def callback_for(self, name: str) -> Any:
        return self.channel.connection._callbacks.get(name)

    def forget(self, delivery_tag: str) -> None:
        virtual.Channel.basic_ack(self.channel, delivery_tag)

    def clear_delivered(self) -> None:
        self.channel.qos._delivered.clear()

    def prefetch_count(self) -> int:
        return int(self.channel.qos.prefetch_count or 0)

    def new_sqs_client(self, config: Any = None) -> Any:
        channel = self.channel
        return channel._new_boto_client(service="sqs", region=channel.region,
                                        access_key_id=channel.conninfo.userid,
                                        secret_access_key=channel.conninfo.password, config=config)

    def system_attributes(self) -> list[str] | None:
        names = self.channel.get_message_attributes.get("MessageSystemAttributeNames")
        return list(names) if names else None


class Channel(SQSChannel, MessageSettler):
    """SQS channel with settings-driven endpoint, strict queues, size checks and batching; its
    FIFO queues consumed by the :class:`~.consumer.Consumer` it holds, its monitoring queues
    handled by its :class:`~.monitor.MonitorChannel`.

    kombu's own handling is called as ``SQSChannel.<method>(self, ...)`` (the next class in the
    MRO that has them, as ``super()`` would; mypy's ``untyped_calls_exclude`` covers these calls
    into kombu's unannotated methods, not ``super()``'s)."""

    _batch: _Batch | None = None
    #: the consumer of this channel's FIFO queues (None until Celery consumes one)
    consumer: Consumer | None = None

    @functools.cached_property
    def monitoring(self) -> MonitorChannel:
        """What kombu's calls do for this channel's monitoring queues (made when first needed)."""
        return MonitorChannel(self)

    @property
    def monitor(self) -> Monitor:
        """This process's :class:`~.monitor.Monitor` (the event dispatcher asks it first)."""
        return self.monitoring.monitor

    def _is_monitoring(self, queue: str) -> bool:
        return self.monitoring.kind(queue) is not None

    def _is_closed(self) -> bool:
        """The channel closed: an answer that arrives now has nobody to go to (a clean stop)."""
        return bool(getattr(self, "closed", False)) or getattr(self, "connection", None) is None

    # -- consuming: kombu's calls, handed to the consumer or the monitoring ------------------
    @cached_property
    def consumer_options(self) -> ConsumerOptions:
        return ConsumerOptions.of(self.transport_options,
                                  wait_time_seconds=int(self.wait_time_seconds),
                                  polling_interval=float(self.connection.polling_interval or 0))

    def _is_action_queue(self, queue: str) -> bool:
        return queue.endswith(".fifo") and not self._is_monitoring(queue)

    def basic_consume(self, queue: str, no_ack: bool, *args: Any, **kwargs: Any) -> Any:
        if self._is_monitoring(queue):
            tag = SQSChannel.basic_consume(self, queue, no_ack, *args, **kwargs)
            self.monitoring.consuming(queue)
            return tag
        if self.consumer is None:
            self.consumer = Consumer(_Port(self), self.consumer_options,
                                     hub=getattr(self, "hub", None),
                                     on_work=self.monitoring.work_arrived)
            self.consumer.start()
        return SQSChannel.basic_consume(self, queue, no_ack, *args, **kwargs)

    def _schedule_queue(self, queue: str) -> None:
        if not (self.consumer is not None and self._is_action_queue(queue)
                and self.consumer.start_receiving(queue)):
            SQSChannel._schedule_queue(self, queue)

    def _loop1(self, queue: str, messages_fetched: Any = None) -> Any:
        if self._is_closed():
            return None  # a receive that ended after the channel closed: nothing to poll again
        if self._is_monitoring(queue):
            return self.monitoring.loop1(queue, messages_fetched)
        return SQSChannel._loop1(self, queue, messages_fetched)

    def _on_messages_ready(self, queue: str, qname: str, messages: Any) -> Any:
        if self._is_closed():
            return 0  # an answer that arrives after the channel closed (a clean stop)
        if self._is_monitoring(qname):
            return self.monitoring.on_messages_ready(queue, qname, messages)
        if self.consumer is not None:
            return self.consumer.on_messages_ready(queue, qname, messages)
        if not isinstance(messages, dict):  # kombu answers a 5xx or a timeout with a list
            messages = {}
        return SQSChannel._on_messages_ready(self, queue, qname, messages)

    def basic_ack(self, delivery_tag: str, multiple: bool = False) -> None:
        if self.consumer is None or not self.consumer.ack(delivery_tag):
            SQSChannel.basic_ack(self, delivery_tag, multiple)

    def basic_reject(self, delivery_tag: str, requeue: bool = False) -> None:
        if self.consumer is None or not self.consumer.reject(delivery_tag, requeue):
            SQSChannel.basic_reject(self, delivery_tag, requeue)

    def mark_running(self, delivery_tag: str) -> None:
        if self.consumer is not None:
            self.consumer.mark_running(delivery_tag)

    def holds(self, delivery_tag: str) -> bool:
        return self.consumer is not None and self.consumer.holds(delivery_tag)

    def settle(self, delivery_tag: str, outcome: Outcome, fields: Any) -> None:
        if self.consumer is not None:
            self.consumer.settle(delivery_tag, outcome, fields)

    def close(self) -> None:
        if self.consumer is not None:
            self.consumer.close()
        monitoring: MonitorChannel | None = self.__dict__.get("monitoring")  # (if it was made)
        if monitoring is not None:
            monitoring.close()
        SQSChannel.close(self)

    # -- the monitoring queues: kombu's calls for them, handed to the monitoring -------------
    def canonical_queue_name(self, queue_name: str) -> str:
        if self._is_monitoring(queue_name):
            return self.monitoring.sqs_name(queue_name)
        return str(SQSChannel.canonical_queue_name(self, queue_name))

    def _new_queue(self, queue: str, **kwargs: Any) -> str:
        if self._is_monitoring(queue):
            return self.monitoring.declare(queue)
        return str(SQSChannel._new_queue(self, queue, **kwargs))

    def _delete(self, queue: str, *args: Any, **kwargs: Any) -> None:
        if self._is_monitoring(queue):
            self.monitoring.delete(queue)
        else:
            SQSChannel._delete(self, queue, *args, **kwargs)

    def _queue_bind(self, exchange: str, routing_key: str, pattern: str, queue: str) -> None:
        if not self._is_monitoring(queue):  # (a monitoring queue's binding is its name)
            SQSChannel._queue_bind(self, exchange, routing_key, pattern, queue)

    def _size(self, queue: str) -> int:
        if self._is_monitoring(queue):
            return 0  # (kombu asks on each declaration; nobody reads a monitoring queue's depth)
        return int(SQSChannel._size(self, queue))

    def sqs(self, queue: str | None = None) -> Any:
        if queue is not None and self._is_monitoring(queue):
            return self.monitoring.client()
        return SQSChannel.sqs(self, queue)

    def asynsqs(self, queue: str | None = None) -> Any:
        if queue is not None and self._is_monitoring(queue):
            return self.monitoring.async_client()
        return SQSChannel.asynsqs(self, queue)

    def basic_publish(self, message: dict[str, Any], exchange: str, routing_key: str,
                      **kwargs: Any) -> Any:
        if self.monitoring.is_exchange(exchange):  # (actions: no monitor lookup)
            return self.monitoring.publish(message, exchange, routing_key)
        return SQSChannel.basic_publish(self, message, exchange, routing_key, **kwargs)

    def _receive_message(self, queue: str, max_number_of_messages: int = 1,
                         wait_time_seconds: int | None = None) -> Any:
        if self._is_monitoring(queue):
            return self.monitoring.receive_message(queue, max_number_of_messages, wait_time_seconds)
        return SQSChannel._receive_message(self, queue, max_number_of_messages, wait_time_seconds)

    def _get_bulk(self, queue: str, *args: Any, **kwargs: Any) -> Any:
        if self._is_monitoring(queue):
            return self.monitoring.get_bulk(queue, *args, **kwargs)
        return SQSChannel._get_bulk(self, queue, *args, **kwargs)

    def _get_from_sqs(self, queue_name: str, queue_url: str, connection: Any, count: int = 1,
                      callback: Any = None) -> Any:
        if self._is_monitoring(queue_name):
            return self.monitoring.get_from_sqs(queue_name, queue_url, connection, count, callback)
        return SQSChannel._get_from_sqs(self, queue_name, queue_url, connection, count, callback)

    def _message_to_python(self, message: Any, queue_name: str, q_url: str) -> Any:
        if self._is_monitoring(queue_name):
            return self.monitoring.message_to_python(message, queue_name, q_url)
        return SQSChannel._message_to_python(self, message, queue_name, q_url)

    def _delete_message(self, queue_name: str, message: dict[str, Any]) -> None:
        if not self._is_monitoring(queue_name):  # (received monitoring messages expire)
            SQSChannel._delete_message(self, queue_name, message)

    def after_reply_message_received(self, queue: str) -> None:
        if self._is_monitoring(queue):
            self.monitoring.after_reply_message_received(queue)
        else:
            SQSChannel.after_reply_message_received(self, queue)

    # -- configuration ---------------------------------------------------------------------
    @cached_property
    def endpoint_url(self) -> str | None:
        url = self.transport_options.get("endpoint_url") or super().endpoint_url
        return None if url is None else str(url)

    @cached_property
    def wire_format(self) -> str:
        """``compact`` (ActionRunner's, see :mod:`.codec`) or ``celery`` (stock kombu's)."""
        return str(self.transport_options.get("wire_format", codec.CELERY))

    @cached_property
    def compress_over(self) -> int | None:
        value = self.transport_options.get("compress_over_bytes")
        return None if value is None else int(value)

    @property
    def body_encoding(self) -> str | None:  # type: ignore[override]
        # kombu base64-encodes the task body inside the envelope; the compact format keeps JSON
        # text as it is (codec.compact base64-encodes only binary or compressed bodies)
        return None if self.wire_format == codec.COMPACT else "base64"

    @cached_property
    def max_message_bytes(self) -> int:
        return int(self.transport_options.get("max_message_bytes", C.SQS_MAX_MESSAGE_BYTES))

    @cached_property
    def predefined_queues(self) -> dict[str, dict[str, Any]]:
        """Every queue this deployment uses, with its URL resolved once (GetQueueUrl)."""
        names = self.transport_options.get("queue_names") or []
        queues = dict(self.transport_options.get("predefined_queues") or {})
        todo = tuple(name for name in names if name not in queues)
        if todo:  # once per process: each channel (a producer's, a consumer's) asks
            urls = runtime.current().part(("queue-urls", self.endpoint_url, self.region, todo),
                                          lambda _: self._resolve_urls(todo))
            queues.update({name: {"url": url} for name, url in urls.items()})
        return queues

    def _resolve_urls(self, names: tuple[str, ...]) -> dict[str, str]:
        client = self._new_boto_client(
            service="sqs",
            region=self.region,
            access_key_id=self.conninfo.userid,
            secret_access_key=self.conninfo.password,
        )
        return {name: resolve_queue_url(client, name, self.endpoint_url) for name in names}

    # -- sending ---------------------------------------------------------------------------
    def _encode_entry(self, queue: str, message: dict[str, Any]) -> dict[str, Any]:
        """The SendMessage parameters for ``message``, refusing one over the size limit."""
        properties = message.get("properties", {})
        entry: dict[str, Any] = {}
        if "message_attributes" in properties:
            entry["MessageAttributes"] = properties.pop("message_attributes")
        if queue.endswith(".fifo"):
            entry["MessageGroupId"] = properties.get("MessageGroupId", "default")
            dedup = properties.get("MessageDeduplicationId")
            if dedup is None:
                raise SendError(
                    f"message for FIFO queue {queue!r} has no MessageDeduplicationId; "
                    "send it through an @action so it gets a deterministic one"
                )
            entry["MessageDeduplicationId"] = dedup
        headers = message.get("headers") or {}
        if headers.get("eta"):  # one a worker cannot hold would stall its group: not sent
            check_eta(headers, time.time(), sending=True, task=str(headers.get("task", "?")))
        raw = message.get("body")
        limit = self.consumer_options.max_decoded_bytes
        if isinstance(raw, str | bytes) and len(raw) > limit:  # workers would refuse it
            name = message.get("headers", {}).get("task", "?")
            raise PayloadTooLarge(name, len(raw), limit, "ACTIONRUNNER_MAX_DECODED_BYTES")
        if self.wire_format == codec.COMPACT:
            body = codec.encode(message, compress_over=self.compress_over,
                                sqs_carried=queue.endswith(".fifo"))
        else:
            body = dumps(message)
            if self.sqs_base64_encoding:
                from kombu.asynchronous.aws.sqs.message import AsyncMessage

                body = AsyncMessage().encode(body)
        entry["MessageBody"] = body
        size = len(body.encode("utf-8"))
        if size > self.max_message_bytes:
            bucket = self.transport_options.get("payload_bucket")
            if not bucket:
                name = message.get("headers", {}).get("task", "?")
                raise PayloadTooLarge(name, size, self.max_message_bytes)
            pointer, attributes = claimcheck.offload(self.s3, bucket, body)
            entry["MessageBody"] = pointer
            entry["MessageAttributes"] = {**entry.get("MessageAttributes", {}), **attributes}
        return entry

    @cached_property
    def s3(self) -> Any:
        """S3 client for claim-checked payloads (path-style against an emulator)."""
        import boto3
        from botocore.config import Config

        endpoint = self.transport_options.get("s3_endpoint_url")
        config = Config(s3={"addressing_style": "path"}) if endpoint else None
        return boto3.session.Session().client("s3", region_name=self.region, endpoint_url=endpoint,
                                              config=config)

    def _put(self, queue: str, message: dict[str, Any], **kwargs: Any) -> None:
        entry = self._encode_entry(queue, message)
        if self._batch is not None:
            self._batch.entries.append((queue, entry))
            return
        q_url = self._new_queue(queue)
        self.sqs(queue=self.canonical_queue_name(queue)).send_message(QueueUrl=q_url, **entry)

    @contextlib.contextmanager
    def batch(self, *, max_attempts: int = 5) -> Iterator[_Batch]:
        """Collect the messages published inside the block; send them with SendMessageBatch.

        Entries SQS refuses with a transient error are sent again (with backoff) up to
        ``max_attempts`` times; if any is still refused, :class:`SendError` lists them by their
        position in the block, and every other message was accepted.
        """
        if self._batch is not None:
            yield self._batch
            return
        batch = self._batch = _Batch()
        try:
            yield batch
        finally:
            self._batch = None
        self.send_batch(batch.entries, max_attempts=max_attempts)

    def send_batch(
        self, entries: list[tuple[str, dict[str, Any]]], *, max_attempts: int = 5
    ) -> None:
        """Send ``(queue, SendMessage parameters)`` pairs, ten per SendMessageBatch call."""
        pending: dict[str, list[tuple[int, dict[str, Any]]]] = {}
        for index, (queue, entry) in enumerate(entries):
            pending.setdefault(queue, []).append((index, entry))
        failed: list[tuple[int, str, str]] = []
        for queue, items in pending.items():
            failed.extend(self._send_queue_batch(queue, items, max_attempts))
        if failed:
            failed.sort()
            raise SendError(
                f"SQS refused {len(failed)} of {len(entries)} messages "
                f"(first: #{failed[0][0]} {failed[0][1]}: {failed[0][2]}); the others were sent",
                failed,
            )

    def _send_queue_batch(
        self, queue: str, items: list[tuple[int, dict[str, Any]]], max_attempts: int
    ) -> list[tuple[int, str, str]]:
        q_url = self._new_queue(queue)
        client = self.sqs(queue=self.canonical_queue_name(queue))
        final: list[tuple[int, str, str]] = []
        todo = items

        def call(entries: list[dict[str, Any]]) -> Any:
            return client.send_message_batch(QueueUrl=q_url, Entries=entries)

        for attempt in range(max_attempts):
            retry: list[tuple[int, dict[str, Any]]] = []
            last = attempt + 1 >= max_attempts
            for chunk in in_batches(call, todo, lambda item: item[1],
                                    catch=(ClientError, BotoCoreError)):
                for (index, entry), failure in chunk.failed():
                    code = str(failure.get("Code", ""))
                    if chunk.error is not None:  # none of the call's entries is known to be sent
                        transient = (code in RETRYABLE_ENTRY_CODES
                                     if isinstance(chunk.error, ClientError) else True)
                        text = (str(chunk.error.response.get("Error", {}).get("Message", ""))
                                if isinstance(chunk.error, ClientError) else str(chunk.error))
                    else:
                        transient = not failure.get("SenderFault") or code in RETRYABLE_ENTRY_CODES
                        text = str(failure.get("Message", ""))
                    if transient and not last:
                        retry.append((index, entry))
                    else:
                        final.append((index, code, text))
            if not retry:
                break
            time.sleep(backoff(attempt + 1, base=0.05, cap=2.0))
            todo = retry
        return final


class Transport(SQSTransport):
    """kombu's SQS transport with ActionRunner's :class:`Channel`."""

    Channel = Channel
    driver_type = "sqs"
    driver_name = "actionrunner-sqs"
    # fanout (remote control) and topic (events) over monitoring queues: actionrunner.sqs.monitor
    implements = SQSTransport.implements.extend(exchange_type=frozenset(["direct", "topic", "fanout"]))


register()
codec.register()
