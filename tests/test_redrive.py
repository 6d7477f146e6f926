"""A DLQ redrive moves what the DLQ held when it began, each message once, and ends — with a worker
failing the redriven messages straight back; the redrive count travels with each message; the
admin API runs a large redrive as a job that a stopping API stops. Runs on moto and, in the
suite's second pass, on fauxqs (N small: bench/redrive.py measures 300).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from actionrunner.dlq import DeadLetterQueue, RedriveJob, dead_letter_queues, redrive_all
from actionrunner.settings import Settings
from actionrunner.settle import Reason, dead_letter_entry
from tests.actions import boom
from tests.conftest import Worker, message_text

pytestmark = pytest.mark.integration


def dead_letter_by_hand(sqs: Any, settings: Settings, run: str, count: int,
                        redrives: int = 0) -> list[str]:
    """Send ``count`` calls of the always-failing ``boom`` and move each to the DLQ as a worker
    does (:func:`dead_letter_entry`); returns their run ids."""
    url = sqs.get_queue_url(QueueName=settings.queue_name)["QueueUrl"]
    dlq_url = sqs.get_queue_url(QueueName=settings.dlq_name)["QueueUrl"]
    ids = [r.id for r in boom.delay_many([{"run": f"{run}-{i % 5}", "n": i} for i in range(count)])]
    moved = 0
    deadline = time.monotonic() + 60
    while moved < count and time.monotonic() < deadline:
        for message in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                                           MessageSystemAttributeNames=["All"],
                                           MessageAttributeNames=["All"]).get("Messages", []):
            if redrives:
                message.setdefault("MessageAttributes", {})["actionrunner.redrives"] = {
                    "DataType": "Number", "StringValue": str(redrives)}
            entry = dead_letter_entry(message, Reason("ValueError", "boom", 2), source_queue=url)
            sqs.send_message(QueueUrl=dlq_url, **entry.params)
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
            moved += 1
    assert moved == count
    return ids


def _receive_one(sqs: Any, url: str, token: str, timeout: float = 20) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for m in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                                     MessageAttributeNames=["All"]).get("Messages", []):
            if token in message_text(m):
                return dict(m)
    raise AssertionError(f"no message with {token} in {url}")


def _ours(letters: list[Any], run: str) -> list[Any]:
    return [d for d in letters if d.group.startswith(f"boom:{run}-")]


def _drain_dlq(sqs: Any, settings: Settings, until: int = 0, timeout: float = 20) -> list[Any]:
    """Receive and delete what the DLQ holds (a FIFO queue hands out no more of a group while
    some of it is hidden: a listing cannot see past that, a drain can); until ``until`` came."""
    from actionrunner.dlq import _decode

    url = sqs.get_queue_url(QueueName=settings.dlq_name)["QueueUrl"]
    got: list[Any] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10,
                                       MessageSystemAttributeNames=["All"],
                                       MessageAttributeNames=["All"]).get("Messages")
        if not messages and len(got) >= until:
            break
        for m in messages or []:
            got.append(_decode(m, settings.dlq_name, settings.queue_name))
            sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
    return got


@pytest.mark.e2e
def test_a_redrive_with_a_worker_failing_them_back_moves_each_once_and_ends(
    start_worker: Callable[..., Worker], queue_url: str, sqs: Any, settings: Settings,
) -> None:
    # Given always-failing messages in the DLQ, and a worker running
    run = uuid.uuid4().hex[:8]
    count = 12
    ids = dead_letter_by_hand(sqs, settings, run, count)
    worker = start_worker(concurrency=4)
    # When every DLQ is redriven while the worker fails them straight back
    started = time.monotonic()
    result = redrive_all(dead_letter_queues(settings, sqs))
    # Then it ended having moved each message once
    assert result["moved"] == count, result
    assert time.monotonic() - started < 60
    assert result["stopped"] is False
    # And each fails back into the DLQ once, carrying its redrive count
    worker.wait_for(lambda: len(worker.lifecycle("dead-lettered", action="tests.actions.boom")) >= count,
                    timeout=60, what="every redriven message to fail back")
    again = _ours(_drain_dlq(sqs, settings, until=count), run)
    assert sorted(d.run_id for d in again) == sorted(ids)  # each once: no copies
    assert {d.redrives for d in again} == {1}
    assert {d.failure["error_type"] for d in again} == {"ValueError"}


def test_a_message_redriven_max_times_stays_with_its_reason_unless_forced(
    queue_url: str, sqs: Any, settings: Settings,
) -> None:
    # Given a dead letter redriven twice already, and a deployment that allows two
    run = uuid.uuid4().hex[:8]
    [run_id] = dead_letter_by_hand(sqs, settings, run, 1, redrives=2)
    strict = settings.model_copy(update={"max_redrives": 2})
    dlq = DeadLetterQueue(strict, sqs)
    # When it is redriven
    result = dlq.redrive(group=f"boom:{run}-0")
    # Then it stays in the DLQ, and the result says why
    assert result["moved"] == 0
    [left] = result["left"]
    assert "redriven 2 times already" in left["reason"] and "MAX_REDRIVES=2" in left["reason"]
    [letter] = _ours(dlq.list(100), run)
    assert letter.run_id == run_id and letter.redrives == 2
    # And forced, it goes, its count one more
    forced = dlq.redrive(group=f"boom:{run}-0", force=True)
    assert forced["moved"] == 1
    back = _receive_one(sqs, queue_url, run_id)
    assert back["MessageAttributes"]["actionrunner.redrives"]["StringValue"] == "3"
    sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=back["ReceiptHandle"])


def test_dead_letters_that_arrive_during_a_redrive_are_left_for_the_next(
    queue_url: str, sqs: Any, settings: Settings,
) -> None:
    # Given a dead letter, and a redrive whose clock says it began before that one arrived
    run = uuid.uuid4().hex[:8]
    dead_letter_by_hand(sqs, settings, run, 2)
    dlq = DeadLetterQueue(settings, sqs)
    # When it runs
    result = dlq.redrive(now=lambda: time.time() - 3600)
    # Then nothing of it was moved: it is newer than the snapshot
    assert result["moved"] == 0 and result["newer"] >= 2
    assert len(_ours(dlq.list(100), run)) == 2
    _drain_dlq(sqs, settings)


def test_a_redrive_job_reports_its_progress_and_stops_when_asked(
    queue_url: str, sqs: Any, settings: Settings,
) -> None:
    # Given dead letters
    run = uuid.uuid4().hex[:8]
    dead_letter_by_hand(sqs, settings, run, 6)
    # When a job is stopped before it starts moving
    stopped = RedriveJob(dead_letter_queues(settings, sqs))
    stopped._stopping.set()
    stopped.start().wait(30)
    # Then it ends, stopped, having moved nothing
    depth = DeadLetterQueue(settings, sqs).depth()
    assert stopped.state == "stopped" and stopped.status["result"]["moved"] == 0
    assert depth >= 6
    # And a job let run moves them all
    job = RedriveJob(dead_letter_queues(settings, sqs)).start()
    job.wait(60)
    assert job.state == "succeeded" and job.status["moved"] == job.result["moved"] >= 6  # type: ignore[index]
    receive = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10)
    for m in receive.get("Messages", []):
        sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=m["ReceiptHandle"])


def test_the_api_runs_a_large_redrive_as_a_job_with_a_status_url(
    queue_url: str, sqs: Any, settings: Settings, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from fastapi.testclient import TestClient

    from actionrunner.api import app as api_app
    from actionrunner.api.routers import dlq as router
    from tests.test_api import ADMIN, TOKENS, auth

    # Given dead letters, more than the API answers at once (lowered here)
    run = uuid.uuid4().hex[:8]
    dead_letter_by_hand(sqs, settings, run, 4)
    monkeypatch.setattr(router, "SYNC_REDRIVE_MAX", 1)
    with TestClient(api_app.create_app(Settings(api_tokens=json.loads(TOKENS)))) as api:
        # When a redrive is asked for
        answer = api.post("/v1/dlq/redrive", json={}, headers=auth(ADMIN))
        # Then it is accepted as a job, with a status URL that follows it to its end
        assert answer.status_code == 202, answer.text
        url = answer.headers["Location"]
        assert answer.json()["status_url"] == url and answer.json()["state"] == "running"
        deadline = time.monotonic() + 60
        while (status := api.get(url, headers=auth(ADMIN)).json())["state"] == "running":
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert status["state"] == "succeeded" and status["result"]["moved"] >= 4
        assert api.get("/v1/dlq/redrive/nosuchjob", headers=auth(ADMIN)).status_code == 404
    for m in sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", []):
        sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=m["ReceiptHandle"])


def test_a_stopping_api_stops_its_redrive_jobs(aws: Any) -> None:
    from actionrunner.api.routers import dlq as router

    # Given a running job (a stand-in DLQ that never runs dry)
    class Endless:
        name = "endless-dlq.fifo"

        def depth(self) -> int:
            return 10**6

        def redrive(self, stop: Any = None, **_: Any) -> dict[str, Any]:
            while not stop():
                time.sleep(0.01)
            return {"moved": 0, "skipped": 0, "by_queue": {}, "unknown_source": 0, "newer": 0,
                    "not_deleted": 0, "left": [], "stopped": True}

    from fastapi.testclient import TestClient

    from actionrunner.api import app as api_app

    with TestClient(api_app.create_app()):
        job = RedriveJob([Endless()]).start()  # type: ignore[list-item]
        router.JOBS[job.id] = job
        time.sleep(0.1)
        assert job.state == "running"
        # When the API shuts down (its lifespan's end, as on SIGTERM)
    # Then the job has ended, stopped
    assert job.state == "stopped" and not job._thread.is_alive()
    router.JOBS.pop(job.id)


def test_a_redrive_through_injected_aws_faults_moves_each_message_once(
    queue_url: str, sqs: Any, settings: Settings,
) -> None:
    import boto3
    from botocore.config import Config

    from bench.faults import FaultProxy

    # Given dead letters, and SQS answering a third of the redrive's sends and deletes with an
    # error, throttling, or a lost answer (the call applied, its answer never came)
    run = uuid.uuid4().hex[:8]
    count = 10
    ids = dead_letter_by_hand(sqs, settings, run, count)
    proxy = FaultProxy(settings.sqs_endpoint_url or "", rate=0.3, seed=7, slow_seconds=1.0,
                       kinds=("error", "throttle", "lost"),
                       apis={"SendMessageBatch", "DeleteMessageBatch"}).start()
    try:
        client = boto3.session.Session().client(
            "sqs", region_name=settings.region, endpoint_url=proxy.url,
            config=Config(retries={"mode": "standard", "max_attempts": 8}, read_timeout=2))
        # When it is redriven through the faults
        result = DeadLetterQueue(settings, client).redrive()
        faults = sum(proxy.faults().values())
    finally:
        proxy.stop()
    # Then faults were injected, and every message went back exactly once
    assert faults > 0
    assert result["moved"] == count, result
    back = []
    deadline = time.monotonic() + 30
    while len(back) < count and time.monotonic() < deadline:
        for m in sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10,
                                     WaitTimeSeconds=1).get("Messages", []):
            back.append(m)
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=m["ReceiptHandle"])
    time.sleep(1)
    back += sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", [])
    found = sorted(i for i in ids for m in back if i in message_text(m))
    assert found == sorted(ids)  # each once: a repeated send was dropped by its dedup id
    assert _ours(_drain_dlq(sqs, settings), run) == []
