"""The background thread that sends monitoring messages, batched per queue."""

from __future__ import annotations

import logging
import queue as queue_module
import threading
from collections.abc import Callable
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from ... import constants as C

logger = logging.getLogger("actionrunner.monitor")


class Sender:
    """A background thread that sends monitoring messages, batched per queue.

    ``submit`` never blocks and never raises: monitoring must not slow down or break the work.
    Messages to a queue that no longer exists (its listener stopped) are dropped.
    """

    def __init__(self, client: Any, on_gone: Callable[[str], None]) -> None:
        self.client, self.on_gone = client, on_gone
        self._queue: queue_module.Queue[tuple[str, dict[str, Any]] | None] = queue_module.Queue(10_000)
        self._idle = threading.Event()
        self._idle.set()
        self._thread = threading.Thread(target=self._run, name="actionrunner-monitor", daemon=True)
        self._thread.start()
        self.sent = 0
        self.requests = 0

    def submit(self, url: str, entry: dict[str, Any]) -> None:
        self._idle.clear()
        try:
            self._queue.put_nowait((url, entry))
        except queue_module.Full:  # a listener that cannot keep up loses events, not the worker
            logger.warning("monitoring backlog full; dropping a message for %s", url)

    def flush(self, timeout: float = 2.0) -> bool:
        """Wait until everything submitted so far was sent (True) or ``timeout`` passed."""
        return self._idle.wait(timeout)

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            batch = [first]
            while len(batch) < 100:
                try:
                    batch.append(self._queue.get_nowait())
                except queue_module.Empty:
                    break
            by_url: dict[str, list[dict[str, Any]]] = {}
            for item in batch:
                if item is not None:
                    by_url.setdefault(item[0], []).append(item[1])
            for url, entries in by_url.items():
                for start in range(0, len(entries), C.SQS_MAX_BATCH):
                    self._send(url, entries[start : start + C.SQS_MAX_BATCH])
            if self._queue.empty():
                self._idle.set()

    def _send(self, url: str, entries: list[dict[str, Any]]) -> None:
        self.requests += 1
        try:
            if len(entries) == 1:
                self.client.send_message(QueueUrl=url, **entries[0])
            else:
                self.client.send_message_batch(
                    QueueUrl=url, Entries=[{"Id": str(i), **e} for i, e in enumerate(entries)])
            self.sent += len(entries)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if "NonExistentQueue" in code or "QueueDoesNotExist" in code:
                self.on_gone(url)
            else:
                logger.warning("could not send %d monitoring message(s) to %s: %s", len(entries), url, exc)
        except BotoCoreError as exc:
            logger.warning("could not send %d monitoring message(s) to %s: %s", len(entries), url, exc)

