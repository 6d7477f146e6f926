"""The lifecycle events of a run (``queued``, ``started``, ``succeeded``, ``retrying``,
``dead-lettered``, …): one call writes the event's line and tells the observers.

:func:`emit` is what the action, the consumer, the settlement and the Lambda runtime call. The line
goes through :mod:`actionrunner.logging` (one JSON line on the lifecycle logger, with its metric
fields); then every observer registered with :func:`observe` is called with the event, its fields
and the action's return value. The run-status writer (:mod:`actionrunner.runs`) is such an
observer: run status is written *because a run changed state*, not because a line was logged —
logging's configuration (a host app's own, a level, a filter) never decides what is stored.

    >>> seen = []
    >>> observer = observe(lambda event, fields, result: seen.append((event, fields, result)))
    >>> emit("succeeded", action="tasks.x", result=42, group=None)
    >>> seen[-1]
    ('succeeded', {'action': 'tasks.x'}, 42)
    >>> unobserve(observer)
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from .logging import get_logger, write_line

#: Called with ``(event, fields, result)`` after each lifecycle event (e.g. the run-status writer).
LifecycleObserver = Callable[[str, dict[str, Any], Any], None]
_observers: list[LifecycleObserver] = []


def observe(observer: LifecycleObserver) -> LifecycleObserver:
    """Register a function called after every lifecycle event of this process."""
    if observer not in _observers:
        _observers.append(observer)
    return observer


def unobserve(observer: LifecycleObserver) -> None:
    """Stop calling ``observer`` (no error if it was not registered)."""
    if observer in _observers:
        _observers.remove(observer)


def emit(event: str, *, level: int = logging.INFO, result: Any = None, **fields: Any) -> None:
    """One lifecycle event: its line (``event`` plus the fields that are not ``None``), then the
    observers (``result``, the action's return value, goes to them, not into the line). An
    observer that raises is logged and never breaks the run's lifecycle."""
    present = {k: v for k, v in fields.items() if v is not None}
    write_line(event, level, present)
    for observer in _observers:
        try:
            observer(event, present, result)
        except Exception:  # an observer must never break the action's lifecycle
            get_logger("actionrunner").warning("lifecycle-observer-failed", event=event,
                                               observer=getattr(observer, "__name__", "?"),
                                               exc_info=True)
