"""A received monitoring message (an event, a command, a reply) is consumed: it is never handed
on a second time, even by a server that keeps it past SQS's 60 s retention (fauxqs does, and
hands it out again once its 120 s visibility runs out: Flower then warned of a 121 s "clock
drift" on one machine, from a heartbeat two minutes old)."""

from __future__ import annotations

import json
import time
import uuid
from types import SimpleNamespace
from typing import Any

import pytest

from actionrunner.sqs.monitor import MonitorChannel


@pytest.mark.integration
def test_an_event_received_again_is_not_handed_on_again(sqs: Any, aws: Any) -> None:
    from actionrunner.app import app

    name = f"celeryev.{uuid.uuid4()}"
    with app.connection() as conn:
        channel = conn.default_channel
        url = channel._new_queue(name)
        try:
            # Given a heartbeat in an event listener's queue (as a worker sends it)
            event = {"type": "worker-heartbeat", "hostname": "w@h", "timestamp": time.time(),
                     "utcoffset": 0, "clock": 1}
            sqs.send_message(QueueUrl=url, MessageBody=json.dumps(event))
            # When the listener receives it (kombu's synchronous path: Flower, celery events)
            [first] = _receive(channel, name)
            # and the server hands the same message out again (here: at once, not 120 s later)
            sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=first["ReceiptHandle"],
                                          VisibilityTimeout=0)
            # Then the listener does not see it again
            assert _receive(channel, name) == []
            # (while the server did redeliver it: the receive count says so)
            sqs.send_message(QueueUrl=url, MessageBody=json.dumps(event))
            again = _receive(channel, name)
            assert len(again) == 1 and again[0]["MessageId"] != first["MessageId"]
        finally:
            sqs.delete_queue(QueueUrl=url)


def _receive(channel: Any, name: str) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        got = channel._receive_message(name, 10, 1).get("Messages") or []
        if got:
            return list(got)
    return []


def test_the_workers_receives_ask_for_the_receive_count() -> None:
    channel = SimpleNamespace(transport_options={}, wait_time_seconds=20)

    class Connection:
        def make_request(self, operation: str, params: dict[str, Any], *args: Any,
                         protocol_params: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
            return protocol_params

    asked = MonitorChannel(channel).get_from_sqs("w1@host.celery.pidbox", "http://q", Connection(), 10)
    assert asked["json"] == {"MessageSystemAttributeNames": ["ApproximateReceiveCount"]}
    assert asked["query"] == {"MessageSystemAttributeName.1": "ApproximateReceiveCount"}
