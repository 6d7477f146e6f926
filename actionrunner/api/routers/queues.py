"""``/v1/queues``: the queue and its DLQ at a glance (``admin`` scope)."""

from __future__ import annotations

from ...dlq import queue_stats
from ..auth import router as scoped_router
from ..deps import Deps
from ..errors import upstream
from ..models import QueueStats

router = scoped_router("admin", prefix="/v1/queues", tags=["admin"])


@router.get("", response_model=list[QueueStats])
def queues(deps: Deps) -> list[QueueStats]:
    """The queue and its DLQ: messages visible, in flight, age of the oldest."""
    with upstream("SQS"):
        return [QueueStats.model_validate(s) for s in queue_stats(deps.settings, deps.sqs)]
