"""A worker's remote-control mailbox, consumed on its event loop: the watchdog that restarts its
receive loop, and its doze (an idle worker nobody watches long-polls it 20 s at a time).

One :class:`Mailbox` per mailbox queue, kept by the :class:`~.channel.MonitorChannel` of the
channel that consumes it (Celery's pidbox consumer)."""

from __future__ import annotations

import logging
import time
from typing import Protocol

from kombu.transport.SQS import Channel as SQSChannel

from .listeners import Monitor
from .names import DOZING_WAIT_SECONDS

logger = logging.getLogger("actionrunner.monitor")


class Owner(Protocol):
    """What a mailbox uses of its channel's monitoring (a :class:`~.channel.MonitorChannel`)."""

    doze_after: float  #: ``mailbox_doze_after``
    doze_wait: int  #: a dozing mailbox's long poll (:func:`doze_wait`)

    @property
    def channel(self) -> SQSChannel: ...
    @property
    def monitor(self) -> Monitor: ...
    def declare(self, queue: str) -> str: ...
    def declare_again(self, queue_or_name: str) -> bool: ...


class Mailbox:
    """Mailbox ``queue`` (a kombu name) of the worker whose channel's monitoring is ``queues``."""

    def __init__(self, queue: str, queues: Owner) -> None:
        self.queue, self.queues = queue, queues
        now = time.monotonic()
        self.polled = now  #: its last receive (the watchdog's clock)
        self.heard = now  #: its last message, or the worker's last work (the doze clock)

    @property
    def watch_every(self) -> float:
        """Seconds between the watchdog's looks."""
        return float(self.queues.channel.wait_time_seconds) + 5

    # -- dozing: an idle worker nobody watches long-polls its mailbox 20 s at a time ----------
    def should_doze(self) -> bool:
        """Nothing came to the mailbox, and no action to the worker, for ``mailbox_doze_after``
        seconds, and no event listener exists (the listing is cached: at most two ListQueues a
        minute while awake)."""
        monitor, after = self.queues.monitor, self.queues.doze_after
        quiet = time.monotonic() - max(self.heard, monitor.last_work)
        if not after or not monitor.can_doze or quiet < after:
            return False
        return not monitor.listeners("ev")

    def doze(self) -> bool:
        """The mailbox dozes from now on: tagged, and long-polled for
        :data:`DOZING_WAIT_SECONDS` (or ``mailbox_doze_poll``, if shorter) whatever the worker's
        own wait, so a command still reaches it at once. False: it cannot doze (its queue could
        not be tagged)."""
        monitor = self.queues.monitor
        if not monitor.dozing:
            if not monitor.mark_dozing(self.queues.declare(self.queue), True):
                return False
            logger.info("remote-control mailbox %s dozes: no command, no action and no event listener for "
                        "%.0f s; long-polling it %d s at a time until one comes "
                        "(ACTIONRUNNER_MAILBOX_DOZE_AFTER=0 keeps it awake)",
                        self.queue, self.queues.doze_after, self.queues.doze_wait)
        return True

    def wake(self, url: str) -> None:
        """A command, a new listener (its knock) or an action came: awake (``url``: the
        mailbox's queue)."""
        self.heard = time.monotonic()
        monitor = self.queues.monitor
        if monitor.dozing:
            monitor.mark_dozing(url, False)
            logger.info("remote-control mailbox %s is awake: a command, a new listener or an action came",
                        self.queue)

    # -- the watchdog ------------------------------------------------------------------------
    def watch(self) -> None:
        """Restart the mailbox's receive loop if it stopped: a failed receive (the queue was
        deleted under the worker, the endpoint was down) ends kombu's loop for good, and the
        worker would stop answering `celery inspect` and Flower while it goes on running actions."""
        channel = self.queues.channel
        if self.queue not in channel._active_queues or channel.closed:
            return
        allowed = 2 * self.watch_every + (self.queues.doze_wait if self.queues.monitor.dozing else 0.0)
        if time.monotonic() - self.polled < allowed:
            return
        logger.warning("the remote-control mailbox %s stopped answering; declaring it again", self.queue)
        if self.queues.declare_again(self.queue):
            self.polled = time.monotonic()
            channel._schedule_queue(self.queue)


def doze_wait(doze_poll: float) -> int:
    """A dozing mailbox's long poll, in seconds: ``mailbox_doze_poll``, at most SQS's longest."""
    return max(1, min(DOZING_WAIT_SECONDS, int(doze_poll)))
