"""``/healthz`` and ``/readyz``: open (no token), for load balancers and orchestrators."""

from __future__ import annotations

from fastapi import APIRouter

from ..deps import Deps
from ..errors import upstream

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "SQS unreachable"}})
def readyz(deps: Deps) -> dict[str, str]:
    """SQS answers and the queue exists."""
    with upstream("SQS"):
        url = deps.sqs.get_queue_url(QueueName=deps.settings.queue_name)["QueueUrl"]
        deps.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
    return {"status": "ready", "queue": deps.settings.queue_name}
