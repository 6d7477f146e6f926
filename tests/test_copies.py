"""A copy of a completed call never runs: the first delivery reads its key before it runs.

A copy is a second message of the same call (same call id, any dedup id): an outbox relay that
re-publishes, a copy made by hand, ``apply_async`` sent again after SQS's 5-minute window. Its
first delivery (ApproximateReceiveCount = 1) used to skip every read. Now it reads the key —
in the worker's main process, batched, before the run (actionrunner/state/completions.py), or
in the run itself when nobody read it — and a completed key is a replay.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from actionrunner import action
from actionrunner import constants as C
from actionrunner import keys as ar_keys
from actionrunner.errors import IdempotencyInProgress, IdempotencyKeyReused
from actionrunner.keys import default_key
from actionrunner.settings import Settings
from actionrunner.state import Claim, DynamoDBStore, MemoryStore, Status, guard
from actionrunner.state.schema import idempotency_pk
from tests.actions import record
from tests.conftest import Worker
from tests.test_idempotency import Writes

RUNS: list[str] = []


@action(name="tests.copies.once")
def once(order: str) -> str:
    RUNS.append(order)
    return f"ran {order} {uuid.uuid4().hex[:6]}"


@pytest.fixture
def store() -> Iterator[MemoryStore]:
    memory = MemoryStore(ttl_seconds=3600, lease_seconds=30)
    guard.use_store(memory)
    RUNS.clear()
    yield memory
    guard.use_store(None)


def deliver(task: Any, inputs: dict[str, Any], *, call_id: str, **sqs: Any) -> Any:
    """Run ``task`` as the pool runs a message's first delivery (``sqs``: e.g. ``seen``, the
    key as the main process read it)."""
    task.push_request(id=str(uuid.uuid4()), called_directly=False, kwargs=inputs,
                      headers={C.CALL_ID_HEADER: call_id},
                      sqs={"receive_count": 1, "attempt": 1, "runs": 1, **sqs})
    try:
        return task(**inputs)
    finally:
        task.pop_request()


class Reads:
    def __init__(self, store: MemoryStore) -> None:
        self.count = 0
        original = store._get_record

        def counted(key: str) -> Any:
            self.count += 1
            return original(key)

        store._get_record = counted  # type: ignore[method-assign]


def test_a_copy_of_a_completed_call_returns_its_saved_result_without_running(
        store: MemoryStore) -> None:
    # Given a call that completed on its first delivery (one read, one write)
    writes, reads = Writes(store), Reads(store)
    call_id = ar_keys.new_call_id()
    first = deliver(once, {"order": "o1"}, call_id=call_id)
    assert writes.seen == ["_put_completed"] and reads.count == 1
    # When a copy of its message arrives (same call id, first receive of another message)
    second = deliver(once, {"order": "o1"}, call_id=call_id)
    # Then the copy returns the saved result, does not run, and writes nothing
    assert second == first and RUNS == ["o1"]
    assert writes.seen == ["_put_completed"] and reads.count == 2


def test_a_copy_of_a_call_another_delivery_holds_waits(store: MemoryStore) -> None:
    call_id = ar_keys.new_call_id()
    pk = idempotency_pk(once.name, ar_keys.call_dedup_id(once.name, call_id))
    assert isinstance(store.begin(pk, default_key({"order": "o2"})), Claim)
    with pytest.raises(IdempotencyInProgress):
        deliver(once, {"order": "o2"}, call_id=call_id)
    assert RUNS == []


def test_a_copy_with_other_inputs_under_the_same_call_id_is_refused(store: MemoryStore) -> None:
    call_id = ar_keys.new_call_id()
    deliver(once, {"order": "o3"}, call_id=call_id)
    with pytest.raises(IdempotencyKeyReused):
        deliver(once, {"order": "forged"}, call_id=call_id)
    assert RUNS == ["o3"]


def test_the_key_read_by_the_main_process_is_used_and_not_read_again(store: MemoryStore) -> None:
    # Given a first delivery whose key the worker's main process read (it handed the item over)
    reads = Reads(store)
    call_id = ar_keys.new_call_id()
    # When it read no record: the run goes ahead with no read of its own
    deliver(once, {"order": "o4"}, call_id=call_id, seen={})
    assert reads.count == 0 and RUNS == ["o4"]
    # When it read a completed record: a replay, no run, no read
    from actionrunner.state.dynamodb import to_item

    record_ = store.get(idempotency_pk(once.name, ar_keys.call_dedup_id(once.name, call_id)))
    assert record_ is not None and record_.status is Status.COMPLETED
    reads.count = 0
    assert deliver(once, {"order": "o4"}, call_id=call_id, seen=to_item(record_)) == record_.value
    assert reads.count == 0 and RUNS == ["o4"]


# -- end to end: a real worker, SQS and DynamoDB over HTTP --------------------------------------------
@pytest.mark.integration
@pytest.mark.e2e
def test_a_re_sent_copy_of_a_completed_call_returns_the_saved_result_and_has_no_second_effect(
    start_worker: Callable[..., Worker], queue_url: str, record_dir: Path, settings: Settings
) -> None:
    # Given a worker and an unkeyed action that ran (its first delivery: one read, one write)
    bucket, token = f"copy-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    worker = start_worker()
    call_id = ar_keys.new_call_id()  # what .delay() makes; named here to copy the message
    first = record.apply_async(kwargs={"bucket": bucket, "token": token},
                               headers={C.CALL_ID_HEADER: call_id})
    worker.wait_for(lambda: worker.lifecycle("succeeded", id=first.id), what="the first run")
    assert worker.lifecycle("started", id=first.id)[0]["receive_count"] == 1
    # When the same message is sent again — same task id and call id, a fresh dedup id (an
    # outbox relay re-publishing it, or a copy sent after SQS's 5 minutes) — once in its own
    # group and once in another group
    copies = [record.apply_async(kwargs={"bucket": bucket, "token": token}, task_id=first.id,
                                 headers={C.CALL_ID_HEADER: call_id}, MessageGroupId=group,
                                 MessageDeduplicationId=f"copy-{uuid.uuid4().hex}")
              for group in (f"rec:{bucket}", f"elsewhere:{bucket}")]
    worker.wait_for(lambda: len(worker.lifecycle("succeeded", id=first.id)) >= 3,
                    what="both copies")
    done = worker.lifecycle("succeeded", id=first.id)
    # Then each copy returned the saved result without running: the effect happened once
    assert (record_dir / f"{bucket}.txt").read_text().splitlines() == [token]
    assert [d.get("idempotent_replay") for d in done] == [None, True, True]
    assert len(copies) == 2
    # And the state table holds the call's completion, written once by the first run
    pk = idempotency_pk(record.name, ar_keys.call_dedup_id(record.name, call_id))
    saved = DynamoDBStore.from_settings(settings).get(pk)
    assert saved is not None and saved.status is Status.COMPLETED and saved.value == token
