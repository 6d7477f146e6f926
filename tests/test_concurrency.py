"""Fleet-wide concurrency per action (``@action(max_concurrency=N)``): the leases in the state
table, against moto's DynamoDB over HTTP with a clock of their own (so a lease runs out without
waiting); the pure parts (validation, the settle decision) without I/O. The acceptance test with
two real workers and a SIGKILL is in tests/test_concurrency_e2e.py.
"""

from __future__ import annotations

import threading
import uuid
from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from actionrunner import action, runtime
from actionrunner.errors import (
    ActionDefinitionError,
    ConcurrencyLimited,
    ConcurrencyLimitInvalid,
    StateUnavailable,
)
from actionrunner.settings import Settings
from actionrunner.settle import Policy, Wait, decide
from actionrunner.state import concurrency
from actionrunner.state.concurrency import FleetLimit, capped_run, check_limit, read, set_live


class Clock:
    """Epoch seconds that move only when told to."""

    def __init__(self) -> None:
        self.now = 1_900_000_000.0

    def __call__(self) -> float:
        return self.now


class Counting:
    """A DynamoDB client that counts the requests made through it, by operation."""

    def __init__(self, client: Any) -> None:
        self.client, self.calls = client, {}  # type: ignore[var-annotated]

    def __getattr__(self, name: str) -> Any:
        call = getattr(self.client, name)

        def counted(**kwargs: Any) -> Any:
            self.calls[name] = self.calls.get(name, 0) + 1
            return call(**kwargs)

        return counted


def cap(settings: Settings, n: int, clock: Clock, *, action: str | None = None,
        client: Any = None, lease: float = 30.0) -> FleetLimit:
    return FleetLimit(action or f"tests.cap.{uuid.uuid4().hex[:8]}", n, table=settings.state_table,
                      client=client or settings.client("dynamodb"), lease_seconds=lease, clock=clock)


# -- pure: validation and the decision ---------------------------------------------------------
@pytest.mark.parametrize("bad", [0, -1, 1001, "3", 2.5, True, None, [3]])
def test_a_limit_that_is_not_a_whole_number_from_1_is_a_clear_error(bad: Any) -> None:
    with pytest.raises(ConcurrencyLimitInvalid, match="whole number from 1 to 1000") as caught:
        check_limit("max_concurrency of 'x'", bad)
    assert repr(bad) in str(caught.value)


@pytest.mark.parametrize("bad", [0, -2, "4", 1.5, False])
def test_a_bad_declared_limit_fails_at_declaration(bad: Any) -> None:
    with pytest.raises(ActionDefinitionError, match="max_concurrency must be a whole number"):
        @action(name=f"tests.cap.bad{uuid.uuid4().hex[:6]}", max_concurrency=bad)
        def bad_cap(n: int) -> None: ...


def test_over_the_cap_the_message_waits_without_using_an_attempt() -> None:
    # (the one decision both runtimes apply: Wait, not Retry, whatever the attempt)
    outcome = decide(Policy(max_attempts=1), ConcurrencyLimited("a", 3, when=0.7), attempt=1,
                     countdown=0.7)
    assert isinstance(outcome, Wait) and outcome.delay == 0.7
    assert "max_concurrency of 3" in outcome.reason.error


def test_an_uncapped_action_makes_no_request() -> None:
    class NoRequests:
        def __getattr__(self, name: str) -> Any:
            raise AssertionError(f"an uncapped action called DynamoDB {name}")

    task = type("T", (), {"name": "tests.cap.none", "max_concurrency": None})()
    rt = runtime.Runtime.from_settings(runtime.current().settings, dynamodb=NoRequests())
    with runtime.using(rt):
        assert capped_run(task, lambda: 42) == 42


# -- the leases, on moto's DynamoDB ------------------------------------------------------------
@pytest.mark.integration
def test_at_most_n_leases_and_a_release_frees_one(settings: Settings) -> None:
    clock = Clock()
    one = cap(settings, 2, clock)
    other = cap(settings, 2, clock, action=one.action)  # another worker's view of the same cap
    a, b = one.acquire(), other.acquire()
    assert a is not None and b is not None
    assert one.acquire() is None and other.acquire() is None and one.limit == 2
    one.release(a)
    c = other.acquire()
    assert c is not None
    assert set(read(settings.state_table, settings.client("dynamodb"), one.action).running) == {
        b.holder, c.holder}


@pytest.mark.integration
def test_a_run_costs_two_writes_and_a_full_cap_one_read_a_try(settings: Settings) -> None:
    clock = Clock()
    client = Counting(settings.client("dynamodb"))
    limit = cap(settings, 3, clock, client=client)
    first = limit.acquire()  # the item is new: the blind write fails, a read, then it is made
    assert first is not None
    limit.release(first)
    client.calls.clear()
    # Given a cap with room: one write to take a lease, one to give it back, no read
    lease = limit.acquire()
    assert lease is not None
    limit.release(lease)
    assert client.calls == {"update_item": 2}
    # Given a cap this process filled: a try costs one read (the last write said it is full)
    held = [limit.acquire() for _ in range(3)]
    client.calls.clear()
    assert limit.acquire() is None and limit.acquire() is None
    assert client.calls == {"get_item": 2}
    # Given a cap another process filled: the first try costs a write and a read, then reads
    other = cap(settings, 3, clock, action=limit.action, client=client)
    client.calls.clear()
    assert other.acquire() is None
    assert client.calls == {"update_item": 1, "get_item": 1}
    client.calls.clear()
    assert other.acquire() is None
    assert client.calls == {"get_item": 1}
    # And once a run gives its lease back, the next try finds the room at once
    assert held[0] is not None
    limit.release(held[0])
    client.calls.clear()
    assert other.acquire() is not None
    assert client.calls == {"get_item": 1, "update_item": 1}


@pytest.mark.integration
def test_a_dead_holders_lease_runs_out_and_is_removed_by_the_next_run(settings: Settings) -> None:
    # Given a cap of 2, held by a run that renews and by one whose worker died
    clock = Clock()
    alive, dead = cap(settings, 2, clock, lease=10), cap(settings, 2, clock, lease=10)
    dead.action = alive.action
    mine, theirs = alive.acquire(), dead.acquire()
    assert mine is not None and theirs is not None
    assert alive.acquire() is None
    # When the lease time passes, the live holder renewing and the dead one not
    clock.now += 6
    assert alive.renew(mine)
    clock.now += 5
    # Then the next run takes the dead one's slot (removing it), not the live one's
    taken = alive.acquire()
    assert taken is not None
    seen = read(settings.state_table, settings.client("dynamodb"), alive.action, clock)
    assert set(seen.holders) == {mine.holder, taken.holder}
    # And the dead holder, back from the dead, finds its lease lost
    assert dead.renew(theirs) is False
    dead.release(theirs)  # gives back nothing (and says nothing)
    assert set(read(settings.state_table, settings.client("dynamodb"), alive.action).holders) == {
        mine.holder, taken.holder}


@pytest.mark.integration
def test_the_live_value_overrides_the_declared_one(settings: Settings) -> None:
    clock = Clock()
    client = settings.client("dynamodb")
    limit = cap(settings, 2, clock)
    held = [limit.acquire(), limit.acquire()]
    assert limit.acquire() is None
    # When an operator raises it live
    assert set_live(settings.state_table, client, limit.action, 4) == 4
    more = [limit.acquire(), limit.acquire()]
    assert all(more) and limit.acquire() is None and limit.limit == 4
    # When they lower it below what runs now: running ones finish, new ones wait until under it
    set_live(settings.state_table, client, limit.action, 1)
    leases = [h for h in held + more if h is not None]
    for lease in leases[:3]:
        limit.release(lease)
    assert limit.acquire() is None and limit.limit == 1
    limit.release(leases[3])
    assert limit.acquire() is not None
    # When the live value is removed, the declared one applies again
    concurrency.reset_live(settings.state_table, client, limit.action)
    assert limit.acquire() is not None and limit.acquire() is None and limit.limit == 2
    # And a bad live value is refused, naming it, and changes nothing
    for bad in (0, -1, "5", 2.5, True):
        with pytest.raises(ConcurrencyLimitInvalid):
            set_live(settings.state_table, client, limit.action, bad)
    assert read(settings.state_table, client, limit.action).live is None


@pytest.mark.integration
def test_racing_holders_never_exceed_the_cap(settings: Settings) -> None:
    # Given 12 processes' worth of limiters racing for a cap of 3, at once
    name = f"tests.cap.{uuid.uuid4().hex[:8]}"
    limits = [FleetLimit(name, 3, table=settings.state_table, client=settings.client("dynamodb"),
                         lease_seconds=30) for _ in range(12)]
    got: list[Any] = []
    barrier = threading.Barrier(len(limits))

    def take(limit: FleetLimit) -> None:
        barrier.wait()
        got.append(limit.acquire())

    threads = [threading.Thread(target=take, args=(limit,)) for limit in limits]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    leases = [g for g in got if g is not None]
    # Then exactly 3 hold a lease (none lost to the races while there was room)
    assert len(leases) == 3
    assert len(read(settings.state_table, settings.client("dynamodb"), name).holders) == 3


@pytest.mark.integration
def test_a_capped_run_holds_its_lease_while_it_runs_and_waits_over_the_cap(
        settings: Settings) -> None:
    name = f"tests.cap.{uuid.uuid4().hex[:8]}"
    task = type("T", (), {"name": name, "max_concurrency": 1})()
    client = settings.client("dynamodb")

    def inside() -> int:
        assert len(read(settings.state_table, client, name).running) == 1
        with pytest.raises(ConcurrencyLimited) as over:  # a second run, meanwhile
            capped_run(task, lambda: None)
        assert over.value.counts_as_attempt is False and over.value.when > 0
        return 7

    assert capped_run(task, inside) == 7
    assert read(settings.state_table, client, name).holders == {}  # given back
    # And a failing run gives its lease back too
    with pytest.raises(ValueError):
        capped_run(task, lambda: (_ for _ in ()).throw(ValueError("boom")))
    assert read(settings.state_table, client, name).holders == {}


@pytest.mark.integration
def test_a_run_waits_in_the_invocation_until_its_deadline(settings: Settings) -> None:
    # (the Lambda runtime's waiting_until: the lease comes free while the record waits)
    import time

    name = f"tests.cap.{uuid.uuid4().hex[:8]}"
    task = type("T", (), {"name": name, "max_concurrency": 1})()
    holder = FleetLimit(name, 1, table=settings.state_table, client=settings.client("dynamodb"),
                        lease_seconds=30)
    lease = holder.acquire()
    assert lease is not None
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        if len(slept) == 2:
            holder.release(lease)

    with concurrency.waiting_until(time.monotonic() + 30):
        assert capped_run(task, lambda: "ran", sleep=sleep) == "ran"
    assert len(slept) == 2
    # Without a deadline (a worker) it does not wait: the message does
    holder.acquire()
    with pytest.raises(ConcurrencyLimited):
        capped_run(task, lambda: "ran", sleep=sleep)
    assert len(slept) == 2


def test_the_state_table_unreachable_makes_the_run_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    class Down:
        def __getattr__(self, name: str) -> Any:
            def fail(**kwargs: Any) -> Any:
                raise EndpointConnectionError(endpoint_url="http://127.0.0.1:9")
            return fail

    monkeypatch.setattr(concurrency.time, "sleep", lambda s: None)
    task = type("T", (), {"name": f"tests.cap.{uuid.uuid4().hex[:8]}", "max_concurrency": 2})()
    rt = runtime.Runtime.from_settings(runtime.current().settings, dynamodb=Down())
    with runtime.using(rt), pytest.raises(StateUnavailable) as caught:
        capped_run(task, lambda: None)
    assert caught.value.counts_as_attempt is False


def test_an_error_that_is_not_transient_is_raised() -> None:
    class Refusing:
        def __getattr__(self, name: str) -> Any:
            def fail(**kwargs: Any) -> Any:
                raise ClientError({"Error": {"Code": "ResourceNotFoundException",
                                             "Message": "no table"}}, name)
            return fail

    task = type("T", (), {"name": f"tests.cap.{uuid.uuid4().hex[:8]}", "max_concurrency": 2})()
    rt = runtime.Runtime.from_settings(runtime.current().settings, dynamodb=Refusing())
    with runtime.using(rt), pytest.raises(ClientError, match="ResourceNotFound"):
        capped_run(task, lambda: None)
