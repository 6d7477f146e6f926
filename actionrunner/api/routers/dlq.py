"""``/v1/dlq``: list, redrive and purge the dead-letter queue (``admin`` scope)."""

from __future__ import annotations

from typing import Annotated

from botocore.exceptions import ClientError
from fastapi import Body, HTTPException, Query

from ...dlq import DeadLetterQueue
from ..auth import router as scoped_router
from ..deps import Deps
from ..errors import upstream
from ..models import DeadLetterOut, PurgeRequest, PurgeResult, RedriveRequest, RedriveResult

router = scoped_router("admin", prefix="/v1/dlq", tags=["admin"])


def _dlq(deps: Deps) -> DeadLetterQueue:
    return DeadLetterQueue(deps.settings, client=deps.sqs)


@router.get("", response_model=list[DeadLetterOut])
def list_dlq(deps: Deps, limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[DeadLetterOut]:
    """Messages in the dead-letter queue, with the failure recorded on each."""
    with upstream("SQS"):
        return [d.summary() for d in _dlq(deps).list(limit)]


@router.post("/redrive", response_model=RedriveResult)
def redrive(deps: Deps,
            request: Annotated[RedriveRequest | None, Body()] = None) -> RedriveResult:
    """Move DLQ messages back to the queue: all, or those of a group / an action."""
    request = request or RedriveRequest()
    with upstream("SQS"):
        moved = _dlq(deps).redrive(group=request.group, action=request.action, limit=request.limit)
    return RedriveResult(**moved)


@router.post("/purge", response_model=PurgeResult,
             responses={400: {"description": "missing or wrong confirmation"},
                        409: {"description": "a purge ran less than 60 s ago"}})
def purge(deps: Deps, request: Annotated[PurgeRequest | None, Body()] = None) -> PurgeResult:
    """Delete everything in the DLQ. Needs ``{"confirm": "<the DLQ's name>"}``."""
    name = deps.settings.dlq_name
    if request is None or request.confirm != name:
        raise HTTPException(400, f"to purge, send {{\"confirm\": \"{name}\"}}")
    with upstream("SQS"):
        try:
            return PurgeResult(purged=_dlq(deps).purge())
        except ClientError as exc:
            if "PurgeQueueInProgress" in exc.response["Error"]["Code"]:
                raise HTTPException(409, "a purge ran less than 60 s ago; try again later") from None
            raise
