"""Clean shutdown: on SIGTERM, release waiting messages at once; give running actions
``shutdown_timeout`` seconds, then release theirs too and stop.

SIGKILL needs nothing: every message not yet deleted becomes visible again after the queue's
(short) visibility timeout, and runs on the next worker.
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

from celery import signals

from ..events import emit
from ..sqs.consumer import CONSUMERS

_started = threading.Event()


def _release(all_messages: bool) -> int:
    count = 0
    for consumer in list(CONSUMERS):
        count += consumer.release_all() if all_messages else consumer.release_waiting()
    return count


def _watchdog(timeout: float) -> None:
    if _started.wait(0) and not _finished.wait(timeout):
        released = _release(all_messages=True)
        emit("shutdown-timeout", timeout_s=timeout, released=released, level=40)
        os.kill(os.getpid(), signal.SIGQUIT)  # Celery's cold shutdown: stop the pool now


_finished = threading.Event()


@signals.worker_shutting_down.connect
def _on_shutting_down(sig: Any = None, how: Any = None, **_: Any) -> None:
    if _started.is_set():
        return
    _started.set()
    from ..settings import get_settings

    timeout = get_settings().shutdown_timeout
    # The signal handler runs in the main thread, which may be inside an SQS call: do the
    # releases from a thread of their own.
    threading.Thread(target=_release, args=(False,), name="actionrunner-release", daemon=True).start()
    threading.Thread(target=_watchdog, args=(timeout,), name="actionrunner-watchdog",
                     daemon=True).start()


@signals.worker_shutdown.connect
def _on_shutdown(**_: Any) -> None:
    _finished.set()
