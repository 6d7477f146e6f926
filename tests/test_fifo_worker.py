"""The worker keeps SQS FIFO's promises under `celery -A actionrunner worker -c N`.

Real worker subprocesses on a real local SQS server (moto by default: one receive returns several
messages of the same group, as real SQS does).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.actions import boom, fragile_head, probe
from tests.conftest import Worker, receive_all

pytestmark = [pytest.mark.integration, pytest.mark.e2e]


def runs(record_dir: Path, run: str) -> list[dict[str, Any]]:
    path = record_dir / f"{run}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def check_group_order(records: list[dict[str, Any]]) -> tuple[int, int]:
    """(order violations, max same-group concurrency) of successful runs."""
    by_group: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        by_group[r["group"]].append(r)
    violations, max_concurrent = 0, 0
    for items in by_group.values():
        items.sort(key=lambda r: r["start"])
        seqs = [r["seq"] for r in items if r["ok"]]
        violations += sum(1 for a, b in zip(seqs, seqs[1:], strict=False) if b < a)
        for r in items:
            running = sum(1 for o in items if o["start"] < r["end"] and r["start"] < o["end"])
            max_concurrent = max(max_concurrent, running)
    return violations, max_concurrent


def test_group_order_and_one_at_a_time_under_c4(
    start_worker: Callable[..., Worker], queue_url: str, record_dir: Path
) -> None:
    # Given a backlog sent group by group, several messages of each group per receive
    run = uuid.uuid4().hex[:8]
    calls = [{"run": run, "group": f"g{g}", "seq": s, "sleep_s": 0.03} for g in range(4) for s in range(8)]
    probe.delay_many(calls)
    # When a worker with 4 processes drains it
    worker = start_worker(concurrency=4)
    worker.wait_for(lambda: len(runs(record_dir, run)) >= len(calls), timeout=90, what="all probes")
    records = runs(record_dir, run)
    # Then within each group the actions ran one at a time, in send order
    assert len(records) == len(calls)
    assert check_group_order(records) == (0, 1)
    # And groups did run in parallel
    overlaps = sum(1 for a in records for b in records
                   if a["group"] != b["group"] and a["start"] < b["end"] and b["start"] < a["end"])
    assert overlaps > 0


def test_retries_keep_the_group_and_its_order(
    start_worker: Callable[..., Worker], queue_url: str, record_dir: Path
) -> None:
    # Given a group whose head fails twice before it succeeds
    run = uuid.uuid4().hex[:8]
    probe.delay_many([{"run": run, "group": "g", "seq": 0, "fail_times": 2},
                      {"run": run, "group": "g", "seq": 1}, {"run": run, "group": "g", "seq": 2}])
    worker = start_worker()
    worker.wait_for(lambda: len([r for r in runs(record_dir, run) if r["ok"]]) == 3, timeout=60,
                    what="the group to finish")
    records = sorted(runs(record_dir, run), key=lambda r: r["start"])
    # Then the head ran three times, and only then did the rest of its group run, in order
    assert [(r["seq"], r["attempt"], r["ok"]) for r in records] == [
        (0, 1, False), (0, 2, False), (0, 3, True), (1, 1, True), (2, 1, True)]
    # And every retry was on the same message, in the same group (nothing republished)
    retrying = worker.lifecycle("retrying")
    assert len(retrying) == 2
    assert {(e["id"], e["group"]) for e in retrying} == {(retrying[0]["id"], f"probe:{run}:g")}
    assert [e["attempt"] for e in retrying] == [1, 2]
    assert all(e["receive_count"] == 1 for e in retrying)


def test_exhausted_message_goes_to_the_dlq_with_the_failure_and_others_go_on(
    start_worker: Callable[..., Worker], queue_url: str, record_dir: Path, sqs: Any, settings: Any
) -> None:
    # Given a poison message, and work in other groups behind it
    run = uuid.uuid4().hex[:8]
    poison = boom.delay(run=run)
    probe.delay_many([{"run": run, "group": f"ok{i}", "seq": 0, "sleep_s": 0.1} for i in range(6)])
    worker = start_worker(concurrency=2)
    # Then the other groups finish while the poison one fails
    worker.wait_for(lambda: len(runs(record_dir, run)) == 6, timeout=60, what="the healthy groups")
    [dead] = worker.wait_for(lambda: worker.lifecycle("dead-lettered", id=poison.id), timeout=60,
                             what="the poison message to be dead-lettered")
    assert dead["attempt"] == 2 and dead["error_type"] == "ValueError"
    assert len(worker.lifecycle("failed", id=poison.id)) == 2
    # And the DLQ holds it: body, group and the failure recorded; the source queue no longer does
    dlq_url = sqs.get_queue_url(QueueName=settings.dlq_name)["QueueUrl"]
    response = sqs.receive_message(QueueUrl=dlq_url, MaxNumberOfMessages=10, WaitTimeSeconds=2,
                                   MessageSystemAttributeNames=["All"], MessageAttributeNames=["All"])
    [message] = [m for m in response.get("Messages", [])
                 if m["Attributes"]["MessageGroupId"] == f"boom:{run}"]
    # (deleted: left in flight it would count in the DLQ of the tests that follow)
    sqs.delete_message(QueueUrl=dlq_url, ReceiptHandle=message["ReceiptHandle"])
    attrs = {k: v["StringValue"] for k, v in message["MessageAttributes"].items()}
    assert attrs["actionrunner.error_type"] == "ValueError"
    assert attrs["actionrunner.attempts"] == "2"
    assert f"boom {run}" in attrs["actionrunner.error"]
    assert receive_all(sqs, queue_url, 1, timeout=2, token=run) == []


def test_an_action_three_times_longer_than_the_visibility_timeout_runs_once(
    start_worker: Callable[..., Worker], queue_url: str, record_dir: Path
) -> None:
    # Given a 2 s visibility timeout (the heartbeat extends it every ~0.7 s), and two workers
    env = {"ACTIONRUNNER_VISIBILITY_TIMEOUT": "2"}
    run = uuid.uuid4().hex[:8]
    probe.delay(run=run, group="slow", seq=0, sleep_s=6.0)
    first = start_worker(concurrency=2, env=env)
    second = start_worker(concurrency=2, env=env)
    first.wait_for(lambda: runs(record_dir, run), timeout=30, what="the slow action")
    time.sleep(3)  # room for a duplicate run to show up
    assert len(runs(record_dir, run)) == 1
    assert len(first.lifecycle("started") + second.lifecycle("started")) == 1


def test_sigkill_mid_run_loses_nothing(
    start_worker: Callable[..., Worker], queue_url: str, record_dir: Path
) -> None:
    # Given 24 actions in 6 groups, being worked on
    env = {"ACTIONRUNNER_VISIBILITY_TIMEOUT": "3"}
    run = uuid.uuid4().hex[:8]
    probe.delay_many([{"run": run, "group": f"g{g}", "seq": s, "sleep_s": 0.3}
                      for g in range(6) for s in range(4)])
    victim = start_worker(concurrency=2, env=env, args=())
    victim.wait_for(lambda: len(runs(record_dir, run)) >= 3, timeout=60, what="some progress")
    # When the worker and its pool are killed with SIGKILL
    _kill_tree(victim.proc.pid)
    # Then a new worker completes every action (after the short visibility timeout)
    survivor = start_worker(concurrency=2, env=env)
    survivor.wait_for(lambda: {(r["group"], r["seq"]) for r in runs(record_dir, run) if r["ok"]}
                      == {(f"g{g}", s) for g in range(6) for s in range(4)}, timeout=90,
                      what="every action to complete")


def test_sigterm_releases_waiting_messages_at_once(
    start_worker: Callable[..., Worker], queue_url: str, record_dir: Path
) -> None:
    # Given a worker with one process holding more messages than it runs (default 30 s visibility)
    run = uuid.uuid4().hex[:8]
    probe.delay_many([{"run": run, "group": f"g{g}", "seq": 0, "sleep_s": 3.0} for g in range(5)])
    first = start_worker(concurrency=1)
    first.wait_for(lambda: first.lifecycle("started"), timeout=30, what="a start")
    time.sleep(0.5)
    # When it gets SIGTERM
    first.proc.send_signal(signal.SIGTERM)
    # Then the waiting messages are released at once (not after the visibility timeout)...
    [released] = first.wait_for(lambda: first.lifecycle("released"), timeout=10, what="released")
    assert released["count"] >= 1
    # ...the running action finishes, and the worker exits
    assert first.proc.wait(30) == 0
    done_by_first = {r["group"] for r in runs(record_dir, run)}
    assert len(done_by_first) >= 1
    # And another worker takes the released ones well within the visibility timeout
    began = time.monotonic()
    second = start_worker(concurrency=4)
    second.wait_for(lambda: len(runs(record_dir, run)) == 5, timeout=20, what="the released messages")
    assert time.monotonic() - began < 20


def _kill_tree(pid: int) -> None:
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    os.kill(pid, signal.SIGKILL)
    for child in children:
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(child), signal.SIGKILL)


def test_hold_policy_keeps_the_rest_of_the_group_behind_a_failed_head(
    start_worker: Callable[..., Worker], queue_url: str, record_dir: Path, sqs: Any, settings: Any
) -> None:
    # Given a head with on_exhausted="hold" that fails on its first receive, and a follower
    run = uuid.uuid4().hex[:8]
    head = fragile_head.delay(run=run)
    probe.apply_async(kwargs={"run": run, "group": "follower", "seq": 1}, MessageGroupId=f"hold:{run}")
    worker = start_worker(concurrency=2)
    # Then the head is held (not dead-lettered), comes back after hold_seconds and succeeds...
    worker.wait_for(lambda: len(runs(record_dir, run)) == 3, timeout=60, what="head twice + follower")
    records = sorted(runs(record_dir, run), key=lambda r: r["start"])
    assert [(r["group"], r["ok"]) for r in records] == [("head", False), ("head", True), ("follower", True)]
    [held] = worker.lifecycle("held", id=head.id)
    assert held["receive_count"] == 1
    assert records[1]["start"] - records[0]["start"] >= 1.5  # hidden for hold_seconds
    # ...and nothing went to the DLQ
    assert worker.lifecycle("dead-lettered") == []


def test_sigterm_gives_running_actions_the_shutdown_timeout_then_releases_them(
    start_worker: Callable[..., Worker], queue_url: str, record_dir: Path
) -> None:
    run = uuid.uuid4().hex[:8]
    probe.delay(run=run, group="long", seq=0, sleep_s=8)
    first = start_worker(concurrency=1, env={"ACTIONRUNNER_SHUTDOWN_TIMEOUT": "2"})
    first.wait_for(lambda: first.lifecycle("started"), timeout=30, what="the long action to start")
    began = time.monotonic()
    first.proc.send_signal(signal.SIGTERM)
    first.proc.wait(30)
    assert time.monotonic() - began < 10
    assert first.lifecycle("shutdown-timeout")
    assert runs(record_dir, run) == []  # it was stopped, not finished
    # The released message runs at once on the next worker (not after the 30 s visibility timeout)
    second = start_worker(concurrency=1)
    second.wait_for(lambda: runs(record_dir, run), timeout=20, what="the released action")
    assert time.monotonic() - began < 25


def test_undeliverable_messages_go_to_the_dlq_at_once_not_away(
    start_worker: Callable[..., Worker], queue_url: str, sqs: Any, settings: Any
) -> None:
    # Given a message whose inputs do not validate (sent around the validation), and one for an
    # action this worker does not know
    from celery import Task

    from actionrunner.app import app

    run = uuid.uuid4().hex[:8]
    bad = Task.apply_async(probe, (), {"run": run, "group": "g", "seq": "not-a-number"},
                           MessageGroupId=f"bad:{run}", MessageDeduplicationId=f"bad-{run}")
    app.send_task("tests.actions.no_such_action", kwargs={"run": run},
                  MessageGroupId=f"unknown:{run}", MessageDeduplicationId=f"unknown-{run}")
    worker = start_worker()
    # Then the invalid one is dead-lettered on its first attempt (retrying cannot fix it)
    [dead] = worker.wait_for(lambda: worker.lifecycle("dead-lettered", id=bad.id), timeout=30,
                             what="the invalid message in the DLQ")
    assert dead["error_type"] == "ActionInputError" and dead["attempt"] == 1
    # And both are in the DLQ, none deleted unprocessed
    dlq_url = sqs.get_queue_url(QueueName=settings.dlq_name)["QueueUrl"]
    groups = set()
    deadline = time.monotonic() + 20
    while len(groups) < 2 and time.monotonic() < deadline:
        for m in sqs.receive_message(QueueUrl=dlq_url, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                                     MessageSystemAttributeNames=["All"],
                                     MessageAttributeNames=["All"]).get("Messages", []):
            group = m["Attributes"]["MessageGroupId"]
            if run in group:
                sqs.delete_message(QueueUrl=dlq_url, ReceiptHandle=m["ReceiptHandle"])
                groups.add((group, m["MessageAttributes"]["actionrunner.error_type"]["StringValue"]))
    assert groups == {(f"bad:{run}", "ActionInputError"), (f"unknown:{run}", "UnknownAction")}


def test_a_hard_time_limit_is_a_failed_attempt_retried_then_dead_lettered(
    start_worker: Callable[..., Worker], queue_url: str
) -> None:
    from tests.actions import slowpoke

    sent = slowpoke.delay(run=uuid.uuid4().hex[:8])
    worker = start_worker(concurrency=1)
    [dead] = worker.wait_for(lambda: worker.lifecycle("dead-lettered", id=sent.id), timeout=60,
                             what="the slow action in the DLQ")
    assert dead["error_type"] == "TimeLimitExceeded" and dead["attempt"] == 2
    assert len(worker.lifecycle("retrying", id=sent.id)) == 1
