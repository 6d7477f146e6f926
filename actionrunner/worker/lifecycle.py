"""Lifecycle log lines of actions (and plain Celery tasks) as they run: started, succeeded, failed.

Connected to Celery's task signals, so they fire in the process that runs the action. (What
happens to a failed message next — retrying, dead-lettered, held — is logged by the worker's main
process, in :mod:`actionrunner.worker.request`.)
"""

from __future__ import annotations

import time
from typing import Any

from celery import signals

from ..errors import error_module_of
from ..events import emit

#: Per running call: when it started and the fields its lines share (read once, at its start).
_started: dict[str, tuple[float, dict[str, Any]]] = {}
#: task class → is it an action or a plain task of the deployment (asked once per class;
#: Celery's own tasks — ``celery.chord``... — have no lines of their own)
_action_types: dict[type, bool] = {}


def _is_action(task: Any) -> bool:
    kind = type(task)
    known = _action_types.get(kind)
    if known is None:
        # (not at import: actions import this module's package)
        from ..action import is_action, is_plain_task

        known = _action_types[kind] = is_action(task) or is_plain_task(task)
    return known


def _common(task: Any, request: Any) -> dict[str, Any]:
    sqs = getattr(request, "sqs", None) or {}
    delivery_info = request.delivery_info or {}
    return {
        "action": task.name,
        "id": request.id,
        "group": sqs.get("group"),
        "dedup_id": sqs.get("dedup_id"),
        "attempt": sqs.get("attempt"),
        "receive_count": sqs.get("receive_count"),
        "api_run": True if getattr(request, "ar_api_run", None) else None,
        "queue": delivery_info.get("routing_key"),
    }


def _finish(task: Any, request: Any, task_id: str | None) -> tuple[dict[str, Any], float | None]:
    """The call's common fields (as its start line had them) and its duration in ms."""
    started = _started.pop(task_id or "", None)
    if started is None:
        return _common(task, request), None
    start, common = started
    return common, round((time.perf_counter() - start) * 1000, 3)


@signals.task_prerun.connect
def _on_prerun(sender: Any = None, task_id: str | None = None, task: Any = None, **_: Any) -> None:
    if not _is_action(task):
        return
    request = task.request
    if request.called_directly:
        return
    common = _common(task, request)
    _started[task_id or ""] = (time.perf_counter(), common)
    sent = (getattr(request, "sqs", None) or {}).get("sent_timestamp_ms")
    wait = None if sent is None else max(0.0, round(time.time() * 1000 - sent, 1))
    emit("started", **common, queue_wait_ms=wait)


@signals.task_success.connect
def _on_success(sender: Any = None, result: Any = None, **_: Any) -> None:
    if not _is_action(sender):
        return
    request = sender.request
    if request.called_directly:
        return
    common, duration = _finish(sender, request, request.id)
    replay = getattr(request, "idempotency", None)  # idempotent_replay: the saved result, not a run
    emit(
        "succeeded", **common, duration_ms=duration,
        outcome="succeeded", result=result, **(dict(replay) if replay else {}),
    )


@signals.task_failure.connect
def _on_failure(
    sender: Any = None, task_id: str | None = None, exception: BaseException | None = None, **_: Any
) -> None:
    if not _is_action(sender):
        return
    common, duration = _finish(sender, sender.request, task_id)
    emit(
        "failed", **common, duration_ms=duration, outcome="failed",
        error_type=type(exception).__name__ if exception else None,
        error=str(exception)[:500] if exception else None,
        error_module=error_module_of(exception),
        level=40,
    )
