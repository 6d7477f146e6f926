"""Lanes: ``@action(queue=...)`` on a queue of ``ACTIONRUNNER_LANES``, with its own DLQ."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from actionrunner import action, provision
from actionrunner.errors import ActionDefinitionError
from actionrunner.settings import Settings
from tests.conftest import ROOT, SQS_SERVER, Worker, message_text, receive_all

pytestmark = [pytest.mark.integration, pytest.mark.e2e]
LANE, LANE_DLQ = "tests-bulk.fifo", "tests-bulk-dlq.fifo"  # (tests/lanes.py: imported in subprocesses)
ENV = {"ACTIONRUNNER_LANES": LANE, "ACTIONRUNNER_IMPORTS": "tests.actions,tests.lanes"}


def test_an_action_on_an_unknown_queue_is_refused_at_declaration() -> None:
    with pytest.raises(ActionDefinitionError, match="not one of this deployment's queues.*"
                                                    "ACTIONRUNNER_LANES"):
        action(name="tests.lanes.nowhere", queue="nowhere.fifo")(lambda x: x)


def test_a_lane_has_its_own_dlq_and_a_worker_runs_it_with_q(
    settings: Settings, sqs: Any, start_worker: Callable[..., Worker]
) -> None:
    # Given the lane provisioned: the queue, its own DLQ, and a redrive policy between them
    laned = settings.model_copy(update={"lanes": [LANE]})
    provision.apply(laned)
    assert provision.plan(laned) == [] or all(c.kind == "unsupported" for c in provision.plan(laned))
    url = sqs.get_queue_url(QueueName=LANE)["QueueUrl"]
    policy = json.loads(sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["RedrivePolicy"])
                        ["Attributes"]["RedrivePolicy"])
    assert policy["deadLetterTargetArn"].endswith(":" + LANE_DLQ)
    dlq_url = sqs.get_queue_url(QueueName=LANE_DLQ)["QueueUrl"]
    # When a worker consumes the lane only (-Q) and its actions are sent
    worker = start_worker(env=ENV, args=("-Q", LANE))
    run = uuid.uuid4().hex[:8]
    code = ("import sys\n"
            "from tests.lanes import bulk_ok, bulk_fail\n"
            f"print(bulk_ok.delay(run={run!r}).id, bulk_fail.delay(run={run!r}).id)\n")
    sent = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**os.environ, **ENV},
                          capture_output=True, text=True, timeout=60)
    assert sent.returncode == 0, sent.stderr[-3000:]
    ok_id, fail_id = sent.stdout.split()
    # Then they run there, and the failure is dead-lettered into the lane's own DLQ
    worker.wait_for(lambda: worker.lifecycle("succeeded", id=ok_id), what="the lane's action")
    worker.wait_for(lambda: worker.lifecycle("dead-lettered", id=fail_id), what="the lane's failure")
    [dead] = receive_all(sqs, dlq_url, 1, timeout=20, token=fail_id)
    assert json.loads(message_text(dead))["headers"]["id"] == fail_id


def _send(code: str) -> list[str]:
    sent = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**os.environ, **ENV},
                          capture_output=True, text=True, timeout=60)
    assert sent.returncode == 0, sent.stderr[-3000:]
    return sent.stdout.split()


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "actionrunner.cli", *args], cwd=ROOT,
                          env={**os.environ, **ENV, "COLUMNS": "300"}, capture_output=True,
                          text=True, timeout=90)


def test_a_lane_dead_letter_is_listed_with_its_queue_and_redriven_back_into_the_lane(
    settings: Settings, sqs: Any, start_worker: Callable[..., Worker]
) -> None:
    # Given the lane provisioned and a worker on it only (-Q)
    laned = settings.model_copy(update={"lanes": [LANE]})
    provision.apply(laned)
    worker = start_worker(env=ENV, args=("-Q", LANE))
    # When a lane's action fails (into the lane's DLQ)
    run = uuid.uuid4().hex[:8]
    [run_id] = _send(f"from tests.lanes import bulk_broken_once\n"
                     f"print(bulk_broken_once.delay(run={run!r}).id)\n")
    worker.wait_for(lambda: worker.lifecycle("dead-lettered", id=run_id), what="the lane's failure")
    # Then `dlq list` (every DLQ) and `dlq show` name the queue it came from and the DLQ holding it
    listed = _cli("dlq", "list", "--limit", "1000")
    assert listed.returncode == 0, listed.stderr
    row = next(line for line in listed.stdout.splitlines() if run_id in line)
    assert LANE in row and "RuntimeError" in row
    only_default = _cli("dlq", "list", "--queue", settings.queue_name)
    assert only_default.returncode == 0 and run_id not in only_default.stdout
    shown = _cli("dlq", "show", run_id)
    assert shown.returncode == 0, shown.stderr
    letter = json.loads(shown.stdout)
    assert (letter["queue"], letter["dlq"]) == (LANE, LANE_DLQ)
    assert letter["failure"]["source_queue"].endswith("/" + LANE)
    # and `status` shows every queue, and fails on the lane's DLQ
    status = _cli("status")
    assert status.returncode == 1 and LANE_DLQ in status.stderr, status.stderr
    assert all(name in status.stdout for name in (settings.queue_name, settings.dlq_name, LANE,
                                                  LANE_DLQ))
    # When it is redriven (no --queue: every DLQ, each message back to its own queue)
    redriven = _cli("dlq", "redrive", "--group", f"bulk-once:{run}")
    assert redriven.returncode == 0, redriven.stderr
    assert f"moved 1 (1 to {LANE})" in " ".join(redriven.stderr.split()), redriven.stderr
    # Then it is back in the lane, not actions.fifo: the -Q worker (of the lane only) runs it
    worker.wait_for(lambda: worker.lifecycle("succeeded", id=run_id), what="the redriven run")
    assert _cli("status", "--queue", LANE).returncode == 0


@pytest.mark.skipif(SQS_SERVER == "fauxqs", reason="fauxqs hands out one message per group per "
                    "receive: a DLQ listing sees only the head of this test's group")
def test_a_dead_letter_goes_back_to_its_recorded_queue_or_else_to_its_dlqs_own(
    settings: Settings, sqs: Any
) -> None:
    from actionrunner.dlq import dead_letter_queues, list_all, redrive_all

    laned = settings.model_copy(update={"lanes": [LANE]})
    provision.apply(laned)
    lane_url = sqs.get_queue_url(QueueName=LANE)["QueueUrl"]
    token, group = uuid.uuid4().hex, f"lanes:{uuid.uuid4().hex[:8]}"

    def dead(dlq: str, text: str, source: str | None) -> None:
        attrs = {} if source is None else {"MessageAttributes": {
            "actionrunner.source_queue": {"DataType": "String", "StringValue": source}}}
        sqs.send_message(QueueUrl=sqs.get_queue_url(QueueName=dlq)["QueueUrl"],
                         MessageBody=json.dumps({"text": text, "token": token}), MessageGroupId=group,
                         MessageDeduplicationId=uuid.uuid4().hex, **attrs)

    # Given a dead letter SQS's redrive policy moved (no source recorded) into the lane's DLQ,
    # one a worker recorded from the lane but that sits in the default DLQ (hand-wired lanes of
    # old), and one from a queue the settings no longer have
    dead(LANE_DLQ, "by-sqs", None)
    dead(settings.dlq_name, "recorded", lane_url)
    dead(settings.dlq_name, "gone", lane_url.rsplit("/", 1)[0] + "/gone.fifo")
    try:
        letters = [d for d in list_all(dead_letter_queues(laned, sqs), 1000) if d.group == group]
        assert sorted((d.queue, d.dlq) for d in letters) == sorted([
            (LANE, LANE_DLQ), (LANE, settings.dlq_name), ("gone.fifo", settings.dlq_name)])
        # When every DLQ is redriven
        result = redrive_all(dead_letter_queues(laned, sqs), group=group)
        # Then both lane messages are in the lane; the orphan stays where it is
        assert (result["moved"], result["by_queue"], result["unknown_source"]) == (2, {LANE: 2}, 1)
        back = receive_all(sqs, lane_url, 2, timeout=20, token=token)
        assert sorted(json.loads(m["Body"])["text"] for m in back) == ["by-sqs", "recorded"]
        left = list_all(dead_letter_queues(laned, sqs, settings.dlq_name), 1000)
        assert [d.queue for d in left if d.group == group] == ["gone.fifo"]
    finally:
        for dlq in (settings.dlq_name, LANE_DLQ):
            receive_all(sqs, sqs.get_queue_url(QueueName=dlq)["QueueUrl"], 99, timeout=2,
                        token=token)


def test_the_api_shows_and_redrives_each_queue(settings: Settings, sqs: Any) -> None:
    import httpx

    from tests.test_api import ADMIN, _serve, auth

    laned = settings.model_copy(update={"lanes": [LANE]})
    provision.apply(laned)
    lane_url = sqs.get_queue_url(QueueName=LANE)["QueueUrl"]
    token, group = uuid.uuid4().hex, f"lanes-api:{uuid.uuid4().hex[:8]}"
    sqs.send_message(QueueUrl=sqs.get_queue_url(QueueName=LANE_DLQ)["QueueUrl"],
                     MessageBody=json.dumps({"headers": {"task": "tests.lanes.bulk_ok",
                                                         "id": token}}),
                     MessageGroupId=group, MessageDeduplicationId=token)
    proc, base = _serve(ENV)
    try:
        with httpx.Client(base_url=base, timeout=30, headers=auth(ADMIN)) as api:
            # every queue and its DLQ, each row naming the queue it belongs to
            rows = api.get("/v1/queues").json()
            assert [(r["queue"], r["role"], r["name"]) for r in rows] == [
                (settings.queue_name, "queue", settings.queue_name),
                (settings.queue_name, "dlq", settings.dlq_name),
                (LANE, "queue", LANE), (LANE, "dlq", LANE_DLQ)]
            assert next(r for r in rows if r["name"] == LANE_DLQ)["visible"] >= 1
            assert [r["name"] for r in api.get("/v1/queues", params={"queue": LANE}).json()] == [
                LANE, LANE_DLQ]
            assert api.get("/v1/queues", params={"queue": "nowhere.fifo"}).status_code == 404
            # the dead letters of one queue, or of all
            mine = [d for d in api.get("/v1/dlq", params={"queue": LANE}).json() if d["run_id"] == token]
            assert [(d["queue"], d["dlq"]) for d in mine] == [(LANE, LANE_DLQ)]
            assert token in {d["run_id"] for d in api.get("/v1/dlq").json()}
            assert token not in {d["run_id"] for d in api.get(
                "/v1/dlq", params={"queue": settings.queue_name}).json()}
            assert api.get("/v1/dlq", params={"queue": "nowhere.fifo"}).status_code == 404
            # purge wants the lane's DLQ named
            refused = api.post("/v1/dlq/purge", params={"queue": LANE},
                               json={"confirm": settings.dlq_name})
            assert refused.status_code == 400 and LANE_DLQ in refused.text
            # redrive per queue: back into the lane
            moved = api.post("/v1/dlq/redrive", params={"queue": LANE}, json={"group": group})
            assert moved.status_code == 200, moved.text
            assert (moved.json()["moved"], moved.json()["by_queue"]) == (1, {LANE: 1})
        assert len(receive_all(sqs, lane_url, 1, timeout=20, token=token)) == 1
    finally:
        proc.terminate()
        proc.wait(10)


def test_the_lambda_runtime_dead_letters_a_lane_message_into_the_lanes_dlq(
    settings: Settings, sqs: Any
) -> None:
    from actionrunner.app import app
    from actionrunner.aws_lambda import LambdaRunner
    from actionrunner.dlq import DeadLetterQueue
    from tests.test_lambda import Context, finish, lambda_event, receive

    # Given a message on the lane that no action can run, handed to the function by the lane's
    # event source mapping
    laned = settings.model_copy(update={"lanes": [LANE]})
    provision.apply(laned)
    url = sqs.get_queue_url(QueueName=LANE)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    run = uuid.uuid4().hex
    sqs.send_message(QueueUrl=url, MessageBody=f"plain text {run}", MessageGroupId=f"l:{run}",
                     MessageDeduplicationId=run)
    event = lambda_event(receive(sqs, url, 1, run), arn)
    # When the function handles it
    response = LambdaRunner(app, laned, sqs=sqs, hostname="lambda@test").handle(event, Context())
    finish(sqs, url, event, response)
    # Then it is in the lane's own DLQ, recorded as coming from the lane
    dlq = DeadLetterQueue(laned, sqs, LANE)
    [letter] = [d for d in dlq.list(1000) if d.group == f"l:{run}"]
    assert (letter.queue, letter.dlq) == (LANE, LANE_DLQ)
    assert dlq.redrive(group=f"l:{run}")["by_queue"] == {LANE: 1}
    [back] = receive(sqs, url, 1, run)  # (back in the lane)
    sqs.delete_message(QueueUrl=url, ReceiptHandle=back["ReceiptHandle"])
