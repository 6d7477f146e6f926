"""Every held message has a bound, and only what may run runs (unit tests on stand-ins).

* a dead letter the DLQ did not take before the message stopped being ours frees its group
  (housekeeper → channel);
* a claim-checked payload that answers 403 (gone, with no s3:ListBucket) or keeps failing is
  dead-lettered after a bounded number of tries;
* Celery's built-in tasks, an ``eta`` beyond what SQS can hold and an expired message each have
  one rule (:mod:`actionrunner.runnable`);
* a metric's ``Action`` dimension is a registered name or ``(unknown)``.
"""

from __future__ import annotations

import datetime
import json
import time
from typing import Any

import pytest
from botocore.exceptions import ClientError

from actionrunner import runnable
from actionrunner.errors import BuiltinTaskRefused, EtaOutOfRange, EtaTooFar, UnknownAction
from actionrunner.metrics import emf_fields
from actionrunner.settle import DeadLetter, Reason, expired_outcome
from actionrunner.sqs import claimcheck
from actionrunner.sqs.housekeeper import DeadLetterJob, Housekeeper
from tests.test_channel_unit import REASON, Channel, ids, message


@pytest.fixture
def channel() -> Channel:
    c = Channel()
    c._incoming = 10**6
    return c


def _s3_error(code: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": code}}, "GetObject")


# -- a lost dead-letter job ------------------------------------------------------------------------
def test_a_dead_letter_job_dropped_by_the_housekeeper_frees_its_group(channel: Channel) -> None:
    # Given a group whose head is on its way to the DLQ, a follower waiting behind it
    channel._accept("q", "actions.fifo", [message("a1"), message("a2")])
    channel.settle("h-a1", DeadLetter(REASON), {"action": "x"})
    [job] = channel._housekeeper.letters
    assert ids(channel) == ["a1"]
    # When the housekeeper gives the job up (the message is no longer ours)
    job.dropped()
    # Then the group is free: nothing of it is held here, the follower went back behind it
    assert not channel.holds("h-a1") and not channel.holds("h-a2")
    assert not channel._dispatcher.is_busy("g")
    assert ("h-a2", 0) in channel._housekeeper.released
    # And a late done (or a second drop) changes nothing
    job.dropped()
    assert ids(channel) == ["a1"]


class FailingSqs:
    """A client whose DLQ sends fail; every other call succeeds."""

    def __init__(self) -> None:
        self.sends = 0

    def send_message(self, **_: Any) -> None:
        self.sends += 1
        raise _s3_error("InternalError")

    def change_message_visibility_batch(self, **kw: Any) -> dict[str, Any]:
        return {"Failed": [{"Id": e["Id"], "Code": "ReceiptHandleIsInvalid"} for e in kw["Entries"]]}

    def delete_message_batch(self, **_: Any) -> dict[str, Any]:
        return {}


def test_the_housekeeper_drops_a_dead_letter_whose_message_is_no_longer_ours() -> None:
    # Given a DLQ that refuses sends, and a message that stopped being tracked (its visibility lost)
    housekeeper = Housekeeper(FailingSqs(), visibility_timeout=30)
    dropped: list[str] = []
    tracked = DeadLetterJob("dlq", {"MessageBody": "x"}, "q", "h-kept", done=lambda: None,
                            dropped=lambda: dropped.append("h-kept"))
    lost = DeadLetterJob("dlq", {"MessageBody": "x"}, "q", "h-lost", done=lambda: None,
                         dropped=lambda: dropped.append("h-lost"))
    housekeeper.track("q", "h-kept")
    # When both sends fail
    housekeeper._send_dead_letters([tracked, lost])
    # Then the tracked one is tried again later, the other given up with its group freed
    assert dropped == ["h-lost"]
    assert [j.receipt_handle for j in housekeeper._dead_letters] == ["h-kept"]


# -- claim-checked payloads ------------------------------------------------------------------------
def _pointed(channel: Channel) -> Any:
    pointer = json.dumps([claimcheck.POINTER_CLASS, {"s3BucketName": "b",
                                                     "s3Key": f"{claimcheck.KEY_PREFIX}k"}])
    channel.configure(payload_bucket="b", payload_fetch_attempts=3)
    channel._fetch = lambda held: None  # type: ignore[method-assign]  (fetches are driven below)
    channel._accept("q", "actions.fifo", [message("p1", body=pointer), message("p2")])
    return channel._held["h-p1"]


@pytest.mark.parametrize(("code", "tries"), [("AccessDenied", 3), ("InternalError", 12)])
def test_an_unreadable_payload_is_dead_lettered_after_a_bounded_number_of_tries(
    channel: Channel, code: str, tries: int,
) -> None:
    # Given a claim-checked message at the head of its group, a follower behind it
    held = _pointed(channel)
    # When every fetch fails with ``code``
    for _ in range(tries - 1):
        channel._fetch_failed(held, _s3_error(code))
    # Then it waits (tried again later) until the bound
    assert channel._housekeeper.letters == [] and len(channel.hub.later) == tries - 1
    channel._fetch_failed(held, _s3_error(code))
    # And then it is dead-lettered with the reason, and its group goes on once the DLQ took it
    [job] = channel._housekeeper.letters
    attrs = job.params["MessageAttributes"]
    assert attrs["actionrunner.error_type"]["StringValue"] == "PayloadMissing"
    assert f"could not be read in {tries} tries: {code}" in attrs["actionrunner.error"]["StringValue"]
    if code == "AccessDenied":
        assert "s3:ListBucket" in attrs["actionrunner.error"]["StringValue"]
    job.done()
    assert ids(channel) == ["p2"]


# -- what may run, and for how long ----------------------------------------------------------------
def test_celerys_built_ins_are_refused_with_their_reason_plain_tasks_run() -> None:
    registered = {"celery.starmap", "celery.backend_cleanup", "celery.accumulate", "celery.chord_unlock",
                  "tests.actions.probe", "app.plain"}.__contains__
    for name in ("celery.starmap", "celery.backend_cleanup", "celery.chord_unlock"):
        with pytest.raises(BuiltinTaskRefused, match="Celery's built-in tasks"):
            runnable.check_task(name, registered)
        assert not runnable.is_runnable(name, registered)
    for name in ("tests.actions.probe", "app.plain", "celery.accumulate"):  # (it calls nothing)
        runnable.check_task(name, registered)
        assert runnable.is_runnable(name, registered)
    with pytest.raises(UnknownAction, match="no action named 'app.other'"):
        runnable.check_task("app.other", registered)


def test_an_eta_beyond_what_sqs_can_hold_is_refused_at_send_and_on_receipt() -> None:
    now = time.time()
    far = datetime.datetime.fromtimestamp(now + 13 * 3600, datetime.UTC).isoformat()
    near = datetime.datetime.fromtimestamp(now + 3600, datetime.UTC).isoformat()
    with pytest.raises(EtaOutOfRange, match="13.0 h ahead.*nothing was sent"):
        runnable.check_eta({"eta": far}, now, sending=True, task="t")
    with pytest.raises(EtaTooFar, match="would stall its group"):
        runnable.check_eta({"eta": far}, now, sending=False)
    runnable.check_eta({"eta": near}, now, sending=True)
    runnable.check_eta({"eta": near.replace("+00:00", "")}, now, sending=False)  # naive: UTC
    runnable.check_eta({}, now, sending=False)


def test_an_expired_message_is_dead_lettered_marked_expired_or_discarded() -> None:
    now = time.time()
    assert runnable.expired({"expires": "2000-01-01T00:00:00+00:00"}, now)
    assert runnable.expired({"expires": now - 1}, now)
    assert not runnable.expired({"expires": now + 60}, now) and not runnable.expired({}, now)
    outcome = expired_outcome("dead-letter", {"expires": "2000-01-01"}, attempt=1, receive_count=2)
    assert isinstance(outcome, DeadLetter) and outcome.reason == Reason(
        "MessageExpired", "expired: its expires time (2000-01-01) passed before it could run", 1, 2)
    assert expired_outcome("discard", {}, attempt=1) is None
    assert emf_fields("expired", {"action": "tests.actions.probe"})["ActionsExpired"] == 1


def test_a_metric_names_only_registered_actions() -> None:
    from tests import actions  # noqa: F401

    assert emf_fields("dead-lettered", {"action": "tests.actions.probe"})["Action"] == "tests.actions.probe"
    assert emf_fields("dead-lettered", {"action": "minted.by.a.sender"})["Action"] == "(unknown)"
    assert emf_fields("dead-letter-failed", {"action": "(worker)"})["Action"] == "(worker)"


def test_a_message_waiting_for_its_eta_says_why_its_group_waits(
    channel: Channel, caplog: pytest.LogCaptureFixture,
) -> None:
    import logging

    from bench.hostile import envelope
    from tests.test_channel_unit import CTX

    caplog.set_level(logging.INFO)
    eta = datetime.datetime.fromtimestamp(time.time() + 3600, datetime.UTC).isoformat()
    channel._accept("q", "actions.fifo", [message("e1", body=json.dumps(envelope(CTX, eta=eta)))])
    [line] = [r.msg for r in caplog.records if isinstance(r.msg, dict)
              and r.msg.get("event") == "scheduled"]
    assert line["eta"] == eta and 3500 < line["wait_s"] <= 3600 and line["group"] == "g"
