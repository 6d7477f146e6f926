"""The first delivery's state requests, off the pool's hot path: the worker's main process reads
each key before the run and writes the completions in batches, before their messages are deleted.

A first delivery of a per-call key (see :mod:`.guard`) costs one read and one write of the state
table. Neither waits in a pool slot:

* **the read** — when such a message's turn in its group comes, the main process reads its key
  (:class:`HotPath.read`: BatchGetItem, ConsistentRead, up to 100 keys a request, while the
  message waits its turn) and hands the item over with the message (``request.sqs["seen"]``).
  A completed key is a replay in the pool: the copy of a completed call (same call id, any dedup
  id) never runs. A key another delivery holds waits. A read that fails leaves the pool to read
  it itself (one GetItem);
* **the write** — the pool runs the action and sends its completion (result, inputs' hash,
  expiry) over a Unix datagram socket of the main process (:func:`send`; the socket lives in a
  0700 directory of the worker's own), then returns. When Celery acks the message, the main
  process takes the completion (:meth:`HotPath.take`), and its writer thread puts it with
  others in one BatchWriteItem (25 at most; 50 ms linger). Only once DynamoDB has it is the
  message's delete queued and the next message of its group handed out: a worker killed before
  that leaves the message in SQS; its redelivery claims the key and runs again, as a run killed
  before its completion always did (staged writes: never twice, see below).

BatchWriteItem takes no condition. The first delivery's completion needs none while SQS still
holds the message for this worker (its visibility, kept by the heartbeat, lasts more than
:data:`FRESH_SECONDS`): no redelivery of the message can exist, the key was read free just
before the run, and a copy in the same group cannot be received before this message is deleted
(FIFO), which is after the write. A message whose visibility may have lapsed completes with the
conditional put of :meth:`~.store.IdempotencyStore.complete_first`; if another delivery holds
the key, the message is released and its next run claims (a wait, then a replay).

A run that staged writes (:mod:`.effects`) completes in the pool as before — one
TransactWriteItems with the conditional completion — so its writes are committed exactly once
whatever happens; so does a run whose completion is over :data:`MAX_DATAGRAM_BYTES`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from ..logging import get_logger
from .record import Record, Status
from .schema import STATE_KEY
from .throttling import backoff_delay, is_transient

log = get_logger("actionrunner.state")

#: Largest completion sent to the main process; a larger one is written by the pool itself.
MAX_DATAGRAM_BYTES = 60_000
#: Items per BatchWriteItem (DynamoDB's limit) and keys per BatchGetItem (DynamoDB's limit).
WRITE_BATCH, READ_BATCH = 25, 100
#: Seconds of visibility a message must have left for its completion to go unconditionally.
FRESH_SECONDS = 5.0
#: Seconds a completion write keeps trying a state table that fails transiently.
PATIENCE_SECONDS = 30.0
#: A BatchWriteItem goes when ten completions wait (their deletes then fill one
#: DeleteMessageBatch), when the worker has nothing else to run, or when the first has waited
#: ``linger``: the group's next message waits that long, no pool slot does. Fewer, fuller
#: requests: each costs the worker's main process ~1-2 ms of botocore CPU.
FLUSH_AT = 10
LINGER_SECONDS = 0.05
#: Threads that read, and that write (more: shorter waits behind a request under way, smaller
#: batches).
READERS, WRITERS = 1, 1
#: The read of a key failed: the pool reads it itself.
UNKNOWN = object()

_pool_socket: socket.socket | None = None


def send(path: str, fields: dict[str, Any]) -> bool:
    """(Pool process) hand a completion to the main process at ``path``; False if it did not
    go (too large, or the socket refused it): then the caller writes it itself."""
    global _pool_socket
    data = orjson.dumps(fields)
    if len(data) > MAX_DATAGRAM_BYTES:
        return False
    try:
        if _pool_socket is None:
            _pool_socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        _pool_socket.sendto(data, path)
    except OSError as exc:
        log.warning("completion-not-handed-over", error=repr(exc)[:200],
                    why="the pool writes it itself")
        return False
    return True


def completion_fields(task_id: str, key: str, inputs_hash: str, text: str | None, saved: bool,
                      expires_at: int, action: str) -> dict[str, Any]:
    """What :func:`send` sends for one completion."""
    return {"t": task_id, "k": key, "h": inputs_hash, "r": text, "s": saved, "x": expires_at,
            "a": action}


def record_of(fields: dict[str, Any]) -> Record:
    return Record(key=fields["k"], status=Status.COMPLETED, inputs_hash=fields["h"],
                  expires_at=int(fields["x"]), result=fields["r"], result_saved=bool(fields["s"]),
                  action=fields["a"], run_id=fields["t"])


@dataclass
class _Write:
    fields: dict[str, Any]
    fresh: Callable[[], bool]
    done: Callable[[bool], None]
    since: float = field(default_factory=time.monotonic)


@dataclass
class _Read:
    key: str
    answer: Callable[[Any], None]


class HotPath:
    """(Worker main process) the reads before first deliveries and the batched writes of their
    completions (see the module docstring); two threads of its own."""

    def __init__(self, store: Any, *, client: Any = None, linger: float = LINGER_SECONDS) -> None:
        self.store = store
        #: BatchGetItem / BatchWriteItem client: requests of fixed shapes, so botocore's
        #: parameter validation is skipped (DynamoDB still checks each request)
        self.client, self.table = client or store.client, store.table
        self.linger = linger
        self._urgent = False
        self._dir = tempfile.mkdtemp(prefix="actionrunner-worker-")  # 0700: this user only
        self.path = os.path.join(self._dir, "completions")
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(self.path)
        self._sock.setblocking(False)
        with contextlib.suppress(OSError):
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self._pending: dict[str, tuple[float, dict[str, Any]]] = {}
        self._lock = threading.Condition()
        self._writes: list[_Write] = []
        self._reads: list[_Read] = []
        self._stopping = False
        #: Requests made and items written/read, by API (for benchmarks and tests).
        #: (approximate: threads count without a lock)
        self.requests: dict[str, int] = {"BatchWriteItem": 0, "BatchGetItem": 0, "PutItem": 0}
        self.items: dict[str, int] = {"written": 0, "read": 0}
        #: Seconds spent in those requests, by API.
        self.seconds: dict[str, float] = {"BatchWriteItem": 0.0, "BatchGetItem": 0.0}
        self._threads = [
            *(threading.Thread(target=self._write_loop, daemon=True,
                               name=f"actionrunner-completions-{n}") for n in range(WRITERS)),
            *(threading.Thread(target=self._read_loop, daemon=True,
                               name=f"actionrunner-prereads-{n}") for n in range(READERS))]
        for thread in self._threads:
            thread.start()

    # -- the socket ------------------------------------------------------------------------
    def _drain(self) -> None:
        while True:
            try:
                data = self._sock.recv(MAX_DATAGRAM_BYTES + 1)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                break
            try:
                fields = orjson.loads(data)
                self._pending[str(fields["t"])] = (time.monotonic(), fields)
            except (orjson.JSONDecodeError, KeyError, TypeError):
                log.warning("completion-unreadable", size=len(data))
        if len(self._pending) > 10_000:  # runs whose message was never acked (a pool died)
            old = time.monotonic() - 600
            self._pending = {k: v for k, v in self._pending.items() if v[0] > old}

    def take(self, task_id: str) -> dict[str, Any] | None:
        """(Event loop) the completion the pool sent for run ``task_id``, if it sent one (it
        did so before Celery heard that the run ended, so it is here by now)."""
        found = self._pending.pop(task_id, None)
        if found is None:
            self._drain()
            found = self._pending.pop(task_id, None)
        return None if found is None else found[1]

    # -- reads -----------------------------------------------------------------------------
    def read(self, key: str, answer: Callable[[Any], None]) -> None:
        """Read ``key`` (batched with the other keys asked for meanwhile); ``answer(item)`` in
        the reading thread: the item, ``{}`` for none, or :data:`UNKNOWN` if it failed."""
        with self._lock:
            self._reads.append(_Read(key, answer))
            self._lock.notify_all()

    def _read_loop(self) -> None:
        while True:
            with self._lock:
                while not self._reads and not self._stopping:
                    self._lock.wait()
                if self._stopping and not self._reads:
                    return
                reads, self._reads = self._reads[:READ_BATCH], self._reads[READ_BATCH:]
            self.items["read"] += len(reads)
            try:
                items = self._batch_get(list(dict.fromkeys(r.key for r in reads)))
            except Exception as exc:  # the pool reads it itself
                log.warning("state-read-failed", error=repr(exc)[:300], keys=len(reads),
                            why="each run reads its key itself")
                items = None
            for r in reads:
                try:
                    r.answer(UNKNOWN if items is None else items.get(r.key, {}))
                except Exception as exc:  # pragma: no cover (the callbacks only post)
                    log.warning("state-read-answer-failed", error=repr(exc)[:300])

    def _batch_get(self, keys: list[str]) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        request: dict[str, Any] = {self.table: {"Keys": [{STATE_KEY: {"S": k}} for k in keys],
                                              "ConsistentRead": True}}
        for attempt in range(1, 9):
            self.requests["BatchGetItem"] += 1
            began = time.monotonic()
            answer = self._call("batch_get_item", RequestItems=request)
            self.seconds["BatchGetItem"] += time.monotonic() - began
            for item in answer.get("Responses", {}).get(self.table, []):
                found[item[STATE_KEY]["S"]] = item
            request = answer.get("UnprocessedKeys") or {}
            if not request:
                return found
            time.sleep(backoff_delay(attempt, base=0.02, cap=1.0))
        raise RuntimeError(f"BatchGetItem left {len(request[self.table]['Keys'])} keys unread")

    def _call(self, operation: str, **params: Any) -> Any:
        """``client.<operation>(**params)``, tried again while it fails transiently (for the
        store's patience)."""
        deadline = time.monotonic() + self.store.patience
        attempt = 0
        while True:
            attempt += 1
            try:
                return getattr(self.client, operation)(**params)
            except Exception as exc:
                if not is_transient(exc) or time.monotonic() >= deadline:
                    raise
            time.sleep(backoff_delay(attempt, base=0.02, cap=2.0))

    # -- writes ----------------------------------------------------------------------------
    def write(self, fields: dict[str, Any], *, fresh: Callable[[], bool],
              done: Callable[[bool], None], urgent: bool = False) -> None:
        """Write a completion; then ``done(True)`` (in the writer thread), or ``done(False)``
        if it was not written (another delivery holds the key, or the table kept failing):
        the message must then run again (released), never be deleted."""
        with self._lock:
            self._writes.append(_Write(fields, fresh, done))
            self._urgent = self._urgent or urgent
            self._lock.notify_all()

    def _write_loop(self) -> None:
        while True:
            with self._lock:
                while not self._stopping:
                    if len(self._writes) >= FLUSH_AT or (self._writes and self._urgent):
                        break
                    if self._writes:
                        left = self._writes[0].since + self.linger - time.monotonic()
                        if left <= 0:
                            break
                        self._lock.wait(left)
                    else:
                        self._lock.wait()
                if self._stopping and not self._writes:
                    return
                batch, self._writes = self._writes[:WRITE_BATCH], self._writes[WRITE_BATCH:]
                self._urgent = False
            self._write_batch(batch)

    def _write_batch(self, batch: list[_Write]) -> None:
        free = [w for w in batch if w.fresh()]
        outcomes: dict[int, bool] = {}
        for w in batch:
            if not any(w is f for f in free):
                outcomes[id(w)] = self._write_conditionally(w)
        self.items["written"] += len(batch)
        if free:
            ok = self._batch_write(free)
            outcomes.update({id(w): ok for w in free})
        for w in batch:
            try:
                w.done(outcomes[id(w)])
            except Exception as exc:  # pragma: no cover
                log.warning("completion-callback-failed", error=repr(exc)[:300])

    def _batch_write(self, writes: list[_Write]) -> bool:
        from .dynamodb import to_item

        token = uuid.uuid4().hex
        items = [{"PutRequest": {"Item": {**to_item(record_of(w.fields)),
                                          "completed_by": {"S": token}}}} for w in writes]
        request: dict[str, Any] = {self.table: items}
        deadline = time.monotonic() + PATIENCE_SECONDS
        attempt = 0
        while request:
            attempt += 1
            self.requests["BatchWriteItem"] += 1
            began = time.monotonic()
            try:
                answer = self.client.batch_write_item(RequestItems=request)
                request = answer.get("UnprocessedItems") or {}
                self.seconds["BatchWriteItem"] += time.monotonic() - began
            except Exception as exc:
                if not is_transient(exc) or time.monotonic() > deadline:
                    log.warning("completion-write-failed", error=repr(exc)[:300],
                                completions=len(writes), why="their messages run again")
                    return False
            if request:
                if time.monotonic() > deadline:
                    log.warning("completion-write-failed", completions=len(writes),
                                error="UnprocessedItems", why="their messages run again")
                    return False
                time.sleep(backoff_delay(attempt, base=0.02, cap=2.0))
        return True

    def _write_conditionally(self, w: _Write) -> bool:
        """The conditional put of a first delivery's completion (its message may have been
        handed to another worker meanwhile): written, or the key is another's."""
        record = record_of(w.fields)
        self.requests["PutItem"] += 1
        try:
            existing = self.store._put_completed(record, uuid.uuid4().hex, time.time(), ())
        except Exception as exc:
            log.warning("completion-write-failed", error=repr(exc)[:300], key=record.key,
                        why="its message runs again")
            return False
        if existing is None:
            return True
        if existing.status is Status.COMPLETED:  # another delivery completed it: its result stands
            log.warning("first-delivery-superseded", action=record.action, key=record.key,
                        why="another delivery of this call completed it while this one ran; "
                            "its saved result stands")
            return True
        log.warning("first-delivery-superseded", action=record.action, key=record.key,
                    why="another delivery holds the key: this message runs again (a replay)")
        return False

    def stop(self) -> None:
        """Write what is pending (their ``done`` called), then end the threads."""
        with self._lock:
            self._stopping = True
            self._lock.notify_all()
        for thread in self._threads:
            thread.join(PATIENCE_SECONDS + 5)
        log.info("state-hot-path-stopped", requests=dict(self.requests), items=dict(self.items),
                 ms_per_request={api: round(1000 * t / max(1, self.requests[api]), 1)
                                 for api, t in self.seconds.items()})
        self._sock.close()
        shutil.rmtree(self._dir, ignore_errors=True)
