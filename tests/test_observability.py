"""Metrics (CloudWatch EMF in the lifecycle lines) and `actionrunner status`."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from typing import Any

import pytest

from actionrunner.metrics import emf_fields
from tests.conftest import ROOT


def test_lifecycle_lines_carry_embedded_metrics() -> None:
    from tests import actions  # noqa: F401  (a registered action: its name is the dimension)

    fields = emf_fields("succeeded", {"action": "tests.actions.probe", "duration_ms": 2.5})
    assert fields["Action"] == "tests.actions.probe"
    assert fields["ActionsSucceeded"] == 1 and fields["ActionDuration"] == 2.5
    [directive] = fields["_aws"]["CloudWatchMetrics"]
    assert directive["Namespace"] == "ActionRunner"
    assert directive["Dimensions"] == [["Action"], []]
    assert {m["Name"] for m in directive["Metrics"]} == {"ActionsSucceeded", "ActionDuration"}
    assert emf_fields("released", {"count": 3}) == {}


def test_a_lifecycle_line_written_directly_is_the_line_logging_would_write(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker writes lifecycle lines straight to its JSON handler (no LogRecord); the line is
    the one the logging path writes, and a process with other handlers gets them by logging."""
    import io
    import json
    import logging

    from actionrunner import events
    from actionrunner import logging as ar_logging

    root = logging.getLogger()
    saved = (list(root.handlers), root.level, ar_logging._direct, ar_logging._configured)
    buffer = io.StringIO()
    try:
        for handler in saved[0]:  # (pytest's capture handlers)
            root.removeHandler(handler)
        ar_logging.configure("INFO", "json", stream=buffer)
        assert ar_logging._direct_handler(logging.INFO) is not None
        fields = {"action": "tests.x", "id": "i", "attempt": 1, "queue_wait_ms": 1.5, "gone": None}
        events.emit("started", **fields)
        events.emit("failed", level=logging.ERROR, action="tests.x", error="boom")
        monkeypatch.setattr(ar_logging, "_direct", None)  # the logging path
        events.emit("started", **fields)
        events.emit("failed", level=logging.ERROR, action="tests.x", error="boom")
        monkeypatch.undo()
        lines = [json.loads(line) for line in buffer.getvalue().splitlines()]
        for line in lines:  # (the times differ)
            line.pop("timestamp")
            line.get("_aws", {}).pop("Timestamp", None)
        direct, logged = lines[:2], lines[2:]
        assert [list(line.items()) for line in direct] == [list(line.items()) for line in logged]
        assert direct[1]["level"] == "error" and "gone" not in direct[0]
        # another handler (a test's caplog, a host's handler): every line goes through logging
        other = logging.NullHandler()
        root.addHandler(other)
        assert ar_logging._direct_handler(logging.INFO) is None
        root.removeHandler(other)
        logging.getLogger(ar_logging.LIFECYCLE_LOGGER).setLevel(logging.WARNING)
        assert ar_logging._direct_handler(logging.INFO) is None  # below the logger's level
    finally:
        logging.getLogger(ar_logging.LIFECYCLE_LOGGER).setLevel(logging.NOTSET)
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved[0]:
            root.addHandler(handler)
        root.setLevel(saved[1])
        ar_logging._direct, ar_logging._configured = saved[2], saved[3]


@pytest.mark.integration
def test_status_table_and_exit_code_follow_the_dlq(aws: Any, queue_url: str, sqs: Any,
                                                    settings: Any) -> None:
    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "actionrunner.cli", "status"], cwd=ROOT,
                              env={**os.environ, "COLUMNS": "200"}, capture_output=True, text=True,
                              timeout=60)

    empty = run()
    assert empty.returncode == 0, empty.stderr
    assert "actions.fifo" in empty.stdout and "actions-dlq.fifo" in empty.stdout
    dlq_url = sqs.get_queue_url(QueueName=settings.dlq_name)["QueueUrl"]
    sqs.send_message(QueueUrl=dlq_url, MessageBody="{}", MessageGroupId="g",
                     MessageDeduplicationId=uuid.uuid4().hex)
    try:
        full = run()
        assert full.returncode == 1
        assert "in the DLQ" in full.stderr
        row = next(line for line in full.stdout.splitlines() if "actions-dlq.fifo" in line)
        assert " 1 " in row
    finally:
        while messages := sqs.receive_message(QueueUrl=dlq_url, MaxNumberOfMessages=10).get("Messages"):
            for m in messages:
                sqs.delete_message(QueueUrl=dlq_url, ReceiptHandle=m["ReceiptHandle"])


@pytest.mark.integration
def test_purge_follows_the_dlq_down_to_empty(aws: Any, queue_url: str, sqs: Any, settings: Any) -> None:
    from actionrunner.dlq import DeadLetterQueue

    dlq_url = sqs.get_queue_url(QueueName=settings.dlq_name)["QueueUrl"]
    for i in range(3):
        sqs.send_message(QueueUrl=dlq_url, MessageBody="{}", MessageGroupId=f"g{i}",
                         MessageDeduplicationId=uuid.uuid4().hex)
    gone: list[int] = []
    assert DeadLetterQueue(settings).purge(progress=gone.append, wait=30) == 3
    assert sum(gone) == 3  # the progress bar reached the end
    done = subprocess.run([sys.executable, "-m", "actionrunner.cli", "dlq", "purge", "--yes"],
                          cwd=ROOT, env=os.environ.copy(), capture_output=True, text=True, timeout=60)
    # SQS (and moto) allow one purge a minute: the second is refused with a clear message and no
    # traceback; fauxqs allows it, and there is nothing left to purge
    said = " ".join((done.stdout + done.stderr).split())
    assert "Traceback" not in said
    assert (done.returncode == 2 and "purged less than 60 s ago" in said) or \
        (done.returncode == 0 and "purged 0 message(s)" in said), said


@pytest.mark.integration
def test_dlq_list_and_show_print_the_recorded_failure(aws: Any, queue_url: str, sqs: Any,
                                                       settings: Any) -> None:
    import json

    dlq_url = sqs.get_queue_url(QueueName=settings.dlq_name)["QueueUrl"]
    body = json.dumps({"headers": {"task": "tests.actions.boom", "id": "run-1"}, "body": "{}"})
    attrs = {"actionrunner.error_type": "ValueError", "actionrunner.error": "boom x",
             "actionrunner.attempts": "2"}
    sent = sqs.send_message(QueueUrl=dlq_url, MessageBody=body, MessageGroupId="boom:x",
                            MessageDeduplicationId=uuid.uuid4().hex,
                            MessageAttributes={k: {"DataType": "String", "StringValue": v}
                                               for k, v in attrs.items()})

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "actionrunner.cli", "dlq", *args], cwd=ROOT,
                              env={**os.environ, "COLUMNS": "250"}, capture_output=True, text=True,
                              timeout=60)

    try:
        listed = cli("list")
        assert listed.returncode == 0, listed.stderr
        assert "ValueError: boom x" in listed.stdout and "tests.actions.boom" in listed.stdout
        shown = cli("show", sent["MessageId"])
        assert shown.returncode == 0, shown.stderr
        assert json.loads(shown.stdout) == {
            "message_id": sent["MessageId"], "queue": settings.queue_name,
            "dlq": settings.dlq_name, "group": "boom:x", "action": "tests.actions.boom",
            "run_id": "run-1", "failure": {"error_type": "ValueError", "error": "boom x", "attempts": "2"},
            "sent_at": json.loads(shown.stdout)["sent_at"], "redrives": 0, "sender_attributes": {}}
        by_run = cli("show", "run-1")  # the run id (task id) finds it too
        assert by_run.returncode == 0, by_run.stderr
        assert json.loads(by_run.stdout)["message_id"] == sent["MessageId"]
        missing = cli("show", "no-such-id")
        assert missing.returncode == 2 and "run or message id 'no-such-id'" in missing.stderr
    finally:
        while messages := sqs.receive_message(QueueUrl=dlq_url, MaxNumberOfMessages=10).get("Messages"):
            for m in messages:
                sqs.delete_message(QueueUrl=dlq_url, ReceiptHandle=m["ReceiptHandle"])


def test_a_task_event_nobody_listens_to_is_not_built() -> None:
    """The worker's event dispatcher asks the monitor where a task event would go first: with no
    listener it is dropped before Celery builds it; worker events, and task events with a
    listener, go on to Celery's dispatcher."""
    from types import SimpleNamespace

    from kombu import Exchange

    from actionrunner.worker.events import ActionEventDispatcher

    listeners: list[str] = []
    asked: list[tuple[str, str]] = []

    class Monitor:
        def route(self, exchange: str, routing_key: str, event_exchange: str) -> list[str]:
            asked.append((exchange, routing_key))
            return list(listeners)

    built: list[str] = []
    dispatcher = ActionEventDispatcher.__new__(ActionEventDispatcher)
    dispatcher.enabled = True
    dispatcher.exchange = Exchange("celeryev", type="topic")
    dispatcher.producer = SimpleNamespace(channel=SimpleNamespace(monitor=Monitor()))
    base = ActionEventDispatcher.__mro__[1]
    original = base.send
    base.send = lambda self, type, blind=False, **fields: built.append(type)  # type: ignore[method-assign]
    try:
        dispatcher.send("task-succeeded", uuid="u", result="r")
        dispatcher.send("worker-heartbeat")
        listeners.append("https://sqs/ev-flower")
        dispatcher.send("task-started", uuid="u")
    finally:
        base.send = original  # type: ignore[method-assign]
    assert built == ["worker-heartbeat", "task-started"]
    assert asked == [("celeryev", "task.succeeded"), ("celeryev", "task.started")]
