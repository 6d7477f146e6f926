"""``/v1/queues``: every queue and its DLQ at a glance (``admin`` scope)."""

from __future__ import annotations

from typing import Annotated

from fastapi import HTTPException, Query

from ...dlq import UnknownQueue, queue_stats, resolve_queue
from ..auth import router as scoped_router
from ..deps import Deps
from ..errors import upstream
from ..models import QueueStats

router = scoped_router("admin", prefix="/v1/queues", tags=["admin"])


@router.get("", response_model=list[QueueStats],
            responses={404: {"description": "no such queue (nor DLQ) in the settings"}})
def queues(deps: Deps, queue: Annotated[str | None, Query(
        max_length=80, description="Only this queue (e.g. bulk.fifo, or its DLQ) and its DLQ; "
                                   "default: every queue.")] = None) -> list[QueueStats]:
    """Each queue (the default one, then the lanes) and its DLQ: messages visible, in flight, age
    of the oldest."""
    if queue is not None:
        try:
            queue = resolve_queue(deps.settings, queue)
        except UnknownQueue as exc:
            raise HTTPException(404, str(exc)) from None
    with upstream("SQS"):
        return [QueueStats.model_validate(s) for s in queue_stats(deps.settings, deps.sqs, queue)]
