"""The receiving side of ActionRunner's SQS channel: FIFO's promises under ``celery worker -c N``.

Mixed into :class:`actionrunner.sqs.transport.Channel`. kombu's receive loop stays (long polls of
up to 10 messages); what happens to the messages changes:

* **group order** — every received message goes through a :class:`GroupDispatcher`: Celery sees
  the head of each group only; the next message of the group is handed over when the head is done;
* **ack after the work** — an ack queues the message for DeleteMessageBatch (the housekeeper
  thread sends it), and hands the group's next message to the worker;
* **heartbeat** — every message held (running, waiting its turn, or backing off) has its visibility
  extended by the housekeeper until it is deleted, dead-lettered or released;
* **retries on the same message** — :meth:`retry_later` keeps the message (and its group) and
  hands it to the worker again after the backoff; nothing is republished;
* **dead-lettering** — :meth:`dead_letter` sends the message to the DLQ with its body, group and
  attributes plus the failure, then deletes it; :meth:`hold` instead leaves it in the queue, hidden
  for a while, blocking its group, for the queue's redrive policy to decide;
* **release** — on shutdown, messages that did not run are made visible again at once.
"""

from __future__ import annotations

import copy
import logging
import time
import weakref
from dataclasses import dataclass, field
from typing import Any

from kombu.transport import virtual
from vine import promise

from .. import constants as C
from ..logging import log_event
from ..worker.dispatch import GroupDispatcher
from ..worker.housekeeper import Housekeeper
from . import claimcheck

logger = logging.getLogger("actionrunner.worker")

#: Every live consuming channel of this process (the shutdown handler releases their messages).
CHANNELS: weakref.WeakSet[Any] = weakref.WeakSet()


@dataclass
class Held:
    """A received message this worker holds (running, waiting its turn, or backing off)."""

    group: str
    callback: Any
    payload: dict[str, Any]
    queue_url: str
    receipt_handle: str
    attempt: int = 0
    running: bool = False
    received_at: float = field(default_factory=time.monotonic)

    @property
    def sqs_message(self) -> dict[str, Any]:
        return dict(self.payload["properties"]["delivery_info"]["sqs_message"])


class FifoConsumer:
    """Receive-side overrides of the SQS channel (see the module docstring)."""

    _dispatcher: GroupDispatcher[Held] | None = None
    _housekeeper: Housekeeper | None = None
    _held: dict[str, Held]

    # -- set-up ----------------------------------------------------------------------------
    def basic_consume(self, queue: str, no_ack: bool, *args: Any, **kwargs: Any) -> Any:
        if self._dispatcher is None:
            self._held = {}
            self._dispatcher = GroupDispatcher()
            client = self._new_boto_client(  # type: ignore[attr-defined]
                service="sqs", region=self.region,  # type: ignore[attr-defined]
                access_key_id=self.conninfo.userid,  # type: ignore[attr-defined]
                secret_access_key=self.conninfo.password,  # type: ignore[attr-defined]
            )
            self._housekeeper = Housekeeper(
                client,
                visibility_timeout=int(self.transport_options.get("visibility_timeout", 30)),  # type: ignore[attr-defined]
                heartbeat_interval=self.transport_options.get("heartbeat_interval"),  # type: ignore[attr-defined]
            )
            self._housekeeper.start()
            CHANNELS.add(self)
        return super().basic_consume(queue, no_ack, *args, **kwargs)  # type: ignore[misc]

    @property
    def capacity(self) -> int:
        """Messages this channel holds at most (running, reserved or waiting their turn): Celery's
        prefetch count, and at least two receives' worth, so one can be in flight while ten run."""
        prefetch = self.qos.prefetch_count or 0  # type: ignore[attr-defined]
        return max(2 * C.SQS_MAX_BATCH, prefetch)

    def _room(self) -> int:
        if self._dispatcher is None:
            return C.SQS_MAX_BATCH
        return self.capacity - len(self._held)

    # -- receiving -------------------------------------------------------------------------
    def _get_message_estimate(self, max_if_unlimited: int = C.SQS_MAX_BATCH) -> int:
        return max(0, min(C.SQS_MAX_BATCH, self._room()))

    def _schedule_queue(self, queue: str) -> None:
        if queue in self._active_queues:  # type: ignore[attr-defined]
            closed = self._dispatcher is not None and self._dispatcher.closed
            if closed:
                self._loop1(queue)  # type: ignore[attr-defined]
            elif self._room() > 0:
                self._get_bulk_async(queue, callback=promise(self._loop1, (queue,)))  # type: ignore[attr-defined]
            else:  # full: look again soon (a local check, not a request)
                self.hub.call_later(0.02, self._schedule_queue, queue)  # type: ignore[attr-defined]

    def _get_from_sqs(self, queue_name: str, queue_url: str, connection: Any, count: int = 1,
                      callback: Any = None) -> Any:
        # The worker sets the visibility of what it receives (the heartbeat keeps it up), so a
        # crashed worker's messages come back after this short timeout whatever the queue says.
        return connection.receive_message(
            queue_name, queue_url, number_messages=count,
            visibility_timeout=int(self.transport_options.get("visibility_timeout", 30)),  # type: ignore[attr-defined]
            wait_time_seconds=self.wait_time_seconds,  # type: ignore[attr-defined]
            callback=callback,
        )

    def _on_messages_ready(self, queue: str, qname: str, messages: dict[str, Any]) -> int:
        msgs = messages.get("Messages") or []
        if not msgs:
            return 0
        callback = self.connection._callbacks.get(qname)  # type: ignore[attr-defined]
        if callback is None or self._dispatcher is None or self._dispatcher.closed:
            if self._housekeeper is not None:
                self._housekeeper.release([(queue, m["ReceiptHandle"]) for m in msgs])
            else:
                self._release_messages(queue, qname, msgs)  # type: ignore[attr-defined]
            return 0
        assert self._housekeeper is not None
        for msg in msgs:
            pointer = claimcheck.pointer_of(msg.get("Body") or "")
            if pointer is not None:  # the payload is in S3: fetch it
                try:
                    msg = {**msg, "Body": claimcheck.fetch(self.s3, *pointer),  # type: ignore[attr-defined]
                           "ar_pointer": pointer, "ar_original_body": msg["Body"]}
                except Exception as exc:
                    logger.error("cannot fetch claim-checked payload s3://%s/%s: %r", *pointer, exc)
                    self._housekeeper.release([(queue, msg["ReceiptHandle"])], 30)
                    continue
            payload = self._message_to_python(msg, qname, queue)  # type: ignore[attr-defined]
            group = (msg.get("Attributes") or {}).get("MessageGroupId", "")
            held = Held(group, callback, payload, queue, msg["ReceiptHandle"])
            self._held[held.receipt_handle] = held
            self._housekeeper.track(queue, held.receipt_handle)
            if self._dispatcher.offer(group, held):
                self._deliver(held)
        return len(msgs)

    def _deliver(self, held: Held) -> None:
        held.attempt += 1
        held.running = False
        payload = copy.deepcopy(held.payload) if held.attempt > 1 else held.payload
        payload["properties"]["delivery_info"]["actionrunner_attempt"] = held.attempt
        if held.attempt > 1:  # Celery's own count (self.request.retries, Flower's "retries")
            payload.setdefault("headers", {})["retries"] = held.attempt - 1
        held.callback(payload)

    def _next_of(self, group: str) -> None:
        assert self._dispatcher is not None
        following = self._dispatcher.done(group)
        if following is not None:
            hub = getattr(self, "hub", None)
            if hub is not None:
                hub.call_soon(self._deliver, following)
            else:
                self._deliver(following)

    # -- outcomes --------------------------------------------------------------------------
    def basic_ack(self, delivery_tag: str, multiple: bool = False) -> None:
        held = self._held.pop(delivery_tag, None) if self._dispatcher is not None else None
        if held is None:
            return super().basic_ack(delivery_tag, multiple)  # type: ignore[misc,no-any-return]
        assert self._housekeeper is not None
        self._housekeeper.delete(held.queue_url, delivery_tag)
        virtual.Channel.basic_ack(self, delivery_tag)  # type: ignore[arg-type]
        self._next_of(held.group)
        pointer = held.sqs_message.get("ar_pointer")
        if pointer:  # done: the claim-checked payload goes too
            try:
                self.s3.delete_object(Bucket=pointer[0], Key=pointer[1])  # type: ignore[attr-defined]
            except Exception as exc:  # the bucket's lifecycle rule expires it anyway
                logger.warning("could not delete s3://%s/%s: %r", *pointer, exc)

    def basic_reject(self, delivery_tag: str, requeue: bool = False) -> None:
        held = self._held.get(delivery_tag) if self._dispatcher is not None else None
        if held is None:
            return super().basic_reject(delivery_tag, requeue)  # type: ignore[misc,no-any-return]
        if requeue:
            # back to SQS, with the rest of its group behind it: order is kept
            self._release_group(held, visibility=0)
        else:
            self.dead_letter(delivery_tag, {"error_type": "Rejected",
                                            "error": "rejected by the worker (unknown or invalid message)"})

    def mark_running(self, delivery_tag: str) -> None:
        """The worker started running the message (it is no longer only reserved)."""
        held = self._held.get(delivery_tag)
        if held is not None:
            held.running = True

    def retry_later(self, delivery_tag: str, delay: float, count_attempt: bool = True) -> None:
        """Hand the message to the worker again after ``delay`` seconds; its group waits.
        ``count_attempt=False``: the next run has the same attempt number (a wait, not a failure)."""
        held = self._held.get(delivery_tag)
        if held is None:
            return
        held.running = False
        if not count_attempt:
            held.attempt -= 1
        self.hub.call_later(max(0.0, delay), self._deliver_if_held, held)  # type: ignore[attr-defined]

    def _deliver_if_held(self, held: Held) -> None:
        if self._held.get(held.receipt_handle) is held and not (self._dispatcher and self._dispatcher.closed):
            self._deliver(held)

    def dead_letter(self, delivery_tag: str, failure: dict[str, Any]) -> bool:
        """Move the message to the DLQ (body, group, attributes and the failure); then delete it.

        Returns False (and keeps the message, to be retried later) if the DLQ did not take it.
        """
        held = self._held.get(delivery_tag)
        if held is None:
            return False
        sqs_message = held.sqs_message
        attrs = sqs_message.get("Attributes") or {}
        dlq_url = self._new_queue(self.transport_options["dlq_name"])  # type: ignore[attr-defined]
        message_attributes = dict(sqs_message.get("MessageAttributes") or {})
        for key, value in {
            "actionrunner.error_type": failure.get("error_type"),
            "actionrunner.error": (failure.get("error") or "")[:1000] or None,
            "actionrunner.attempts": failure.get("attempts"),
            "actionrunner.receive_count": attrs.get("ApproximateReceiveCount"),
            "actionrunner.source_queue": held.queue_url,
            "actionrunner.failed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }.items():
            if value is not None:
                message_attributes[key] = {"DataType": "String", "StringValue": str(value)}
        try:
            self.sqs(queue=self.transport_options["dlq_name"]).send_message(  # type: ignore[attr-defined]
                QueueUrl=dlq_url,
                MessageBody=sqs_message.get("ar_original_body") or sqs_message["Body"],
                MessageGroupId=attrs.get("MessageGroupId") or held.group or "default",
                MessageDeduplicationId=f"{sqs_message.get('MessageId', delivery_tag[:60])}"
                                       f":dlq:{attrs.get('ApproximateReceiveCount', '0')}",
                MessageAttributes=message_attributes,
            )
        except Exception as exc:  # the message stays ours; try again after a pause
            logger.error("could not move message to the DLQ (%r); retrying in 30 s", exc)
            self.retry_later(delivery_tag, 30)
            return False
        self._held.pop(delivery_tag, None)
        assert self._housekeeper is not None
        self._housekeeper.delete(held.queue_url, delivery_tag)
        virtual.Channel.basic_ack(self, delivery_tag)  # type: ignore[arg-type]
        self._next_of(held.group)
        return True

    def hold(self, delivery_tag: str, seconds: int) -> None:
        """Leave the message in the queue hidden for ``seconds``: its group waits behind it, and
        the queue's redrive policy moves it to the DLQ after maxReceiveCount receives."""
        held = self._held.get(delivery_tag)
        if held is not None:
            self._release_group(held, visibility=seconds)

    def _release_group(self, held: Held, visibility: int) -> None:
        assert self._dispatcher is not None and self._housekeeper is not None
        rest = self._dispatcher.take_group(held.group)
        for item in (held, *rest):
            self._held.pop(item.receipt_handle, None)
        self._housekeeper.release([(held.queue_url, held.receipt_handle)], visibility)
        if rest:
            self._housekeeper.release([(r.queue_url, r.receipt_handle) for r in rest], 0)
        virtual.Channel.basic_ack(self, held.receipt_handle)  # type: ignore[arg-type]  (forget it)
        self._dispatcher.done(held.group)

    # -- shutdown --------------------------------------------------------------------------
    def release_waiting(self) -> int:
        """Stop handing out messages and make every one that is not running visible again now:
        those waiting their group's turn, reserved by Celery but not started, or backing off."""
        if self._dispatcher is None or self._housekeeper is None:
            return 0
        waiting = self._dispatcher.close()
        waiting += [h for h in list(self._held.values()) if not h.running and h.attempt > 0]
        for item in waiting:
            self._held.pop(item.receipt_handle, None)
        self._housekeeper.release([(w.queue_url, w.receipt_handle) for w in waiting], 0)
        if waiting:
            log_event("released", count=len(waiting), reason="shutdown")
        return len(waiting)

    def release_all(self) -> int:
        """Make every held message visible again now (running ones included)."""
        count = self.release_waiting()
        if self._housekeeper is None:
            return count
        rest = list(self._held.values())
        self._held.clear()
        self._housekeeper.release([(h.queue_url, h.receipt_handle) for h in rest], 0)
        return count + len(rest)

    def close(self) -> None:
        if self._dispatcher is not None and self._housekeeper is not None:
            self.release_all()  # what never finished goes back to the queue at once
            self._housekeeper.stop()
            self.qos._delivered.clear()  # type: ignore[attr-defined]  (released above, not restored)
            CHANNELS.discard(self)
        super().close()  # type: ignore[misc]


def failure_attributes(message: dict[str, Any]) -> dict[str, str]:
    """The failure ActionRunner recorded on a dead-lettered message (for `actionrunner dlq`)."""
    attrs = message.get("MessageAttributes") or {}
    return {k.removeprefix("actionrunner."): v.get("StringValue", "") for k, v in attrs.items()
            if k.startswith("actionrunner.")}


__all__ = ["CHANNELS", "FifoConsumer", "Held", "failure_attributes"]
