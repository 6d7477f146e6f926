"""What a worker (or the Lambda runtime) may run, and how long a message may wait: one rule each.

* :func:`check_task` — a received task name runs only if it is registered in this process and is
  not one of Celery's built-in tasks. The built-ins (``celery.starmap``, ``celery.chunks``,
  ``celery.map``, ``celery.accumulate``, ``celery.backend_cleanup``, ``celery.chord_unlock``,
  ``celery.group``, ``celery.chain``, ``celery.chord``) would call actions in-process, without
  their lifecycle lines, idempotency guard, shared rate limit or time limit; a message naming one
  is dead-lettered (:class:`~actionrunner.errors.BuiltinTaskRefused`). Actions and the plain tasks
  the deployment declares (registered, not ``celery.*``) run, and so does ``celery.accumulate``
  (:data:`PLAIN_BUILTINS`): it calls nothing, it returns its arguments, and Celery's canvas sends
  it as the body of a chord with an empty or one-task header and between a group and the task
  chained after it; it runs as a plain task, with its lifecycle.
* :func:`check_eta` — an ``eta`` further ahead than :data:`MAX_ETA_SECONDS` cannot be held (SQS
  keeps a received message hidden at most 12 hours): refused at send
  (:class:`~actionrunner.errors.EtaOutOfRange`) and dead-lettered on receipt
  (:class:`~actionrunner.errors.EtaTooFar`) instead of holding its group.
* :func:`expired` — whether a message's ``expires`` time has passed.

::

    >>> is_builtin("celery.starmap"), is_builtin("tasks.demo.hello"), is_builtin("celery.accumulate")
    (True, False, False)
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import Any

from . import constants as C
from .errors import BuiltinTaskRefused, EtaOutOfRange, EtaTooFar, UnknownAction

#: The prefix of every task Celery itself registers (celery/app/builtins.py).
BUILTIN_PREFIX = "celery."
#: How far ahead an ``eta``/``countdown`` may lie: SQS's 12-hour visibility cap, less an hour of
#: margin for the receive, the heartbeat and a retry after it.
MAX_ETA_SECONDS = C.SQS_MAX_VISIBILITY_SECONDS - 3600


#: Celery's built-in tasks that call no other task (they return what they are given): they run as
#: plain tasks of the deployment.
PLAIN_BUILTINS = frozenset({"celery.accumulate"})


def is_builtin(name: str) -> bool:
    """Whether ``name`` is one of Celery's built-in tasks that are never run from a queue."""
    return name.startswith(BUILTIN_PREFIX) and name not in PLAIN_BUILTINS


def is_runnable(name: str, is_registered: Callable[[str], bool]) -> bool:
    """Whether a message naming task ``name`` may run here (``is_registered``: whether the app
    has a task of that name)."""
    return not is_builtin(name) and is_registered(name)


def check_task(name: str, is_registered: Callable[[str], bool]) -> None:
    """Refuse a task name this process must not run: a built-in
    (:class:`~actionrunner.errors.BuiltinTaskRefused`) or one not registered
    (:class:`~actionrunner.errors.UnknownAction`)."""
    if is_builtin(name):
        raise BuiltinTaskRefused(f"{name!r} is one of Celery's built-in tasks: it is never run from "
                                 "the queue (it would run actions without their lifecycle, "
                                 "idempotency guard, rate limit or time limit); send the actions "
                                 "themselves, e.g. group(action.s(...) for ...)")
    if not is_registered(name):
        raise UnknownAction(f"no action named {name!r} is registered here (ACTIONRUNNER_IMPORTS?)")


def _timestamp(value: Any) -> float | None:
    """A Celery ``eta``/``expires`` header (ISO 8601 text, naive means UTC; or a number of epoch
    seconds) as epoch seconds; None if absent or unreadable."""
    if value is None or value == "":
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, datetime.datetime):
        when = value
    else:
        try:
            when = datetime.datetime.fromisoformat(str(value))
        except ValueError:
            return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return when.timestamp()


def eta_seconds(headers: dict[str, Any], now: float) -> float | None:
    """Seconds from ``now`` to the message's ``eta`` (None: it has none)."""
    when = _timestamp(headers.get("eta"))
    return None if when is None else when - now


def check_eta(headers: dict[str, Any], now: float, *, sending: bool, task: str = "?") -> None:
    """Refuse an ``eta`` beyond :data:`MAX_ETA_SECONDS` from ``now``: at send
    (``sending``) with :class:`~actionrunner.errors.EtaOutOfRange`, on receipt with
    :class:`~actionrunner.errors.EtaTooFar`."""
    ahead = eta_seconds(headers, now)
    if ahead is None or ahead <= MAX_ETA_SECONDS:
        return
    text = (f"eta {headers.get('eta')} is {ahead / 3600:.1f} h ahead; a worker can hold a message "
            f"at most {MAX_ETA_SECONDS / 3600:.0f} h (SQS's 12-hour visibility cap)")
    if sending:
        raise EtaOutOfRange(f"{task}: {text}; nothing was sent (schedule it with beat, or send it "
                            "later)")
    raise EtaTooFar(f"{text}: holding it would stall its group")


def expired(headers: dict[str, Any], now: float) -> bool:
    """Whether the message's ``expires`` time is past."""
    when = _timestamp(headers.get("expires"))
    return when is not None and when <= now


__all__ = ["BUILTIN_PREFIX", "MAX_ETA_SECONDS", "PLAIN_BUILTINS", "check_eta", "check_task",
           "eta_seconds", "expired", "is_builtin", "is_runnable"]
