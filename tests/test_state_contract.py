"""The idempotency store's contract, run against both backends: the in-memory one, and DynamoDB
(moto's server over HTTP, the state table that `actionrunner provision` creates).

Every test drives the store with its own clock, so leases and TTLs run out without waiting.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from actionrunner.errors import IdempotencyInProgress, IdempotencyKeyReused, LeaseLost
from actionrunner.settings import Settings, get_settings
from actionrunner.state import Claim, DynamoDBStore, IdempotencyStore, MemoryStore, Replay, Status

LEASE, TTL = 30.0, 3600.0


class Clock:
    """Epoch seconds that move only when told."""

    def __init__(self) -> None:
        self.now = 1_900_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Backend:
    """A store, plus a way to make a write it commits with a completion and to count them."""

    store: IdempotencyStore
    clock: Clock
    effect: Callable[[str], dict[str, Any]]  # an increment of counter ``name``
    count: Callable[[str], int]  # how often that increment was committed


def _memory() -> Backend:
    clock = Clock()
    store = MemoryStore(ttl_seconds=TTL, lease_seconds=LEASE, clock=clock)

    def count(name: str) -> int:
        return sum(1 for e in store.committed if e["Update"]["Key"]["pk"]["S"] == name)

    return Backend(store, clock, _increment("memory-effects"), count)


def _increment(table: str) -> Callable[[str], dict[str, Any]]:
    def effect(name: str) -> dict[str, Any]:
        return {"Update": {"TableName": table, "Key": {"pk": {"S": name}},
                           "UpdateExpression": "ADD n :one",
                           "ExpressionAttributeValues": {":one": {"N": "1"}}}}
    return effect


@pytest.fixture(scope="module")
def counters(aws: Any) -> Iterator[str]:
    """A DynamoDB table the DynamoDB backend's effects write to (made on first use)."""
    client = get_settings().client("dynamodb")
    name = f"contract-{uuid.uuid4().hex[:8]}"
    client.create_table(TableName=name, BillingMode="PAY_PER_REQUEST",
                        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}])
    yield name
    client.delete_table(TableName=name)


@pytest.fixture(params=["memory", pytest.param("dynamodb", marks=pytest.mark.integration)])
def backend(request: pytest.FixtureRequest) -> Backend:
    if request.param == "memory":
        return _memory()
    settings: Settings = request.getfixturevalue("settings")
    table = request.getfixturevalue("counters")
    clock = Clock()
    client = settings.client("dynamodb")
    store = DynamoDBStore.from_settings(settings, client, ttl_seconds=TTL, lease_seconds=LEASE,
                                        clock=clock)

    def count(name: str) -> int:
        item = client.get_item(TableName=table, Key={"pk": {"S": name}}, ConsistentRead=True)
        return int(item.get("Item", {}).get("n", {}).get("N", 0))

    return Backend(store, clock, _increment(table), count)


def key() -> str:
    return f"idem#tests.contract#{uuid.uuid4().hex}"


# -- claiming ------------------------------------------------------------------------------------
def test_a_new_key_is_claimed_in_progress_with_a_lease(backend: Backend) -> None:
    k = key()
    claim = backend.store.begin(k, "h1", action="tests.contract", run_id="run-1")
    assert isinstance(claim, Claim)
    stored = backend.store.get(k)
    assert stored is not None and stored.status is Status.IN_PROGRESS
    assert stored.lease_id == claim.lease_id
    assert stored.lease_until == pytest.approx(backend.clock.now + LEASE)
    assert stored.expires_at > backend.clock.now + TTL - 1
    assert stored.run_id == "run-1" and stored.action == "tests.contract"


def test_a_held_key_is_not_claimed_again_and_says_how_long_to_wait(backend: Backend) -> None:
    k = key()
    backend.store.begin(k, "h1")
    backend.clock.advance(LEASE - 2)
    with pytest.raises(IdempotencyInProgress) as caught:
        backend.store.begin(k, "h1")
    assert caught.value.key == k
    assert caught.value.lease_until == pytest.approx(backend.clock.now + 2)
    assert caught.value.when == 2.0  # until the lease would run out (between 0.5 and 5 s)
    assert caught.value.counts_as_attempt is False


def test_a_completed_key_replays_its_saved_result(backend: Backend) -> None:
    k = key()
    claim = backend.store.begin(k, "h1")
    assert isinstance(claim, Claim)
    result = {"total": 3, "items": ["a", "b"], "at": dt.datetime(2026, 11, 27, tzinfo=dt.UTC)}
    backend.store.complete(claim, result)
    backend.clock.advance(TTL - 10)
    replay = backend.store.begin(k, "h1")
    assert isinstance(replay, Replay)
    assert replay.result == {"total": 3, "items": ["a", "b"], "at": "2026-11-27T00:00:00Z"}
    assert replay.record.status is Status.COMPLETED and replay.record.result_saved


def test_a_result_that_cannot_be_saved_completes_the_key_all_the_same(backend: Backend) -> None:
    k = key()
    claim = backend.store.begin(k, "h1")
    assert isinstance(claim, Claim)
    backend.store.complete(claim, object())  # not JSON-able
    replay = backend.store.begin(k, "h1")
    assert isinstance(replay, Replay)
    assert replay.result is None and replay.record.result_saved is False


def test_the_same_key_with_other_inputs_is_an_error_that_says_so(backend: Backend) -> None:
    k = key()
    claim = backend.store.begin(k, "h1")
    with pytest.raises(IdempotencyKeyReused, match="already used with different inputs"):
        backend.store.begin(k, "h2")  # while in progress
    assert isinstance(claim, Claim)
    backend.store.complete(claim, "done")
    with pytest.raises(IdempotencyKeyReused) as caught:
        backend.store.begin(k, "h2", action="tests.contract")  # and once completed
    assert (caught.value.inputs_hash, caught.value.stored_hash) == ("h2", "h1")


# -- failures, crashes and expiry ----------------------------------------------------------------
def test_a_released_key_can_be_claimed_by_the_retry(backend: Backend) -> None:
    k = key()
    first = backend.store.begin(k, "h1")
    assert isinstance(first, Claim)
    assert backend.store.release(first) is True
    assert backend.store.get(k) is None
    again = backend.store.begin(k, "h1")
    assert isinstance(again, Claim) and again.lease_id != first.lease_id


def test_a_crashed_runs_lease_runs_out_and_the_key_is_claimed_again(backend: Backend) -> None:
    # Given a run that claimed the key and then died (no renewal, no completion)
    k = key()
    crashed = backend.store.begin(k, "h1")
    assert isinstance(crashed, Claim)
    # When its lease runs out (to the second: the lease is free when it ends)
    backend.clock.advance(LEASE)
    # Then another run claims the key
    taker = backend.store.begin(k, "h1")
    assert isinstance(taker, Claim) and taker.lease_id != crashed.lease_id
    # And the crashed run's late writes change nothing (its lease id no longer holds the key)
    with pytest.raises(LeaseLost):
        backend.store.complete(crashed, "stale", [backend.effect(k)])
    assert backend.store.renew(crashed) is False
    assert backend.store.release(crashed) is False
    assert backend.store.get(k).lease_id == taker.lease_id  # type: ignore[union-attr]
    assert backend.count(k) == 0


def test_renewing_keeps_the_lease_while_the_run_goes_on(backend: Backend) -> None:
    k = key()
    claim = backend.store.begin(k, "h1")
    assert isinstance(claim, Claim)
    for _ in range(3):  # three lease lengths in all, renewed every 2/3 of one
        backend.clock.advance(LEASE * 2 / 3)
        assert backend.store.renew(claim) is True
        with pytest.raises(IdempotencyInProgress):
            backend.store.begin(k, "h1")
    backend.clock.advance(LEASE + 0.001)
    assert isinstance(backend.store.begin(k, "h1"), Claim)


def test_a_completed_key_expires_after_its_ttl_and_runs_again(backend: Backend) -> None:
    k = key()
    claim = backend.store.begin(k, "h1")
    assert isinstance(claim, Claim)
    backend.store.complete(claim, "first")
    backend.clock.advance(TTL + 1)
    assert backend.store.get(k) is None
    assert isinstance(backend.store.begin(k, "h2"), Claim)  # a new life: other inputs are fine


def test_a_record_counts_until_the_second_it_expires(backend: Backend) -> None:
    k = key()
    claim = backend.store.begin(k, "h1")
    assert isinstance(claim, Claim)
    done = backend.store.complete(claim, "first")
    backend.clock.now = done.expires_at - 0.001
    assert isinstance(backend.store.begin(k, "h1"), Replay)
    backend.clock.now = done.expires_at
    assert isinstance(backend.store.begin(k, "h1"), Claim)


def test_a_key_completes_once(backend: Backend) -> None:
    k = key()
    claim = backend.store.begin(k, "h1")
    assert isinstance(claim, Claim)
    backend.store.complete(claim, "first", [backend.effect(k)])
    with pytest.raises(LeaseLost):
        backend.store.complete(claim, "second", [backend.effect(k)])
    assert backend.store.release(claim) is False  # a completed key is not released either
    replay = backend.store.begin(k, "h1")
    assert isinstance(replay, Replay) and replay.result == "first"
    assert backend.count(k) == 1


# -- effects ---------------------------------------------------------------------------------------
def test_effects_are_committed_with_the_completion_and_only_with_it(backend: Backend) -> None:
    k, other = key(), key()
    claim = backend.store.begin(k, "h1")
    assert isinstance(claim, Claim)
    assert backend.count(k) == 0  # nothing is written while the run goes on
    backend.store.complete(claim, "ok", [backend.effect(k), backend.effect(other)])
    assert (backend.count(k), backend.count(other)) == (1, 1)
    assert backend.store.get(k).status is Status.COMPLETED  # type: ignore[union-attr]


# -- a first delivery: one write, no claim ------------------------------------------------------
def test_a_first_delivery_completes_a_new_key_in_one_write_with_its_effects(backend: Backend) -> None:
    k = key()
    done = backend.store.complete_first(k, "h1", {"n": 1}, [backend.effect(k)],
                                        action="tests.contract", run_id="run-1")
    assert done.status is Status.COMPLETED and done.lease_id is None
    assert backend.count(k) == 1
    stored = backend.store.get(k)
    assert stored is not None and stored.status is Status.COMPLETED and stored.value == {"n": 1}
    assert stored.run_id == "run-1" and stored.expires_at > backend.clock.now + TTL - 1
    replay = backend.store.begin(k, "h1")  # its redelivery replays it
    assert isinstance(replay, Replay) and replay.result == {"n": 1}


def test_a_first_delivery_writes_nothing_if_a_redelivery_claimed_the_call_meanwhile(
        backend: Backend) -> None:
    # Given a redelivery of the call that claimed its key while the first delivery ran
    k = key()
    redelivery = backend.store.begin(k, "h1")
    assert isinstance(redelivery, Claim)
    backend.clock.advance(LEASE - 3)
    # When the first delivery completes: refused, it waits for the holder; nothing written
    with pytest.raises(IdempotencyInProgress) as caught:
        backend.store.complete_first(k, "h1", "first", [backend.effect(k)])
    assert caught.value.when == 3.0 and caught.value.counts_as_attempt is False
    assert backend.count(k) == 0
    # And the redelivery still holds the key, and completes it (its effects, once)
    backend.store.complete(redelivery, "second", [backend.effect(k)])
    assert backend.count(k) == 1
    # And a first delivery that finishes after that gets the redelivery's result, writing nothing
    late = backend.store.complete_first(k, "h1", "first", [backend.effect(k)])
    assert isinstance(late, Replay) and late.result == "second"
    assert backend.count(k) == 1


def test_a_first_delivery_completes_over_a_crashed_claim_whose_lease_ran_out(
        backend: Backend) -> None:
    k = key()
    crashed = backend.store.begin(k, "h1")
    assert isinstance(crashed, Claim)
    backend.clock.advance(LEASE)
    done = backend.store.complete_first(k, "h1", "first", [backend.effect(k)])
    assert done.status is Status.COMPLETED
    with pytest.raises(LeaseLost):  # the crashed claim's late completion changes nothing
        backend.store.complete(crashed, "stale", [backend.effect(k)])
    assert backend.count(k) == 1
    assert isinstance(backend.store.begin(k, "h1"), Replay)


def test_a_first_delivery_completes_once_and_refuses_other_inputs(backend: Backend) -> None:
    k = key()
    backend.store.complete_first(k, "h1", "first", [backend.effect(k)])
    again = backend.store.complete_first(k, "h1", "again", [backend.effect(k)])
    assert isinstance(again, Replay) and again.result == "first"
    with pytest.raises(IdempotencyKeyReused):
        backend.store.complete_first(k, "h2", "other", [backend.effect(k)])
    assert backend.count(k) == 1
    backend.clock.advance(TTL + 1)  # an expired completion is a new life
    assert backend.store.complete_first(k, "h2", "new", []).status is Status.COMPLETED


# -- the two backends agree on any history ------------------------------------------------------------
@pytest.mark.integration
def test_dynamodb_and_memory_agree_on_random_histories(aws: Any, counters: str) -> None:
    """Random sequences of claims, completions, first deliveries' completions (no claim),
    releases, renewals and clock jumps (to the lease's and the TTL's edges) get the same answers
    from both backends."""
    from hypothesis import HealthCheck, given
    from hypothesis import settings as examples
    from hypothesis import strategies as st

    step = st.one_of(
        st.tuples(st.sampled_from(["begin", "first"]), st.integers(0, 1),
                  st.sampled_from(["h1", "h1", "h2"])),
        st.tuples(st.sampled_from(["complete", "release", "renew"]), st.integers(0, 7)),
        st.tuples(st.just("advance"), st.sampled_from([1.0, LEASE - 0.001, LEASE, TTL])),
    )
    client = get_settings().client("dynamodb")

    @examples(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.lists(step, max_size=20))
    def agree(history: list[tuple[Any, ...]]) -> None:
        clock = Clock()
        memory = MemoryStore(ttl_seconds=TTL, lease_seconds=LEASE, clock=clock)
        dynamodb = DynamoDBStore.from_settings(get_settings(), client, ttl_seconds=TTL,
                                               lease_seconds=LEASE, clock=clock)
        prefix = f"idem#tests.model#{uuid.uuid4().hex}#"
        claims: list[tuple[Claim, Claim]] = []
        for n, (op, *args) in enumerate(history):
            if op == "advance":
                clock.advance(args[0])
                continue
            if op == "begin":
                answers = [_begin(store, prefix + str(args[0]), args[1]) for store in (memory, dynamodb)]
                if answers[0][0] == "claim":
                    claims.append((answers[0][1], answers[1][1]))
                answers = [a[:1] + a[2:] for a in answers]
            elif op == "first":
                answers = [_first(store, prefix + str(args[0]), args[1], f"result {n}")
                           for store in (memory, dynamodb)]
            elif not claims:
                continue
            else:
                pair = claims[args[0] % len(claims)]
                answers = [_finish(store, claim, op, f"result {n}")
                           for store, claim in zip((memory, dynamodb), pair, strict=True)]
            assert answers[0] == answers[1], (op, args, answers)

    agree()


def _begin(store: IdempotencyStore, k: str, inputs_hash: str) -> tuple[Any, ...]:
    try:
        outcome = store.begin(k, inputs_hash)
    except IdempotencyInProgress as busy:
        return ("busy", None, busy.when)
    except IdempotencyKeyReused:
        return ("reused", None)
    if isinstance(outcome, Replay):
        return ("replay", None, outcome.result)
    return ("claim", outcome)


def _first(store: IdempotencyStore, k: str, inputs_hash: str, result: str) -> tuple[Any, ...]:
    try:
        outcome = store.complete_first(k, inputs_hash, result)
    except IdempotencyInProgress as busy:
        return ("busy", busy.when)
    except IdempotencyKeyReused:
        return ("reused",)
    if isinstance(outcome, Replay):
        return ("replay", outcome.result)
    return ("completed", outcome.value)


def _finish(store: IdempotencyStore, claim: Claim, op: str, result: str) -> Any:
    if op == "complete":
        try:
            store.complete(claim, result)
        except LeaseLost:
            return "lost"
        return "completed"
    return getattr(store, op)(claim)
