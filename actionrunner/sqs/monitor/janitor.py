"""Deletes event queues whose listener died (``celery events`` or Flower killed, never closed)."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from .names import JANITOR_INTERVAL_SECONDS

logger = logging.getLogger("actionrunner.monitor")


class Janitor:
    """Deletes event queues whose listener is gone: messages wait there and none was received
    in the last minute (received ones stay in flight until they expire), twice in a row. Runs
    at most every :data:`JANITOR_INTERVAL_SECONDS`, in a thread of its own, when
    :meth:`maybe_sweep` is called (a process sends an event)."""

    def __init__(self, client: Any, listeners: Callable[[], list[str]],
                 gone: Callable[[str], None]) -> None:
        self.client, self.listeners, self.gone = client, listeners, gone
        self._at = time.monotonic() + JANITOR_INTERVAL_SECONDS
        self._suspects: dict[str, float] = {}

    def maybe_sweep(self) -> None:
        """Sweep in the background if the last sweep is an interval ago."""
        now = time.monotonic()
        if now < self._at:
            return
        self._at = now + JANITOR_INTERVAL_SECONDS
        threading.Thread(target=self.sweep, name="actionrunner-monitor-janitor", daemon=True).start()

    def sweep(self) -> None:
        """One pass over the event queues (a queue is deleted on its second suspect pass)."""
        now = time.monotonic()
        for url in self.listeners():
            try:
                attrs = self.client.get_queue_attributes(
                    QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages",
                                                  "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
            except (ClientError, BotoCoreError):
                continue
            abandoned = (int(attrs.get("ApproximateNumberOfMessages", 0)) > 0
                         and int(attrs.get("ApproximateNumberOfMessagesNotVisible", 0)) == 0)
            if not abandoned:
                self._suspects.pop(url, None)
            elif url not in self._suspects:
                self._suspects[url] = now
            else:
                logger.info("deleting abandoned event queue %s", url)
                with contextlib.suppress(ClientError, BotoCoreError):
                    self.client.delete_queue(QueueUrl=url)
                self._suspects.pop(url, None)
                self.gone(url)

