"""Flower, `celery inspect` and `celery events` on SQS (actionrunner.sqs.monitor), end to end:
a real worker, a real Flower, a real local SQS server, everything over HTTP on 127.0.0.1."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from actionrunner.local import stop_process
from actionrunner.sqs.monitor import Monitor, kind_of, sqs_queue_name
from tests.conftest import LOGS, ROOT, _free_port

FINAL = {"SUCCESS", "FAILURE"}


def _celery(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "celery", "-A", "actionrunner", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, env=os.environ.copy())


def _wait(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


@contextlib.contextmanager
def _run_flower(*args: str) -> Iterator[httpx.Client]:
    """`celery -A actionrunner flower` behind basic auth; stopped by PID."""
    port = _free_port()
    LOGS.mkdir(parents=True, exist_ok=True)
    log = open(LOGS / "flower.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "actionrunner", "flower", "--address=127.0.0.1",
         f"--port={port}", "--basic-auth=admin:secret", *args],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=os.environ.copy())
    log.close()
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", auth=("admin", "secret"), timeout=10)

    def up() -> bool:
        try:
            return client.get("/healthcheck").status_code == 200
        except httpx.TransportError:
            return False

    try:
        _wait(up, 30, "Flower to answer")
        yield client
    finally:
        client.close()
        stop_process(proc, 15)


@pytest.fixture
def flower(aws: Any) -> Iterator[httpx.Client]:
    with _run_flower() as client:
        yield client


@pytest.mark.integration
def test_flower_shows_the_worker_and_every_task_with_its_final_state(
        start_worker: Any, flower: httpx.Client) -> None:
    from tests.actions import boom, record

    run = uuid.uuid4().hex[:8]
    worker = start_worker(concurrency=2, args=("-n", f"flower-{run}@%h"))
    hostname = _wait(lambda: next((h for h in flower.get("/api/workers?refresh=1").json()
                                   if h.startswith(f"flower-{run}@")), None),
                     60, "Flower to list the worker")
    ok = [record.delay(bucket=f"f{run}", token=f"t{i}").id for i in range(4)]
    failing = boom.delay(run=run).id

    def tasks() -> dict[str, Any] | None:
        listed = flower.get("/api/tasks").json()
        done = all(listed.get(t, {}).get("state") in FINAL for t in [*ok, failing])
        return listed if done else None

    listed = _wait(tasks, 90, "every task to reach a final state in Flower")
    for task_id in ok:
        task = listed[task_id]
        assert task["state"] == "SUCCESS", task
        assert task["name"] == "tests.actions.record" and task["worker"] == hostname
        assert f"'bucket': 'f{run}'" in task["kwargs"] and task["runtime"] >= 0
    failed = listed[failing]
    assert failed["state"] == "FAILURE" and f"boom {run}" in failed["exception"]
    assert failed["retries"] == 1 and failed["retried"], failed  # two attempts, then the DLQ

    # the dashboard's numbers come from the same events
    info = flower.get(f"/api/workers?workername={hostname}&refresh=1").json()[hostname]
    assert "tests.actions.record" in info["registered"]
    dashboard = flower.get("/")
    assert dashboard.status_code == 200 and hostname in dashboard.text
    assert worker.proc.poll() is None


@pytest.mark.integration
def test_celery_inspect_answers_over_sqs(start_worker: Any) -> None:
    run = uuid.uuid4().hex[:8]
    start_worker(concurrency=1, args=("-n", f"inspect-{run}@%h"))
    ping = _celery("inspect", "ping", "-d", f"inspect-{run}@{os.uname().nodename}", "-t", "5")
    assert ping.returncode == 0, ping.stdout + ping.stderr
    assert f"inspect-{run}@" in ping.stdout and "pong" in ping.stdout
    stats = _celery("inspect", "stats", "-d", f"inspect-{run}@{os.uname().nodename}", "-t", "5")
    assert stats.returncode == 0 and '"pool"' in stats.stdout, stats.stdout + stats.stderr
    active = _celery("inspect", "active", "-t", "5")
    assert active.returncode == 0 and f"inspect-{run}@" in active.stdout, active.stdout + active.stderr


@pytest.mark.integration
def test_the_inspect_reply_queue_is_deleted_after_use(start_worker: Any, sqs: Any) -> None:
    run = uuid.uuid4().hex[:8]
    start_worker(concurrency=1, args=("-n", f"tidy-{run}@%h"))
    assert _celery("inspect", "ping", "-t", "3").returncode == 0
    queues = sqs.list_queues(QueueNamePrefix="actionrunner-mon-rep-").get("QueueUrls", [])
    assert queues == []
    boxes = sqs.list_queues(QueueNamePrefix="actionrunner-mon-box-").get("QueueUrls", [])
    assert any(f"tidy-{run}" in url for url in boxes)


def test_each_worker_process_has_a_mailbox_of_its_own() -> None:
    assert sqs_queue_name("ar-", "w1@h.celery.pidbox", "ab12cd34") == "ar-box-w1-h-ab12cd34"
    assert sqs_queue_name("ar-", "celeryev.x", "ab12cd34") == "ar-ev-x"  # only mailboxes


def test_monitoring_queue_names() -> None:
    assert kind_of("celery@host.celery.pidbox") == "box"
    assert kind_of("0c8f-aa.reply.celery.pidbox") == "rep"
    assert kind_of("celeryev.6e2b") == "ev"
    assert kind_of("actions.fifo") is None
    assert sqs_queue_name("ar-", "w1@my.host.celery.pidbox") == "ar-box-w1-my-host"
    assert sqs_queue_name("ar-", "ab12.reply.celery.pidbox") == "ar-rep-ab12"
    long = sqs_queue_name("ar-", "x" * 200 + ".celery.pidbox")
    assert len(long) == 80 and long.startswith("ar-box-xxx")
    assert long != sqs_queue_name("ar-", "x" * 201 + ".celery.pidbox")


class _Lister:
    """A stub SQS client that lists two event queues (unit test of the routing rules)."""

    def __init__(self) -> None:
        self.listed = 0

    def get_paginator(self, name: str) -> Any:
        lister = self

        class Pages:
            def paginate(self, QueueNamePrefix: str, MaxResults: int) -> list[dict[str, Any]]:  # noqa: N803
                lister.listed += 1
                return [{"QueueUrls": [f"http://q/{QueueNamePrefix}{i}" for i in range(2)]}]

        return Pages()


def test_events_go_to_every_listener_and_failures_mode_keeps_only_failures() -> None:
    everything = Monitor(_Lister(), "ar-", "all")
    assert everything.route("celeryev", "task.succeeded") == ["http://q/ar-ev-0", "http://q/ar-ev-1"]
    assert everything.route("celeryev", "worker.heartbeat") == ["http://q/ar-ev-0", "http://q/ar-ev-1"]
    assert everything.route("actions.fifo", "actions.fifo") is None  # not a monitoring exchange
    failures = Monitor(_Lister(), "ar-", "failures")
    assert failures.route("celeryev", "task.succeeded") == []
    assert failures.route("celeryev", "task.failed") == ["http://q/ar-ev-0", "http://q/ar-ev-1"]
    assert failures.route("celeryev", "worker.heartbeat") != []
    assert failures.route("celery.pidbox", "") == ["http://q/ar-box-0", "http://q/ar-box-1"]
    off = Monitor(_Lister(), "ar-", "off")  # even if Flower's enable_events turned Celery's on
    assert off.route("celeryev", "task.failed") == off.route("celeryev", "task.succeeded") == []
    assert off.route("celeryev", "worker.heartbeat") == ["http://q/ar-ev-0", "http://q/ar-ev-1"]


def test_listings_are_cached_between_events() -> None:
    client = _Lister()
    monitor = Monitor(client, "ar-", "all")
    for _ in range(50):
        monitor.route("celeryev", "task.started")
    assert client.listed == 1
    monitor.route("celery.pidbox", "")  # a broadcast looks again (a worker may have started)
    assert client.listed == 2


@pytest.mark.integration
def test_the_janitor_deletes_an_event_queue_nobody_reads(sqs: Any, settings: Any) -> None:
    monitor = Monitor(sqs, f"janitor-{uuid.uuid4().hex[:6]}-", "all")
    read = monitor.declare("celeryev.alive")
    dead = monitor.declare("celeryev.dead")
    for url in (read, dead):
        sqs.send_message(QueueUrl=url, MessageBody="{}")
    assert sqs.receive_message(QueueUrl=read, WaitTimeSeconds=1).get("Messages")  # a live reader
    monitor._sweep()  # suspect once...
    assert set(monitor.listeners("ev")) == {read, dead}
    monitor._sweep()  # ...twice: gone
    assert sqs.list_queues(QueueNamePrefix=monitor.prefix).get("QueueUrls") == [read]
    monitor.close()  # this process's own queues go when it stops
    assert not sqs.list_queues(QueueNamePrefix=monitor.prefix).get("QueueUrls")


def test_mailbox_receives_hide_messages_until_they_expire() -> None:
    """kombu's async receive passes the SQS name: a control message must stay hidden past its
    60 s retention, or a worker would run it again 30 s later (one inspect, three replies)."""
    from actionrunner.sqs.monitor import RETENTION_SECONDS, MonitorChannel

    channel = SimpleNamespace(transport_options={}, wait_time_seconds=20)

    class Connection:
        def make_request(self, operation: str, params: dict[str, Any], *args: Any,
                         **kwargs: Any) -> dict[str, Any]:
            return {"operation": operation, **params}

    for name in ("actionrunner-mon-box-w1-host-ab12cd34", "w1@host.celery.pidbox"):
        asked = MonitorChannel(channel).get_from_sqs(name, "http://q", Connection(), 10)
        assert asked["operation"] == "ReceiveMessage" and asked["MaxNumberOfMessages"] == 10
        assert asked["VisibilityTimeout"] > RETENTION_SECONDS


@pytest.mark.integration
def test_a_worker_whose_mailbox_was_deleted_answers_again(start_worker: Any, sqs: Any) -> None:
    run = uuid.uuid4().hex[:8]
    node = f"heal-{run}@{os.uname().nodename}"
    start_worker(concurrency=1, args=("-n", f"heal-{run}@%h"))
    [mailbox] = [u for u in sqs.list_queues(QueueNamePrefix="actionrunner-mon-box-").get("QueueUrls", [])
                 if f"heal-{run}" in u]
    sqs.delete_queue(QueueUrl=mailbox)  # an operator's cleanup, say: the receive loop fails

    def answers() -> bool:
        ping = _celery("inspect", "ping", "-d", node, "-t", "2")
        return ping.returncode == 0 and "pong" in ping.stdout

    _wait(answers, 60, "the worker to declare its mailbox again and answer")


class _Dozer:
    """A worker with monitoring queues of its own (another test's listener would keep it
    awake), started with short doze timings, that has dozed off once."""

    def __init__(self, start_worker: Any, monkeypatch: pytest.MonkeyPatch, name: str,
                 after: str = "2", poll: str = "8") -> None:
        self.run = uuid.uuid4().hex[:8]
        monkeypatch.setenv("ACTIONRUNNER_MONITOR_QUEUE_PREFIX", f"dz{self.run}-")
        self.node = f"{name}-{self.run}@{os.uname().nodename}"
        self.worker = start_worker(concurrency=1, args=("-n", f"{name}-{self.run}@%h"),
                                   env={"ACTIONRUNNER_MAILBOX_DOZE_AFTER": after,
                                        "ACTIONRUNNER_MAILBOX_DOZE_POLL": poll})
        self.worker.wait_for(lambda: self.said(" dozes: ") >= 1, 30, "the mailbox to doze")

    def said(self, text: str) -> int:
        """How many of the worker's log lines say ``text``."""
        return sum(text in str(e.get("event")) for e in self.worker.events())


@pytest.mark.integration
def test_a_worker_nobody_watches_dozes_and_still_answers_inspect_and_new_listeners(
        start_worker: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Idle and unwatched, the mailbox dozes (long-polled 20 s at a time, its events go nowhere):
    `celery inspect` gets its answer at once and wakes it; a new `celery events` listener knocks
    and receives the worker's heartbeats."""
    dozer = _Dozer(start_worker, monkeypatch, "doze")
    run, node, worker, said = dozer.run, dozer.node, dozer.worker, dozer.said
    time.sleep(1)  # past its read: the command waits for the next one
    started = time.monotonic()
    ping = _celery("inspect", "ping", "-d", node, "-t", "3")
    assert ping.returncode == 0 and "pong" in ping.stdout, ping.stdout + ping.stderr
    assert time.monotonic() - started < 20, ping.stderr  # its long poll hands the command over
    worker.wait_for(lambda: said("is awake") >= 1, 10, "the mailbox to wake")

    worker.wait_for(lambda: said(" dozes: ") >= 2, 30, "the mailbox to doze again")
    LOGS.mkdir(parents=True, exist_ok=True)
    out = LOGS / f"events-{run}.log"
    with open(out, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "celery", "-A", "actionrunner", "events",
                                 "--dump"], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                env=os.environ.copy())
    try:
        _wait(lambda: f"doze-{run}@" in out.read_text() and "heartbeat" in out.read_text(),
              40, "the dozing worker's heartbeats at a new listener")
        assert said("is awake") >= 2
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # Ctrl-C, as in a terminal: it deletes its queue
        stop_process(proc, 10)


def test_a_dozing_worker_sends_its_events_nowhere_without_listing() -> None:
    client = _Lister()
    monitor = Monitor(client, "ar-", "all")
    monitor.dozing = True  # nobody listened when it dozed off; a new listener knocks first
    assert monitor.route("celeryev", "worker.heartbeat") == []
    assert monitor.route("celeryev", "task.failed") == []
    assert client.listed == 0


@pytest.mark.integration
def test_a_control_client_deletes_a_mailbox_that_left_its_command_unread(sqs: Any) -> None:
    """A mailbox where a command has waited unread for long has no worker (killed): it goes;
    one that read it stays, and so does one whose command is still fresh (a slow worker)."""
    prefix = f"unread-{uuid.uuid4().hex[:6]}-"
    monitor = Monitor(sqs, prefix, "all")
    dead, alive = (sqs.create_queue(QueueName=f"{prefix}box-{name}")["QueueUrl"]
                   for name in ("dead", "alive"))
    monitor.send([dead, alive], {"MessageBody": "{}"})
    assert monitor.flush(10)
    sqs.receive_message(QueueUrl=alive, MaxNumberOfMessages=10, VisibilityTimeout=120)
    assert monitor.delete_unread([dead, alive], older_than=30) == []  # fresh: a slow reader
    time.sleep(1.5)
    assert monitor.delete_unread([dead, alive], older_than=1) == [dead]
    assert (sqs.list_queues(QueueNamePrefix=prefix).get("QueueUrls") or []) == [alive]
    sqs.delete_queue(QueueUrl=alive)


@pytest.mark.integration
def test_inspect_ends_when_every_mailbox_answered_and_waits_for_a_dead_one(
        start_worker: Any, sqs: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without -d kombu collects until its timeout; here it stops once each mailbox it sent to
    has answered. A dead worker's mailbox (never read) makes it wait out the timeout (and once a
    command has waited there unread for 20 s, a client deletes it: the test above)."""
    run = uuid.uuid4().hex[:8]
    monkeypatch.setenv("ACTIONRUNNER_MONITOR_QUEUE_PREFIX", f"ie{run}-")
    start_worker(concurrency=1, args=("-n", f"all-{run}@%h"))
    script = ("import os, sys, time\nfrom actionrunner.app import app\n"
              "from actionrunner.settings import get_settings\nstarted = time.monotonic()\n"
              "replies = app.control.inspect(timeout=float(sys.argv[1])).ping()\n"
              "seconds = round(time.monotonic() - started, 1)\n"
              "prefix = os.environ['ACTIONRUNNER_MONITOR_QUEUE_PREFIX'] + 'rep-'\n"
              "left = get_settings().client('sqs').list_queues(QueueNamePrefix=prefix).get('QueueUrls')\n"
              "assert not left, left  # each command's reply queue goes after its collection\n"
              "print(sorted(replies or {}), seconds)\n")

    def ping(timeout: str) -> tuple[str, float]:
        done = subprocess.run([sys.executable, "-c", script, timeout], cwd=ROOT, capture_output=True,
                              text=True, timeout=120, env=os.environ.copy())
        assert done.returncode == 0, done.stderr
        nodes, seconds = done.stdout.strip().rsplit(" ", 1)
        return nodes, float(seconds)

    nodes, seconds = ping("60")
    assert f"all-{run}@" in nodes and seconds < 30  # not the 60 s timeout
    dead = sqs.create_queue(QueueName=f"ie{run}-box-gone-{run}-00000000")["QueueUrl"]
    nodes, seconds = ping("3")
    assert f"all-{run}@" in nodes and seconds >= 3  # waited for the dead one
    boxes = sqs.list_queues(QueueNamePrefix=f"ie{run}-box-").get("QueueUrls") or []
    assert dead in boxes and len(boxes) == 2, boxes  # its command is fresh: not yet judged dead
    sqs.delete_queue(QueueUrl=dead)


@pytest.mark.integration
def test_control_shutdown_gets_its_reply_and_the_worker_stops(start_worker: Any) -> None:
    run = uuid.uuid4().hex[:8]
    worker = start_worker(concurrency=1, args=("-n", f"bye-{run}@%h"))
    done = _celery("control", "shutdown", "-d", f"bye-{run}@{os.uname().nodename}", "-t", "5")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"bye-{run}@" in done.stdout and "shutting down" in done.stdout
    assert "No nodes replied" not in done.stdout + done.stderr
    worker.proc.wait(30)
    assert worker.proc.returncode == 0


@pytest.mark.integration
def test_flower_started_after_the_workers_dozed_off_wakes_them_and_lists_them(
        start_worker: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Flower as deployed (no periodic enable_events broadcast): its event queue's knock wakes
    the dozing worker, whose heartbeats and answers then reach it."""
    dozer = _Dozer(start_worker, monkeypatch, "late")
    with _run_flower("--enable_events=False") as flower:
        _wait(lambda: any(h.startswith(f"late-{dozer.run}@")
                          for h in flower.get("/api/workers?refresh=1").json()),
              60, "Flower to list the worker that dozed")
    assert dozer.said("is awake")


def test_a_mailbox_that_cannot_be_tagged_never_dozes() -> None:
    """Without the tag a control client would not wait for it: it stays awake (long-polled);
    after an error of the moment it dozes at a later read."""
    from botocore.exceptions import ClientError

    class NoTagging(_Lister):
        def tag_queue(self, **_: Any) -> None:
            raise ClientError({"Error": {"Code": "AccessDenied", "Message": "no"}}, "TagQueue")

    monitor = Monitor(NoTagging(), "ar-", "all")
    assert monitor.mark_dozing("http://q/ar-box-w", True) is False
    assert not monitor.dozing and not monitor.can_doze

    class Throttled(_Lister):
        calls = 0

        def tag_queue(self, **_: Any) -> None:
            Throttled.calls += 1
            if Throttled.calls == 1:  # an error of the moment: awake now, dozes at a later read
                raise ClientError({"Error": {"Code": "ThrottlingException", "Message": "slow"}},
                                  "TagQueue")

    monitor = Monitor(Throttled(), "ar-", "all")
    assert monitor.mark_dozing("http://q/ar-box-w", True) is False
    assert not monitor.dozing and monitor.can_doze
    assert monitor.mark_dozing("http://q/ar-box-w", True) is True and monitor.dozing


@pytest.mark.integration
def test_work_wakes_a_dozing_mailbox_and_keeps_it_awake(
        start_worker: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker that receives actions is not idle: its mailbox is read at once (a revoke or an
    inspect about that work does not wait for the next read) and long-polled while work comes."""
    from tests.actions import record

    dozer = _Dozer(start_worker, monkeypatch, "busy", after="8", poll="40")
    run, worker, said = dozer.run, dozer.worker, dozer.said
    record.delay(bucket=f"wake{run}", token="t")
    worker.wait_for(lambda: said("is awake") >= 1, 10, "an action to wake the mailbox")
    worker.wait_for(lambda: worker.lifecycle("succeeded", action="tests.actions.record"), 10,
                    "the action to run")
    started = time.monotonic()
    ping = _celery("inspect", "ping", "-d", dozer.node, "-t", "3")
    assert ping.returncode == 0 and "pong" in ping.stdout, ping.stdout + ping.stderr
    assert "dozing" not in ping.stderr and time.monotonic() - started < 15, ping.stderr
    assert said(" dozes: ") == 1  # awake within 8 s of the action: not read 40 s later


def test_inspect_with_a_destination_waits_only_for_the_named_nodes_mailboxes() -> None:
    from actionrunner.sqs.monitor.replies import addressed

    urls = [f"http://q/ar-box-{name}" for name in ("a-vm-1f2e3d4c", "a-vm-2-9a8b7c6d", "b-vm-11223344")]
    assert addressed(urls, ["b@vm"], "ar-") == [urls[2]]
    assert addressed(urls, ["a@vm", "b@vm"], "ar-") == urls  # a@vm's prefix also takes a@vm-2's
    assert addressed(urls, None, "ar-") == addressed(urls, [], "ar-") == urls
    assert addressed(urls, ["nobody@vm"], "ar-") == urls  # not recognised: wait for all
