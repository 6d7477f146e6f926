"""The settlement core, strict decoding, the receive loop and the housekeeper, on stand-ins.

No server and no subprocess: :func:`actionrunner.settle.decide` and
:func:`~actionrunner.settle.dead_letter_entry` are pure; the receiver and the housekeeper talk to
fake SQS clients that fail on cue.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError
from celery.exceptions import Reject

from actionrunner import errors, settle
from actionrunner.app import app
from actionrunner.errors import IdempotencyInProgress, RetryLater
from actionrunner.settle import DeadLetter, Hold, Policy, Reason, Release, Retry, Wait, decide
from actionrunner.sqs import claimcheck, inbound
from actionrunner.sqs.housekeeper import DeadLetterJob, Housekeeper, _Delete
from actionrunner.sqs.receiver import Receiver
from bench.hostile import KINDS, Context


# -- decide: every branch ---------------------------------------------------------------------
@pytest.mark.parametrize(("failure", "attempt", "policy", "expected"), [
    (ValueError("x"), 1, Policy(max_attempts=3), Retry),
    (ValueError("x"), 3, Policy(max_attempts=3), DeadLetter),
    (ValueError("x"), 3, Policy(max_attempts=3, on_exhausted="hold"), Hold),
    (KeyError("x"), 1, Policy(retry_for=(ValueError,)), DeadLetter),
    (errors.ActionInputError("a", {"x": "bad"}), 1, Policy(), DeadLetter),
    (errors.SchemaVersionRejected("a", 9, (1,)), 1, Policy(), DeadLetter),
    (errors.IdempotencyKeyReused("a", "k", "h1", "h2"), 1, Policy(), DeadLetter),
    (errors.NotJson("not json"), 1, Policy(on_exhausted="hold"), DeadLetter),
    (RetryLater(when=2.0), 1, Policy(retry_for=(KeyError,)), Retry),
    (IdempotencyInProgress("k", when=0.5), 9, Policy(max_attempts=1), Wait),
    (Reject("no", requeue=True), 1, Policy(), Release),
    (Reject("no", requeue=False), 1, Policy(), DeadLetter),
])
def test_decide(failure: BaseException, attempt: int, policy: Policy, expected: type) -> None:
    outcome = decide(policy, failure, attempt=attempt, receive_count=1, countdown=None, jitter=False)
    assert type(outcome) is expected


def test_retry_uses_the_countdown_or_the_capped_backoff() -> None:
    policy = Policy(max_attempts=10, retry_backoff=1.0, retry_backoff_max=5.0)
    assert decide(policy, ValueError(), attempt=1, countdown=7.5).delay == 7.5  # type: ignore[union-attr]
    assert [decide(policy, ValueError(), attempt=n, jitter=False).delay  # type: ignore[union-attr]
            for n in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 5.0]
    assert 0.5 <= decide(policy, ValueError(), attempt=1).delay <= 1.0  # type: ignore[union-attr]


def test_a_wait_uses_the_delay_asked_and_no_attempt() -> None:
    outcome = decide(Policy(), IdempotencyInProgress("k", when=3.0), attempt=1, countdown=3.0)
    assert outcome == Wait(3.0, outcome.reason)  # type: ignore[union-attr]


def test_policy_of_an_action_reads_its_options() -> None:
    from tests.actions import boom, fragile_head

    assert Policy.of(boom).max_attempts == 2 and Policy.of(boom).retry_backoff == 0.2
    assert Policy.of(fragile_head).on_exhausted == "hold" and Policy.of(fragile_head).hold_seconds == 2


def test_a_plain_tasks_retry_is_bounded_by_celerys_max_retries_its_failures_by_max_attempts() -> None:
    from tests.actions import boom
    from tests.plain_tasks import plain_explode

    plain = Policy.of(plain_explode)
    assert plain.retries_by_task and plain.max_attempts == 2
    assert not Policy.of(boom).retries_by_task
    # self.retry() of a plain task: again, whatever the attempt (Action.retry checks max_retries)
    assert isinstance(decide(plain, RetryLater(exc=KeyError("k"), when=0.1), attempt=5), Retry)
    # its other failures: max_attempts
    assert isinstance(decide(plain, KeyError("k"), attempt=2), DeadLetter)
    # an action's self.retry(): max_attempts
    assert isinstance(decide(Policy.of(boom), RetryLater(when=0.1), attempt=2), DeadLetter)


def test_a_retry_past_max_retries_is_dead_lettered_with_the_failure_it_retried_on() -> None:
    # a plain task's self.retry() past max_retries raises its exc, marked: dead-lettered now
    exc = ValueError("tried enough")
    setattr(exc, settle.RETRIES_EXHAUSTED, True)
    outcome = decide(Policy(max_attempts=9), exc, attempt=2)
    assert isinstance(outcome, DeadLetter) and outcome.reason.error_type == "ValueError"
    # a retry that runs out of attempts reports the exception it retried on, not the Retry
    outcome = decide(Policy(max_attempts=2), RetryLater(exc=KeyError("k"), when=1.0), attempt=2)
    assert isinstance(outcome, DeadLetter) and outcome.reason.error_type == "KeyError"


# -- the dead letter --------------------------------------------------------------------------
def _message(attributes: int = 0, body: str = "{}") -> dict[str, Any]:
    return {"MessageId": "m-1", "ReceiptHandle": "r", "Body": body,
            "Attributes": {"MessageGroupId": "g", "ApproximateReceiveCount": "2"},
            "MessageAttributes": {f"a{i}": {"DataType": "String", "StringValue": "v",
                                            "StringListValues": []} for i in range(attributes)}}


def test_the_dead_letter_keeps_body_group_attributes_and_the_reason() -> None:
    entry = settle.dead_letter_entry(_message(2), Reason("ValueError", "boom", 3), source_queue="q")
    params = entry.params
    assert params["MessageBody"] == "{}" and params["MessageGroupId"] == "g"
    assert params["MessageDeduplicationId"] == "m-1:dlq"  # a repeated send is dropped by SQS
    attrs = {k: v["StringValue"] for k, v in params["MessageAttributes"].items()}
    assert attrs["actionrunner.error_type"] == "ValueError" and attrs["actionrunner.attempts"] == "3"
    assert attrs["actionrunner.receive_count"] == "2" and attrs["a0"] == "v"
    assert "StringListValues" not in params["MessageAttributes"]["a0"]
    assert settle.failure_attributes(params)["error"] == "boom"


def test_the_dead_letter_stays_within_ten_attributes_and_names_what_it_dropped() -> None:
    entry = settle.dead_letter_entry(_message(9), Reason("E", "e", 1), source_queue="q")
    attributes = entry.params["MessageAttributes"]
    assert len(attributes) == 10
    assert entry.dropped_attributes and attributes["actionrunner.dropped_attributes"]["StringValue"]


def test_the_dead_letter_fits_the_size_limit() -> None:
    body = "x" * 1000
    entry = settle.dead_letter_entry(_message(3, body), Reason("E", "e" * 900, 1), source_queue="q",
                                     max_bytes=1300)
    params = entry.params
    size = len(params["MessageBody"]) + sum(len(k) + len(v["DataType"]) + len(v.get("StringValue", ""))
                                            for k, v in params["MessageAttributes"].items())
    assert size <= 1300 and params["MessageBody"] == body


# -- decoding: every hostile kind ---------------------------------------------------------------
CTX = Context(app, "tests.actions.probe", {"run": "r", "group": "g", "seq": 1},
              {"run": "r", "group": "g", "seq": "x"}, "actions.fifo", "payloads", "foreign",
              "actionrunner/payloads/k")


def _read(hostile: Any, bucket: str | None = "payloads") -> None:
    message = {"MessageId": "m", "ReceiptHandle": "r", "Body": hostile.body,
               "MessageAttributes": hostile.attributes, "Attributes": {}}
    pointer = claimcheck.pointer_of(message["Body"])
    if pointer is not None:
        claimcheck.check(pointer, hostile.attributes, bucket=bucket, max_bytes=8 << 20)
        raise errors.PayloadMissing("would be fetched")  # the fetch is the integration tests' part
    inbound.decode(message, queue_url="q", max_bytes=8 << 20, is_registered=app.tasks.__contains__)


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_hostile_kind_is_refused_by_name_or_left_to_the_action(kind: str) -> None:
    build, expected = KINDS[kind]
    # decodes; the action refuses it, or (expired) its turn comes too late
    if expected in ("ActionInputError", "SchemaVersionRejected", "MessageExpired"):
        _read(build(CTX))
        return
    with pytest.raises(errors.UndecodableMessage) as caught:
        _read(build(CTX))
    assert type(caught.value).__name__ == expected
    assert caught.value.reason


def test_a_healthy_message_decodes_to_a_plain_payload() -> None:
    import json
    import zlib

    from bench.hostile import envelope

    env = envelope(CTX)
    env["headers"]["compression"] = "application/x-gzip"
    env["properties"]["body_encoding"] = "base64"
    import base64

    env["body"] = base64.b64encode(zlib.compress(env["body"].encode())).decode()
    stock = base64.b64encode(json.dumps(env).encode()).decode()  # kombu's base64 around the JSON
    payload = inbound.decode({"MessageId": "m", "ReceiptHandle": "r", "Body": stock}, queue_url="q",
                             max_bytes=1 << 20, is_registered=app.tasks.__contains__)
    assert json.loads(payload["body"])[1] == CTX.kwargs
    assert "compression" not in payload["headers"] and "body_encoding" not in payload["properties"]
    assert payload["properties"]["delivery_tag"] == "r"


def test_decompression_stops_at_the_bound() -> None:
    import zlib

    with pytest.raises(errors.MessageTooLarge):
        inbound.decompress(zlib.compress(b"0" * 10_000_000), 1000)
    assert inbound.decompress(zlib.compress(b"0" * 1000), 1000) == b"0" * 1000


def test_a_pointer_is_checked_before_any_s3_request() -> None:
    class NoS3:
        def get_object(self, **_: Any) -> Any:
            raise AssertionError("fetched")

    for bucket, key, configured in (("other", "actionrunner/payloads/k", "payloads"),
                                    ("payloads", "../k", "payloads"),
                                    ("payloads", "actionrunner/payloads/k", None)):
        with pytest.raises(errors.PointerRefused):
            claimcheck.check((bucket, key), {}, bucket=configured, max_bytes=100)
    over = str(claimcheck.stored_bound(100) + 1)  # what a 100-byte body needs in stock format, +1
    with pytest.raises(errors.MessageTooLarge):
        claimcheck.check(("payloads", "actionrunner/payloads/k"),
                         {"ExtendedPayloadSize": {"StringValue": over}}, bucket="payloads", max_bytes=100)
    del NoS3


# -- the receive loop ---------------------------------------------------------------------------
def _client_error(code: str, status: int = 400) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": code},
                        "ResponseMetadata": {"HTTPStatusCode": status}}, "ReceiveMessage")


class FakeSQS:
    """Answers receives from a script: an exception to raise, or a list of messages."""

    def __init__(self, script: list[Any]) -> None:
        self.script = list(script)
        self.calls: list[dict[str, Any]] = []

    def receive_message(self, **params: Any) -> dict[str, Any]:
        self.calls.append(params)
        step = self.script.pop(0) if self.script else []
        if isinstance(step, BaseException):
            raise step
        return {"Messages": step}


def _messages(*ids: str) -> list[dict[str, Any]]:
    return [{"MessageId": i, "ReceiptHandle": f"h-{i}", "Body": "{}"} for i in ids]


def _run_receiver(client: FakeSQS, until: Any, demand: Any = lambda: 10) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []
    receiver = Receiver(client, "http://q/actions.fifo", demand=demand, deliver=got.extend,
                        release=lambda m: None, wait_time_seconds=0, visibility_timeout=30,
                        polling_interval=0.001, backoff_base=0.01, backoff_cap=0.1)
    receiver.start()
    deadline = time.monotonic() + 10
    while not until(got) and time.monotonic() < deadline:
        time.sleep(0.01)
    receiver.stop()
    receiver.join(5)
    return got


def test_the_receiver_rides_out_every_kind_of_error_and_reuses_its_attempt_id(
        caplog: pytest.LogCaptureFixture) -> None:
    faults = [_client_error("InternalError", 500), _client_error("ThrottlingException"),
              _client_error("AccessDenied", 403), _client_error("ExpiredToken", 403),
              EndpointConnectionError(endpoint_url="http://q"),
              ReadTimeoutError(endpoint_url="http://q"), ValueError("garbled answer")]
    client = FakeSQS([*faults, _messages("a", "b"), _messages("c")])
    got = _run_receiver(client, lambda g: len(g) >= 3)
    assert [m["MessageId"] for m in got] == ["a", "b", "c"]
    ids = [c["ReceiveRequestAttemptId"] for c in client.calls]
    # the failed receives and the one that finally answered share an attempt id; the next is new
    assert len(set(ids[: len(faults) + 1])) == 1 and ids[len(faults) + 1] != ids[0]
    refused = [r for r in caplog.records if "AccessDenied" in r.getMessage()]
    assert refused and refused[0].levelname == "ERROR" and "IAM" in refused[0].getMessage()
    assert any("works again" in r.getMessage() for r in caplog.records)


def test_the_receiver_asks_only_for_what_the_worker_has_room_for() -> None:
    room = {"n": 0}
    client = FakeSQS([_messages("a")])
    threading.Timer(0.3, lambda: room.update(n=3)).start()
    got = _run_receiver(client, lambda g: len(g) >= 1, demand=lambda: room["n"])
    assert got and client.calls[0]["MaxNumberOfMessages"] == 3



def test_a_freed_slot_wakes_the_idle_receiver_only_when_there_is_demand() -> None:
    room = {"n": 0}
    receiver = Receiver(FakeSQS([]), "http://q/actions.fifo", demand=lambda: room["n"],
                        deliver=lambda m: None, release=lambda m: None, wait_time_seconds=0,
                        visibility_timeout=30)
    receiver._idle = True  # waiting for room
    receiver.wake()  # room freed below the watermark: nothing to ask for yet
    assert not receiver._wake.is_set()
    room["n"] = 10
    receiver.wake()
    assert receiver._wake.is_set()

# -- the housekeeper -----------------------------------------------------------------------------
class FakeKeeperSQS:
    """Fails the first ``fail`` calls of each API; ``failed_entries`` returns Failed entries."""

    def __init__(self, fail: int = 0, failed_entries: dict[str, list[dict[str, Any]]] | None = None):
        self.fail, self.failed_entries = fail, failed_entries or {}
        self.calls: dict[str, list[Any]] = {}

    def _call(self, api: str, params: Any) -> dict[str, Any]:
        self.calls.setdefault(api, []).append(params)
        if len(self.calls[api]) <= self.fail:
            raise _client_error("InternalError", 500)
        return {"Failed": self.failed_entries.pop(api, [])}

    def delete_message_batch(self, **params: Any) -> dict[str, Any]:
        return self._call("delete", params)

    def change_message_visibility_batch(self, **params: Any) -> dict[str, Any]:
        return self._call("visibility", params)

    def send_message(self, **params: Any) -> dict[str, Any]:
        return self._call("send", params)


def _keeper(client: Any, **kw: Any) -> Housekeeper:
    keeper = Housekeeper(client, visibility_timeout=3, heartbeat_interval=0.2, flush_interval=0.01, **kw)
    keeper.start()
    return keeper


def _eventually(check: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_a_failed_delete_is_sent_again_with_the_same_handle_until_it_succeeds() -> None:
    client = FakeKeeperSQS(fail=2, failed_entries={"delete": [{"Id": "0", "Code": "InternalError"}]})
    keeper = _keeper(client)
    done = threading.Event()
    keeper.track("q", "h1")
    keeper.delete("q", "h1", then=done.set)
    _eventually(done.is_set)
    keeper.stop()
    handles = [e["ReceiptHandle"] for call in client.calls["delete"] for e in call["Entries"]]
    assert handles == ["h1"] * 4 and not keeper.is_tracked("h1")


def test_a_delete_whose_handle_is_gone_is_given_up_loudly(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO")
    client = FakeKeeperSQS(failed_entries={"delete": [{"Id": "0", "Code": "ReceiptHandleIsInvalid"}]})
    keeper = _keeper(client)
    keeper.delete("q", "h1")
    _eventually(lambda: any("delete-failed" in str(r.msg) for r in caplog.records))
    keeper.stop()



def test_deletes_go_ten_at_a_time_and_the_rest_after_the_linger() -> None:
    client = FakeKeeperSQS()
    keeper = _keeper(client, linger=0.3)
    with keeper._lock:  # 13 queued at once (as between two looks of a busy worker)
        for i in range(13):
            keeper._deletes.append(_Delete("q", f"h{i}"))
        keeper._lock.notify()
    _eventually(lambda: len(client.calls.get("delete", [])) >= 1)
    time.sleep(0.1)  # the three left wait for the next ten or the linger, not a batch of their own
    assert [len(c["Entries"]) for c in client.calls["delete"]] == [10]
    _eventually(lambda: len(client.calls["delete"]) == 2)
    keeper.stop()
    assert [len(c["Entries"]) for c in client.calls["delete"]] == [10, 3]

def test_the_heartbeat_retries_and_reports_messages_it_lost() -> None:
    lost: list[str] = []
    client = FakeKeeperSQS(fail=1, failed_entries={"visibility": [{"Id": "1", "Code": "MessageNotInflight"}]})
    keeper = _keeper(client, on_lost=lost.extend)
    keeper.track("q", "kept")
    keeper.track("q", "gone")
    _eventually(lambda: lost == ["gone"] and len(client.calls.get("visibility", [])) >= 3)
    assert keeper.is_tracked("kept")
    keeper.stop()


def test_a_message_whose_visibility_ran_out_is_reported_lost() -> None:
    lost: list[str] = []
    client = FakeKeeperSQS(fail=10**6)  # every extension fails
    keeper = _keeper(client, on_lost=lost.extend)
    keeper.track("q", "h")
    _eventually(lambda: lost == ["h"], timeout=8)
    keeper.stop()


def test_a_failed_dlq_send_is_retried_and_only_then_the_message_is_deleted() -> None:
    client = FakeKeeperSQS(fail=2)
    keeper = _keeper(client)
    done = threading.Event()
    keeper.track("q", "h")
    keeper.dead_letter(DeadLetterJob("dlq", {"MessageBody": "b"}, "q", "h", done.set))
    _eventually(lambda: done.is_set() and "delete" in client.calls)
    assert len(client.calls["send"]) == 3
    assert keeper.failures["SendMessage"] == 2
    keeper.stop()
