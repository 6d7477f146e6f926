"""Idempotency on by default: a call's effect happens once however often SQS delivers it.

Unit tests run actions in-process (``apply()``) on the in-memory store; the end-to-end tests run
real ``celery -A actionrunner worker`` processes against moto's SQS and DynamoDB over HTTP.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from actionrunner import action, events, runtime
from actionrunner import constants as C
from actionrunner import keys as ar_keys
from actionrunner.errors import (
    ActionDefinitionError,
    IdempotencyInProgress,
    IdempotencyKeyReused,
    LeaseLost,
)
from actionrunner.keys import default_key
from actionrunner.runs import RunStore
from actionrunner.runtime import Runtime
from actionrunner.settings import Settings
from actionrunner.state import Claim, DynamoDBStore, MemoryStore, Status, guard
from actionrunner.state import effects as fx
from actionrunner.state.lease import LeaseKeeper
from actionrunner.state.schema import idempotency_pk
from tests.actions import charge_order, gated, tally
from tests.conftest import Worker
from tests.test_fifo_worker import _kill_tree

CALLS: list[dict[str, Any]] = []


@action(name="tests.idem.charge", group="charge:{order}", key="{order}:{cents}:{fail}")
def charge(order: str, cents: int, fail: bool = False) -> dict:
    CALLS.append({"order": order, "cents": cents})
    fx.update("ledger", {"pk": order}, "ADD cents :c", values={":c": cents})
    if fail:
        raise RuntimeError("card declined")
    return {"order": order, "charged": cents, "nonce": uuid.uuid4().hex}


@action(name="tests.idem.keyed", key="{order}")
def keyed(order: str, cents: int) -> str:
    CALLS.append({"order": order, "cents": cents})
    return f"{order}:{cents}"


@action(name="tests.idem.plain", idempotent=False)
def plain(order: str) -> str:
    CALLS.append({"order": order})
    return uuid.uuid4().hex


@action(name="tests.idem.unkeyed")
def unkeyed(order: str) -> str:
    CALLS.append({"order": order})
    return uuid.uuid4().hex


@pytest.fixture
def store() -> Iterator[MemoryStore]:
    """Runs of this process use an in-memory store (no server needed)."""
    memory = MemoryStore(ttl_seconds=3600, lease_seconds=30)
    guard.use_store(memory)
    CALLS.clear()
    yield memory
    guard.use_store(None)


@pytest.fixture
def lines() -> Iterator[list[tuple[str, dict[str, Any]]]]:
    """The lifecycle lines this process writes (event, fields)."""
    seen: list[tuple[str, dict[str, Any]]] = []

    def observer(event: str, fields: dict[str, Any], result: Any) -> None:
        seen.append((event, {**fields, "result": result}))

    events.observe(observer)
    yield seen
    events.unobserve(observer)


def key_of(task: Any, **inputs: Any) -> tuple[str, str]:
    call = task.prepare(kwargs=inputs)
    return idempotency_pk(task.name, call.dedup_id), default_key(call.kwargs)


# -- in-process, on the in-memory store ---------------------------------------------------------------
def test_a_completed_call_returns_its_saved_result_and_does_not_run_again(
    store: MemoryStore, lines: list[tuple[str, dict[str, Any]]]
) -> None:
    first = charge.apply(kwargs={"order": "o1", "cents": 500}).get()
    again = charge.apply(kwargs={"order": "o1", "cents": 500}).get()
    assert again == first  # the saved result (its nonce too), not a second run
    assert CALLS == [{"order": "o1", "cents": 500}]
    assert len(store.committed) == 1  # the staged write, committed with the first completion only
    succeeded = [fields for event, fields in lines if event == "succeeded"]
    assert [s.get("idempotent_replay") for s in succeeded] == [None, True]
    assert succeeded[1]["idempotency_key"] == key_of(charge, order="o1", cents=500)[0]
    assert succeeded[1]["result"] == first


def test_every_call_of_an_unkeyed_action_runs_and_the_same_call_runs_once(
    store: MemoryStore,
) -> None:
    # Two calls with equal inputs are two runs (each has its own call id)...
    one = unkeyed.apply(kwargs={"order": "u1"}).get()
    two = unkeyed.apply(kwargs={"order": "u1"}).get()
    assert one != two and CALLS == [{"order": "u1"}, {"order": "u1"}]
    # ...while the same call (its message delivered again: the same call id) runs once
    same = {C.CALL_ID_HEADER: "call-" + uuid.uuid4().hex}
    three = unkeyed.apply(kwargs={"order": "u1"}, headers=same).get()
    assert unkeyed.apply(kwargs={"order": "u1"}, headers=same).get() == three
    assert len(CALLS) == 3


def test_a_message_without_a_call_id_falls_back_to_its_inputs(store: MemoryStore) -> None:
    # (a message sent before call ids: Celery's own apply, without the header)
    from celery import Task

    first = Task.apply(unkeyed, kwargs={"order": "legacy"}).get()
    assert Task.apply(unkeyed, kwargs={"order": "legacy"}).get() == first
    assert CALLS == [{"order": "legacy"}]


def test_a_failed_run_writes_nothing_and_releases_its_key_for_the_retry(store: MemoryStore) -> None:
    failed = charge.apply(kwargs={"order": "o2", "cents": 100, "fail": True})
    assert failed.state == "FAILURE"
    assert store.committed == []  # the staged write went nowhere
    assert store.get(key_of(charge, order="o2", cents=100, fail=True)[0]) is None
    assert charge.apply(kwargs={"order": "o2", "cents": 100, "fail": False}).state == "SUCCESS"


def test_a_call_whose_key_another_run_holds_waits(store: MemoryStore) -> None:
    # Given another run holding the call's key
    pk, inputs_hash = key_of(charge, order="o3", cents=100)
    holder = store.begin(pk, inputs_hash)
    # When the call runs: it does not run, it asks to be retried once the lease may have run out
    result = charge.apply(kwargs={"order": "o3", "cents": 100})
    assert result.state == "RETRY" and isinstance(result.result, IdempotencyInProgress)
    assert result.result.counts_as_attempt is False and 0.5 <= result.result.when <= 5
    assert CALLS == []
    # And once the holder completes, the call returns the holder's result
    assert isinstance(holder, Claim)
    store.complete(holder, {"from": "holder"})
    assert charge.apply(kwargs={"order": "o3", "cents": 100}).get() == {"from": "holder"}
    assert CALLS == []


def test_the_same_key_with_other_inputs_is_refused(store: MemoryStore) -> None:
    assert keyed.apply(kwargs={"order": "o4", "cents": 100}).get() == "o4:100"
    reused = keyed.apply(kwargs={"order": "o4", "cents": 250})
    assert reused.state == "FAILURE" and isinstance(reused.result, IdempotencyKeyReused)
    assert "already used with different inputs" in str(reused.result)
    assert CALLS == [{"order": "o4", "cents": 100}]


def test_a_call_with_its_own_key_is_a_call_of_its_own(store: MemoryStore) -> None:
    # (celery beat sends every schedule slot with the slot as its key: same inputs, new call)
    header = C.IDEMPOTENCY_KEY_HEADER
    one = keyed.apply(kwargs={"order": "o5", "cents": 1}, headers={header: "slot-1"}).get()
    keyed.apply(kwargs={"order": "o5", "cents": 1}, headers={header: "slot-1"}).get()
    keyed.apply(kwargs={"order": "o5", "cents": 1}, headers={header: "slot-2"}).get()
    assert one == "o5:1" and len(CALLS) == 2


def test_idempotency_can_be_turned_off_per_action_and_by_default(store: MemoryStore) -> None:
    assert plain.apply(kwargs={"order": "o6"}).get() != plain.apply(kwargs={"order": "o6"}).get()
    with runtime.using(Runtime.from_settings(Settings(idempotency=False))):
        keyed.apply(kwargs={"order": "o6", "cents": 1}).get()
        keyed.apply(kwargs={"order": "o6", "cents": 1}).get()
    assert len(CALLS) == 4


def test_state_options_are_checked_at_declaration() -> None:
    def declare(**options: Any) -> None:
        def fn(x: int) -> int:
            return x

        action(name=f"tests.idem.bad{uuid.uuid4().hex[:6]}", **options)(fn)

    with pytest.raises(ActionDefinitionError, match="'500 per second' is not like '500/s'"):
        declare(rate_limit_shared="500 per second")
    with pytest.raises(ActionDefinitionError, match="bucket= needs rate_limit_shared="):
        declare(bucket="orders")
    with pytest.raises(ActionDefinitionError, match="idempotent= must be True or False"):
        declare(idempotent="yes")
    declare(rate_limit_shared="30/m", bucket="tests-declared")
    with pytest.raises(ActionDefinitionError, match="already declared at 0.5/s"):
        declare(rate_limit_shared="10/s", bucket="tests-declared")


def test_the_lease_keeper_renews_running_claims_and_notices_a_lost_one() -> None:
    clock = [1000.0]
    store = MemoryStore(lease_seconds=30, clock=lambda: clock[0])
    keeper = LeaseKeeper(clock=lambda: clock[0], autostart=False)
    claim = store.begin("idem#tests.keeper#k", "h")
    assert isinstance(claim, Claim)
    with keeper.keep(store, claim):
        assert keeper.renew_due() == 0  # not due before a third of the lease
        clock[0] += 10
        assert keeper.renew_due() == 1
        assert store.get(claim.key).lease_until == 1040.0  # type: ignore[union-attr]
        clock[0] += 41  # the renewals stopped (a stalled process): another run takes the key
        assert isinstance(store.begin(claim.key, "h"), Claim)
        assert keeper.renew_due() == 0 and keeper.lost == 1
        with pytest.raises(LeaseLost):
            store.complete(claim, "late")


def test_effects_outside_a_worker_run_are_written_at_once(aws: Any, settings: Settings) -> None:
    client = settings.client("dynamodb")
    table = f"fx-{uuid.uuid4().hex[:8]}"
    client.create_table(TableName=table, BillingMode="PAY_PER_REQUEST",
                        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}])
    fx.update(table, {"pk": "a"}, "ADD n :one", values={":one": 1})
    fx.put(table, {"pk": "b", "price": 9.5, "tags": ["x"]})
    items = {i["pk"]["S"]: i for i in client.scan(TableName=table)["Items"]}
    assert items["a"]["n"] == {"N": "1"} and items["b"]["price"] == {"N": "9.5"}


def test_effects_refuse_two_writes_to_one_item_and_more_than_a_transaction(store: MemoryStore) -> None:
    from actionrunner.errors import StateError

    with fx.collecting():
        fx.update("t", {"pk": "a"}, "ADD n :one", values={":one": 1})
        with pytest.raises(StateError, match="two staged writes to the same item"):
            fx.update("t", {"pk": "a"}, "ADD m :one", values={":one": 1})
        for i in range(fx.MAX_STAGED - 1):
            fx.put("t", {"pk": f"p{i}"})
        with pytest.raises(StateError, match="at most 99 writes"):
            fx.put("t", {"pk": "one-too-many"})


# -- end to end: real workers, moto over HTTP ---------------------------------------------------------
def _records(record_dir: Path, name: str) -> list[dict[str, Any]]:
    path = record_dir / name
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.mark.integration
@pytest.mark.e2e
def test_the_same_call_sent_after_the_dedup_window_runs_once_and_both_runs_report_the_result(
    start_worker: Callable[..., Worker], queue_url: str, record_dir: Path, settings: Settings
) -> None:
    # Given a worker that keeps every run's status, and an action that ran
    run, token = uuid.uuid4().hex[:8], uuid.uuid4().hex
    worker = start_worker(env={"ACTIONRUNNER_RUN_STATUS": "all"})
    first = tally.delay(run=run, token=token)
    worker.wait_for(lambda: worker.lifecycle("succeeded", id=first.id), what="the first run")
    # When the same call is sent again after SQS's 5-minute deduplication window (SQS takes it
    # as a new message: simulated with a new MessageDeduplicationId)
    second = tally.apply_async(kwargs={"run": run, "token": token},
                               MessageDeduplicationId=f"after-the-window-{uuid.uuid4().hex}")
    [again] = worker.wait_for(lambda: worker.lifecycle("succeeded", id=second.id),
                              what="the second run")
    # Then its effect happened once
    assert (record_dir / f"{run}.tally").read_text().splitlines() == [token]
    # And both runs report the result: the second one is the first one's saved result
    [done] = worker.lifecycle("succeeded", id=first.id)
    assert "idempotent_replay" not in done and again["idempotent_replay"] is True
    runs = RunStore(settings)
    worker.wait_for(lambda: (runs.get(second.id) or {}).get("status") == "succeeded",
                    what="the run status of the second run")
    one, two = runs.get(first.id), runs.get(second.id)
    assert one is not None and two is not None
    assert one["result"] == two["result"] and one["result"]["token"] == token
    # And the state table holds the key, completed, with that result
    pk, inputs_hash = key_of(tally, run=run, token=token)
    record = DynamoDBStore.from_settings(settings).get(pk)
    assert record is not None and record.status is Status.COMPLETED
    assert record.inputs_hash == inputs_hash and record.value == one["result"]
    assert record.run_id == first.id


@pytest.mark.integration
@pytest.mark.e2e
def test_a_duplicate_that_arrives_while_the_first_run_goes_on_waits_then_returns_its_result(
    start_worker: Callable[..., Worker], queue_url: str, record_dir: Path, settings: Settings
) -> None:
    # Given a run that holds its key for a while (a 2 s lease, renewed as it goes on)
    run = uuid.uuid4().hex[:8]
    worker = start_worker(concurrency=2, env={"ACTIONRUNNER_IDEMPOTENCY_LEASE_SECONDS": "2"})
    first = gated.delay(run=run, token="t")
    worker.wait_for(lambda: _records(record_dir, f"{run}.gated"), what="the first run to start")
    # When the same call arrives as another message, in another group (so it runs alongside)
    duplicate = gated.apply_async(kwargs={"run": run, "token": "t"}, MessageGroupId=f"dup:{run}",
                                  MessageDeduplicationId=f"dup-{uuid.uuid4().hex}")
    # Then it waits, for longer than its max_attempts (3) runs and than three leases...
    worker.wait_for(lambda: len(worker.lifecycle("waiting", id=duplicate.id)) >= 4, timeout=60,
                    what="the duplicate to wait")
    (record_dir / f"{run}.gate").touch()
    # ...and once the first run completes, it returns its result without running
    [replayed] = worker.wait_for(lambda: worker.lifecycle("succeeded", id=duplicate.id),
                                 what="the duplicate to finish")
    assert worker.lifecycle("succeeded", id=first.id)
    assert [r["event"] for r in _records(record_dir, f"{run}.gated")] == ["start", "end"]
    assert replayed["idempotent_replay"] is True
    assert replayed["attempt"] == 1  # waiting used no attempt
    assert worker.lifecycle("retrying", id=duplicate.id) == []


@pytest.mark.integration
@pytest.mark.e2e
def test_a_crashed_workers_lease_runs_out_and_the_action_then_runs(
    start_worker: Callable[..., Worker], queue_url: str, record_dir: Path, settings: Settings
) -> None:
    # Given two workers, messages back 2 s after a crash, and 12 s leases
    env = {"ACTIONRUNNER_VISIBILITY_TIMEOUT": "2", "ACTIONRUNNER_IDEMPOTENCY_LEASE_SECONDS": "12"}
    workers = [start_worker(concurrency=1, env=env), start_worker(concurrency=1, env=env)]
    run = uuid.uuid4().hex[:8]
    sent = gated.delay(run=run, token="t")
    worker = workers[0]
    worker.wait_for(lambda: _records(record_dir, f"{run}.gated"), what="a worker to start it")
    [holder] = [w for w in workers if w.lifecycle("started", id=sent.id)]
    [other] = [w for w in workers if w is not holder]
    pk, _ = key_of(gated, run=run, token="t")
    store = DynamoDBStore.from_settings(settings)
    # When the worker running it is killed mid-run
    _kill_tree(holder.proc.pid)
    crashed = store.get(pk)
    assert crashed is not None and crashed.status is Status.IN_PROGRESS
    # Then the other worker gets the message back, finds the dead run's lease still holding the
    # key and waits; once the lease ran out, it runs the action
    other.wait_for(lambda: len(_records(record_dir, f"{run}.gated")) == 2, timeout=60,
                   what="the action to run again")
    (record_dir / f"{run}.gate").touch()
    other.wait_for(lambda: other.lifecycle("succeeded", id=sent.id), what="the second run")
    assert other.lifecycle("waiting", id=sent.id)
    starts = [r for r in _records(record_dir, f"{run}.gated") if r["event"] == "start"]
    assert starts[1]["at"] >= crashed.lease_until  # type: ignore[operator]
    done = store.get(pk)
    assert done is not None and done.status is Status.COMPLETED
    assert done.value["pid"] == starts[1]["pid"]  # the result is the second run's


@pytest.mark.integration
@pytest.mark.e2e
def test_a_key_reused_with_other_inputs_goes_to_the_dlq_at_once(
    start_worker: Callable[..., Worker], queue_url: str
) -> None:
    order = uuid.uuid4().hex[:8]
    worker = start_worker()
    paid = charge_order.delay(order=order, cents=100)
    worker.wait_for(lambda: worker.lifecycle("succeeded", id=paid.id), what="the first charge")
    # the same order (the action's key) with another amount, after the dedup window
    other = charge_order.apply_async(kwargs={"order": order, "cents": 250},
                                     MessageDeduplicationId=f"later-{uuid.uuid4().hex}")
    [dead] = worker.wait_for(lambda: worker.lifecycle("dead-lettered", id=other.id),
                             what="the reused key in the DLQ")
    assert dead["error_type"] == "IdempotencyKeyReused" and dead["attempt"] == 1
    assert "already used with different inputs" in dead["error"]
    assert worker.lifecycle("retrying", id=other.id) == []


@pytest.mark.integration
@pytest.mark.e2e
def test_two_delays_with_equal_inputs_both_run_and_an_old_format_message_still_dedups(
    start_worker: Callable[..., Worker], queue_url: str, record_dir: Path
) -> None:
    from celery import Task

    from tests.actions import record

    worker = start_worker()
    bucket, token = f"twice-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    # When the same inputs are sent twice with .delay() (an unkeyed action)
    first, second = record.delay(bucket=bucket, token=token), record.delay(bucket=bucket, token=token)
    # Then both run: two runs, two effects, no replay
    for sent in (first, second):
        [done] = worker.wait_for(lambda s=sent: worker.lifecycle("succeeded", id=s.id), what="a run")
        assert "idempotent_replay" not in done
    assert (record_dir / f"{bucket}.txt").read_text().splitlines() == [token, token]
    # And a message without a call id (sent before call ids) is keyed by its inputs, as it was:
    # the same inputs sent again after SQS's window replay the first run
    legacy = f"legacy-{uuid.uuid4().hex[:8]}"
    old = [Task.apply_async(record, (), {"bucket": legacy, "token": token, "sleep_s": 0.0},
                            MessageGroupId=f"rec:{legacy}",
                            MessageDeduplicationId=f"old-{n}-{uuid.uuid4().hex}") for n in (1, 2)]
    [again] = worker.wait_for(lambda: worker.lifecycle("succeeded", id=old[1].id), what="old 2")
    assert worker.lifecycle("succeeded", id=old[0].id)
    assert again["idempotent_replay"] is True
    assert (record_dir / f"{legacy}.txt").read_text().splitlines() == [token]


# -- a first delivery: one write ----------------------------------------------------------------------
class Writes:
    """Counts the store's writes by primitive."""

    def __init__(self, store: MemoryStore) -> None:
        self.seen: list[str] = []
        for name in ("_put_record", "_update_record", "_delete_record", "_put_completed"):
            original = getattr(store, name)

            def counted(*args: Any, _name: str = name, _original: Any = original) -> Any:
                self.seen.append(_name)
                return _original(*args)

            setattr(store, name, counted)


BETWEEN: list[Callable[[], None]] = []


@action(name="tests.idem.staged")
def staged(order: str) -> str:
    CALLS.append({"order": order})
    fx.update("ledger", {"pk": order}, "ADD n :one", values={":one": 1})
    for hook in BETWEEN:  # what happens elsewhere while this run goes on
        hook()
    return f"done {order}"


def deliver(task: Any, inputs: dict[str, Any], *, receive_count: int = 1, attempt: int = 1,
            runs: int = 1, call_id: str | None = None, task_id: str | None = None,
            **headers: Any) -> Any:
    """Run ``task`` as the worker's pool runs a delivery of a message (``task.request.sqs``)."""
    call_id = call_id or uuid.uuid4().hex
    task.push_request(id=task_id or str(uuid.uuid4()), called_directly=False, kwargs=inputs,
                      headers={C.CALL_ID_HEADER: call_id, **headers},
                      sqs={"receive_count": receive_count, "attempt": attempt, "runs": runs})
    try:
        return task(**inputs)
    finally:
        task.pop_request()


def test_a_first_delivery_writes_its_completion_and_effects_in_one_write(store: MemoryStore) -> None:
    writes = Writes(store)
    call_id = uuid.uuid4().hex
    assert deliver(staged, {"order": "f1"}, call_id=call_id) == "done f1"
    assert writes.seen == ["_put_completed"] and len(store.committed) == 1
    # its redelivery (the worker died before the delete) claims: a replay, no second run
    assert deliver(staged, {"order": "f1"}, call_id=call_id, receive_count=2) == "done f1"
    assert writes.seen == ["_put_completed", "_put_record"]
    assert CALLS == [{"order": "f1"}] and len(store.committed) == 1


def test_a_failed_first_delivery_writes_nothing(store: MemoryStore) -> None:
    writes = Writes(store)
    with pytest.raises(RuntimeError):
        deliver(charge_plain, {"order": "f2"})
    assert writes.seen == [] and store.committed == []


@action(name="tests.idem.charge_plain")
def charge_plain(order: str) -> str:
    fx.update("ledger", {"pk": order}, "ADD n :one", values={":one": 1})
    raise RuntimeError("declined")


def test_a_first_delivery_whose_call_a_redelivery_claimed_meanwhile_writes_nothing(
        store: MemoryStore) -> None:
    # Given a first delivery during which its message comes back and is claimed elsewhere
    call_id = uuid.uuid4().hex
    pk = idempotency_pk(staged.name, ar_keys.call_dedup_id(
        staged.name, call_id))
    claims: list[Any] = []
    BETWEEN.append(lambda: claims.append(store.begin(pk, default_key({"order": "f3"}))))
    try:
        # When the first delivery finishes: it waits (no attempt used) and nothing is written
        with pytest.raises(IdempotencyInProgress) as caught:
            deliver(staged, {"order": "f3"}, call_id=call_id)
    finally:
        BETWEEN.clear()
    assert caught.value.counts_as_attempt is False and store.committed == []
    # And once the redelivery completed, the first delivery's next run (a wait: same attempt,
    # second run) replays it without running again
    [claim] = claims
    store.complete(claim, "from the redelivery", [{"Update": {"Key": {"pk": {"S": "x"}}}}])
    assert deliver(staged, {"order": "f3"}, call_id=call_id, runs=2) == "from the redelivery"
    assert len(CALLS) == 1 and len(store.committed) == 1


def test_a_first_delivery_that_finishes_after_another_completed_the_call_returns_its_result(
        store: MemoryStore, lines: list[tuple[str, dict[str, Any]]]) -> None:
    call_id = uuid.uuid4().hex
    pk = idempotency_pk(staged.name, ar_keys.call_dedup_id(
        staged.name, call_id))

    def other_delivery_completes() -> None:
        claim = store.begin(pk, default_key({"order": "f4"}))
        assert isinstance(claim, Claim)
        store.complete(claim, "theirs", [{"Update": {"Key": {"pk": {"S": "theirs"}}}}])

    BETWEEN.append(other_delivery_completes)
    try:
        assert deliver(staged, {"order": "f4"}, call_id=call_id) == "theirs"
    finally:
        BETWEEN.clear()
    assert len(store.committed) == 1  # theirs only: this run's staged write went nowhere


@pytest.mark.parametrize("case", ["redelivery", "retry", "wait", "keyed", "call key",
                                  "continuation", "task id", "eager"])
def test_other_deliveries_and_keyed_calls_claim_then_complete(store: MemoryStore, case: str) -> None:
    writes = Writes(store)
    task, inputs = staged, {"order": f"k-{case}"}
    options: dict[str, Any] = {}
    if case == "redelivery":
        options["receive_count"] = 2
    elif case == "retry":
        options["attempt"] = 2
    elif case == "wait":
        options["runs"] = 2
    elif case == "keyed":
        task, inputs = keyed, {"order": "k-keyed", "cents": 1}
    elif case == "call key":
        options[C.IDEMPOTENCY_KEY_HEADER] = "beat:slot-1"
    elif case == "continuation":  # continue_with derives its call id from the step
        options["call_id"] = ar_keys.dedup_id(staged.name, "x:next:1")
    elif case == "task id":  # a canvas member: its frozen task id is its call id
        options["call_id"] = options["task_id"] = str(uuid.uuid4())
    if case == "eager":
        task.apply(kwargs=inputs).get()
    else:
        deliver(task, inputs, **options)
    assert writes.seen == ["_put_record", "_update_record"]
