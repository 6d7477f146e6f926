"""The first delivery's state requests in the worker's main process (state/completions.py),
against moto's DynamoDB over HTTP: batched reads, completions handed over by a pool process's
datagram, batched unconditional writes while the message is surely this worker's, the
conditional put when it may not be.
"""

from __future__ import annotations

import os
import threading
import uuid
from typing import Any

import pytest

from actionrunner.keys import default_key
from actionrunner.settings import Settings
from actionrunner.state import Claim, DynamoDBStore, Status
from actionrunner.state import completions as hp
from actionrunner.state.dynamodb import from_item
from actionrunner.state.record import encode_result

pytestmark = pytest.mark.integration


@pytest.fixture
def store(settings: Settings) -> DynamoDBStore:
    return DynamoDBStore.from_settings(settings, ttl_seconds=600, lease_seconds=30)


@pytest.fixture
def hot(store: DynamoDBStore) -> Any:
    path = hp.HotPath(store, linger=0.02)
    yield path
    path.stop()


def _fields(key: str, result: Any, task_id: str | None = None) -> dict[str, Any]:
    text, saved = encode_result(result)
    return hp.completion_fields(task_id or str(uuid.uuid4()), key, default_key({"x": 1}), text,
                                saved, 2_000_000_000, "tests.hot.noop")


class Done:
    def __init__(self) -> None:
        self.outcomes: list[bool] = []
        self.event = threading.Event()

    def __call__(self, ok: bool) -> None:
        self.outcomes.append(ok)
        self.event.set()

    def wait(self) -> list[bool]:
        assert self.event.wait(30), "the completion was never written"
        return self.outcomes


def test_keys_are_read_in_one_batch_and_each_gets_its_item_or_none(hot: Any, store: DynamoDBStore
                                                                   ) -> None:
    # Given one completed key and one nobody wrote
    done_key, free_key = f"idem#t#{uuid.uuid4().hex}", f"idem#t#{uuid.uuid4().hex}"
    assert store.complete_first(done_key, default_key({"x": 1}), "saved") is not None
    answers: dict[str, Any] = {}
    both = threading.Event()

    def answer(key: str) -> Any:
        def got(item: Any) -> None:
            answers[key] = item
            if len(answers) == 2:
                both.set()
        return got

    # When the main process reads both
    hot.read(done_key, answer(done_key))
    hot.read(free_key, answer(free_key))
    assert both.wait(30)
    # Then the completed one comes with its item, the other with none
    assert from_item(answers[done_key]).status is Status.COMPLETED
    assert from_item(answers[done_key]).value == "saved"
    assert answers[free_key] == {}


def test_a_pool_process_hands_its_completion_over_and_it_is_written_before_done(
        hot: Any, store: DynamoDBStore) -> None:
    # Given a completion sent by a pool process (another process: a fork)
    key, task_id = f"idem#t#{uuid.uuid4().hex}", str(uuid.uuid4())
    pid = os.fork()
    if pid == 0:  # the pool process
        os._exit(0 if hp.send(hot.path, _fields(key, {"n": 7}, task_id)) else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    # When the main process takes it (as Celery acks the message) and writes it
    fields = hot.take(task_id)
    assert fields is not None and hot.take(task_id) is None
    done = Done()
    hot.write(fields, fresh=lambda: True, done=done)
    # Then done(True) comes only once DynamoDB has the completion
    assert done.wait() == [True]
    record = store.get(key)
    assert record is not None and record.status is Status.COMPLETED and record.value == {"n": 7}
    assert hot.requests["BatchWriteItem"] >= 1


def test_a_completion_too_large_for_a_datagram_is_left_to_the_pool(hot: Any) -> None:
    big = _fields("idem#t#big", "x" * (hp.MAX_DATAGRAM_BYTES + 10))
    assert hp.send(hot.path, big) is False


def test_a_message_that_may_no_longer_be_ours_completes_conditionally(
        hot: Any, store: DynamoDBStore) -> None:
    # Given a key another delivery claimed while this run went on (its message came back)
    key = f"idem#t#{uuid.uuid4().hex}"
    claim = store.begin(key, default_key({"x": 1}))
    assert isinstance(claim, Claim)
    # When this run's completion is written for a message whose visibility may have lapsed
    done = Done()
    hot.write(_fields(key, "mine"), fresh=lambda: False, done=done)
    # Then nothing is written (the message runs again, then replays), and the claim stands
    assert done.wait() == [False]
    record = store.get(key)
    assert record is not None and record.status is Status.IN_PROGRESS
    assert record.lease_id == claim.lease_id and hot.requests["PutItem"] == 1
    # And once that delivery completed, a late conditional completion leaves its result
    store.complete(claim, "theirs")
    again = Done()
    hot.write(_fields(key, "mine"), fresh=lambda: False, done=again)
    assert again.wait() == [True]
    final = store.get(key)
    assert final is not None and final.value == "theirs"


def test_many_completions_share_a_request_and_each_is_told(hot: Any, store: DynamoDBStore) -> None:
    keys = [f"idem#t#{uuid.uuid4().hex}" for _ in range(hp.FLUSH_AT)]
    dones = [Done() for _ in keys]
    for key, done in zip(keys, dones, strict=True):
        hot.write(_fields(key, key[-6:]), fresh=lambda: True, done=done)
    assert all(d.wait() == [True] for d in dones)
    assert hot.requests["BatchWriteItem"] == 1
    assert all((store.get(k) or store).value == k[-6:] for k in keys)  # type: ignore[union-attr]
