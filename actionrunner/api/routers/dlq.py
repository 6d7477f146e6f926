"""``/v1/dlq``: list, redrive and purge the dead-letter queues (``admin`` scope).

Every queue has a DLQ of its own. ``?queue=`` names one (the queue, e.g. ``bulk.fifo``, or its
DLQ); without it, listing and redrive cover every DLQ (each message goes back to the queue it came
from), and purge the default queue's DLQ (one DLQ per purge).
"""

from __future__ import annotations

from typing import Annotated, Any

from botocore.exceptions import ClientError
from fastapi import Body, HTTPException, Path, Query, Response

from ...dlq import (
    DeadLetterQueue,
    RedriveJob,
    UnknownQueue,
    dead_letter_queues,
    list_all,
    redrive_all,
    resolve_queue,
)
from ..auth import router as scoped_router
from ..deps import Deps
from ..errors import upstream
from ..models import (
    DeadLetterOut,
    PurgeRequest,
    PurgeResult,
    RedriveJobStatus,
    RedriveRequest,
    RedriveResult,
)

router = scoped_router("admin", prefix="/v1/dlq", tags=["admin"])

#: A redrive of more messages than this runs as a job: 202 and a status URL.
SYNC_REDRIVE_MAX = 100
#: Redrive jobs of this process, newest last (the oldest finished ones are forgotten).
JOBS: dict[str, RedriveJob] = {}
MAX_JOBS = 50


def _stop_jobs() -> None:
    """The API is stopping: every running redrive ends between two messages (what it looked at
    and did not move goes back to the DLQ)."""
    for job in list(JOBS.values()):
        job.stop()


router.add_event_handler("shutdown", _stop_jobs)


def _job_status(job: RedriveJob) -> RedriveJobStatus:
    status: dict[str, Any] = job.status
    return RedriveJobStatus(**status, status_url=f"/v1/dlq/redrive/{job.id}")

_UNKNOWN: dict[int | str, dict[str, Any]] = {404: {"description": "no such queue (nor DLQ) in the settings"}}
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


@router.post("/redrive", response_model=RedriveResult | RedriveJobStatus,
             responses={**_UNKNOWN, 202: {"model": RedriveJobStatus,
                                          "description": "a large redrive, running as a job"}})
def redrive(deps: Deps, response: Response,
            request: Annotated[RedriveRequest | None, Body()] = None,
            queue: QueueParam = None) -> RedriveResult | RedriveJobStatus:
    """Move DLQ messages back to the queue each came from: all, or those of a group / an action
    (of every DLQ, or of ``queue``'s); what the DLQs held when it began, each message once. Over
    100 messages it runs as a job: 202, and ``status_url`` (also the Location header) tells how it
    goes."""
    request = request or RedriveRequest()
    queue = _known(deps, queue)
    filters: dict[str, Any] = {"group": request.group, "action": request.action, "limit": request.limit,
               "force": request.force}
    with upstream("SQS"):
        dlqs = dead_letter_queues(deps.settings, deps.sqs, queue)
        depth = sum(d.depth() for d in dlqs)
        if min(depth, request.limit or depth) <= SYNC_REDRIVE_MAX:
            return RedriveResult(**redrive_all(dlqs, **filters))
        job = RedriveJob(dlqs, **filters)
    for old in [j for j in JOBS.values() if j.state != "running"][: max(0, len(JOBS) - MAX_JOBS + 1)]:
        JOBS.pop(old.id, None)
    JOBS[job.id] = job.start()
    response.status_code = 202
    response.headers["Location"] = f"/v1/dlq/redrive/{job.id}"
    return _job_status(job)


@router.get("/redrive/{job_id}", response_model=RedriveJobStatus,
            responses={404: {"description": "no such redrive job in this API process"}})
def redrive_status(deps: Deps, job_id: Annotated[str, Path(max_length=32)]) -> RedriveJobStatus:
    """How a redrive job goes: messages moved so far, and its result once it ended."""
    job = JOBS.get(job_id)
    if job is None:
        raise HTTPException(404, "no such redrive job (jobs live in the API process that "
                                 "started them)")
    return _job_status(job)


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
