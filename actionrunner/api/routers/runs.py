"""``/v1/runs/{run_id}``: what became of a run the API accepted (``submit`` scope)."""

from __future__ import annotations

from typing import Annotated

from fastapi import HTTPException, Path

from ..auth import router as scoped_router
from ..deps import Deps
from ..errors import upstream
from ..models import RunStatus

router = scoped_router("submit", prefix="/v1/runs", tags=["runs"])


@router.get("/{run_id}", response_model=RunStatus,
            responses={404: {"description": "unknown run (or expired)"}})
def get_run(deps: Deps, run_id: Annotated[str, Path(max_length=64)]) -> RunStatus:
    """Status, attempts, timestamps, and the result or the error of one run."""
    with upstream("DynamoDB"):
        found = deps.runs.get(run_id)
    if found is None:
        raise HTTPException(404, f"no run {run_id!r}")
    return RunStatus.model_validate(found)
