"""Request and response bodies of the admin API."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from ..dlq import DeadLetterSummary


class Accepted(BaseModel):
    run_id: str
    status_url: str
    action: str
    group: str
    dedup_id: str
    replayed: bool = Field(default=False, description="True when an Idempotency-Key was seen before.")


class ActionInfo(BaseModel):
    name: str
    group: str | None = Field(description="The MessageGroupId template, 'callable', or None.")
    max_attempts: int
    input_schema: dict[str, Any]


class RunStatus(BaseModel):
    run_id: str
    action: str | None = None
    status: str
    group: str | None = None
    dedup_id: str | None = None
    attempts: int | None = None
    receive_count: int | None = None
    queued_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    updated_at: float | None = None
    duration_ms: float | None = None
    result: Any = None
    error_type: str | None = None
    error: str | None = None
    replayed: bool = Field(default=False, description="True when a keyed call returned the saved "
                           "result of an earlier run of its key instead of running.")


class QueueStats(BaseModel):
    queue: str = Field(description="The queue this row belongs to (itself, or the queue whose "
                                   "DLQ it is).")
    role: str
    name: str
    url: str
    visible: int
    in_flight: int
    oldest_age_s: float | None = Field(description="From CloudWatch; null where it has no data.")


#: GET /v1/dlq's items: the same model the CLI prints.
DeadLetterOut = DeadLetterSummary


class RedriveRequest(BaseModel):
    group: str | None = Field(default=None, max_length=128)
    action: str | None = Field(default=None, max_length=256)
    limit: int | None = Field(default=None, ge=1, le=100_000)
    force: bool = Field(default=False, description="Redrive messages redriven "
                        "ACTIONRUNNER_MAX_REDRIVES times already (else left in the DLQ).")


class RedriveResult(BaseModel):
    moved: int
    skipped: int
    by_queue: dict[str, int] = Field(default_factory=dict,
                                     description="Messages moved, by the queue they went back to.")
    unknown_source: int = Field(default=0, description="Messages left because the queue they "
                                "came from is not in the settings (a removed lane).")
    newer: int = Field(default=0, description="Dead letters that arrived after the redrive "
                       "began (e.g. redriven ones that failed again): left for the next one.")
    left: list[dict[str, str]] = Field(default_factory=list, description="Messages left in the "
                                       "DLQ with the reason (the first 20).")
    not_deleted: int = Field(default=0, description="Sent back, but their DLQ copy could not be "
                             "deleted (a redrive within 5 minutes is dropped by SQS's dedup).")
    stopped: bool = Field(default=False, description="Ended early (the API was stopping).")


class RedriveJobStatus(BaseModel):
    """A redrive too large to answer at once, running in the API (GET its ``status_url``)."""

    id: str
    state: str = Field(description="running, succeeded, stopped (the API stopped) or failed")
    moved: int
    total_at_start: int
    result: RedriveResult | None = None
    error: str | None = None
    started_at: float
    status_url: str = ""


class PurgeRequest(BaseModel):
    confirm: str = Field(default="", max_length=256,
                         description="Must be the DLQ's name, e.g. 'actions-dlq.fifo'.")


class PurgeResult(BaseModel):
    purged: int
