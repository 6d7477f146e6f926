"""Keeping claims alive: one thread per process renews the lease of every running action's key
(and of its ``max_concurrency`` slot, :mod:`.concurrency`: anything with ``lease_seconds`` and
``renew(claim) -> bool``).

A claim lasts ``lease_seconds`` unless renewed; the keeper renews each claim every third of its
lease while the action runs, so only a dead worker's claim runs out (compare the SQS heartbeat
in :mod:`actionrunner.sqs.housekeeper`). Actions shorter than a third of the lease cost no
renewal at all.

    with keeper().keep(store, claim):
        result = run()
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from .. import runtime
from ..logging import get_logger
from ..runtime import Runtime

log = get_logger("actionrunner.state")


class Renewable(Protocol):
    """What holds leases the keeper renews: an idempotency store, an action's concurrency cap."""

    lease_seconds: Any

    def renew(self, claim: Any) -> bool: ...


@dataclass
class _Kept:
    store: Renewable
    claim: Any  # with a ``key`` to name it in the log
    due: float  # monotonic time of the next renewal
    lost: bool = False
    active: bool = True  # False once the run left the block (a late renewal is no news)


class LeaseKeeper:
    """Renews the leases of the claims held in this process (see the module docstring)."""

    def __init__(self, clock: Any = time.monotonic, autostart: bool = True) -> None:
        self.clock, self.autostart = clock, autostart
        self._kept: dict[int, _Kept] = {}
        self._ids = itertools.count()
        self._lock = threading.Condition()
        self._thread: threading.Thread | None = None
        #: Renewals made, and claims found lost (for tests and benchmarks).
        self.renewals = self.lost = 0

    @contextlib.contextmanager
    def keep(self, store: Renewable, claim: Any) -> Iterator[None]:
        """Renew ``claim``'s lease while the block runs."""
        ident = next(self._ids)
        with self._lock:
            self._kept[ident] = _Kept(store, claim, self.clock() + store.lease_seconds / 3)
            if self.autostart:
                self._start()
            self._lock.notify()
        try:
            yield
        finally:
            with self._lock:
                kept = self._kept.pop(ident, None)
                if kept is not None:
                    kept.active = False

    def renew_due(self) -> int:
        """Renew every claim that is due now; returns how many were renewed."""
        now = self.clock()
        with self._lock:
            due = [k for k in self._kept.values() if k.due <= now and not k.lost]
        renewed = 0
        for kept in due:
            try:
                ok = kept.store.renew(kept.claim)
            except Exception as exc:  # DynamoDB unreachable: try again soon, the lease may hold
                log.warning("lease-renewal-failed", key=kept.claim.key, error=repr(exc)[:300])
                kept.due = self.clock() + min(1.0, kept.store.lease_seconds / 10)
                continue
            if ok:
                renewed += 1
                self.renewals += 1
                kept.due = self.clock() + kept.store.lease_seconds / 3
            elif kept.active:  # the run goes on; its completion will find the key taken (LeaseLost)
                kept.lost = True
                self.lost += 1
                log.warning("lease-lost", key=kept.claim.key)
        return renewed

    def _start(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._loop, name="actionrunner-lease-keeper",
                                            daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        while True:
            with self._lock:
                waits = [k.due - self.clock() for k in self._kept.values() if not k.lost]
                self._lock.wait(timeout=max(0.0, min(waits)) if waits else None)
            self.renew_due()


def keeper(rt: Runtime | None = None) -> LeaseKeeper:
    """The keeper of ``rt`` (default: this process's runtime; a forked child has a new runtime,
    so a new keeper: threads do not survive a fork)."""
    return (rt or runtime.current()).part("lease-keeper", lambda _: LeaseKeeper())
