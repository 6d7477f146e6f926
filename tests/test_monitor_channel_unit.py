"""The monitoring queues' side of the channel (actionrunner/sqs/monitor/channel.py, mailbox.py) on
stand-ins: the channel holds it instead of being built from it, and it does what kombu's calls
should do for a mailbox."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

from kombu.transport.SQS import Channel as SQSChannel

from actionrunner.settle import MessageSettler
from actionrunner.sqs.monitor import Mailbox, MonitorChannel
from actionrunner.sqs.monitor.names import KNOCK_BODY
from actionrunner.sqs.transport import Channel


def test_the_channel_is_kombus_with_the_monitoring_held_not_mixed_in() -> None:
    # Given the transport's channel class
    # Then nothing but kombu's classes and the settler interface is under it, so each of
    # kombu's calls is overridden in one place (sqs/transport.py)
    ours = [c for c in Channel.__mro__[1:] if not c.__module__.startswith("kombu.")]
    assert ours == [MessageSettler, *MessageSettler.__mro__[1:]]
    assert SQSChannel in Channel.__mro__
    # and the monitoring is an object of its own
    assert not any(issubclass(c, MonitorChannel) for c in Channel.__mro__)


class FakeMonitor:
    def __init__(self) -> None:
        self.dozing, self.can_doze, self.last_work = False, True, 0.0
        self.refreshed, self.marked = 0, []
        self.listening: list[str] = []

    def refresh(self) -> None:
        self.refreshed += 1

    def mark_dozing(self, url: str, dozing: bool) -> bool:
        self.marked.append((url, dozing))
        self.dozing = dozing
        return True

    def listeners(self, kind: str) -> list[str]:
        return self.listening


class Queues(MonitorChannel):
    """A MonitorChannel whose process Monitor is a stand-in."""

    fake = FakeMonitor()

    @property
    def monitor(self) -> Any:
        return self.fake


def stand_in(**options: Any) -> tuple[Queues, list[Any]]:
    handed: list[Any] = []
    channel = SimpleNamespace(
        transport_options=options, wait_time_seconds=20, closed=False, _active_queues=[],
        _queue_cache={}, connection=SimpleNamespace(_callbacks={"w1@h.celery.pidbox": handed.append}),
        _message_to_python=lambda message, qname, url: message["Body"])
    queues = Queues(channel)
    queues.fake = FakeMonitor()
    return queues, handed


def test_a_mailbox_hands_on_commands_but_not_knocks_or_redeliveries() -> None:
    # Given a worker's mailbox consumed on this channel, dozing
    queues, handed = stand_in()
    name = "w1@h.celery.pidbox"
    mailbox = queues.mailboxes[name] = Mailbox(name, queues)
    mailbox.polled = mailbox.heard = 0.0
    queues.fake.dozing = True
    # When a receive brings a command, a knock and a command received before
    messages = {"Messages": [
        {"Body": "ping", "Attributes": {"ApproximateReceiveCount": "1"}},
        {"Body": KNOCK_BODY, "Attributes": {"ApproximateReceiveCount": "1"}},
        {"Body": "ping again", "Attributes": {"ApproximateReceiveCount": "2"}},
    ]}
    handled = queues.on_messages_ready("http://q/box", name, messages)
    # Then all three count as read, only the new command reaches Celery
    assert handled == 3 and handed == ["ping"]
    # and the mailbox is awake (untagged), its watchdog's and doze clocks reset
    assert queues.fake.marked == [("http://q/box", False)] and not queues.fake.dozing
    assert mailbox.polled > 0 and mailbox.heard > 0 and queues.fake.refreshed == 1


def test_a_list_answer_is_an_empty_receive() -> None:
    queues, handed = stand_in()
    assert queues.on_messages_ready("http://q/ev", "celeryev.x", []) == 0 and handed == []


def test_a_mailbox_dozes_only_when_quiet_long_enough_and_nobody_listens() -> None:
    queues, _ = stand_in(mailbox_doze_after=60.0)
    mailbox = Mailbox("w1@h.celery.pidbox", queues)
    assert not mailbox.should_doze()  # just started
    mailbox.heard = time.monotonic() - 61
    assert mailbox.should_doze()
    queues.fake.listening = ["http://q/ev"]  # an event listener: it stays awake
    assert not mailbox.should_doze()
    queues.fake.listening = []
    queues.fake.last_work = time.monotonic()  # an action came
    assert not mailbox.should_doze()
    off, _ = stand_in(mailbox_doze_after=0)  # ACTIONRUNNER_MAILBOX_DOZE_AFTER=0: never
    assert not Mailbox("w1@h.celery.pidbox", off).should_doze()
