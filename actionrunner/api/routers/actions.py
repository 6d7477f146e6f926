"""``/v1/actions``: the actions this deployment knows, and submitting one (``submit`` scope)."""

from __future__ import annotations

import hashlib
import uuid
from typing import Annotated, Any

from fastapi import Body, Header, HTTPException, Path, Query, Response
from kombu.exceptions import EncodeError
from kombu.serialization import dumps as kombu_dumps

from ... import constants as C
from ... import keys
from ...action import Action, PreparedCall
from ...errors import ActionInputError
from ...logging import get_logger
from ...runs import API_RUN_HEADER
from .. import encoding
from ..auth import router as scoped_router
from ..deps import Deps, Services
from ..errors import upstream
from ..models import Accepted, ActionInfo

log = get_logger("actionrunner.api")
router = scoped_router("submit", prefix="/v1/actions", tags=["actions"])


@router.get("", response_model=list[ActionInfo])
def list_actions(deps: Deps) -> list[ActionInfo]:
    """Every action this deployment knows, with the JSON Schema of its inputs."""
    infos = []
    for name, action in sorted(deps.actions.items()):
        group = action.message_group
        infos.append(ActionInfo(
            name=name, group=group if isinstance(group, str) or group is None else "callable",
            max_attempts=action.max_attempts, input_schema=action.input_model.model_json_schema(),
        ))
    return infos


@router.post(
    "/{name}", status_code=202, response_model=Accepted,
    responses={404: {"description": "unknown action"}, 422: {"description": "invalid inputs"},
               503: {"description": "SQS unreachable: nothing was sent"}},
)
def submit(
    response: Response,
    deps: Deps,
    name: Annotated[str, Path(max_length=256)],
    inputs: Annotated[dict[str, Any], Body(description="The action's inputs.")],
    group: Annotated[str | None, Query(max_length=128, description="MessageGroupId override.")] = None,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key", max_length=128)] = None,
) -> Accepted:
    """Validate and send one action. 202 only once SQS has accepted the message."""
    action = deps.actions.get(name)
    if action is None:
        raise HTTPException(404, f"no action named {name!r}")
    run_id = str(uuid.uuid4())  # also the call id: every submit is a run of its own
    call = action.prepare(kwargs=inputs, group=group, call_id=run_id)  # ActionError → 422
    _check_encodable(action, inputs, call)  # → 422 naming each field that cannot travel
    replayed, sent, dedup_id = False, False, call.dedup_id
    headers: dict[str, Any] = {API_RUN_HEADER: 1}
    if idempotency_key is not None:
        run_id, replayed, sent = _claim_key(deps, name, idempotency_key, call, run_id)
        # the key, not the call id, makes the ids: a repeat is the same call
        dedup_id = keys.dedup_id(name, f"api-key:{idempotency_key}")
        headers[C.IDEMPOTENCY_KEY_HEADER] = f"api-key:{idempotency_key}"
    headers[C.CALL_ID_HEADER] = run_id
    if not (replayed and sent):  # a repeat whose first send did not complete sends it now
        _send(action, call, run_id, dedup_id, headers)
        if idempotency_key is not None:
            try:
                deps.api_keys.mark_sent(name, idempotency_key)
            except Exception:  # a repeat re-sends: SQS's window and the key's record drop it
                log.warning("idempotency-key-mark-failed", action=name, exc_info=True)
        try:
            if deps.settings.run_status != "off":
                deps.runs.queued(run_id, name, call.group, dedup_id)
        except Exception:  # the message is sent: a missing status row must not be an error
            log.warning("run-status-write-failed", run_id=run_id, exc_info=True)
    if replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return Accepted(run_id=run_id, status_url=f"/v1/runs/{run_id}", action=name,
                    group=call.group, dedup_id=dedup_id, replayed=replayed)


def _check_encodable(action: Action, inputs: dict[str, Any], call: PreparedCall) -> None:
    """:class:`ActionInputError` (→ 422) naming each input that cannot be sent as it is: what was
    posted (NaN, a lone surrogate), what validation made of it (a string coerced to a 70-bit
    integer), and, the last word, what the action's serializer says of it (its ``EncodeError``
    is otherwise a 500 from inside ``apply_async``)."""
    found = encoding.problems(inputs) or encoding.problems(call.kwargs)
    if not found:
        serializer = action.app.conf.task_serializer
        try:
            kombu_dumps(call.kwargs, serializer=serializer)
        except EncodeError:
            for name, value in call.kwargs.items():
                try:
                    kombu_dumps({name: value}, serializer=serializer)
                except EncodeError as exc:
                    found[name] = f"cannot be encoded ({type(exc.__cause__ or exc).__name__})"
            found = found or {"(inputs)": "cannot be encoded"}
    if found:
        raise ActionInputError(action.name, found)


def _send(action: Action, call: PreparedCall, run_id: str, dedup_id: str,
          headers: dict[str, Any]) -> None:
    with upstream("SQS"):
        action.apply_async(kwargs=call.kwargs, task_id=run_id, MessageGroupId=call.group,
                           MessageDeduplicationId=dedup_id, headers=headers)


def _claim_key(deps: Services, name: str, key: str, call: PreparedCall,
               run_id: str) -> tuple[str, bool, bool]:
    """``(run_id, replayed, sent)``: the first use of an Idempotency-Key stores its run id; a
    repeat gets the same run id, and whether its message was sent (then nothing is sent again).
    The key lives ACTIONRUNNER_IDEMPOTENCY_TTL_SECONDS, as the worker's record of it does."""
    fingerprint = hashlib.sha256(keys.canonical_json([call.kwargs, call.group])).hexdigest()
    with upstream("DynamoDB"):
        return deps.api_keys.claim(name, key, run_id, fingerprint)
