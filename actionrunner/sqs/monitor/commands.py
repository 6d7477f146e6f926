"""Remote-control commands of a worker on SQS that differ from Celery's.

``shutdown``: Celery's raises :class:`~celery.exceptions.WorkerShutdown` inside the command, so
kombu never sends its reply and ``celery control shutdown`` says "No nodes replied within time
constraint" although the worker stops. Here the worker answers first and stops at the next turn
of its event loop (its monitoring sender sends the reply when the connection closes, before the
worker exits).
"""

from __future__ import annotations

from typing import Any, cast

from celery.exceptions import WorkerShutdown
from celery.platforms import EX_OK
from celery.utils.log import get_logger
from celery.worker import control

logger = get_logger("celery.worker.control")
_celery_shutdown = control.Panel.data["shutdown"]


def shutdown(state: Any, msg: str = "Got shutdown from remote", **kwargs: Any) -> dict[str, str]:
    """Shutdown worker(s)."""
    hub = getattr(state.consumer, "hub", None)
    if hub is None:  # no event loop to stop from: Celery's own (no reply)
        return cast("dict[str, str]", _celery_shutdown(state, msg=msg, **kwargs))  # (Celery: untyped)
    logger.warning(msg)

    def stop() -> None:
        raise WorkerShutdown(EX_OK)

    hub.call_soon(stop)
    return cast("dict[str, str]", control.ok("shutting down"))  # (Celery: untyped)


def install() -> None:
    """Put these commands in Celery's registry (the worker's mailbox reads it when a command
    comes; done when the mailbox starts consuming)."""
    control.Panel.data["shutdown"] = shutdown
