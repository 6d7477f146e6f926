"""The state table on a bad day: the idempotency store, the shared rate limiter and run status
through the fault-injecting proxy (bench/faults.py) in front of moto's DynamoDB.

Under 20% faults (500s, throttling, resets, lost answers, slow answers) the store's claims,
completions, releases and replays keep their meaning — a lost answer to a conditional write is
never taken for another run's write — and staged effects are written once. With DynamoDB down,
a run waits (StateUnavailable: retried without using an attempt) instead of running unguarded
or failing; run status writes are given up without failing anything.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from actionrunner import action
from actionrunner import constants as C
from actionrunner.errors import IdempotencyInProgress, StateUnavailable
from actionrunner.runs import RunStore
from actionrunner.settings import Settings
from actionrunner.state import Claim, DynamoDBStore, Replay, guard
from actionrunner.state import effects as fx
from actionrunner.state.ratelimit import SharedRateLimit
from actionrunner.state.throttling import state_client_config
from bench.faults import FaultProxy
from tests.conftest import SQS_SERVER, Worker

#: DynamoDB is moto's in both passes of the suite (scripts/test): each test runs in one of them
#: (the in-process ones in the first, the worker's in the second, which has more room).
pytestmark = pytest.mark.integration
in_pass_1 = pytest.mark.skipif(SQS_SERVER == "fauxqs", reason="DynamoDB only: runs in pass 1")
in_pass_2 = pytest.mark.skipif(SQS_SERVER != "fauxqs", reason="DynamoDB only: runs in pass 2 "
                               "(ACTIONRUNNER_TEST_SQS=fauxqs)")

CALLS: list[str] = []


@action(name="tests.state_faults.charge", group="sf:{order}")
def charge(order: str, table: str) -> str:
    CALLS.append(order)
    fx.update(table, {"pk": f"ledger#{order}"}, "ADD n :one", values={":one": 1})
    return f"charged {order}"


@pytest.fixture
def proxy(settings: Settings) -> Iterator[FaultProxy]:
    """A fault proxy in front of the local DynamoDB (no faults until a test sets a rate)."""
    with FaultProxy(settings.dynamodb_endpoint_url or "", rate=0.0, seed=13,
                    slow_seconds=0.6) as running:
        yield running


def _client(settings: Settings, proxy: FaultProxy, attempts: int = 4) -> Any:
    """A state-table client (the worker's configuration) through the proxy, short timeouts."""
    through = settings.model_copy(update={"dynamodb_endpoint_url": proxy.url,
                                          "state_read_timeout": 0.5, "connect_timeout": 0.5})
    return through.client("dynamodb", config=state_client_config(through, attempts))


def _store(settings: Settings, proxy: FaultProxy, patience: float = 20.0,
           attempts: int = 4) -> DynamoDBStore:
    return DynamoDBStore.from_settings(settings, _client(settings, proxy, attempts),
                                       lease_seconds=30, patience=patience)


def _count(settings: Settings, pk: str) -> int:
    item = settings.client("dynamodb").get_item(TableName=settings.state_table,
                                                Key={"pk": {"S": pk}}, ConsistentRead=True)
    return int(item.get("Item", {}).get("n", {}).get("N", 0))


@in_pass_1
def test_claim_complete_release_replay_hold_under_20_percent_faults(
        settings: Settings, proxy: FaultProxy) -> None:
    store, rival = _store(settings, proxy), _store(settings, proxy)
    proxy.rate = 0.2
    keys = [f"idem#tests.state_faults#{uuid.uuid4().hex}" for _ in range(12)]
    for n, key in enumerate(keys):
        claim = store.begin(key, "h")
        assert isinstance(claim, Claim), f"a fresh key is this run's, even if an answer was lost: {claim}"
        with pytest.raises(IdempotencyInProgress):
            rival.begin(key, "h")  # held: another run waits
        assert store.renew(claim)
        if n % 3 == 0:  # a failed run gives the key up; the retry claims it again
            assert store.release(claim)
            claim = store.begin(key, "h")
            assert isinstance(claim, Claim)
        effect = {"Update": {"TableName": settings.state_table, "Key": {"pk": {"S": f"ledger#{key}"}},
                             "UpdateExpression": "ADD n :one",
                             "ExpressionAttributeValues": {":one": {"N": "1"}}}}
        store.complete(claim, {"n": n}, [effect] if n % 2 else [])
        replay = rival.begin(key, "h")
        assert isinstance(replay, Replay) and replay.result == {"n": n}
    proxy.rate = 0.0
    assert [_count(settings, f"ledger#{k}") for k in keys] == [n % 2 for n in range(len(keys))]
    kinds = proxy.faults_by_kind()
    assert sum(kinds.values()) >= 10 and kinds["lost"] > 0, kinds
    apis = proxy.faults_by_api()
    assert {"PutItem", "UpdateItem", "TransactWriteItems"} <= set(apis), apis


@in_pass_1
def test_with_dynamodb_down_a_run_waits_without_running(settings: Settings, proxy: FaultProxy) -> None:
    store = _store(settings, proxy, patience=0.5, attempts=1)
    guard.use_store(store)
    CALLS.clear()
    order = uuid.uuid4().hex
    same_call = {C.CALL_ID_HEADER: uuid.uuid4().hex}  # one call, delivered three times
    try:
        proxy.rate, proxy.kinds = 1.0, ("reset", "error", "throttle")  # down
        waiting = charge.apply(kwargs={"order": order, "table": settings.state_table},
                               headers=same_call)
        assert waiting.state == "RETRY" and isinstance(waiting.result, StateUnavailable)
        assert waiting.result.counts_as_attempt is False and 2 <= waiting.result.when <= 6
        assert CALLS == []  # never run without its guard
        proxy.rate = 0.0  # back: the same call runs, once
        assert charge.apply(kwargs={"order": order, "table": settings.state_table},
                               headers=same_call).get() == \
            f"charged {order}"
        assert charge.apply(kwargs={"order": order, "table": settings.state_table},
                               headers=same_call).get() == \
            f"charged {order}"
    finally:
        guard.use_store(None)
    ran = list(CALLS)
    assert ran == [order]
    assert _count(settings, f"ledger#{order}") == 1


@in_pass_1
def test_with_dynamodb_down_the_rate_limiter_waits_and_run_status_gives_up(
        settings: Settings, proxy: FaultProxy) -> None:
    client = _client(settings, proxy, attempts=1)
    limiter = SharedRateLimit(f"sf-{uuid.uuid4().hex[:8]}", 100, table=settings.state_table,
                              client=client, sleep=lambda _: None)
    runs = RunStore(settings, client)
    proxy.rate, proxy.kinds = 1.0, ("reset",)
    with pytest.raises(StateUnavailable) as caught:
        limiter.acquire()
    assert caught.value.counts_as_attempt is False
    runs.record("started", {"id": "r1", "action": "tests.x"})  # no exception: best effort
    assert runs.failed_writes == 1
    proxy.rate = 0.0
    assert limiter.acquire() == 0.0
    runs.record("started", {"id": "r1", "action": "tests.x"})
    assert runs.failed_writes == 1 and runs.get("r1")["status"] == "running"  # type: ignore[index]


@in_pass_2
@pytest.mark.e2e
def test_a_worker_waits_for_dynamodb_and_then_runs_each_action_once(
        settings: Settings, proxy: FaultProxy, queue_url: str, start_worker: Any,
        record_dir: Any) -> None:
    from tests.actions import bump

    worker: Worker = start_worker(env={"AWS_ENDPOINT_URL_DYNAMODB": proxy.url,
                                       "ACTIONRUNNER_STATE_READ_TIMEOUT": "1"})
    proxy.rate, proxy.kinds = 1.0, ("reset", "error")  # DynamoDB down
    counter = f"sf#{uuid.uuid4().hex}"
    for shard in range(2):
        bump.delay(table=settings.state_table, id=counter, shard=shard)
    worker.wait_for(lambda: len(worker.lifecycle("waiting")) >= 2, 40, "the actions to wait")
    assert not worker.lifecycle("succeeded") and not worker.lifecycle("dead-lettered")
    assert all("unavailable" in e.get("reason", "") for e in worker.lifecycle("waiting"))
    proxy.rate = 0.0  # back
    worker.wait_for(lambda: len(worker.lifecycle("succeeded")) >= 2, 40, "the actions to run")
    assert not worker.lifecycle("dead-lettered") and worker.proc.poll() is None
    assert _count(settings, counter) == 2
