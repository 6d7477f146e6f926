"""The receiving side of ActionRunner's SQS channel: FIFO's promises under ``celery worker -c N``.

Mixed into :class:`actionrunner.sqs.transport.Channel`. What happens to a received message:

* **receive** — a :class:`~.receiver.Receiver` thread per queue long-polls with boto3 and hands the
  messages to the event loop's thread; no AWS error stops it (see :mod:`.receiver`);
* **decode** — :func:`.inbound.decode` turns each message into a payload Celery can run, or a
  refusal naming the problem; a claim-checked payload is fetched (in a thread, from the payload
  bucket only) when its message reaches the head of its group;
* **group order** — every message goes through a :class:`~.dispatch.GroupDispatcher`: Celery
  sees the head of each group only; the next message of the group is handed over when the head
  is settled;
* **settle** — the worker's request decides with :func:`actionrunner.settle.decide` and applies
  the outcome through :meth:`FifoConsumer.settle` (the :class:`~actionrunner.settle.MessageSettler`
  interface): ack → delete; retry/wait → the same message again after the delay, nothing
  republished; hold → hidden at the head of its group; release → back at once with its group;
  dead-letter → sent to the DLQ (retried until it takes it), then deleted, then the group goes
  on. A message that cannot be decoded is dead-lettered in its turn, the same way;
* **heartbeat** — every held message has its visibility extended by the
  :class:`~.housekeeper.Housekeeper` until it is deleted, dead-lettered or released; one whose
  visibility was lost before it started is dropped (with the rest of its group held here);
* **release** — on shutdown, messages that did not run are made visible again at once.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
import weakref
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from kombu.transport import virtual

from .. import constants as C
from .. import runtime
from ..errors import UndecodableMessage
from ..logging import log_event
from ..runnable import eta_seconds
from ..settle import (
    UNDECODABLE,
    DeadLetter,
    Hold,
    MessageSettler,
    Outcome,
    Reason,
    Release,
    Retry,
    Wait,
    dead_letter_entry,
    decide,
    failure_attributes,
)
from . import claimcheck, inbound
from .dispatch import GroupDispatcher
from .housekeeper import DeadLetterJob, Housekeeper
from .receiver import HubInbox, Receiver, backoff

logger = logging.getLogger("actionrunner.worker")

#: Every live consuming channel of this process (the shutdown handler releases their messages).
CHANNELS: weakref.WeakSet[Any] = weakref.WeakSet()
#: Seconds past its long poll a receive may take before it is given up and tried again.
RECEIVE_GRACE_SECONDS = 5.0
#: Default bound on decoded bodies (``ACTIONRUNNER_MAX_DECODED_BYTES``).
DEFAULT_MAX_DECODED_BYTES = 8 * C.SQS_MAX_MESSAGE_BYTES


@dataclass
class Held:
    """A received message this worker holds (running, waiting its turn, or backing off)."""

    group: str
    callback: Any
    message: dict[str, Any]  #: the ReceiveMessage entry
    queue_url: str
    receipt_handle: str
    payload: dict[str, Any] | None = None  #: decoded (None: not yet, or undecodable)
    problem: UndecodableMessage | None = None
    pointer: tuple[str, str] | None = None  #: claim-checked payload, fetched at its turn
    fetch_failures: int = 0
    attempt: int = 0
    runs: int = 0  #: times handed to Celery (a wait uses no attempt, but it is a run)
    running: bool = False
    settling: bool = False  #: on its way to the DLQ
    #: its key as read for its first run (see actionrunner.state.completions): the item, ``{}``
    #: (none), UNKNOWN; None: not read (not a first delivery of a per-call key)
    seen: Any = None
    reading: bool = False
    completes_here: bool = False  #: its first run hands its completion to this process
    received_at: float = field(default_factory=time.monotonic)

    @property
    def sqs_message(self) -> dict[str, Any]:
        return self.message

    @property
    def receive_count(self) -> int | None:
        value = (self.message.get("Attributes") or {}).get("ApproximateReceiveCount")
        try:
            return int(value)
        except (TypeError, ValueError):
            return None


_REGISTERED: set[str] = set()  # task names found registered (tasks are not unregistered)


def _is_registered(name: str) -> bool:
    if name in _REGISTERED:
        return True
    from celery import current_app

    if name in current_app.tasks:
        _REGISTERED.add(name)
        return True
    return False


class FifoConsumer(MessageSettler):
    """Receive-side overrides of the SQS channel (see the module docstring)."""

    _dispatcher: GroupDispatcher[Held] | None = None
    _housekeeper: Housekeeper | None = None
    _inbox: HubInbox | None = None
    _held: dict[str, Held]
    _receivers: dict[str, Receiver]

    # -- set-up ----------------------------------------------------------------------------
    def basic_consume(self, queue: str, no_ack: bool, *args: Any, **kwargs: Any) -> Any:
        if self._dispatcher is None:
            self._held = {}
            self._receivers = {}
            self._incoming = 0
            self._incoming_lock = threading.Lock()
            self._dispatcher = GroupDispatcher()
            self._fetcher = ThreadPoolExecutor(max_workers=2, thread_name_prefix="actionrunner-fetch")
            self._housekeeper = Housekeeper(
                self._new_sqs_client(),
                visibility_timeout=self._visibility_timeout,
                heartbeat_interval=self.transport_options.get("heartbeat_interval"),  # type: ignore[attr-defined]
                on_lost=lambda handles: self._post(self._lost, handles),
            )
            self._housekeeper.start()
            hub = getattr(self, "hub", None)
            if hub is not None:
                self._inbox = HubInbox(hub)
            CHANNELS.add(self)
        return super().basic_consume(queue, no_ack, *args, **kwargs)  # type: ignore[misc]

    def _new_sqs_client(self, config: Any = None) -> Any:
        """A client of the worker's own receives, deletes, visibility changes and dead letters:
        requests of fixed shapes, so botocore's parameter validation (~10% of the CPU of each
        request) is skipped; SQS still checks every request."""
        from botocore.config import Config

        lean = Config(parameter_validation=False)
        config = lean if config is None else lean.merge(config)
        return self._new_boto_client(  # type: ignore[attr-defined]
            service="sqs", region=self.region,  # type: ignore[attr-defined]
            access_key_id=self.conninfo.userid,  # type: ignore[attr-defined]
            secret_access_key=self.conninfo.password,  # type: ignore[attr-defined]
            config=config,
        )

    def _receive_client(self) -> Any:
        """A client whose receives give up soon after the long poll: a receive answered late
        holds up every new message of the queue, so it is retried (same attempt id) after
        a few seconds instead of the general read timeout."""
        from botocore.config import Config

        wait = int(self.wait_time_seconds)  # type: ignore[attr-defined]
        general = (self.transport_options.get("client-config") or {}).get("read_timeout")  # type: ignore[attr-defined]
        read_timeout = wait + RECEIVE_GRACE_SECONDS
        if general:
            read_timeout = min(float(general), read_timeout)
        return self._new_sqs_client(Config(read_timeout=read_timeout))

    @property
    def _visibility_timeout(self) -> int:
        return int(self.transport_options.get("visibility_timeout", 30))  # type: ignore[attr-defined]

    @property
    def max_decoded_bytes(self) -> int:
        return int(self.transport_options.get("max_decoded_bytes") or DEFAULT_MAX_DECODED_BYTES)  # type: ignore[attr-defined]

    @property
    def capacity(self) -> int:
        """Messages this channel holds at most (running, reserved or waiting their group's turn):
        Celery's prefetch count, and at least two receives' worth."""
        prefetch = self.qos.prefetch_count or 0  # type: ignore[attr-defined]
        return max(2 * C.SQS_MAX_BATCH, prefetch)

    def _room(self) -> int:
        if self._dispatcher is None:
            return C.SQS_MAX_BATCH
        # a message whose key is being read (its first run waits on DynamoDB, not on the pool)
        # leaves room for another, up to a second capacity's worth: reads do not starve the pool
        reading = min(self._reading, self.capacity)
        return self.capacity - (len(self._held) - reading) - self._incoming

    def _demand(self) -> int:
        """How many messages to ask for now: 10 while there is room for 10; what room is left
        only when fewer than half the capacity are held (so receives come back full)."""
        if self._dispatcher is None or self._dispatcher.closed:
            return 0
        room = self._room()
        if room >= C.SQS_MAX_BATCH:
            return C.SQS_MAX_BATCH
        return room if room > 0 and self.capacity - room < self.capacity // 2 else 0

    def _post(self, fn: Any, *args: Any) -> None:
        """Run ``fn(*args)`` in the event loop's thread (at once when there is no event loop)."""
        if self._inbox is not None and not self._inbox.closed:
            self._inbox.post(fn, *args)
        else:
            try:
                fn(*args)
            except Exception:
                logger.exception("error handling %s (the worker goes on)", getattr(fn, "__name__", fn))

    # -- receiving -------------------------------------------------------------------------
    def _is_action_queue(self, queue: str) -> bool:
        return queue.endswith(".fifo") and not getattr(self, "_kind", lambda q: None)(queue)

    def _schedule_queue(self, queue: str) -> None:
        if not self._is_action_queue(queue) or self._inbox is None:
            return super()._schedule_queue(queue)  # type: ignore[misc,no-any-return]
        if queue in self._receivers or queue not in self._active_queues:  # type: ignore[attr-defined]
            return None
        q_url = self._new_queue(queue)  # type: ignore[attr-defined]
        attributes = self.get_message_attributes.get("MessageSystemAttributeNames")  # type: ignore[attr-defined]
        receiver = Receiver(
            self._receive_client(), q_url,
            demand=self._demand,
            deliver=lambda messages: self._hand_over(q_url, queue, messages),
            release=lambda messages: self._housekeeper.release(  # type: ignore[union-attr]
                [(q_url, m["ReceiptHandle"]) for m in messages]),
            wait_time_seconds=int(self.wait_time_seconds),  # type: ignore[attr-defined]
            visibility_timeout=self._visibility_timeout,
            polling_interval=float(self.connection.polling_interval or 0),  # type: ignore[attr-defined]
            system_attributes=list(attributes) if attributes else None,
        )
        self._receivers[queue] = receiver
        receiver.start()
        return None

    def _hand_over(self, q_url: str, qname: str, messages: list[dict[str, Any]]) -> None:
        """(Receiver thread) track the messages at once, then pass them to the event loop."""
        assert self._housekeeper is not None
        self._housekeeper.track_many(q_url, [m["ReceiptHandle"] for m in messages])
        with self._incoming_lock:
            self._incoming += len(messages)
        self._post(self._accept, q_url, qname, messages)

    def _on_messages_ready(self, queue: str, qname: str, messages: Any) -> int:
        """kombu's own receive loop (used only without an event loop): the same path."""
        if not isinstance(messages, Mapping):  # kombu answers a failed receive with a list
            return 0
        msgs = [m for m in (messages.get("Messages") or []) if isinstance(m, dict)]
        if msgs and self._housekeeper is not None:
            self._hand_over(queue, qname, msgs)  # no event loop: _post runs _accept at once
        return len(msgs)

    def _accept(self, q_url: str, qname: str, messages: list[dict[str, Any]]) -> None:
        """(Event loop) take received messages into their groups; start each group's head."""
        assert self._housekeeper is not None and self._dispatcher is not None
        with self._incoming_lock:
            self._incoming -= len(messages)
        callback = self.connection._callbacks.get(qname)  # type: ignore[attr-defined]
        if callback is None or self._dispatcher.closed:
            self._housekeeper.release([(q_url, m["ReceiptHandle"]) for m in messages])
            return
        self._work_arrived()
        for message in messages:
            group = str((message.get("Attributes") or {}).get("MessageGroupId", ""))
            held = Held(group, callback, message, q_url, message["ReceiptHandle"])
            self._read(held)
            self._held[held.receipt_handle] = held
            if self._dispatcher.offer(group, held):
                self._deliver(held)
        if self._reading:  # messages whose key is being read leave room: ask for more now
            self._wake_receivers()

    def _work_arrived(self) -> None:
        """(Event loop) actions were received: the worker is not idle (the remote-control
        mailbox, :mod:`.monitor.mailbox`, wakes if it dozes)."""

    def _read(self, held: Held, body: str | None = None) -> None:
        """Decode the message (or its claim-checked ``body``) into ``held``: a payload, a
        pointer to fetch at its turn, or the problem it is dead-lettered for."""
        try:
            if body is None:
                pointer = claimcheck.pointer_of(held.message.get("Body"))
                if pointer is not None:
                    claimcheck.check(pointer, held.message.get("MessageAttributes"),
                                     bucket=self.transport_options.get("payload_bucket"),  # type: ignore[attr-defined]
                                     max_bytes=self.max_decoded_bytes)
                    held.pointer = pointer
                    return
            held.payload = inbound.decode(held.message, queue_url=held.queue_url,
                                          max_bytes=self.max_decoded_bytes,
                                          is_registered=_is_registered, body=body)
        except UndecodableMessage as exc:
            held.problem = exc

    def _deliver(self, held: Held) -> None:
        """(Event loop) the message's turn has come: run it, fetch it, or dead-letter it."""
        if self._held.get(held.receipt_handle) is not held:
            return
        try:
            if held.problem is not None:
                self._settle_held(held, DeadLetter(Reason.of(held.problem, max(1, held.attempt),
                                                             held.receive_count)),
                                  self._describe(held))
                return
            if held.payload is None and held.pointer is not None:
                self._fetch(held)
                return
            assert held.payload is not None
            if held.runs == 0 and held.seen is None and self._read_first(held):
                return  # delivered once its key is read
            held.attempt += 1
            held.runs += 1
            held.running = False
            payload = copy.deepcopy(held.payload) if held.runs > 1 else held.payload
            payload["properties"]["delivery_info"]["actionrunner_attempt"] = held.attempt
            payload["properties"]["delivery_info"]["actionrunner_runs"] = held.runs
            # AMQP's flag, as Celery's tasks read it: delivered before (run here, or received
            # again from SQS after a release or a visibility timeout)
            payload["properties"]["delivery_info"]["redelivered"] = (
                held.runs > 1 or (held.receive_count or 1) > 1)
            if held.attempt > 1:  # Celery's own count (self.request.retries, Flower's "retries")
                payload.setdefault("headers", {})["retries"] = held.attempt - 1
            if held.runs == 1:
                self._say_if_scheduled(held, payload.get("headers") or {})
            if held.runs == 1 and held.seen is not None and self._hotpath is not None:
                self._hand_state(held, payload["properties"]["delivery_info"])
            held.callback(payload)
        except Exception as exc:  # Celery could not take it: dead-letter it, never raise
            logger.exception("the worker could not start message %s", held.message.get("MessageId"))
            self._settle_held(held, decide(UNDECODABLE, exc, attempt=max(1, held.attempt),
                                           receive_count=held.receive_count), self._describe(held))

    def _say_if_scheduled(self, held: Held, headers: Mapping[str, Any]) -> None:
        """A message with an ``eta`` holds its group until then (at most
        :data:`~actionrunner.runnable.MAX_ETA_SECONDS`): a ``scheduled`` line says why."""
        ahead = eta_seconds(dict(headers), time.time())
        if ahead is not None and ahead > 1:
            log_event("scheduled", **self._describe(held), eta=str(headers.get("eta"))[:40],
                      wait_s=round(ahead, 1), reason="its eta: its group waits behind it")

    # -- the first delivery's state requests (actionrunner.state.completions) --------------
    _hotpath: Any = None
    _hotpath_off = False
    _reading = 0  #: messages whose key is being read

    def _read_first(self, held: Held) -> bool:
        """(Event loop) a message's first run whose key must be read first: read it (batched,
        in the hot path's thread), then deliver it. False if it is not such a message."""
        if held.receive_count != 1 or self._hotpath_off:
            held.seen = False
            return False
        headers = (held.payload or {}).get("headers") or {}
        key = self._first_key(headers)
        hot = self._hot() if key else None
        if hot is None or key is None:
            held.seen = False
            return False
        held.reading = True
        self._reading += 1

        def answer(item: Any) -> None:
            self._post(self._key_read, held, item)

        hot.read(key, answer)
        return True

    def _first_key(self, headers: Mapping[str, Any]) -> str | None:
        name = headers.get("task")
        if not isinstance(name, str) or not _is_registered(name):
            return None
        from celery import current_app

        from ..action import is_action
        from ..state.guard import first_delivery_key

        task = current_app.tasks[name]
        return first_delivery_key(task, headers) if is_action(task) else None

    def _hot(self) -> Any:
        """This channel's :class:`~actionrunner.state.completions.HotPath` (made at first use),
        or None when the runs use another store than the state table."""
        if self._hotpath is None and not self._hotpath_off:
            from ..state import guard
            from ..state.completions import HotPath
            from ..state.dynamodb import DynamoDBStore

            store = guard.get_store()
            if not isinstance(store, DynamoDBStore):
                self._hotpath_off = True
                return None
            from botocore.config import Config

            from ..state.throttling import state_client_config

            settings = runtime.current().settings
            lean = state_client_config(settings).merge(Config(parameter_validation=False))
            self._hotpath = HotPath(store, client=settings.client("dynamodb", config=lean))
        return self._hotpath

    def _key_read(self, held: Held, item: Any) -> None:
        held.reading = False
        self._reading -= 1
        held.seen = item
        self._deliver(held)

    def _hand_state(self, held: Held, delivery_info: dict[str, Any]) -> None:
        """(First run) the key as read, and where to send the completion."""
        from ..state.completions import UNKNOWN

        if held.seen is False:
            return
        if held.seen is not UNKNOWN:
            delivery_info["actionrunner_seen"] = held.seen
        delivery_info["actionrunner_sink"] = self._hotpath.path
        held.completes_here = True

    def _describe(self, held: Held) -> dict[str, Any]:
        fields = inbound.describe(held.message)
        return {"action": fields.get("action") or "(undecodable)", "id": fields.get("id"),
                "message_id": held.message.get("MessageId"), "group": held.group,
                "attempt": max(1, held.attempt), "receive_count": held.receive_count}

    # -- claim check -----------------------------------------------------------------------
    def _fetch(self, held: Held) -> None:
        assert held.pointer is not None
        bucket, key = held.pointer

        def work() -> None:
            try:
                text = claimcheck.fetch(self.s3, bucket, key, self.max_decoded_bytes)  # type: ignore[attr-defined]
            except UndecodableMessage as exc:
                self._post(self._fetched, held, None, exc)
            except Exception as exc:
                self._post(self._fetch_failed, held, exc)
            else:
                self._post(self._fetched, held, text, None)

        self._fetcher.submit(work)

    def _fetched(self, held: Held, text: str | None, problem: UndecodableMessage | None) -> None:
        if problem is not None:
            held.problem = problem
        else:
            self._read(held, body=text)
            if held.payload is not None:
                held.payload["properties"]["delivery_info"]["ar_pointer"] = held.pointer
        if held.payload is None and held.problem is None:
            held.problem = UndecodableMessage("the claim-checked payload could not be read")
        self._deliver(held)

    def _fetch_failed(self, held: Held, exc: Exception) -> None:
        """The payload could not be read now: try again later, the group waiting behind it; after
        a bounded number of tries (:func:`.claimcheck.give_up_after`) it is dead-lettered."""
        held.fetch_failures += 1
        attempts = int(self.transport_options.get("payload_fetch_attempts") or 5)  # type: ignore[attr-defined]
        if held.fetch_failures >= claimcheck.give_up_after(exc, attempts):
            held.problem = claimcheck.unreadable(*(held.pointer or ("?", "?")), exc, held.fetch_failures)
            self._deliver(held)
            return
        delay = backoff(held.fetch_failures, base=0.5, cap=30.0)
        logger.warning("cannot fetch claim-checked payload s3://%s/%s (%r); trying again in %.1f s "
                       "(its group waits)", *(held.pointer or ("?", "?")), exc, delay)
        self.hub.call_later(delay, self._post, self._deliver, held)  # type: ignore[attr-defined]

    # -- outcomes (the MessageSettler interface) -------------------------------------------
    def mark_running(self, delivery_tag: str) -> None:
        held = self._held.get(delivery_tag)
        if held is not None:
            held.running = True

    def settle(self, delivery_tag: str, outcome: Outcome, fields: Mapping[str, Any]) -> None:
        held = self._held.get(delivery_tag)
        if held is None:
            return
        self._settle_held(held, outcome, fields)

    def _settle_held(self, held: Held, outcome: Outcome, fields: Mapping[str, Any]) -> None:
        held.running = False
        if isinstance(outcome, Retry | Wait):
            if isinstance(outcome, Wait):
                held.attempt -= 1  # a wait is not an attempt
            self.hub.call_later(max(0.0, outcome.delay), self._deliver, held)  # type: ignore[attr-defined]
        elif isinstance(outcome, Hold):
            self._release_group(held, visibility=outcome.seconds)
        elif isinstance(outcome, Release):
            self._release_group(held, visibility=0)
        else:
            self._dead_letter(held, outcome, fields)

    def basic_ack(self, delivery_tag: str, multiple: bool = False) -> None:
        held = self._held.pop(delivery_tag, None) if self._dispatcher is not None else None
        if held is None:
            return super().basic_ack(delivery_tag, multiple)  # type: ignore[misc,no-any-return]
        assert self._housekeeper is not None
        pointer = (held.payload or {}).get("properties", {}).get("delivery_info", {}).get("ar_pointer")
        then = None
        if pointer:  # done: the claim-checked payload goes too, once the message is deleted
            def then() -> None:
                try:
                    self.s3.delete_object(Bucket=pointer[0], Key=pointer[1])  # type: ignore[attr-defined]
                except Exception as exc:  # the bucket's lifecycle rule expires it anyway
                    logger.warning("could not delete s3://%s/%s: %r", *pointer, exc)
        virtual.Channel.basic_ack(self, delivery_tag)  # type: ignore[arg-type]
        if held.completes_here and self._hotpath is not None:
            completion = self._hotpath.take(str((held.payload or {}).get("headers", {}).get("id")))
            if completion is not None:  # written first; then the delete and the group's next
                idle = all(h.running for h in self._held.values())
                self._hotpath.write(completion, fresh=lambda: self._still_ours(delivery_tag),
                                    done=lambda ok: self._completed(held, ok, then), urgent=idle)
                self._wake_receivers()  # its room is free now (its group's next waits the write)
                return
        self._next_of(held.group)
        # nothing left here to run: lingering for a fuller batch would only keep groups waiting
        idle = all(h.running for h in self._held.values())
        self._housekeeper.delete(held.queue_url, delivery_tag, then=then, urgent=idle)

    def _still_ours(self, receipt_handle: str) -> bool:
        """Whether SQS surely keeps the message for this worker a while yet (no other delivery
        of it can exist): its completion needs no condition."""
        from ..state.completions import FRESH_SECONDS

        assert self._housekeeper is not None
        return self._housekeeper.visible_for(receipt_handle) > FRESH_SECONDS

    def _completed(self, held: Held, written: bool, then: Any) -> None:
        """(Hot path's writer thread) a first delivery's completion was written: delete the
        message, then its group goes on; not written: the message runs again (released)."""
        assert self._housekeeper is not None
        if written:
            self._post(self._settled_after_completion, held, then)
        else:
            self._housekeeper.release([(held.queue_url, held.receipt_handle)], 0)
            self._post(self._release_after_completion, held)

    def _settled_after_completion(self, held: Held, then: Any) -> None:
        """(Event loop) as an ack without a completion to write: the group's next, the delete."""
        assert self._housekeeper is not None
        self._next_of(held.group)
        idle = all(h.running for h in self._held.values())
        self._housekeeper.delete(held.queue_url, held.receipt_handle, then=then, urgent=idle)

    def _release_after_completion(self, held: Held) -> None:
        assert self._dispatcher is not None and self._housekeeper is not None
        rest = self._dispatcher.take_group(held.group)
        for item in rest:
            self._held.pop(item.receipt_handle, None)
        if rest:
            self._housekeeper.release([(r.queue_url, r.receipt_handle) for r in rest], 0)
        self._dispatcher.done(held.group)
        self._wake_receivers()

    def basic_reject(self, delivery_tag: str, requeue: bool = False) -> None:
        held = self._held.get(delivery_tag) if self._dispatcher is not None else None
        if held is None:
            return super().basic_reject(delivery_tag, requeue)  # type: ignore[misc,no-any-return]
        if requeue:  # back to SQS, with the rest of its group behind it: order is kept
            self._release_group(held, visibility=0)
        else:  # Celery refused it (unknown task, invalid message): never deleted unprocessed
            reason = Reason("Rejected", "rejected by the worker (unknown or invalid message)",
                            max(1, held.attempt), held.receive_count)
            self._dead_letter(held, DeadLetter(reason), self._describe(held))

    def _next_of(self, group: str) -> None:
        assert self._dispatcher is not None
        following = self._dispatcher.done(group)
        self._wake_receivers()
        if following is not None:
            hub = getattr(self, "hub", None)
            if hub is not None:
                hub.call_soon(self._deliver, following)
            else:
                self._deliver(following)

    def _wake_receivers(self) -> None:
        for receiver in getattr(self, "_receivers", {}).values():
            receiver.wake()

    def _dead_letter(self, held: Held, outcome: DeadLetter, fields: Mapping[str, Any]) -> None:
        """Send the message to the DLQ (the housekeeper retries until it takes it), then delete
        it; its group goes on only then."""
        if held.settling:
            return
        held.settling = True
        assert self._housekeeper is not None
        dlq_name = self.dlq_name_for(held.queue_url)
        entry = dead_letter_entry(held.message, outcome.reason, source_queue=held.queue_url,
                                  group=held.group, signing_key=self._signing_key)
        line = {**fields, "outcome": "dead-lettered", **outcome.reason.fields()}
        if entry.dropped_attributes:
            line["dropped_attributes"] = entry.dropped_attributes
        self._housekeeper.dead_letter(DeadLetterJob(
            dlq_url=self._new_queue(dlq_name),  # type: ignore[attr-defined]
            params=entry.params, queue_url=held.queue_url, receipt_handle=held.receipt_handle,
            done=lambda: self._post(self._dead_lettered, held, line),
            describe={k: v for k, v in fields.items() if k in ("action", "id", "group")},
            dropped=lambda: self._post(self._dead_letter_dropped, held),
        ))

    def _dead_letter_dropped(self, held: Held) -> None:
        """(Event loop) the DLQ did not take the message before it stopped being ours: forget
        it and free its group (the rest of the group goes back to SQS behind it, in order); SQS
        hands it out again and it is dead-lettered then."""
        if self._held.get(held.receipt_handle) is not held:
            return
        held.settling = False
        self._release_group(held, visibility=0)

    @property
    def _signing_key(self) -> bytes | None:
        """The key that signs this worker's dead letters (``ACTIONRUNNER_SIGNING_KEY``)."""
        from ..settings import get_settings
        from ..signing import key_of

        return key_of(get_settings())

    def dlq_name_for(self, queue_url: str) -> str:
        """The DLQ of the queue at ``queue_url``."""
        names = self.transport_options.get("dlq_names") or {}  # type: ignore[attr-defined]
        return str(names.get(queue_url.rsplit("/", 1)[-1]) or self.transport_options["dlq_name"])  # type: ignore[attr-defined]

    def _dead_lettered(self, held: Held, line: dict[str, Any]) -> None:
        log_event("dead-lettered", **line, level=40)
        if self._held.pop(held.receipt_handle, None) is None:
            return
        if held.payload is not None and held.attempt > 0:
            virtual.Channel.basic_ack(self, held.receipt_handle)  # type: ignore[arg-type]
        self._next_of(held.group)

    def _release_group(self, held: Held, visibility: int) -> None:
        assert self._dispatcher is not None and self._housekeeper is not None
        rest = self._dispatcher.take_group(held.group)
        for item in (held, *rest):
            self._held.pop(item.receipt_handle, None)
        self._housekeeper.release([(held.queue_url, held.receipt_handle)], visibility)
        if rest:
            self._housekeeper.release([(r.queue_url, r.receipt_handle) for r in rest], 0)
        if held.attempt > 0:
            virtual.Channel.basic_ack(self, held.receipt_handle)  # type: ignore[arg-type]  (forget it)
        self._dispatcher.done(held.group)
        self._wake_receivers()

    def _lost(self, handles: list[str]) -> None:
        """(Event loop) SQS no longer keeps these messages for us. One that has not started is
        dropped from memory (it runs wherever it is received next, never here from this receive),
        with every later message of its group held here (released), so the group's order holds."""
        assert self._dispatcher is not None and self._housekeeper is not None
        for handle in handles:
            held = self._held.get(handle)
            if held is None or held.settling:
                continue
            fields = {"action": "(worker)", "group": held.group,
                      "message_id": held.message.get("MessageId")}
            if held.running:
                log_event("visibility-lost", **fields, running=True, level=30)
                continue
            log_event("visibility-lost", **fields, running=False, dropped=True, level=30)
            waiting = self._dispatcher.take_group(held.group)
            is_head = held not in waiting
            ahead = [] if is_head else waiting[: waiting.index(held)]
            behind = waiting if is_head else waiting[waiting.index(held) + 1:]
            for item in (held, *behind):
                self._held.pop(item.receipt_handle, None)
            if behind:
                self._housekeeper.release([(r.queue_url, r.receipt_handle) for r in behind], 0)
            for item in ahead:  # still waiting their turn, ahead of the lost one
                self._dispatcher.offer(held.group, item)
            if held.attempt > 0:
                virtual.Channel.basic_ack(self, held.receipt_handle)  # type: ignore[arg-type]  (forget it)
            if is_head:  # the group's head never started: the group is free again
                self._dispatcher.done(held.group)
        self._wake_receivers()

    def holds(self, delivery_tag: str) -> bool:
        return delivery_tag in getattr(self, "_held", {})

    # -- shutdown --------------------------------------------------------------------------
    def release_waiting(self) -> int:
        """Stop handing out messages and make every one that is not running visible again now:
        those waiting their group's turn, reserved by Celery but not started, or backing off."""
        if self._dispatcher is None or self._housekeeper is None:
            return 0
        waiting = self._dispatcher.close()
        waiting += [h for h in list(self._held.values())
                    if not h.running and not h.settling and h not in waiting]
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
        rest = [h for h in self._held.values() if not h.settling]
        for item in rest:
            self._held.pop(item.receipt_handle, None)
        self._housekeeper.release([(h.queue_url, h.receipt_handle) for h in rest], 0)
        return count + len(rest)

    def close(self) -> None:
        if self._dispatcher is not None and self._housekeeper is not None:
            for receiver in self._receivers.values():
                receiver.stop()
            self.release_all()  # what never finished goes back to the queue at once
            if self._hotpath is not None:  # completions written, then their deletes queued
                self._hotpath.stop()
                if self._inbox is not None:
                    self._inbox.close()  # (runs what the writer posted: the deletes)
            self._housekeeper.stop()
            self._fetcher.shutdown(wait=False, cancel_futures=True)
            if self._inbox is not None:
                self._inbox.close()
            self.qos._delivered.clear()  # type: ignore[attr-defined]  (released above, not restored)
            CHANNELS.discard(self)
        super().close()  # type: ignore[misc]


__all__ = ["CHANNELS", "FifoConsumer", "Held", "failure_attributes"]
