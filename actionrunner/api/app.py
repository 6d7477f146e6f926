"""The FastAPI application: ``create_app()``."""

from __future__ import annotations

import hashlib
import time
import uuid
from typing import Annotated, Any

from botocore.exceptions import BotoCoreError, ClientError
from fastapi import Body, Depends, FastAPI, Header, HTTPException, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from kombu.exceptions import OperationalError

from .. import constants as C
from .. import keys
from ..action import Action, is_action
from ..errors import ActionError, ActionInputError, ConfigurationError
from ..logging import get_logger
from ..settings import Settings, get_settings
from .auth import require
from .models import (
    Accepted,
    ActionInfo,
    DeadLetterOut,
    PurgeRequest,
    PurgeResult,
    QueueStats,
    RedriveRequest,
    RedriveResult,
    RunStatus,
)

log = get_logger("actionrunner.api")

#: Errors that mean SQS (or DynamoDB) cannot be reached or used right now → 503.
UNAVAILABLE = (ConfigurationError, OperationalError, BotoCoreError, OSError)


class Unavailable(Exception):
    def __init__(self, what: str, cause: BaseException):
        super().__init__(f"{what} is unavailable: {cause}")


def _registry() -> dict[str, Action]:
    from ..app import app, import_action_modules

    import_action_modules(app)
    return {name: task for name, task in app.tasks.items() if is_action(task)}


def create_app(settings: Settings | None = None) -> FastAPI:
    """The admin API for ``settings`` (default: from the environment)."""
    settings = settings or get_settings()
    api = FastAPI(
        title="ActionRunner admin API",
        version="1",
        description="Submit actions to the SQS FIFO queue, follow their runs, work the DLQ. "
                    "Authenticate with `Authorization: Bearer <token>`.",
    )
    api.state.settings = settings
    api.state.actions = _registry()

    @api.exception_handler(Unavailable)
    def _unavailable(request: Request, exc: Unavailable) -> JSONResponse:
        return JSONResponse(status_code=503, content={"detail": str(exc)})

    from ..runs import API_RUN_HEADER, RunStore

    # One client each for the life of the app (boto3 clients are thread-safe; making one costs ms).
    clients = {"sqs": settings.client("sqs"), "dynamodb": settings.client("dynamodb")}
    run_store = RunStore(settings, client=clients["dynamodb"])

    def sqs() -> Any:
        return clients["sqs"]

    def runs() -> Any:
        return run_store

    # -- health ----------------------------------------------------------------------------
    @api.get("/healthz", tags=["health"])
    def healthz() -> dict[str, str]:
        """The process is up."""
        return {"status": "ok"}

    @api.get("/readyz", tags=["health"], responses={503: {"description": "SQS unreachable"}})
    def readyz() -> dict[str, str]:
        """SQS answers and the queue exists."""
        try:
            client = sqs()
            url = client.get_queue_url(QueueName=settings.queue_name)["QueueUrl"]
            client.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
        except (ClientError, *UNAVAILABLE) as exc:
            raise Unavailable("SQS", exc) from exc
        return {"status": "ready", "queue": settings.queue_name}

    # -- actions ---------------------------------------------------------------------------
    @api.get("/v1/actions", tags=["actions"], response_model=list[ActionInfo])
    def list_actions(_: Annotated[Any, Depends(require("submit"))]) -> list[ActionInfo]:
        """Every action this deployment knows, with the JSON Schema of its inputs."""
        infos = []
        for name, action in sorted(api.state.actions.items()):
            group = action.message_group
            infos.append(ActionInfo(
                name=name, group=group if isinstance(group, str) or group is None else "callable",
                max_attempts=action.max_attempts, input_schema=action.input_model.model_json_schema(),
            ))
        return infos

    @api.post(
        "/v1/actions/{name}", tags=["actions"], status_code=202, response_model=Accepted,
        responses={404: {"description": "unknown action"}, 422: {"description": "invalid inputs"},
                   503: {"description": "SQS unreachable: nothing was sent"}},
    )
    def submit(
        response: Response,
        _: Annotated[Any, Depends(require("submit"))],
        name: Annotated[str, Path(max_length=256)],
        inputs: Annotated[dict[str, Any], Body(description="The action's inputs.")],
        group: Annotated[str | None, Query(max_length=128, description="MessageGroupId override.")] = None,
        idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key", max_length=128)] = None,
    ) -> Accepted:
        """Validate and send one action. 202 only once SQS has accepted the message."""
        action = api.state.actions.get(name)
        if action is None:
            raise HTTPException(404, f"no action named {name!r}")
        run_id = str(uuid.uuid4())  # also the call id: every submit is a run of its own
        try:
            call = action.prepare(kwargs=inputs, group=group, call_id=run_id)
        except ActionInputError as exc:
            raise HTTPException(422, [{"loc": ["body", *field.split(".")], "msg": msg,
                                       "type": "value_error"}
                                      for field, msg in exc.field_errors.items()]) from None
        except ActionError as exc:
            raise HTTPException(422, str(exc)) from None
        replayed, sent, dedup_id = False, False, call.dedup_id
        headers: dict[str, Any] = {API_RUN_HEADER: 1}
        if idempotency_key is not None:
            run_id, replayed, sent = _claim_key(name, idempotency_key, call, run_id)
            # the key, not the call id, makes the ids: a repeat is the same call
            dedup_id = keys.dedup_id(name, f"api-key:{idempotency_key}")
            headers[C.IDEMPOTENCY_KEY_HEADER] = f"api-key:{idempotency_key}"
        headers[C.CALL_ID_HEADER] = run_id
        if not replayed or not sent:  # (a repeat whose first send failed sends it now)
            try:
                action.apply_async(kwargs=call.kwargs, task_id=run_id, MessageGroupId=call.group,
                                   MessageDeduplicationId=dedup_id, headers=headers)
            except UNAVAILABLE as exc:
                raise Unavailable("SQS", exc) from exc
            if idempotency_key is not None:
                _mark_sent(name, idempotency_key)
            try:
                if settings.run_status != "off":
                    runs().queued(run_id, name, call.group, dedup_id)
            except Exception:  # the message is sent: a missing status row must not be an error
                log.warning("run-status-write-failed", run_id=run_id, exc_info=True)
        if replayed:
            response.headers["Idempotent-Replayed"] = "true"
        return Accepted(run_id=run_id, status_url=f"/v1/runs/{run_id}", action=name,
                        group=call.group, dedup_id=dedup_id, replayed=replayed)

    def _key_pk(name: str, key: str) -> dict[str, Any]:
        return {"pk": {"S": f"apikey#{name}#{key}"}}

    def _claim_key(name: str, key: str, call: Any, run_id: str) -> tuple[str, bool, bool]:
        """``(run_id, replayed, sent)``. First use of an Idempotency-Key stores its run id; a
        repeat gets the same run id, and sends nothing if the first use's message was sent. The
        record lives ``ACTIONRUNNER_IDEMPOTENCY_TTL_SECONDS``, as long as the worker's record of
        the key (the message carries the key: its run's idempotency key derives from it)."""
        fingerprint = hashlib.sha256(keys.canonical_json([call.kwargs, call.group])).hexdigest()
        table, client = settings.state_table, clients["dynamodb"]
        item = {**_key_pk(name, key), "run_id": {"S": run_id},
                "fingerprint": {"S": fingerprint},
                "expires_at": {"N": str(int(time.time()) + settings.idempotency_ttl_seconds)}}
        try:
            client.put_item(TableName=table, Item=item,
                            ConditionExpression="attribute_not_exists(pk) OR expires_at <= :now",
                            ExpressionAttributeValues={":now": {"N": str(int(time.time()))}})
            replayed, sent = False, False
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise Unavailable("DynamoDB", exc) from exc
            stored = client.get_item(TableName=table, Key={"pk": item["pk"]},
                                     ConsistentRead=True)["Item"]
            if stored["fingerprint"]["S"] != fingerprint:
                raise HTTPException(
                    422, "Idempotency-Key was already used with different inputs or group"
                ) from None
            run_id, replayed = stored["run_id"]["S"], True
            sent = stored.get("sent", {}).get("BOOL", False)
        except UNAVAILABLE as exc:
            raise Unavailable("DynamoDB", exc) from exc
        return run_id, replayed, sent

    def _mark_sent(name: str, key: str) -> None:
        """Record that the key's message is on the queue (a repeat then sends nothing)."""
        try:
            clients["dynamodb"].update_item(TableName=settings.state_table, Key=_key_pk(name, key),
                                            UpdateExpression="SET sent = :t",
                                            ExpressionAttributeValues={":t": {"BOOL": True}})
        except Exception:  # a repeat re-sends: SQS's window and the key's record drop it
            log.warning("idempotency-key-mark-failed", action=name, exc_info=True)

    # -- runs ------------------------------------------------------------------------------
    @api.get("/v1/runs/{run_id}", tags=["runs"], response_model=RunStatus,
             responses={404: {"description": "unknown run (or expired)"}})
    def get_run(_: Annotated[Any, Depends(require("submit"))],
                run_id: Annotated[str, Path(max_length=64)]) -> RunStatus:
        """Status, attempts, timestamps, and the result or the error of one run."""
        try:
            found = runs().get(run_id)
        except UNAVAILABLE as exc:
            raise Unavailable("DynamoDB", exc) from exc
        except ClientError as exc:
            raise Unavailable("DynamoDB", exc) from exc
        if found is None:
            raise HTTPException(404, f"no run {run_id!r}")
        return RunStatus.model_validate(found)

    # -- queues and DLQ --------------------------------------------------------------------
    def _dlq() -> Any:
        from ..dlq import DeadLetterQueue

        try:
            return DeadLetterQueue(settings, client=clients["sqs"])
        except (ClientError, *UNAVAILABLE) as exc:
            raise Unavailable("SQS", exc) from exc

    @api.get("/v1/queues", tags=["admin"], response_model=list[QueueStats])
    def queues(_: Annotated[Any, Depends(require("admin"))]) -> list[QueueStats]:
        """The queue and its DLQ: messages visible, in flight, age of the oldest."""
        from ..dlq import queue_stats

        try:
            return [QueueStats.model_validate(s) for s in queue_stats(settings, clients["sqs"])]
        except (ClientError, *UNAVAILABLE) as exc:
            raise Unavailable("SQS", exc) from exc

    @api.get("/v1/dlq", tags=["admin"], response_model=list[DeadLetterOut])
    def list_dlq(_: Annotated[Any, Depends(require("admin"))],
                 limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[DeadLetterOut]:
        """Messages in the dead-letter queue, with the failure recorded on each."""
        try:
            return [d.summary() for d in _dlq().list(limit)]
        except (ClientError, *UNAVAILABLE) as exc:
            raise Unavailable("SQS", exc) from exc

    @api.post("/v1/dlq/redrive", tags=["admin"], response_model=RedriveResult)
    def redrive(_: Annotated[Any, Depends(require("admin"))],
                request: Annotated[RedriveRequest | None, Body()] = None) -> RedriveResult:
        """Move DLQ messages back to the queue: all, or those of a group / an action."""
        request = request or RedriveRequest()
        try:
            moved = _dlq().redrive(group=request.group, action=request.action, limit=request.limit)
        except (ClientError, *UNAVAILABLE) as exc:
            raise Unavailable("SQS", exc) from exc
        return RedriveResult(**moved)

    @api.post("/v1/dlq/purge", tags=["admin"], response_model=PurgeResult,
              responses={400: {"description": "missing or wrong confirmation"}})
    def purge(_: Annotated[Any, Depends(require("admin"))],
              request: Annotated[PurgeRequest | None, Body()] = None) -> PurgeResult:
        """Delete everything in the DLQ. Needs ``{"confirm": "<the DLQ's name>"}``."""
        if request is None or request.confirm != settings.dlq_name:
            raise HTTPException(400, f"to purge, send {{\"confirm\": \"{settings.dlq_name}\"}}")
        try:
            return PurgeResult(purged=_dlq().purge())
        except ClientError as exc:
            if "PurgeQueueInProgress" in exc.response["Error"]["Code"]:
                raise HTTPException(409, "a purge ran less than 60 s ago; try again later") from None
            raise Unavailable("SQS", exc) from exc
        except UNAVAILABLE as exc:
            raise Unavailable("SQS", exc) from exc

    return api
