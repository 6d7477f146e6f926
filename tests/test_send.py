"""Sending actions to a real local SQS server (over HTTP), read back with boto3."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import uuid
from typing import Any

import pytest

from actionrunner import constants as C
from actionrunner import keys
from actionrunner.errors import ActionInputError
from tests.actions import charge_order, record
from tests.conftest import ROOT, message_text, receive_all

pytestmark = pytest.mark.integration


def _body(message: dict[str, Any]) -> dict[str, Any]:
    return dict(json.loads(message_text(message)))


def test_group_and_dedup_id_arrive_at_sqs_as_computed(sqs: Any, queue_url: str) -> None:
    # Given an action whose group is a template over its inputs (and no key=)
    token = uuid.uuid4().hex
    # When it is sent with .delay()
    result = record.delay(bucket="b1", token=token)
    # Then SQS holds one message in that group, its dedup id derived from the call id it carries
    [message] = receive_all(sqs, queue_url, 1, token=token)
    attrs = message["Attributes"]
    assert attrs["MessageGroupId"] == "rec:b1"
    envelope = _body(message)
    call_id = envelope["headers"][C.CALL_ID_HEADER]
    assert attrs["MessageDeduplicationId"] == keys.call_dedup_id(record.name, call_id)
    assert envelope["headers"]["id"] == result.id
    assert envelope["headers"]["task"] == "tests.actions.record"


def test_per_call_override_wins(sqs: Any, queue_url: str) -> None:
    token = uuid.uuid4().hex
    record.apply_async(
        kwargs={"bucket": "b1", "token": token},
        MessageGroupId="override-group", MessageDeduplicationId="override-dedup-" + token,
    )
    [message] = receive_all(sqs, queue_url, 1, token=token)
    assert message["Attributes"]["MessageGroupId"] == "override-group"
    assert message["Attributes"]["MessageDeduplicationId"].startswith("override-dedup-")


def test_equal_calls_are_each_sent_and_a_keyed_duplicate_is_dropped_by_sqs(
    sqs: Any, queue_url: str
) -> None:
    # Every call is sent: equal inputs, two calls, two messages
    token = uuid.uuid4().hex
    record.delay(bucket="dup", token=token)
    record.delay(bucket="dup", token=token)
    record.delay(bucket="dup", token=token + "-other")
    assert len(receive_all(sqs, queue_url, 3, timeout=5, token=token)) == 3
    # An action keyed by content (key=): the same key within the window is dropped by SQS
    order = "dup-" + uuid.uuid4().hex[:12]
    charge_order.delay(order=order, cents=1)
    charge_order.delay(order=order, cents=1)
    [message] = receive_all(sqs, queue_url, 2, timeout=5, token=order)
    assert message["Attributes"]["MessageDeduplicationId"] == keys.dedup_id(charge_order.name, order)


def test_bad_input_raises_and_sends_nothing(sqs: Any, queue_url: str) -> None:
    with pytest.raises(ActionInputError) as caught:
        record.delay(bucket="b1-nothing-sent", token=123, sleep_s="slow")
    assert set(caught.value.field_errors) == {"token", "sleep_s"}
    assert receive_all(sqs, queue_url, 1, timeout=2, token="b1-nothing-sent") == []


def test_payload_over_the_queue_limit_is_refused_at_send_time(sqs: Any, queue_url: str) -> None:
    # Given the queue's limit of 1 MiB, and no bucket for claim-checked payloads
    code = textwrap.dedent("""
        import base64, os, sys
        from actionrunner.errors import PayloadTooLarge
        from tests.actions import record
        try:
            record.delay(bucket="big-nothing-sent", token=base64.b64encode(os.urandom(1_500_000)).decode())
        except PayloadTooLarge as exc:
            print(exc.size, exc.limit)
            print(exc)
            sys.exit(0)
        sys.exit(1)
    """)
    # When an action is sent with 2 MB of incompressible input
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "ACTIONRUNNER_PAYLOAD_BUCKET": ""}, timeout=60)
    # Then the error names the size and the limit, and nothing was sent
    assert done.returncode == 0, done.stderr
    size, limit = map(int, done.stdout.splitlines()[0].split())
    assert limit == 1_048_576 and size > 1_048_576
    assert "over the limit of 1,048,576 bytes (ACTIONRUNNER_MAX_MESSAGE_BYTES)" in done.stdout
    assert receive_all(sqs, queue_url, 1, timeout=2, token="big-nothing-sent") == []


def test_delay_many_sends_in_batches_and_validates_everything_first(sqs: Any, queue_url: str) -> None:
    run = uuid.uuid4().hex
    with pytest.raises(ActionInputError):
        record.delay_many([{"bucket": "m", "token": f"{run}-ok"}, {"bucket": "m", "token": None}])
    assert receive_all(sqs, queue_url, 1, timeout=2, token=run) == []

    results = record.delay_many([{"bucket": f"m{i % 3}", "token": f"{run}-{i}"} for i in range(25)])
    assert len({r.id for r in results}) == 25
    messages = receive_all(sqs, queue_url, 25, token=run)
    assert sorted(_body(m)["headers"]["id"] for m in messages) == sorted(r.id for r in results)
    assert {m["Attributes"]["MessageGroupId"] for m in messages} == {"rec:m0", "rec:m1", "rec:m2"}
