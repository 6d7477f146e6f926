"""``/v1/dlq``: list, redrive and purge the dead-letter queues (``admin`` scope).

Every queue has a DLQ of its own. ``?queue=`` names one (the queue, e.g. ``bulk.fifo``, or its
DLQ); without it, listing and redrive cover every DLQ (each message goes back to the queue it came
from), and purge the default queue's DLQ (one DLQ per purge).
"""

from __future__ import annotations

from typing import Annotated

from botocore.exceptions import ClientError
from fastapi import Body, HTTPException, Query

from ...dlq import DeadLetterQueue, UnknownQueue, dead_letter_queues, list_all, redrive_all, resolve_queue
from ..auth import router as scoped_router
from ..deps import Deps
from ..errors import upstream
from ..models import DeadLetterOut, PurgeRequest, PurgeResult, RedriveRequest, RedriveResult

router = scoped_router("admin", prefix="/v1/dlq", tags=["admin"])

_UNKNOWN = {404: {"description": "no such queue (nor DLQ) in the settings"}}
QueueParam = Annotated[str | None, Query(
    max_length=80, description="A queue (e.g. bulk.fifo) or its DLQ; default: every queue.")]


def _known(deps: Deps, queue: str | None) -> str | None:
    """``queue`` as one of the settings' queues (404 if it is none)."""
    if queue is None:
        return None
    try:
        return resolve_queue(deps.settings, queue)
    except UnknownQueue as exc:
        raise HTTPException(404, str(exc)) from None


@router.get("", response_model=list[DeadLetterOut], responses=_UNKNOWN)
def list_dlq(deps: Deps, limit: Annotated[int, Query(ge=1, le=1000)] = 100,
             queue: QueueParam = None) -> list[DeadLetterOut]:
    """Messages in the dead-letter queues (of every queue, or of ``queue``), with the failure
    recorded on each and the queue it came from."""
    queue = _known(deps, queue)
    with upstream("SQS"):
        return [d.summary() for d in list_all(dead_letter_queues(deps.settings, deps.sqs, queue), limit)]


@router.post("/redrive", response_model=RedriveResult, responses=_UNKNOWN)
def redrive(deps: Deps, request: Annotated[RedriveRequest | None, Body()] = None,
            queue: QueueParam = None) -> RedriveResult:
    """Move DLQ messages back to the queue each came from: all, or those of a group / an action
    (of every DLQ, or of ``queue``'s)."""
    request = request or RedriveRequest()
    queue = _known(deps, queue)
    with upstream("SQS"):
        moved = redrive_all(dead_letter_queues(deps.settings, deps.sqs, queue),
                            group=request.group, action=request.action, limit=request.limit)
    return RedriveResult(**moved)


@router.post("/purge", response_model=PurgeResult,
             responses={400: {"description": "missing or wrong confirmation"},
                        409: {"description": "a purge ran less than 60 s ago"}, **_UNKNOWN})
def purge(deps: Deps, request: Annotated[PurgeRequest | None, Body()] = None,
          queue: Annotated[str | None, Query(
              max_length=80, description="A queue (e.g. bulk.fifo) or its DLQ; default: the "
                                         "default queue.")] = None) -> PurgeResult:
    """Delete everything in one DLQ (the default queue's, or ``queue``'s). Needs
    ``{"confirm": "<the DLQ's name>"}``."""
    name = deps.settings.dlq_of(_known(deps, queue) or deps.settings.queue_name)
    if request is None or request.confirm != name:
        raise HTTPException(400, f"to purge, send {{\"confirm\": \"{name}\"}}")
    with upstream("SQS"):
        try:
            return PurgeResult(purged=DeadLetterQueue(deps.settings, deps.sqs, name).purge())
        except ClientError as exc:
            if "PurgeQueueInProgress" in exc.response["Error"]["Code"]:
                raise HTTPException(409, "a purge ran less than 60 s ago; try again later") from None
            raise
