"""The worker's FIFO consumer: FIFO's promises under ``celery worker -c N``.

The kombu channel (:class:`actionrunner.sqs.transport.Channel`) holds one :class:`Consumer` and
hands it its FIFO queues; the consumer owns every received message until it is settled. A
message's path, one module per step:

1. **receive** — :mod:`.receiver`: a thread per queue long-polls with boto3 and hands the messages
   to the event loop's thread (:class:`~.receiver.HubInbox`); no AWS error stops it;
2. **decode** — :mod:`.inbound`: each message becomes a payload Celery can run, or a refusal naming
   the problem; a claim-checked payload (:mod:`.claimcheck`) is fetched when its turn comes;
3. **group order** — :mod:`.dispatch`: Celery sees the head of each group only; the next message
   of the group is handed over when the head is settled;
4. **run** — here (:meth:`Consumer._deliver`): the payload goes to Celery with its
   :class:`~.delivery.Delivery` (:mod:`.delivery`) attached; the worker's request
   (:mod:`actionrunner.worker.request`) runs it;
5. **settle** — :mod:`actionrunner.settle`: :func:`~actionrunner.settle.decide` chooses the outcome;
   the request applies it through :meth:`Consumer.settle` (the
   :class:`~actionrunner.settle.MessageSettler` interface): ack → delete; retry/wait → the same
   message again after the delay, nothing republished; hold → hidden at the head of its group;
   release → back at once with its group; dead-letter → to the DLQ, then deleted, then the group
   goes on. A message that cannot be decoded is dead-lettered in its turn, the same way;
6. **delete, heartbeat, DLQ** — :mod:`.housekeeper`: batched deletes and visibility changes, the
   heartbeat of every held message, the dead letters (retried until the DLQ takes them).

On shutdown, messages that did not run are made visible again at once (:meth:`Consumer.close`).

The consumer knows the kombu channel only through :class:`ChannelPort` (a queue's URL, Celery's
callback, forgetting a delivery tag, AWS clients), and its options through
:class:`~.options.ConsumerOptions`, so it can be built on stand-ins::

    consumer = Consumer(port, ConsumerOptions.of(transport_options), hub=hub)
    consumer.start()                       # the housekeeper's thread
    consumer.start_receiving("actions.fifo")
"""

from __future__ import annotations

import copy
import logging
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

from .. import constants as C
from .. import runtime
from ..errors import Rejected, UndecodableMessage
from ..events import emit
from ..runnable import eta_seconds
from ..settle import (
    UNDECODABLE,
    DeadLetter,
    Hold,
    MessageSettler,
    Outcome,
    Release,
    Retry,
    Wait,
    dead_letter_entry,
    decide,
)
from . import claimcheck, inbound
from .delivery import Delivery
from .dispatch import GroupDispatcher
from .housekeeper import DeadLetterJob, Housekeeper
from .options import ConsumerOptions
from .receiver import HubInbox, Receiver, backoff

logger = logging.getLogger("actionrunner.worker")

#: Every live consumer of this process (the shutdown handler releases their messages).
CONSUMERS: weakref.WeakSet[Consumer] = weakref.WeakSet()


class ChannelPort(Protocol):
    """What the consumer needs of the kombu channel that holds it."""

    @property
    def s3(self) -> Any:
        """The S3 client of claim-checked payloads."""

    def new_queue(self, name: str) -> str:
        """The URL of queue ``name``."""

    def is_active(self, name: str) -> bool:
        """Whether Celery consumes queue ``name``."""

    def callback_for(self, name: str) -> Callable[[dict[str, Any]], Any] | None:
        """Celery's callback of queue ``name`` (None: no longer consumed)."""

    def forget(self, delivery_tag: str) -> None:
        """Drop ``delivery_tag`` from kombu's unacked bookkeeping (no request to SQS)."""

    def clear_delivered(self) -> None:
        """Drop every delivery kombu still counts (they were released)."""

    def prefetch_count(self) -> int:
        """Celery's prefetch count (0: unbounded)."""

    def new_sqs_client(self, config: Any = None) -> Any:
        """A boto3 SQS client with botocore ``config``."""

    def system_attributes(self) -> list[str] | None:
        """The SQS system attributes to receive (None: all)."""


class Hub(Protocol):
    """The part of kombu's event loop the consumer uses."""

    def call_soon(self, callback: Callable[..., Any], *args: Any) -> Any: ...
    def call_later(self, delay: float, callback: Callable[..., Any], *args: Any) -> Any: ...
    def add_reader(self, fd: int, callback: Callable[..., Any], *args: Any) -> Any: ...
    def remove_reader(self, fd: int) -> Any: ...


@dataclass
class Held:
    """A received message this consumer holds (running, waiting its turn, or backing off)."""

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
        value: Any = (self.message.get("Attributes") or {}).get("ApproximateReceiveCount")
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


class Consumer(MessageSettler):
    """Receives, orders, hands to Celery and settles the messages of FIFO queues (see the
    module docstring).

    ``hub``: kombu's event loop (None: no event loop, e.g. a plain ``drain_events``);
    ``housekeeper``: the deletes/heartbeat/DLQ thread (made from the port's client if None);
    ``on_work``: called when actions were received (the remote-control mailbox wakes if it dozes).
    """

    def __init__(self, port: ChannelPort, options: ConsumerOptions, *, hub: Hub | None = None,
                 housekeeper: Housekeeper | None = None,
                 on_work: Callable[[], None] | None = None) -> None:
        self.port, self.options, self.hub = port, options, hub
        self.on_work = on_work
        self._held: dict[str, Held] = {}
        self._receivers: dict[str, Receiver] = {}
        self._incoming = 0
        self._incoming_lock = threading.Lock()
        self._dispatcher: GroupDispatcher[Held] = GroupDispatcher()
        self._fetcher = ThreadPoolExecutor(max_workers=2, thread_name_prefix="actionrunner-fetch")
        self._housekeeper = housekeeper if housekeeper is not None else Housekeeper(
            self._new_sqs_client(),
            visibility_timeout=options.visibility_timeout,
            heartbeat_interval=options.heartbeat_interval,
            on_lost=lambda handles: self._post(self._lost, handles),
        )
        self._inbox: HubInbox | None = HubInbox(hub) if hub is not None else None
        self._closed = False

    def start(self) -> None:
        """Start the housekeeper's thread; register for the shutdown handler."""
        self._housekeeper.start()
        CONSUMERS.add(self)

    def _new_sqs_client(self, config: Any = None) -> Any:
        """A client of the worker's own receives, deletes, visibility changes and dead letters:
        requests of fixed shapes, so botocore's parameter validation (~10% of the CPU of each
        request) is skipped; SQS still checks every request."""
        from botocore.config import Config

        lean = Config(parameter_validation=False)
        return self.port.new_sqs_client(lean if config is None else lean.merge(config))

    def _receive_client(self) -> Any:
        """A client whose receives give up soon after the long poll: a receive answered late
        holds up every new message of the queue, so it is retried (same attempt id) after
        a few seconds instead of the general read timeout."""
        from botocore.config import Config

        return self._new_sqs_client(Config(read_timeout=self.options.receive_read_timeout))

    @property
    def capacity(self) -> int:
        """Messages this consumer holds at most (running, reserved or waiting their group's
        turn): Celery's prefetch count, and at least two receives' worth."""
        return max(2 * C.SQS_MAX_BATCH, self.port.prefetch_count() or 0)

    def _room(self) -> int:
        # a message whose key is being read (its first run waits on DynamoDB, not on the pool)
        # leaves room for another, up to a second capacity's worth: reads do not starve the pool
        reading = min(self._reading, self.capacity)
        return self.capacity - (len(self._held) - reading) - self._incoming

    def _demand(self) -> int:
        """How many messages to ask for now: 10 while there is room for 10; what room is left
        only when fewer than half the capacity are held (so receives come back full)."""
        if self._dispatcher.closed:
            return 0
        room = self._room()
        if room >= C.SQS_MAX_BATCH:
            return C.SQS_MAX_BATCH
        return room if room > 0 and self.capacity - room < self.capacity // 2 else 0

    def _post(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` in the event loop's thread (at once when there is no event loop)."""
        if self._inbox is not None and not self._inbox.closed:
            self._inbox.post(fn, *args)
        else:
            try:
                fn(*args)
            except Exception:
                logger.exception("error handling %s (the worker goes on)", getattr(fn, "__name__", fn))

    def _call_later(self, delay: float, fn: Callable[..., Any], *args: Any) -> None:
        if self.hub is None:  # no event loop: nothing waits, it runs now
            fn(*args)
        else:
            self.hub.call_later(delay, fn, *args)

    # -- receiving -------------------------------------------------------------------------
    def start_receiving(self, queue: str) -> bool:
        """Start queue ``queue``'s receiver (once); False if this consumer does not receive for
        the channel (no event loop: kombu's own loop polls, see :meth:`on_messages_ready`)."""
        if self._inbox is None:
            return False
        if queue in self._receivers or not self.port.is_active(queue):
            return True
        q_url = self.port.new_queue(queue)
        receiver = Receiver(
            self._receive_client(), q_url,
            demand=self._demand,
            deliver=lambda messages: self._hand_over(q_url, queue, messages),
            release=lambda messages: self._housekeeper.release(
                [(q_url, m["ReceiptHandle"]) for m in messages]),
            wait_time_seconds=self.options.wait_time_seconds,
            visibility_timeout=self.options.visibility_timeout,
            polling_interval=self.options.polling_interval,
            system_attributes=self.port.system_attributes(),
        )
        self._receivers[queue] = receiver
        receiver.start()
        return True

    def _hand_over(self, q_url: str, qname: str, messages: list[dict[str, Any]]) -> None:
        """(Receiver thread) track the messages at once, then pass them to the event loop."""
        self._housekeeper.track_many(q_url, [m["ReceiptHandle"] for m in messages])
        with self._incoming_lock:
            self._incoming += len(messages)
        self._post(self._accept, q_url, qname, messages)

    def on_messages_ready(self, q_url: str, qname: str, messages: Any) -> int:
        """kombu's own receive loop (used only without an event loop): the same path."""
        if not isinstance(messages, Mapping):  # kombu answers a failed receive with a list
            return 0
        msgs = [m for m in (messages.get("Messages") or []) if isinstance(m, dict)]
        if msgs:
            self._hand_over(q_url, qname, msgs)  # no event loop: _post runs _accept at once
        return len(msgs)

    def _accept(self, q_url: str, qname: str, messages: list[dict[str, Any]]) -> None:
        """(Event loop) take received messages into their groups; start each group's head."""
        with self._incoming_lock:
            self._incoming -= len(messages)
        callback = self.port.callback_for(qname)
        if callback is None or self._dispatcher.closed:
            self._housekeeper.release([(q_url, m["ReceiptHandle"]) for m in messages])
            return
        if self.on_work is not None:
            self.on_work()
        for message in messages:
            group = str((message.get("Attributes") or {}).get("MessageGroupId", ""))
            held = Held(group, callback, message, q_url, message["ReceiptHandle"])
            self._read(held)
            self._held[held.receipt_handle] = held
            if self._dispatcher.offer(group, held):
                self._deliver(held)
        if self._reading:  # messages whose key is being read leave room: ask for more now
            self._wake_receivers()

    def _read(self, held: Held, body: str | None = None) -> None:
        """Decode the message (or its claim-checked ``body``) into ``held``: a payload, a
        pointer to fetch at its turn, or the problem it is dead-lettered for."""
        try:
            if body is None:
                pointer = claimcheck.pointer_of(held.message.get("Body"))
                if pointer is not None:
                    claimcheck.check(pointer, held.message.get("MessageAttributes"),
                                     bucket=self.options.payload_bucket,
                                     max_bytes=self.options.max_decoded_bytes)
                    held.pointer = pointer
                    return
            held.payload = inbound.decode(held.message, queue_url=held.queue_url,
                                          max_bytes=self.options.max_decoded_bytes,
                                          is_registered=_is_registered, body=body)
        except UndecodableMessage as exc:
            held.problem = exc

    def _deliver(self, held: Held) -> None:
        """(Event loop) the message's turn has come: run it, fetch it, or dead-letter it."""
        if self._held.get(held.receipt_handle) is not held:
            return
        try:
            if held.problem is not None:
                self._settle_held(held, decide(UNDECODABLE, held.problem, attempt=max(1, held.attempt),
                                               receive_count=held.receive_count),
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
            headers = payload.get("headers") or {}
            fields: dict[str, Any] = {"attempt": held.attempt, "runs": held.runs,
                                      "pointer": held.pointer}
            if held.runs == 1:
                self._say_if_scheduled(held, headers)
            if held.runs == 1 and held.seen is not None and self._hotpath is not None:
                self._hand_state(held, fields)
            delivery = Delivery.from_sqs(held.message, headers=headers, **fields)
            delivery.attach(payload["properties"]["delivery_info"])
            delivery.tell_celery(payload)
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
            emit("scheduled", **self._describe(held), eta=str(headers.get("eta"))[:40],
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

    def _hand_state(self, held: Held, delivery: dict[str, Any]) -> None:
        """(First run) the key as read, and where to send the completion (fields of its
        :class:`~.delivery.Delivery`)."""
        from ..state.completions import UNKNOWN

        if held.seen is False:
            return
        if held.seen is not UNKNOWN:
            delivery["seen"] = held.seen
        delivery["sink"] = self._hotpath.path
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
                text = claimcheck.fetch(self.port.s3, bucket, key, self.options.max_decoded_bytes)
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
        if held.payload is None and held.problem is None:
            held.problem = UndecodableMessage("the claim-checked payload could not be read")
        self._deliver(held)

    def _fetch_failed(self, held: Held, exc: Exception) -> None:
        """The payload could not be read now: try again later, the group waiting behind it; after
        a bounded number of tries (:func:`.claimcheck.give_up_after`) it is dead-lettered."""
        held.fetch_failures += 1
        attempts = self.options.payload_fetch_attempts
        if held.fetch_failures >= claimcheck.give_up_after(exc, attempts):
            held.problem = claimcheck.unreadable(*(held.pointer or ("?", "?")), exc, held.fetch_failures)
            self._deliver(held)
            return
        delay = backoff(held.fetch_failures, base=0.5, cap=30.0)
        logger.warning("cannot fetch claim-checked payload s3://%s/%s (%r); trying again in %.1f s "
                       "(its group waits)", *(held.pointer or ("?", "?")), exc, delay)
        self._call_later(delay, self._post, self._deliver, held)

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
            self._call_later(max(0.0, outcome.delay), self._deliver, held)
        elif isinstance(outcome, Hold):
            self._release_group(held, visibility=outcome.seconds)
        elif isinstance(outcome, Release):
            self._release_group(held, visibility=0)
        else:
            self._dead_letter(held, outcome, fields)

    def ack(self, delivery_tag: str) -> bool:
        """Celery acked the message (its action succeeded): delete it, then its group goes on.
        False if this consumer does not hold it."""
        held = self._held.pop(delivery_tag, None)
        if held is None:
            return False
        assert self._housekeeper is not None
        pointer = held.pointer if held.payload is not None else None
        then: Callable[[], None] | None = None
        if pointer:  # done: the claim-checked payload goes too, once the message is deleted
            def then() -> None:
                try:
                    self.port.s3.delete_object(Bucket=pointer[0], Key=pointer[1])
                except Exception as exc:  # the bucket's lifecycle rule expires it anyway
                    logger.warning("could not delete s3://%s/%s: %r", *pointer, exc)
        self.port.forget(delivery_tag)
        if held.completes_here and self._hotpath is not None:
            completion = self._hotpath.take(str((held.payload or {}).get("headers", {}).get("id")))
            if completion is not None:  # written first; then the delete and the group's next
                idle = all(h.running for h in self._held.values())
                self._hotpath.write(completion, fresh=lambda: self._still_ours(delivery_tag),
                                    done=lambda ok: self._completed(held, ok, then), urgent=idle)
                self._wake_receivers()  # its room is free now (its group's next waits the write)
                return True
        self._next_of(held.group)
        # nothing left here to run: lingering for a fuller batch would only keep groups waiting
        idle = all(h.running for h in self._held.values())
        self._housekeeper.delete(held.queue_url, delivery_tag, then=then, urgent=idle)
        return True

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

    def reject(self, delivery_tag: str, requeue: bool = False) -> bool:
        """Celery rejected the message. False if this consumer does not hold it."""
        held = self._held.get(delivery_tag)
        if held is None:
            return False
        if requeue:  # back to SQS, with the rest of its group behind it: order is kept
            self._release_group(held, visibility=0)
        else:  # Celery refused it (unknown task, invalid message): never deleted unprocessed
            refused = Rejected("rejected by the worker (unknown or invalid message)")
            self._settle_held(held, decide(UNDECODABLE, refused, attempt=max(1, held.attempt),
                                           receive_count=held.receive_count), self._describe(held))
        return True

    def _next_of(self, group: str) -> None:
        assert self._dispatcher is not None
        following = self._dispatcher.done(group)
        self._wake_receivers()
        if following is not None:
            if self.hub is not None:
                self.hub.call_soon(self._deliver, following)
            else:
                self._deliver(following)

    def _wake_receivers(self) -> None:
        for receiver in self._receivers.values():
            receiver.wake()

    def _dead_letter(self, held: Held, outcome: DeadLetter, fields: Mapping[str, Any]) -> None:
        """Send the message to the DLQ (the housekeeper retries until it takes it), then delete
        it; its group goes on only then."""
        if held.settling:
            return
        held.settling = True
        assert self._housekeeper is not None
        dlq_name = self.options.dlq_for(held.queue_url)
        entry = dead_letter_entry(held.message, outcome.reason, source_queue=held.queue_url,
                                  group=held.group, signing_key=self._signing_key)
        line = {**fields, "outcome": "dead-lettered", **outcome.reason.fields()}
        if entry.dropped_attributes:
            line["dropped_attributes"] = entry.dropped_attributes
        self._housekeeper.dead_letter(DeadLetterJob(
            dlq_url=self.port.new_queue(dlq_name),
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

    def _dead_lettered(self, held: Held, line: dict[str, Any]) -> None:
        emit("dead-lettered", **line, level=40)
        if self._held.pop(held.receipt_handle, None) is None:
            return
        if held.payload is not None and held.attempt > 0:
            self.port.forget(held.receipt_handle)
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
            self.port.forget(held.receipt_handle)
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
                emit("visibility-lost", **fields, running=True, level=30)
                continue
            emit("visibility-lost", **fields, running=False, dropped=True, level=30)
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
                self.port.forget(held.receipt_handle)
            if is_head:  # the group's head never started: the group is free again
                self._dispatcher.done(held.group)
        self._wake_receivers()

    def holds(self, delivery_tag: str) -> bool:
        return delivery_tag in self._held

    # -- shutdown --------------------------------------------------------------------------
    def release_waiting(self) -> int:
        """Stop handing out messages and make every one that is not running visible again now:
        those waiting their group's turn, reserved by Celery but not started, or backing off."""
        waiting = self._dispatcher.close()
        waiting += [h for h in list(self._held.values())
                    if not h.running and not h.settling and h not in waiting]
        for item in waiting:
            self._held.pop(item.receipt_handle, None)
        self._housekeeper.release([(w.queue_url, w.receipt_handle) for w in waiting], 0)
        if waiting:
            emit("released", count=len(waiting), reason="shutdown")
        return len(waiting)

    def release_all(self) -> int:
        """Make every held message visible again now (running ones included)."""
        count = self.release_waiting()
        rest = [h for h in self._held.values() if not h.settling]
        for item in rest:
            self._held.pop(item.receipt_handle, None)
        self._housekeeper.release([(h.queue_url, h.receipt_handle) for h in rest], 0)
        return count + len(rest)

    def close(self) -> None:
        """Stop receiving; what never finished goes back to the queue at once; the pending
        completions are written and the deletes sent before the housekeeper stops."""
        if self._closed:
            return
        self._closed = True
        for receiver in self._receivers.values():
            receiver.stop()
        self.release_all()
        if self._hotpath is not None:  # completions written, then their deletes queued
            self._hotpath.stop()
            if self._inbox is not None:
                self._inbox.close()  # (runs what the writer posted: the deletes)
        self._housekeeper.stop()
        self._fetcher.shutdown(wait=False, cancel_futures=True)
        if self._inbox is not None:
            self._inbox.close()
        self.port.clear_delivered()  # released above, not restored
        CONSUMERS.discard(self)


__all__ = ["CONSUMERS", "ChannelPort", "Consumer", "Held"]
