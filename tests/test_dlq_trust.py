"""``dlq list``/``show`` and redrive believe only the failure a worker recorded: a sender's forged
``actionrunner.*`` attributes (on a message SQS moved to the DLQ itself) are shown apart, and a
worker's dead letter drops them. An ``eta`` SQS cannot hold is refused at send. Runs on moto and
fauxqs.
"""

from __future__ import annotations

import datetime
import time
import uuid
from typing import Any

import pytest
from pydantic import SecretStr

from actionrunner.dlq import DeadLetterQueue
from actionrunner.errors import EtaOutOfRange
from actionrunner.settings import Settings
from actionrunner.settle import Reason, dead_letter_entry
from tests.actions import probe
from tests.conftest import message_text

pytestmark = pytest.mark.integration

FORGED = {"actionrunner.error_type": "Forged", "actionrunner.error": "a sender wrote this",
          "actionrunner.source_queue": "elsewhere.fifo"}


def _attrs(values: dict[str, str]) -> dict[str, Any]:
    return {k: {"DataType": "String", "StringValue": v} for k, v in values.items()}


def _listed(dlq: DeadLetterQueue, group: str) -> Any:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        found = [d for d in dlq.list(100) if d.group == group]
        if found:
            return found[0]
        time.sleep(0.5)
    raise AssertionError(f"group {group} not in the DLQ")


def _forged_copy(sqs: Any, settings: Settings, group: str) -> None:
    """A message as SQS's redrive policy moves it: the sender's body and attributes, as they were."""
    dlq_url = sqs.get_queue_url(QueueName=settings.dlq_name)["QueueUrl"]
    sqs.send_message(QueueUrl=dlq_url, MessageBody='{"headers": {"task": "x", "id": "r"}}',
                     MessageGroupId=group, MessageDeduplicationId=uuid.uuid4().hex,
                     MessageAttributes=_attrs(FORGED))


def test_with_a_signing_key_only_the_workers_signed_failure_is_shown_as_its_own(
    queue_url: str, sqs: Any, settings: Settings,
) -> None:
    signed = settings.model_copy(update={"signing_key": SecretStr("k-" + uuid.uuid4().hex)})
    run = uuid.uuid4().hex[:8]
    dlq = DeadLetterQueue(signed, sqs)
    # Given a forged dead letter (what SQS moves itself keeps a sender's attributes)
    _forged_copy(sqs, settings, f"forged:{run}")
    # And a worker's dead letter of a message that carried forged attributes too
    message = {"MessageId": uuid.uuid4().hex, "Body": '{"headers": {"task": "y", "id": "w"}}',
               "Attributes": {"MessageGroupId": f"worker:{run}"}, "MessageAttributes": _attrs(FORGED)}
    entry = dead_letter_entry(message, Reason("ValueError", "boom", 3), source_queue=queue_url,
                              signing_key=signed.signing_key.get_secret_value().encode())  # type: ignore[union-attr]
    sqs.send_message(QueueUrl=dlq.url, **entry.params)
    # When they are listed
    forged, worker = _listed(dlq, f"forged:{run}"), _listed(dlq, f"worker:{run}")
    # Then the forged one shows no failure of the worker's; its attributes are shown as the sender's
    assert forged.failure == {} and forged.sender_attributes["error_type"] == "Forged"
    assert forged.queue == settings.queue_name  # a forged source queue is not followed
    # And the worker's shows its own failure, the sender's attributes gone from it
    assert worker.failure["error_type"] == "ValueError" and worker.failure["error"] == "boom"
    assert worker.sender_attributes == {} and "signature" not in worker.failure
    # And without the key (another deployment's), the signed one is not believed either
    other = DeadLetterQueue(settings.model_copy(update={"signing_key": SecretStr("other")}), sqs)
    assert _listed(other, f"worker:{run}").failure == {}


def test_without_a_key_a_message_sqs_moved_itself_is_the_senders(settings: Settings) -> None:
    from actionrunner.dlq import _decode

    moved = {"MessageId": "m", "ReceiptHandle": "h", "Body": "{}", "MessageAttributes": _attrs(FORGED),
             "Attributes": {"MessageGroupId": "g", "DeadLetterQueueSourceArn": "arn:aws:sqs:x"}}
    letter = _decode(moved, settings.dlq_name, settings.queue_name)
    assert letter.failure == {} and letter.sender_attributes["error"] == "a sender wrote this"
    written = {**moved, "Attributes": {"MessageGroupId": "g"}}
    assert _decode(written, settings.dlq_name, settings.queue_name).failure["error_type"] == "Forged"


def test_an_eta_sqs_cannot_hold_is_refused_at_send_and_nothing_is_sent(
    queue_url: str, sqs: Any,
) -> None:
    run = uuid.uuid4().hex[:8]
    far = datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=13)
    with pytest.raises(EtaOutOfRange, match=r"tests.actions.probe: eta .* 13.0 h ahead"):
        probe.apply_async(kwargs={"run": run, "group": "g", "seq": 1}, eta=far)
    with pytest.raises(EtaOutOfRange, match="nothing was sent"):
        probe.apply_async(kwargs={"run": run, "group": "g", "seq": 1}, countdown=12 * 3600)
    got = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
    assert not [m for m in got.get("Messages", []) if run in message_text(m)]
