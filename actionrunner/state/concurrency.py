"""Fleet-wide concurrency per action: at most N runs of an action at once, across every worker
and Lambda invocation, with leases in the state table.

    @action(max_concurrency=3)
    def rebuild_index(tenant: str) -> None: ...

Celery's ``-c`` bounds one worker and Lambda's reserved concurrency one function; this bounds
one action wherever it runs. The item ``conc#{action}`` holds the leases::

    holders   map  {holder id: lease end, epoch seconds}   one entry per running run
    cap       N    the live value (``actionrunner concurrency set``, ``PUT /v1/concurrency``):
                   when present it overrides the declared ``max_concurrency``

A run takes a lease before it starts and gives it back when it ends; the process's
:class:`~.lease.LeaseKeeper` renews it every third of ``ACTIONRUNNER_CONCURRENCY_LEASE_SECONDS``
while the run lasts, so only a dead holder's lease runs out — and then the next run that finds
the cap full removes it. Leases, with a cap of 2 and a lease of 30 s::

    t=0   A takes   holders={A:30}                 SET holders.A   IF size(holders) < 2
    t=1   B takes   holders={A:30, B:31}
    t=2   C full    (read: 2 live)                 → C waits, no attempt used
    t=5   A's worker is SIGKILLed; A's lease is no longer renewed
    t=10  B renews  holders={A:30, B:41}           SET holders.B   IF attribute_exists(holders.B)
    t=31  C takes   holders={B:41, C:61}           REMOVE holders.A SET holders.C
                                                     IF holders.A = 30 AND size(holders) < 3
    t=33  B ends    holders={C:61}                 REMOVE holders.B

What it costs: a run of a capped action takes one conditional UpdateItem to take its lease and
one to give it back (plus one per third of the lease for runs that last longer); a run that
finds the cap full costs one consistent read per try (the first try after a full answer reads
before it writes). An uncapped action makes no request at all. A write costs one WCU per KB of
the item: about 35 bytes per holder, so up to about 28 holders a write is one WCU.

A run over the cap raises :class:`~actionrunner.errors.ConcurrencyLimited`: the worker runs the
message again after ``ACTIONRUNNER_CONCURRENCY_POLL_SECONDS`` (jittered) *without using an
attempt*, its group waiting behind it (:func:`actionrunner.settle.decide` says ``Wait``). On
Lambda a record first waits in the invocation, up to ``ACTIONRUNNER_CONCURRENCY_LAMBDA_WAIT_SECONDS``
(:func:`waiting_until`), then is reported the same way. The state table unreachable:
:class:`~actionrunner.errors.StateUnavailable` (the run waits; it never runs uncounted).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import time
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

from .. import runtime
from ..backoff import jittered
from ..errors import (
    ActionError,
    ConcurrencyLimited,
    ConcurrencyLimitInvalid,
    StateUnavailable,
    error_code,
)
from ..logging import get_logger
from ..runtime import Runtime
from .schema import CONCURRENCY_PREFIX, concurrency_pk, key
from .throttling import backoff_delay, is_transient, unavailable_wait

log = get_logger("actionrunner.state")

#: The largest ``max_concurrency`` (the item holds one entry per holder: 1,000 is ~35 KB).
MAX_LIMIT = 1000
#: Conditional writes lost to other holders before a run gives up for now (and waits).
MAX_RACES = 8

__all__ = ["CONCURRENCY_PREFIX", "MAX_LIMIT", "FleetLimit", "Lease", "Occupancy", "capped_run",
           "capped_action", "check_limit", "limit_for", "read", "reset_live", "set_live", "status",
           "waiting_until"]


def check_limit(owner: str, value: Any) -> int:
    """``value`` as a ``max_concurrency``: a whole number from 1 to :data:`MAX_LIMIT` (not a
    bool, not a float, not a string), else :class:`~actionrunner.errors.ConcurrencyLimitInvalid`."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_LIMIT:
        raise ConcurrencyLimitInvalid(owner, value, MAX_LIMIT)
    return value


@dataclass(frozen=True)
class Lease:
    """One run's slot of ``action``'s cap, held as ``holder`` in the item."""

    action: str
    holder: str

    @property
    def key(self) -> str:  # named in the lease keeper's log lines
        return f"{concurrency_pk(self.action)}/{self.holder}"


@dataclass(frozen=True)
class Occupancy:
    """What the item says now: the live value, and every holder with its lease end."""

    action: str
    live: int | None
    holders: dict[str, float] = field(default_factory=dict)
    now: float = 0.0
    #: Whether the item has its holders map (a new item has none until its first lease).
    has_map: bool = False

    @property
    def running(self) -> dict[str, float]:
        """Holders whose lease has not run out."""
        return {h: u for h, u in self.holders.items() if u > self.now}

    @property
    def expired(self) -> dict[str, float]:
        """Holders whose lease ran out (a dead holder's: removed by the next run that needs it)."""
        return {h: u for h, u in self.holders.items() if u <= self.now}

    def limit(self, declared: int | None) -> int | None:
        """The cap in force: the live value, else ``declared``."""
        return self.live if self.live is not None else declared


def _n(value: float) -> dict[str, str]:
    return {"N": repr(round(float(value), 3))}



def read(table: str, client: Any, action: str, clock: Callable[[], float] = time.time) -> Occupancy:
    """The item of ``action`` (one consistent read)."""
    item = client.get_item(TableName=table, Key=key(concurrency_pk(action)),
                           ConsistentRead=True).get("Item") or {}
    holders = {h: float(v["N"]) for h, v in (item.get("holders", {}).get("M") or {}).items()}
    live = int(item["cap"]["N"]) if "cap" in item else None
    return Occupancy(action, live, holders, clock(), has_map="holders" in item)


def set_live(table: str, client: Any, action: str, limit: Any) -> int:
    """Set ``action``'s live cap (every worker's next acquire obeys it; runs holding a lease
    finish). Returns the value set."""
    value = check_limit(f"max_concurrency of {action!r}", limit)
    client.update_item(TableName=table, Key=key(concurrency_pk(action)),
                       UpdateExpression="SET #cap = :cap, updated_at = :now",
                       ExpressionAttributeNames={"#cap": "cap"},
                       ExpressionAttributeValues={":cap": {"N": str(value)}, ":now": _n(time.time())})
    log.info("concurrency-set", action=action, max_concurrency=value)
    return value


def reset_live(table: str, client: Any, action: str) -> None:
    """Remove ``action``'s live cap: the declared ``max_concurrency`` applies again."""
    client.update_item(TableName=table, Key=key(concurrency_pk(action)),
                       UpdateExpression="REMOVE #cap SET updated_at = :now",
                       ExpressionAttributeNames={"#cap": "cap"},
                       ExpressionAttributeValues={":now": _n(time.time())})
    log.info("concurrency-reset", action=action)


def capped_action(registry: Mapping[str, Any], name: str) -> Any:
    """The action ``name`` of ``registry`` if it declares ``max_concurrency``; else an error naming
    the problem (an unknown action, or one without a cap: an uncapped action reads no live value,
    so setting one would silently do nothing)."""
    task = registry.get(name)
    if task is None:
        capped = sorted(n for n, t in registry.items() if getattr(t, "max_concurrency", None))
        raise ActionError(f"no action named {name!r} (ACTIONRUNNER_IMPORTS?); actions with a "
                          f"max_concurrency: {', '.join(capped) or 'none'}")
    if getattr(task, "max_concurrency", None) is None:
        raise ActionError(f"action {name!r} declares no max_concurrency, so it takes no leases and "
                          "reads no live value; declare @action(max_concurrency=N) to cap it")
    return task


def status(table: str, client: Any, task: Any) -> dict[str, Any]:
    """The cap of ``task`` as operators see it (``actionrunner concurrency show``, the API)."""
    seen = read(table, client, task.name)
    return {"action": task.name, "declared": task.max_concurrency, "live": seen.live,
            "in_force": seen.limit(task.max_concurrency), "running": len(seen.running),
            "expired": len(seen.expired),
            "holders": [{"holder": h, "lease_left_s": round(u - seen.now, 1)}
                        for h, u in sorted(seen.holders.items(), key=lambda i: i[1])]}


class FleetLimit:
    """The leases of one action's cap (see the module docstring); one per process and action."""

    def __init__(self, action: str, declared: int, *, table: str, client: Any,
                 lease_seconds: float, clock: Callable[[], float] = time.time) -> None:
        self.action, self.declared = action, check_limit(f"action {action!r}", declared)
        self.table, self.client, self.clock = table, client, clock
        #: How long a lease lasts unless renewed (the lease keeper renews every third of it).
        self.lease_seconds = float(lease_seconds)
        #: The cap found in force by the last full answer (for the wait's log line).
        self.limit = self.declared
        #: The item as the last answer showed it was full (or raced for): read before writing.
        self._full = False
        #: Requests made (writes and reads), for tests and benchmarks.
        self.writes = self.reads = 0

    @property
    def _key(self) -> dict[str, Any]:
        return key(concurrency_pk(self.action))

    def acquire(self) -> Lease | None:
        """Take a lease, or ``None`` if the cap in force is reached (or kept being raced for)."""
        lease = Lease(self.action, f"{os.getpid()}-{secrets.token_hex(4)}")
        for _ in range(MAX_RACES):
            if not self._full and self._take(lease, blind=True):
                return lease
            seen = self._read()
            limit = seen.limit(self.declared) or self.declared
            if len(seen.running) >= limit:
                self._full, self.limit = True, limit
                return None
            if self._take(lease, seen=seen, limit=limit):
                return lease
            self._full = True  # raced: read again before the next write
        return None

    def _take(self, lease: Lease, *, blind: bool = False, seen: Occupancy | None = None,
              limit: int = 0) -> bool:
        """One conditional UpdateItem: add ``lease``; False if its condition failed.

        ``blind``: while ``size(holders)`` is under the cap in force. Else, from what was
        ``seen``: remove its expired holders (if still as seen) and add the lease, while the
        live value is as seen and the holders, expired ones included, are under ``limit`` plus
        the expired."""
        until = self.clock() + self.lease_seconds
        names = {"#h": "holders", "#me": lease.holder, "#cap": "cap"}
        values: dict[str, Any] = {":until": _n(until)}
        if seen is not None and not seen.has_map:
            expression, condition = "SET #h = :map", "attribute_not_exists(#h)"
            values = {":map": {"M": {lease.holder: _n(until)}}}
            names = {"#h": "holders"}
        elif blind:
            expression = "SET #h.#me = :until"
            condition = ("attribute_exists(#h) AND attribute_not_exists(#h.#me) AND "
                         "((attribute_not_exists(#cap) AND size(#h) < :declared) OR size(#h) < #cap)")
            values[":declared"] = {"N": str(self.declared)}
        else:
            assert seen is not None
            expired = sorted(seen.expired)
            removes = [f"#h.#x{i}" for i in range(len(expired))]
            expression = "SET #h.#me = :until" + (f" REMOVE {', '.join(removes)}" if removes else "")
            checks = ["attribute_exists(#h)", "attribute_not_exists(#h.#me)", "size(#h) < :room"]
            for i, holder in enumerate(expired):
                names[f"#x{i}"] = holder
                values[f":x{i}"] = _n(seen.holders[holder])
                checks.append(f"#h.#x{i} = :x{i}")
            if seen.live is None:
                checks.append("attribute_not_exists(#cap)")
            else:
                checks.append("#cap = :cap")
                values[":cap"] = {"N": str(seen.live)}
            values[":room"] = {"N": str(limit + len(expired))}
            condition = " AND ".join(checks)
        self.writes += 1
        try:
            answer = self.client.update_item(
                TableName=self.table, Key=self._key, UpdateExpression=expression,
                ConditionExpression=condition, ExpressionAttributeNames=names,
                ExpressionAttributeValues=values, ReturnValues="ALL_NEW")
        except ClientError as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                return False
            if error_code(exc) == "ValidationException" and blind:
                return False  # no holders map yet (the item is new): the read path makes it
            raise
        self._note(answer.get("Attributes"))
        if seen is not None and seen.expired:
            log.info("concurrency-lease-expired", action=self.action, removed=sorted(seen.expired),
                     why="their holders stopped renewing them (a dead worker?)")
        return True

    def _note(self, item: Mapping[str, Any] | None) -> None:
        """Remember whether the item, as a write returned it, leaves room (free: ALL_NEW costs no
        capacity): if not, this process's next try reads before it writes."""
        if not item:
            return
        holders = len(item.get("holders", {}).get("M") or {})
        limit = int(item["cap"]["N"]) if "cap" in item else self.declared
        self._full = holders >= limit

    def _read(self) -> Occupancy:
        self.reads += 1
        return read(self.table, self.client, self.action, self.clock)

    def release(self, lease: Lease) -> None:
        """Give the lease back (one write). A failure is logged: the lease then runs out."""
        self.writes += 1
        try:
            answer = self.client.update_item(
                TableName=self.table, Key=self._key, UpdateExpression="REMOVE #h.#me",
                ConditionExpression="attribute_exists(#h.#me)",
                ExpressionAttributeNames={"#h": "holders", "#me": lease.holder},
                ReturnValues="ALL_NEW")
            self._note(answer.get("Attributes"))
        except ClientError as exc:
            if error_code(exc) != "ConditionalCheckFailedException":
                log.warning("concurrency-release-failed", action=self.action, holder=lease.holder,
                            error=repr(exc)[:300], why="the lease runs out by itself")
        except Exception as exc:
            log.warning("concurrency-release-failed", action=self.action, holder=lease.holder,
                        error=repr(exc)[:300], why="the lease runs out by itself")

    def renew(self, lease: Lease) -> bool:
        """Move the lease's end on (the lease keeper calls this); False if it was lost (it ran
        out and another run removed it)."""
        self.writes += 1
        try:
            self.client.update_item(TableName=self.table, Key=self._key,
                                    UpdateExpression="SET #h.#me = :until",
                                    ConditionExpression="attribute_exists(#h.#me)",
                                    ExpressionAttributeNames={"#h": "holders", "#me": lease.holder},
                                    ExpressionAttributeValues={
                                        ":until": _n(self.clock() + self.lease_seconds)})
        except ClientError as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                return False
            raise
        return True


# -- the run of a capped action ------------------------------------------------------------------
def limit_for(task: Any, rt: Runtime | None = None) -> FleetLimit | None:
    """The cap of ``task`` in this process, or None when it declares no ``max_concurrency``."""
    declared = getattr(task, "max_concurrency", None)
    if declared is None:
        return None
    rt = rt or runtime.current()
    return rt.part(("concurrency", task.name, declared), lambda rt: FleetLimit(
        task.name, declared, table=rt.settings.state_table, client=rt.dynamodb,
        lease_seconds=rt.settings.concurrency_lease_seconds))


#: Monotonic time until which a run over the cap may wait here for a slot (Lambda), or None.
_deadline: ContextVar[float | None] = ContextVar("actionrunner_concurrency_deadline", default=None)


@contextlib.contextmanager
def waiting_until(deadline: float | None) -> Iterator[None]:
    """In this block, a run over its cap waits for a slot until ``deadline`` (monotonic) before
    it raises :class:`~actionrunner.errors.ConcurrencyLimited` (the Lambda runtime: a report
    costs a receive of the record; a worker never blocks a pool process this way)."""
    token = _deadline.set(deadline)
    try:
        yield
    finally:
        _deadline.reset(token)


def _acquire(limit: FleetLimit) -> Lease | None:
    for attempt in range(1, 4):
        try:
            return limit.acquire()
        except Exception as exc:
            if not is_transient(exc):
                raise
            if attempt == 3:
                raise StateUnavailable("UpdateItem", f"max_concurrency of {limit.action!r}: "
                                       f"{exc!r}"[:300], when=unavailable_wait()) from exc
            time.sleep(backoff_delay(attempt, base=0.2, cap=2.0))
    return None


def capped_run(task: Any, run: Callable[[], Any], *, sleep: Callable[[float], None] = time.sleep) -> Any:
    """``run()`` inside a lease of ``task``'s cap (``run()`` at once for an uncapped action).
    Over the cap: :class:`~actionrunner.errors.ConcurrencyLimited` (the message waits)."""
    rt = runtime.current()
    limit = limit_for(task, rt)
    if limit is None:
        return run()
    poll = rt.settings.concurrency_poll_seconds
    lease = _acquire(limit)
    deadline = _deadline.get()
    while lease is None and deadline is not None and time.monotonic() < deadline:
        sleep(min(max(0.0, deadline - time.monotonic()), jittered(poll / 2)))
        lease = _acquire(limit)
    if lease is None:
        raise ConcurrencyLimited(task.name, limit.limit, when=round(jittered(poll), 3))
    from .lease import keeper

    try:
        with keeper(rt).keep(limit, lease):
            return run()
    finally:
        limit.release(lease)
