"""Run status: what became of each action run, kept in the state table with a TTL.

The admin API writes ``queued`` when it accepts a run, and marks its message (header
``ar_api_run``); the worker writes the rest as lifecycle events happen (``running``,
``succeeded`` with the result, ``failed``, ``retrying``, ``dead-lettered``, ``held``). Items
live in the single ActionRunner state table under ``pk = "run#{id}"``
(:mod:`actionrunner.state.schema`)::

    >>> store = RunStore(get_settings())                   # doctest: +SKIP
    >>> store.get("5f0c…")                                  # doctest: +SKIP
    {'run_id': '5f0c…', 'action': 'tasks.demo.hello', 'status': 'succeeded', 'attempts': 1, ...}

The worker's status writes are best effort: the client retries throttling, 5xx answers, resets
and timeouts a few times (each write is idempotent: the same event written twice is the same
item), and a write that still fails is a warning line — never the action's failure, nor a wait.
"""

from __future__ import annotations

import contextlib
import time
from decimal import Decimal
from typing import Any

import orjson

from . import runtime
from .logging import get_logger
from .runtime import Runtime
from .settings import Settings
from .state.schema import STATE_KEY, STATE_TTL_ATTRIBUTE, expiry, key, run_pk
from .state.throttling import state_client_config

log = get_logger("actionrunner.runs")

#: Lifecycle event → run status.
STATUS_OF_EVENT = {
    "started": "running",
    "succeeded": "succeeded",
    "failed": "failed",
    "retrying": "retrying",
    "dead-lettered": "dead-lettered",
    "held": "held",
    "revoked": "revoked",
}
#: Every status a run can have.
STATUSES = ("queued", *dict.fromkeys(STATUS_OF_EVENT.values()))
#: Message header that marks a run the admin API accepted (its status is followed).
API_RUN_HEADER = "ar_api_run"
#: Largest result (JSON bytes) kept with a run; a larger one is replaced by a note.
MAX_RESULT_BYTES = 100_000


def _json_default(value: Any) -> Any:
    """What JSON cannot hold as it is: a Celery result (a task that returns the AsyncResult or
    GroupResult of what it sent) as Celery's backends store it, ``as_tuple()``; a subclass of a
    JSON type (a namedtuple, a lazy list) as its plain value; else its text."""
    from celery.result import ResultBase

    from .sqs.codec import as_builtin

    if isinstance(value, ResultBase) and callable(getattr(value, "as_tuple", None)):
        return value.as_tuple()
    plain = as_builtin(value)
    return str(value) if plain is NotImplemented else plain


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


class RunStore:
    """Read and write run status in the state table (DynamoDB)."""

    def __init__(self, settings: Settings, client: Any = None) -> None:
        self.settings = settings
        self.table = settings.state_table
        self.client = client or settings.client("dynamodb", config=state_client_config(settings, 3))
        #: Status writes that failed (after the client's retries) and were given up.
        self.failed_writes = 0

    @staticmethod
    def key(run_id: str) -> dict[str, Any]:
        return key(run_pk(run_id))

    def _expires(self) -> dict[str, str]:
        return expiry(self.settings.run_status_ttl_seconds)

    def queued(self, run_id: str, action: str, group: str, dedup_id: str) -> None:
        """Record a run the API accepted (before the worker has seen it)."""
        now = time.time()
        self.client.update_item(
            TableName=self.table, Key=self.key(run_id),
            UpdateExpression=(
                "SET run_id = :id, #a = :a, #g = :g, dedup_id = :d, queued_at = :now, "
                "updated_at = :now, #expires = :exp, #s = if_not_exists(#s, :queued)"
            ),
            ExpressionAttributeNames={"#a": "action", "#g": "group", "#s": "status",
                                      "#expires": STATE_TTL_ATTRIBUTE},
            ExpressionAttributeValues={
                ":id": {"S": run_id}, ":a": {"S": action}, ":g": {"S": group},
                ":d": {"S": dedup_id}, ":now": {"N": repr(now)}, ":exp": self._expires(),
                ":queued": {"S": "queued"},
            },
        )

    def record(self, event: str, fields: dict[str, Any], result: Any = None) -> None:
        """Apply a lifecycle event of a run (an observer of :func:`actionrunner.events.emit`);
        best effort: a write that fails is logged and given up."""
        try:
            self._record(event, fields, result)
        except Exception as exc:
            self.failed_writes += 1
            log.warning("run-status-write-failed", lifecycle_event=event, id=fields.get("id"),
                        error=repr(exc)[:300])

    def _record(self, event: str, fields: dict[str, Any], result: Any) -> None:
        status = STATUS_OF_EVENT.get(event)
        run_id = fields.get("id")
        if status is None or not run_id or not fields.get("action"):
            return
        now = time.time()
        names = {"#s": "status", "#a": "action", "#expires": STATE_TTL_ATTRIBUTE}
        values: dict[str, Any] = {
            ":s": {"S": status}, ":a": {"S": fields["action"]}, ":id": {"S": run_id},
            ":now": {"N": repr(now)}, ":exp": self._expires(),
        }
        sets = ["#s = :s", "#a = :a", "run_id = :id", "updated_at = :now", "#expires = :exp"]
        optional = {
            "group": "S", "dedup_id": "S", "attempt": "N", "receive_count": "N",
            "duration_ms": "N", "error_type": "S", "error": "S", "error_module": "S",
            "error_args": "S",
        }
        for name, kind in optional.items():
            if fields.get(name) is not None:
                token = f":{name}"
                attribute = {"attempt": "attempts"}.get(name, name)
                names[f"#{name}"] = attribute
                sets.append(f"#{name} = {token}")
                values[token] = {kind: str(fields[name])}
        if status == "succeeded" and fields.get("idempotent_replay"):
            # a keyed call that returned the saved result of an earlier run, without running
            sets.append("replayed = :replayed")
            values[":replayed"] = {"BOOL": True}
        if status == "running":
            sets.append("started_at = :now")
        if status in ("succeeded", "dead-lettered", "held", "revoked"):
            sets.append("finished_at = :now")
        if status == "succeeded":
            encoded = orjson.dumps(result, default=_json_default,
                                   option=orjson.OPT_PASSTHROUGH_SUBCLASS)
            if len(encoded) > MAX_RESULT_BYTES:
                encoded = orjson.dumps({"note": f"result of {len(encoded)} bytes not kept"})
            sets.append("#r = :r")
            names["#r"] = "result"
            values[":r"] = {"S": encoded.decode()}
        # Events come from two processes (the pool process: running, failed; the main one:
        # retrying, dead-lettered); the later event wins, whichever write lands last (an earlier
        # one that lands after it fails its condition and is dropped).
        condition = "(attribute_not_exists(updated_at) OR updated_at <= :now)"
        if status == "failed":
            # a chord member's final failure is stored (dead-lettered) before the pool's
            # "failed" line: that line must not make a run that ended look unfinished again
            # (a redriven run is "running" first, which this does not block)
            condition += " AND (attribute_not_exists(#s) OR #s <> :dead)"
            values[":dead"] = {"S": "dead-lettered"}
        with contextlib.suppress(self.client.exceptions.ConditionalCheckFailedException):
            self.client.update_item(
                TableName=self.table, Key=self.key(run_id),
                UpdateExpression="SET " + ", ".join(sets),
                ConditionExpression=condition,
                ExpressionAttributeNames=names, ExpressionAttributeValues=values,
            )

    def set_state(self, run_id: str, state: str, meta: Any, *, action: str) -> None:
        """Keep a Celery state a task stores while it runs (``update_state(state="PROGRESS",
        meta=...)``, ``STARTED``) and its meta beside the run's status (which it does not
        change): the result backend reads it back until the run ends."""
        encoded = orjson.dumps(meta, default=_json_default)
        if len(encoded) > MAX_RESULT_BYTES:
            encoded = orjson.dumps({"note": f"meta of {len(encoded)} bytes not kept"})
        self.client.update_item(
            TableName=self.table, Key=self.key(run_id),
            UpdateExpression=("SET celery_state = :st, celery_meta = :m, run_id = :id, "
                              "#a = if_not_exists(#a, :a), #s = if_not_exists(#s, :queued), "
                              "#expires = :exp"),
            ExpressionAttributeNames={"#a": "action", "#s": "status",
                                      "#expires": STATE_TTL_ATTRIBUTE},
            ExpressionAttributeValues={":st": {"S": state}, ":m": {"S": encoded.decode()},
                                       ":id": {"S": run_id}, ":a": {"S": action},
                                       ":queued": {"S": "queued"}, ":exp": self._expires()})

    def get(self, run_id: str) -> dict[str, Any] | None:
        """The run's status as plain values, or None."""
        item = self.client.get_item(TableName=self.table, Key=self.key(run_id),
                                    ConsistentRead=True).get("Item")
        if not item:
            return None
        from boto3.dynamodb.types import TypeDeserializer

        plain: dict[str, Any] = _plain({k: TypeDeserializer().deserialize(v) for k, v in item.items()})
        plain.pop(STATE_KEY, None)
        plain.pop(STATE_TTL_ATTRIBUTE, None)
        for name in ("result", "celery_meta"):
            if isinstance(plain.get(name), str):
                plain[name] = orjson.loads(plain[name])
        return plain


def run_store(rt: Runtime | None = None) -> RunStore:
    """The run store of ``rt`` (default: this process's runtime; a forked pool process has its
    own, with its own client)."""
    return (rt or runtime.current()).part(
        "run-store", lambda rt: RunStore(rt.settings, client=rt.state_client(3)))


def install_worker_observer(settings: Settings | None = None) -> None:
    """Write run status from this worker's lifecycle events (main and pool processes): of the
    runs the API accepted (unless ``ACTIONRUNNER_RUN_STATUS=off``), and of every action whose
    results are kept (``ACTIONRUNNER_RUN_STATUS=all``, or ``@action(ignore_result=False)``).
    The writes go through the process's runtime; ``settings`` other than its settings start a
    runtime of their own."""
    from .events import observe

    if settings is not None and settings is not runtime.current().settings:
        runtime.start(settings)
    observe(_record)


_tasks: dict[str, Any] = {}  # action name → its task (registry lookups through current_app)


def keeps_results(action: str | None) -> bool:
    """True when the runs of ``action`` are kept (its ``ignore_result`` is off)."""
    if not action:
        return False
    task = _tasks.get(action)
    if task is None:
        from celery import current_app  # the worker's app (actionrunner.app), without importing it

        task = current_app.tasks.get(action)
        if task is None:
            return False
        _tasks[action] = task
    return task.ignore_result is False


def _record(event: str, fields: dict[str, Any], result: Any) -> None:
    if event not in STATUS_OF_EVENT:
        return
    if fields.get("api_run"):
        rt = runtime.current()
        if rt.settings.run_status == "off" and not keeps_results(fields.get("action")):
            return
    elif keeps_results(fields.get("action")):
        rt = runtime.current()
    else:  # the common case: nothing of this run is kept (no runtime asked for)
        return
    run_store(rt).record(event, fields, result)
