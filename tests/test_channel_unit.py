"""The FIFO consumer's dispatch and settlement (actionrunner/sqs/consumer.py) on stand-ins.

A :class:`Consumer` with a fake event loop, a fake housekeeper and a fake channel port whose
Celery callback is a list: every branch of what happens to a received message — in group order, after each
outcome, when decoding fails, when SQS stops keeping a message for us, at shutdown.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from actionrunner.app import app
from actionrunner.settle import DeadLetter, Hold, Reason, Release, Retry, Wait
from actionrunner.sqs.consumer import Consumer
from actionrunner.sqs.delivery import DELIVERY_KEY
from actionrunner.sqs.options import ConsumerOptions
from bench.hostile import Context, envelope
from tests import actions  # noqa: F401  (registers tests.actions.probe)

CTX = Context(app, "tests.actions.probe", {"run": "r", "group": "g", "seq": 1}, {}, "actions.fifo",
              None, "foreign", "k")
REASON = Reason("ValueError", "boom", 1)


class FakeHub:
    def __init__(self) -> None:
        self.later: list[tuple[float, Any, tuple[Any, ...]]] = []

    def call_soon(self, fn: Any, *args: Any) -> None:
        fn(*args)

    def call_later(self, delay: float, fn: Any, *args: Any) -> None:
        self.later.append((delay, fn, args))

    def fire(self) -> list[float]:
        due, self.later = self.later, []
        for _, fn, args in due:
            fn(*args)
        return [d for d, _, _ in due]


class FakeHousekeeper:
    def __init__(self) -> None:
        self.deleted: list[str] = []
        self.released: list[tuple[str, int]] = []
        self.letters: list[Any] = []

    def delete(self, url: str, handle: str, then: Any = None, urgent: bool = False) -> None:
        self.deleted.append(handle)

    def release(self, messages: list[tuple[str, str]], visibility: int = 0) -> None:
        self.released += [(h, visibility) for _, h in messages]

    def dead_letter(self, job: Any) -> None:
        self.letters.append(job)

    def track(self, url: str, handle: str) -> None:
        pass

    def track_many(self, url: str, handles: list[str]) -> None:
        pass


class FakePort:
    """The kombu channel, as the consumer sees it."""

    def __init__(self) -> None:
        self.delivered: list[dict[str, Any]] = []
        self.callbacks: dict[str, Any] = {"actions.fifo": self.delivered.append}
        self.forgotten: list[str] = []
        self.s3 = None

    def new_queue(self, name: str) -> str:
        return f"http://sqs/{name}"

    def is_active(self, name: str) -> bool:
        return True

    def callback_for(self, name: str) -> Any:
        return self.callbacks.get(name)

    def forget(self, delivery_tag: str) -> None:
        self.forgotten.append(delivery_tag)

    def clear_delivered(self) -> None:
        pass

    def prefetch_count(self) -> int:
        return 8

    def new_sqs_client(self, config: Any = None) -> Any:
        raise AssertionError("the stand-ins make no request")

    def system_attributes(self) -> list[str] | None:
        return None


class Channel(Consumer):
    """A consumer on stand-ins; ``options`` may be replaced before the first message."""

    def __init__(self, **options: Any) -> None:
        self.fake_port = FakePort()
        super().__init__(self.fake_port, ConsumerOptions.of({"dlq_name": "actions-dlq.fifo",
                                                              "visibility_timeout": 30, **options}),
                         hub=None, housekeeper=FakeHousekeeper())  # type: ignore[arg-type]
        self.hub = FakeHub()  # type: ignore[assignment]  (no inbox: posts run at once)
        self.delivered = self.fake_port.delivered

    def configure(self, **options: Any) -> None:
        self.options = ConsumerOptions.of({"dlq_name": self.options.dlq_name,
                                           "visibility_timeout": 30, **options})


def message(mid: str, group: str = "g", body: str | None = None) -> dict[str, Any]:
    return {"MessageId": mid, "ReceiptHandle": f"h-{mid}",
            "Body": body if body is not None else json.dumps(envelope(CTX)),
            "Attributes": {"MessageGroupId": group, "ApproximateReceiveCount": "1"}}


def ids(channel: Channel) -> list[str]:
    return [p["properties"]["delivery_info"]["sqs_message"]["MessageId"] for p in channel.delivered]


@pytest.fixture
def channel() -> Channel:
    c = Channel()
    c._incoming = 10**6  # _accept subtracts what it takes
    return c


def test_the_head_of_each_group_runs_the_rest_wait_in_order(channel: Channel) -> None:
    channel._accept("q", "actions.fifo", [message("a1"), message("a2"), message("b1", "b"), message("a3")])
    assert ids(channel) == ["a1", "b1"]
    channel.ack("h-a1")
    assert ids(channel) == ["a1", "b1", "a2"] and channel._housekeeper.deleted == ["h-a1"]
    channel.ack("h-a2")
    assert ids(channel)[-1] == "a3"


def test_a_retry_runs_the_same_message_again_after_the_delay_with_the_next_attempt(channel: Channel) -> None:
    channel._accept("q", "actions.fifo", [message("a1"), message("a2")])
    channel.settle("h-a1", Retry(2.5, REASON), {})
    assert channel.hub.fire() == [2.5]
    assert ids(channel) == ["a1", "a1"]
    assert channel.delivered[-1]["properties"]["delivery_info"][DELIVERY_KEY].attempt == 2
    assert channel.delivered[-1]["headers"]["retries"] == 1


def test_a_wait_uses_no_attempt(channel: Channel) -> None:
    channel._accept("q", "actions.fifo", [message("a1")])
    channel.settle("h-a1", Wait(1.0, REASON), {})
    channel.hub.fire()
    assert channel.delivered[-1]["properties"]["delivery_info"][DELIVERY_KEY].attempt == 1


def test_hold_hides_the_head_and_releases_its_group(channel: Channel) -> None:
    channel._accept("q", "actions.fifo", [message("a1"), message("a2"), message("b1", "b")])
    channel.settle("h-a1", Hold(300, REASON), {})
    assert channel._housekeeper.released == [("h-a1", 300), ("h-a2", 0)]
    assert not channel.holds("h-a2") and channel.holds("h-b1")


def test_release_gives_the_group_back_at_once(channel: Channel) -> None:
    channel._accept("q", "actions.fifo", [message("a1"), message("a2")])
    channel.settle("h-a1", Release(), {})
    assert channel._housekeeper.released == [("h-a1", 0), ("h-a2", 0)]


def test_a_dead_letter_lets_the_group_go_on_only_once_the_dlq_took_it(channel: Channel) -> None:
    channel._accept("q", "actions.fifo", [message("a1"), message("a2")])
    channel.settle("h-a1", DeadLetter(REASON), {"action": "x"})
    [job] = channel._housekeeper.letters
    assert job.dlq_url == "http://sqs/actions-dlq.fifo" and job.params["MessageGroupId"] == "g"
    assert ids(channel) == ["a1"]  # the group waits for the DLQ
    job.done()
    assert ids(channel) == ["a1", "a2"] and not channel.holds("h-a1")
    channel.settle("h-a1", DeadLetter(REASON), {})  # settled already: nothing more happens
    assert len(channel._housekeeper.letters) == 1


def test_an_undecodable_message_is_dead_lettered_in_its_turn_and_its_follower_runs(channel: Channel) -> None:
    channel._accept("q", "actions.fifo", [message("a1"), message("bad", body="not json"),
                                          message("a3")])
    assert ids(channel) == ["a1"] and channel._housekeeper.letters == []
    channel.ack("h-a1")
    [job] = channel._housekeeper.letters
    assert job.params["MessageAttributes"]["actionrunner.error_type"]["StringValue"] == "NotJson"
    job.done()
    assert ids(channel) == ["a1", "a3"]


def test_celery_refusing_a_message_dead_letters_it(channel: Channel) -> None:
    channel._accept("q", "actions.fifo", [message("a1")])
    channel.reject("h-a1", requeue=False)
    [job] = channel._housekeeper.letters
    assert job.params["MessageAttributes"]["actionrunner.error_type"]["StringValue"] == "Rejected"


def test_a_callback_that_raises_dead_letters_the_message_and_the_loop_goes_on(channel: Channel) -> None:
    def explode(payload: Any) -> None:
        raise RuntimeError("celery could not take it")

    channel.fake_port.callbacks["actions.fifo"] = explode
    channel._accept("q", "actions.fifo", [message("a1")])
    [job] = channel._housekeeper.letters
    assert job.params["MessageAttributes"]["actionrunner.error_type"]["StringValue"] == "RuntimeError"


def test_a_lost_message_that_had_not_started_is_dropped_with_the_rest_of_its_group(channel: Channel) -> None:
    channel._accept("q", "actions.fifo", [message("a1"), message("a2"), message("a3")])
    channel.mark_running("h-a1")
    channel._lost(["h-a2"])  # waiting behind a running head
    assert not channel.holds("h-a2") and not channel.holds("h-a3") and channel.holds("h-a1")
    assert channel._housekeeper.released == [("h-a3", 0)]
    channel._lost(["h-a1"])  # running: kept (it finishes; its delete may fail, then it replays)
    assert channel.holds("h-a1")
    channel.ack("h-a1")
    assert ids(channel) == ["a1"]  # nothing of the group is left here to run


def test_a_lost_head_that_had_not_started_frees_its_group(channel: Channel) -> None:
    channel._accept("q", "actions.fifo", [message("a1")])
    channel._lost(["h-a1"])
    assert not channel.holds("h-a1") and not channel._dispatcher.is_busy("g")


def test_shutdown_releases_what_is_not_running(channel: Channel) -> None:
    channel._accept("q", "actions.fifo", [message("a1"), message("a2"), message("b1", "b")])
    channel.mark_running("h-a1")
    assert channel.release_waiting() == 2
    assert sorted(channel._housekeeper.released) == [("h-a2", 0), ("h-b1", 0)]
    assert channel._demand() == 0


def test_receives_ask_for_ten_or_top_up_only_when_running_low(channel: Channel) -> None:
    channel._incoming = 0
    assert channel.capacity == 20 and channel._demand() == 10
    channel._accept("q", "actions.fifo", [message(f"m{i}", f"g{i}") for i in range(12)])
    channel._incoming = 0
    assert channel._demand() == 0  # 12 held: room for 8, not for 10, and not running low
    for i in range(3):
        channel.ack(f"h-m{i}")
    assert channel._demand() == 10
