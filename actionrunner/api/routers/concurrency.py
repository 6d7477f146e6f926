"""``/v1/concurrency``: the fleet-wide caps of actions (``@action(max_concurrency=N)``): read them,
set one live, remove the live value (``admin`` scope). See :mod:`actionrunner.state.concurrency`."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Body, HTTPException, Path, Request

from ...errors import ActionError
from ...state.concurrency import capped_action, reset_live, set_live, status
from ..auth import router as scoped_router
from ..deps import Deps
from ..errors import upstream
from ..models import ConcurrencyChange, ConcurrencyStatus

router = scoped_router("admin", prefix="/v1/concurrency", tags=["admin"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"description": "unknown action"},
    409: {"description": "the action declares no max_concurrency (it takes no leases)"}}
Name = Annotated[str, Path(max_length=256)]


def _task(deps: Deps, name: str) -> Any:
    if name not in deps.actions:
        raise HTTPException(404, f"no action named {name!r}")
    try:
        return capped_action(deps.actions, name)
    except ActionError as exc:
        raise HTTPException(409, str(exc)) from None


def _client(request: Request) -> Any:
    return request.app.state.runtime.client("dynamodb")


@router.get("", response_model=list[ConcurrencyStatus])
def list_caps(deps: Deps, request: Request) -> list[ConcurrencyStatus]:
    """Every action with a max_concurrency: declared, live, in force, runs holding a lease."""
    tasks = [t for _, t in sorted(deps.actions.items()) if t.max_concurrency is not None]
    with upstream("DynamoDB"):
        return [ConcurrencyStatus(**status(deps.settings.state_table, _client(request), t))
                for t in tasks]


@router.get("/{name}", response_model=ConcurrencyStatus, responses=_ERRORS)
def get_cap(deps: Deps, request: Request, name: Name) -> ConcurrencyStatus:
    """One action's cap and the runs holding it."""
    task = _task(deps, name)
    with upstream("DynamoDB"):
        return ConcurrencyStatus(**status(deps.settings.state_table, _client(request), task))


@router.put("/{name}", response_model=ConcurrencyStatus, responses=_ERRORS)
def put_cap(deps: Deps, request: Request, name: Name,
            change: Annotated[ConcurrencyChange, Body()]) -> ConcurrencyStatus:
    """Set the action's cap live for every worker and Lambda invocation (it overrides the
    declared one; runs holding a lease finish)."""
    task = _task(deps, name)
    with upstream("DynamoDB"):
        set_live(deps.settings.state_table, _client(request), task.name, change.max_concurrency)
        return ConcurrencyStatus(**status(deps.settings.state_table, _client(request), task))


@router.delete("/{name}", response_model=ConcurrencyStatus, responses=_ERRORS)
def delete_cap(deps: Deps, request: Request, name: Name) -> ConcurrencyStatus:
    """Remove the live value: the declared max_concurrency applies again."""
    task = _task(deps, name)
    with upstream("DynamoDB"):
        reset_live(deps.settings.state_table, _client(request), task.name)
        return ConcurrencyStatus(**status(deps.settings.state_table, _client(request), task))
