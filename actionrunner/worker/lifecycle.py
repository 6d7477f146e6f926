"""Lifecycle log lines of actions as they run: started, succeeded, failed.

Connected to Celery's task signals, so they fire in the process that runs the action. (What
happens to a failed message next — retrying, dead-lettered, held — is logged by the worker's main
process, in :mod:`actionrunner.worker.request`.)
"""

from __future__ import annotations

import time
from typing import Any

from celery import signals

from ..logging import log_event

_started: dict[str, float] = {}


def _is_action(task: Any) -> bool:
    from ..action import Action  # (not at import: actions import this module's package)

    return isinstance(task, Action) and getattr(task, "input_model", None) is not None


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


def _duration_ms(task_id: str | None) -> float | None:
    start = _started.pop(task_id or "", None)
    return None if start is None else round((time.perf_counter() - start) * 1000, 3)


@signals.task_prerun.connect
def _on_prerun(sender: Any = None, task_id: str | None = None, task: Any = None, **_: Any) -> None:
    if not _is_action(task):
        return
    request = task.request
    if request.called_directly:
        return
    _started[task_id or ""] = time.perf_counter()
    sqs = getattr(request, "sqs", None) or {}
    sent = sqs.get("sent_timestamp_ms")
    wait = None if sent is None else max(0.0, round(time.time() * 1000 - sent, 1))
    log_event("started", **_common(task, request), queue_wait_ms=wait)


@signals.task_success.connect
def _on_success(sender: Any = None, result: Any = None, **_: Any) -> None:
    if not _is_action(sender):
        return
    request = sender.request
    if request.called_directly:
        return
    replay = getattr(request, "idempotency", None)  # idempotent_replay: the saved result, not a run
    log_event(
        "succeeded", **_common(sender, request), duration_ms=_duration_ms(request.id),
        outcome="succeeded", result=result, **(dict(replay) if replay else {}),
    )


@signals.task_failure.connect
def _on_failure(
    sender: Any = None, task_id: str | None = None, exception: BaseException | None = None, **_: Any
) -> None:
    if not _is_action(sender):
        return
    log_event(
        "failed", **_common(sender, sender.request), duration_ms=_duration_ms(task_id), outcome="failed",
        error_type=type(exception).__name__ if exception else None,
        error=str(exception)[:500] if exception else None,
        level=40,
    )
