"""The idempotency store: a state machine over four primitives that each backend implements.

:class:`IdempotencyStore` holds the whole life of a key (as AWS Powertools'
``BasePersistenceLayer`` does); a backend only stores records, atomically:

=====================  ==========================================================================
``_get_record``        the stored record of a key, or ``None``
``_put_record``        store a new IN_PROGRESS record *unless* the stored one still holds the key
                       (see :meth:`Record.holds`); else return the stored record
``_update_record``     replace the record *only if* it is still IN_PROGRESS under the given lease;
                       commit the staged writes in the same atomic step
``_delete_record``     delete the record *only if* it is still IN_PROGRESS under the given lease
``_put_completed``     store a COMPLETED record, and commit the staged writes in the same atomic
                       step, *unless* the stored one still holds the key (a first delivery's
                       completion without a claim, :meth:`IdempotencyStore.complete_first`)
=====================  ==========================================================================

The life of a key, as a run sees it::

    store = MemoryStore(ttl_seconds=3600, lease_seconds=30)
    outcome = store.begin("idem#orders.charge#3f…", inputs_hash)
    if isinstance(outcome, Replay):        # completed before: its saved result, no second run
        return outcome.result
    try:                                   # (or IdempotencyInProgress: another run holds it)
        result = run()
    except BaseException:
        store.release(outcome)             # a retry may claim the key again
        raise
    store.complete(outcome, result)        # COMPLETED, result saved (LeaseLost if it ran out)

A first delivery of a per-call key (see :mod:`actionrunner.state.guard`) skips the claim: it
reads the key (a completed one is a replay: a copy of the call never runs), runs, then writes
its completion in one conditional write that fails if another delivery of the call claimed (and
still holds) or completed the key meanwhile (in a worker, the main process writes it in a batch
instead, :mod:`actionrunner.state.completions`)::

    result = run()
    outcome = store.complete_first(key, inputs_hash, result, staged)   # one write
    if isinstance(outcome, Replay):        # another delivery completed it first: nothing of
        return outcome.result              # this run was written; its saved result stands
    # (IdempotencyInProgress: another delivery holds it; nothing written, the message waits)

Both backends pass the same contract test (tests/test_state_contract.py).
"""

from __future__ import annotations

import abc
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from ..errors import IdempotencyInProgress, IdempotencyKeyReused, LeaseLost
from .record import Claim, Record, Replay, Status, encode_result

#: A write staged by an action, committed with the record's completion (see :mod:`.effects`).
#: Its shape is the backend's: one ``TransactItems`` entry for DynamoDB.
Effect = dict[str, Any]


class IdempotencyStore(abc.ABC):
    """Claims, completes and releases idempotency keys (see the module docstring).

    ``ttl_seconds``: how long a completed key is remembered; ``lease_seconds``: how long a claim
    lasts unless :meth:`renew` ed; ``clock``: epoch seconds (injectable for tests).
    """

    def __init__(self, *, ttl_seconds: float = 3600, lease_seconds: float = 30.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.ttl_seconds = ttl_seconds
        self.lease_seconds = lease_seconds
        self.clock = clock

    # -- the state machine -----------------------------------------------------------------
    def begin(self, key: str, inputs_hash: str, *, action: str | None = None,
              run_id: str | None = None) -> Claim | Replay:
        """Claim ``key`` for a run (:class:`Claim`), or return the completed run's result
        (:class:`Replay`).

        Raises :class:`IdempotencyInProgress` while another run's lease holds the key, and
        :class:`IdempotencyKeyReused` if the key's record was made for other inputs.
        """
        now = self.clock()
        record = Record(
            key=key, status=Status.IN_PROGRESS, inputs_hash=inputs_hash,
            expires_at=self._expiry(now), lease_id=uuid.uuid4().hex,
            lease_until=now + self.lease_seconds, action=action, run_id=run_id,
        )
        existing = self._put_record(record, now)
        if existing is None:
            return Claim(record)
        return self._answer_held(existing, key, inputs_hash, action, now)

    def complete(self, claim: Claim, result: Any, effects: Sequence[Effect] = ()) -> Record:
        """Mark the claimed key COMPLETED with ``result`` saved, and commit ``effects`` in the
        same atomic step. :class:`LeaseLost` (and nothing written) if the claim is no longer
        this run's."""
        text, saved = encode_result(result)
        done = replace(claim.record, status=Status.COMPLETED, result=text, result_saved=saved,
                       lease_id=None, lease_until=None, expires_at=self._expiry(self.clock()))
        if not self._update_record(done, claim.lease_id, effects):
            raise LeaseLost(claim.key)
        claim.record = done
        return done

    def complete_first(self, key: str, inputs_hash: str, result: Any,
                       effects: Sequence[Effect] = (), *, action: str | None = None,
                       run_id: str | None = None) -> Record | Replay:
        """Complete ``key`` without a claim (a first delivery that already ran), committing
        ``effects`` in the same atomic step, *unless* a record holds the key: then nothing is
        written, and the answer is the stored record's — :class:`Replay` if another run
        completed the key, :class:`IdempotencyInProgress` if another run holds it,
        :class:`IdempotencyKeyReused` if it was made for other inputs.

        A record that no longer holds the key (expired, or a claim whose lease ran out: its run
        never completed, so it wrote nothing) is replaced, as :meth:`begin` would."""
        now = self.clock()
        text, saved = encode_result(result)
        record = Record(key=key, status=Status.COMPLETED, inputs_hash=inputs_hash,
                        expires_at=self._expiry(now), result=text, result_saved=saved,
                        action=action, run_id=run_id)
        existing = self._put_completed(record, uuid.uuid4().hex, now, effects)
        if existing is None:
            return record
        return self._answer_held(existing, key, inputs_hash, action, now)

    def _answer_held(self, existing: Record, key: str, inputs_hash: str, action: str | None,
                 now: float) -> Replay:
        """The answer when ``existing`` holds the key: its saved result (:class:`Replay`) if it
        completed, else :class:`IdempotencyInProgress`; :class:`IdempotencyKeyReused` if it was
        made for other inputs."""
        if existing.inputs_hash != inputs_hash:
            raise IdempotencyKeyReused(action or existing.action or "?", key, inputs_hash,
                                       existing.inputs_hash)
        if existing.status is Status.COMPLETED:
            return Replay(existing)
        lease_until = existing.lease_until or now
        raise IdempotencyInProgress(key, lease_until, when=self.wait_hint(lease_until - now))

    def renew(self, claim: Claim) -> bool:
        """Extend the claim's lease by ``lease_seconds`` from now; False if it is no longer
        this run's (or no longer in progress)."""
        renewed = replace(claim.record, lease_until=self.clock() + self.lease_seconds)
        if not self._update_record(renewed, claim.lease_id, ()):
            return False
        claim.record = renewed
        return True

    def release(self, claim: Claim) -> bool:
        """Give the key up after a failed run, so that a retry can claim it; False if the claim
        was no longer this run's."""
        return self._delete_record(claim.key, claim.lease_id)

    def get(self, key: str) -> Record | None:
        """The record of ``key`` if it has not expired."""
        record = self._get_record(key)
        return record if record is not None and record.expires_at > self.clock() else None

    def wait_hint(self, lease_left: float) -> float:
        """Seconds a duplicate waits before it looks at a held key again: until the holder's
        lease would run out, at least 0.5 s and at most 5 s (the holder renews its lease, so
        waiting for it to run out would wait too long for a completion)."""
        return round(min(5.0, max(0.5, lease_left)), 3)

    def _expiry(self, now: float) -> int:
        return int(now + self.ttl_seconds) + 1

    # -- what a backend implements ---------------------------------------------------------
    @abc.abstractmethod
    def _get_record(self, key: str) -> Record | None:
        """The stored record of ``key`` (expired or not), or ``None``."""

    @abc.abstractmethod
    def _put_record(self, record: Record, now: float) -> Record | None:
        """Atomically: if no stored record of ``record.key`` :meth:`~Record.holds` it at ``now``,
        store ``record`` and return ``None``; else return the stored record."""

    @abc.abstractmethod
    def _update_record(self, record: Record, lease_id: str, effects: Sequence[Effect]) -> bool:
        """Atomically: if the stored record of ``record.key`` is IN_PROGRESS with ``lease_id``,
        replace it with ``record`` and commit ``effects``, and return True; else change nothing
        and return False."""

    @abc.abstractmethod
    def _delete_record(self, key: str, lease_id: str) -> bool:
        """Atomically: if the stored record of ``key`` is IN_PROGRESS with ``lease_id``, delete
        it and return True; else return False."""

    @abc.abstractmethod
    def _put_completed(self, record: Record, token: str, now: float,
                       effects: Sequence[Effect]) -> Record | None:
        """Atomically: if no stored record of ``record.key`` :meth:`~Record.holds` it at ``now``,
        store ``record`` (COMPLETED) and commit ``effects``, and return ``None``; else change
        nothing and return the stored record. ``token`` fences the write (a backend that may
        send it twice, after a lost answer, recognises its own write by it)."""
