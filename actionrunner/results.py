"""Celery results over the run records of the state table (one store, not a second one).

When an action's results are kept — ``ACTIONRUNNER_RUN_STATUS=all`` (Celery's
``task_ignore_result`` is then off), or ``@action(ignore_result=False)`` — its runs are written to
the state table by the worker (:mod:`actionrunner.runs`, ``pk = "run#{id}"``), and
:class:`RunResultBackend`, the app's Celery result backend, reads them back::

    >>> r = recalc.delay(tenant_id="t1", season=3)            # doctest: +SKIP
    >>> r.get(timeout=10), r.state, r.ready()                  # doctest: +SKIP
    ({'tenant': 't1', 'season': 3}, 'SUCCESS', True)

Run status → Celery state: ``queued`` (or no record yet) → PENDING, ``running`` → STARTED
(with Celery's ``task_track_started`` or the task's ``track_started``; else PENDING, as Celery),
``failed`` / ``retrying`` / ``held`` → RETRY (the message will run again), ``succeeded`` →
SUCCESS with the result, ``dead-lettered`` → FAILURE with the error (``.get()`` raises it),
``revoked`` (expired, or revoked with ``celery control revoke``) → REVOKED.

Groups and chords: a group's member list and a chord's progress are items of the same table
(``pk = "celery#…"``, with the table's TTL). A chord counts each header member once (a set of
member ids, so a redelivered member is not counted twice) and a failed attempt that will be
retried does not count; the body's call id comes from its task id, so sending it again is a
duplicate, not a second run.

When an action's results are not kept, ``AsyncResult.get()``, ``.state``, ``.ready()``,
``.result`` raise :class:`~actionrunner.errors.ResultsNotKept`, which names the setting (not
``None``); a plain Celery task's answer as Celery's do (``.get()`` of an ignored result: ``None``).

A failure's exception class is rebuilt from the module the worker stored with it only if the
reading process has already imported that module (nothing named by stored data is imported);
else from builtins, :mod:`actionrunner.errors` or :mod:`celery.exceptions`, else Celery makes a
class of that name.
"""

from __future__ import annotations

import builtins
import datetime as dt
import json
import sys
import time
from typing import Any, cast

from celery import states
from celery.backends.base import KeyValueStoreBackend
from celery.exceptions import ChordError
from celery.result import AsyncResult, GroupResult, ResultSet, allow_join_result
from celery.utils.log import get_logger as celery_logger

from .errors import ResultsNotKept, error_args_of, error_module_of
from .state.schema import CELERY_PREFIX

logger = celery_logger(__name__)

#: Run status (actionrunner.runs) → Celery state.
STATE_OF_STATUS = {
    "queued": states.PENDING,
    "running": states.STARTED,
    "failed": states.RETRY,
    "retrying": states.RETRY,
    "held": states.RETRY,
    "succeeded": states.SUCCESS,
    "dead-lettered": states.FAILURE,
    "revoked": states.REVOKED,
}
#: Set on a chord member's exception when the join raises it: the member's id (the reason's).
_DEPENDENCY = "_actionrunner_chord_dependency"
#: Prefix of the items this backend keeps besides run records (group members, chord progress).
ITEM_PREFIX = CELERY_PREFIX


def _exception_module(name: str, stored_module: str | None = None) -> str | None:
    """Where an exception type of that name can be found, else None (Celery then makes a class
    of that name; it is still raised, with the message): the module the worker stored, only if
    this process has ALREADY imported it (``sys.modules``; nothing named by stored data is
    imported) and its attribute of that name is an exception class; else builtins, our errors,
    celery.exceptions."""
    if stored_module:
        module = sys.modules.get(stored_module)
        candidate = getattr(module, name, None) if module is not None else None
        if isinstance(candidate, type) and issubclass(candidate, BaseException):
            return stored_module
    candidate = getattr(builtins, name, None)
    if isinstance(candidate, type) and issubclass(candidate, BaseException):
        return "builtins"
    import celery.exceptions

    from . import errors

    for module in (errors, celery.exceptions):
        candidate = getattr(module, name, None)
        if isinstance(candidate, type) and issubclass(candidate, BaseException):
            return module.__name__
    return None


def _exception_args(run: dict[str, Any]) -> list[Any]:
    """The arguments to rebuild a run's exception with: those the worker stored when they were
    more than the message (``error_args``, JSON), else the message."""
    stored = run.get("error_args")
    if stored:
        try:
            args = json.loads(str(stored))
        except ValueError:
            args = None
        if isinstance(args, list):
            return args
    return [str(run.get("error") or "")]


def meta_of_run(run_id: str, run: dict[str, Any] | None, *,
                track_started: bool = True) -> dict[str, Any]:
    """The Celery task meta (undecoded: an exception as a dict) of a run record; a running run
    is STARTED only with ``track_started`` (Celery's ``task_track_started``), else PENDING."""
    if not run:
        return {"task_id": run_id, "status": states.PENDING, "result": None, "traceback": None,
                "children": [], "date_done": None}
    state = STATE_OF_STATUS.get(str(run.get("status")), states.PENDING)
    if state == states.STARTED and not track_started:
        state = states.PENDING
    if run.get("celery_state") and state in (states.PENDING, states.STARTED):
        # a state stored while it runs (update_state, STARTED by a worker that tracks it)
        return {"task_id": run_id, "status": str(run["celery_state"]),
                "result": run.get("celery_meta"), "traceback": None, "children": [],
                "date_done": None, "name": run.get("action")}
    if state == states.FAILURE and run.get("error_type") == "MessageExpired":
        # its expires time passed (it is in the DLQ, marked expired): Celery's REVOKED, as stock
        # Celery reports an expired task, so .get() raises TaskRevokedError
        state = states.REVOKED
        run = {**run, "error_type": "TaskRevokedError"}
    result: Any = None
    if state == states.SUCCESS:
        result = run.get("result")
    elif state in states.EXCEPTION_STATES and run.get("error_type"):
        error_type = str(run["error_type"])
        result = {"exc_type": error_type, "exc_message": _exception_args(run),
                  "exc_module": _exception_module(error_type, run.get("error_module"))}
    finished = run.get("finished_at")
    done = (dt.datetime.fromtimestamp(float(finished), dt.UTC).isoformat()
            if finished and state in states.READY_STATES else None)
    return {"task_id": run_id, "status": state, "result": result, "traceback": None,
            "children": [], "date_done": done, "name": run.get("action")}


class RunResultBackend(KeyValueStoreBackend):
    """Celery's result backend over the state table (see the module docstring)."""

    key_t = str
    supports_autoexpire = True  # the table's TTL removes items; no celery.backend_cleanup
    supports_native_join = True
    implements_incr = True

    def __init__(self, app: Any = None, url: str | None = None, **kwargs: Any) -> None:
        super().__init__(app=app, **kwargs)

    # -- the state table ---------------------------------------------------------------------
    @property
    def runs(self) -> Any:
        """The process's run store (its runtime's: pool processes are forked, each has its own)."""
        from .runs import run_store

        return run_store()

    def _item_key(self, key: str) -> dict[str, Any]:
        return {"pk": {"S": ITEM_PREFIX + key}}

    def _task_id(self, key: str) -> str | None:
        prefix = self.task_keyprefix
        return key[len(prefix):] if key.startswith(prefix) else None

    def _expires_at(self, seconds: float | None = None) -> dict[str, str]:
        ttl = seconds if seconds else self.runs.settings.run_status_ttl_seconds
        return {"N": str(int(time.time() + ttl))}

    def _tracked(self, run: dict[str, Any] | None) -> bool:
        """Whether a run shows STARTED while it runs: Celery's ``task_track_started``, or the
        task's own ``track_started`` (else a running task reads PENDING, as on Celery)."""
        if self.app.conf.task_track_started:
            return True
        task = self.app.tasks.get(str((run or {}).get("action")))
        return bool(getattr(task, "track_started", False))

    # -- KeyValueStoreBackend's primitives ---------------------------------------------------
    def get(self, key: str) -> Any:
        task_id = self._task_id(key)
        if task_id is not None:
            run = self.runs.get(task_id)
            return (self.encode(meta_of_run(task_id, run, track_started=self._tracked(run)))
                    if run else None)
        item = self.runs.client.get_item(TableName=self.runs.table, Key=self._item_key(key),
                                         ConsistentRead=True).get("Item")
        if not item or "value" not in item:
            return None
        if int(item.get("expires_at", {}).get("N", "0")) <= time.time():
            return None
        return item["value"]["S"]

    def mget(self, keys: list[str]) -> list[Any]:
        return [self.get(key) for key in keys]

    def set(self, key: str, value: Any) -> None:
        if self._task_id(key) is not None:
            raise NotImplementedError("task results are written as run records (actionrunner.runs)")
        text = value.decode() if isinstance(value, bytes) else str(value)
        self.runs.client.put_item(TableName=self.runs.table, Item={
            **self._item_key(key), "value": {"S": text}, "expires_at": self._expires_at()})

    def delete(self, key: str) -> None:
        task_id = self._task_id(key)
        pk = self.runs.key(task_id) if task_id is not None else self._item_key(key)
        self.runs.client.delete_item(TableName=self.runs.table, Key=pk)

    def incr(self, key: str) -> int:
        answer = self.runs.client.update_item(
            TableName=self.runs.table, Key=self._item_key(key),
            UpdateExpression="ADD n :one SET expires_at = :exp",
            ExpressionAttributeValues={":one": {"N": "1"}, ":exp": self._expires_at()},
            ReturnValues="UPDATED_NEW")
        return int(answer["Attributes"]["n"]["N"])

    def expire(self, key: str, value: Any) -> None:
        if self._task_id(key) is not None or not value:
            return
        seconds = value.total_seconds() if isinstance(value, dt.timedelta) else float(value)
        self.runs.client.update_item(
            TableName=self.runs.table, Key=self._item_key(key),
            UpdateExpression="SET expires_at = :exp",
            ExpressionAttributeValues={":exp": self._expires_at(seconds)})

    # -- results -----------------------------------------------------------------------------
    def _get_task_meta_for(self, task_id: str) -> dict[str, Any]:
        run = self.runs.get(task_id)
        meta = meta_of_run(task_id, run, track_started=self._tracked(run))
        return cast("dict[str, Any]", self.meta_from_decoded(meta))  # (Celery's backend is untyped)

    def task_result_exists(self, task_id: str) -> bool:
        return self.runs.get(task_id) is not None

    def _store_result(self, task_id: str, result: Any, state: str, traceback: Any = None,
                      request: Any = None, **kwargs: Any) -> Any:
        """The worker writes each run's record from its lifecycle (actionrunner.runs); here are
        written: a chord member's end at once (so that the chord's last member finds every result
        when it joins them), a state a task stores while it runs (``update_state``), a revoke, and
        an end stored by another process (no request)."""
        fields = {"id": task_id, "action": getattr(request, "task", None) or "?"}
        if state == states.REVOKED:  # expired or revoked: discarded without a lifecycle line
            self.runs.record("revoked", {**fields, "error_type": "TaskRevokedError",
                                         "error": str(result)[:1000]})
            return result
        if state not in states.READY_STATES and state not in (states.RETRY, states.PENDING):
            # STARTED, or a state of the task's own (update_state(state="PROGRESS", meta=...)):
            # kept beside the run's status, read back until the run ends
            self.runs.set_state(task_id, state, result, action=fields["action"])
            return result
        if request is None or _for_another_task(task_id):
            # stored by another process, or by a task for another (Celery's chord error handler
            # fails a chord's body and the tasks chained after it): no lifecycle writes these
            if state == states.FAILURE and request is not None and \
                    _attempt_runs_again(self.app, result):
                return result  # the running task's failure handed on to its chain: not an end yet
            if state == states.SUCCESS:
                self.runs.record("succeeded", fields, result)
            elif state == states.FAILURE:
                self.runs.record("dead-lettered", {**fields, **_error_fields(result)})
            return result
        if not getattr(request, "chord", None):
            return result
        if state == states.SUCCESS:
            self.runs.record("succeeded", fields, result)
        elif state == states.FAILURE and _final_failure(self.app, request, result):
            self.runs.record("dead-lettered", {**fields, **_error_fields(result)})
        return result

    def _forget(self, task_id: str) -> None:
        self.runs.client.delete_item(TableName=self.runs.table, Key=self.runs.key(task_id))

    # -- chords ------------------------------------------------------------------------------
    def set_chord_size(self, group_id: str, chord_size: int) -> None:
        """The number of header parts that end the chord (Celery counts them when it sends the
        header: a chain in the header counts its last step, a nested group each member). Kept on
        the chord's progress item; members already counted stay counted."""
        self.runs.client.update_item(
            TableName=self.runs.table, Key=self._item_key(self.get_key_for_chord(group_id)),
            UpdateExpression="SET parts = :n, expires_at = :exp",
            ExpressionAttributeValues={":n": {"N": str(int(chord_size))},
                                       ":exp": self._expires_at()})

    def add_to_chord(self, chord_id: str, result: Any) -> None:
        """``Task.add_to_chord``: one more part for the chord to wait for."""
        self.runs.client.update_item(
            TableName=self.runs.table, Key=self._item_key(self.get_key_for_chord(chord_id)),
            UpdateExpression="ADD added :one SET expires_at = :exp",
            ExpressionAttributeValues={":one": {"N": "1"}, ":exp": self._expires_at()})

    def _fail_chain(self, chain: Any, exc: Any, traceback: Any = None, store_result: bool = True,
                    state: str = states.FAILURE) -> None:
        """Celery's: a failure handed on to what is chained after the failed task, and also to
        the tasks of a group in that chain (Celery skips a group, which has no task of its own,
        so ``(a | fail | group(b, c)).get()`` waits for members that never run: its issue #6437)."""
        super()._fail_chain(_with_group_members(chain), exc, traceback,
                            store_result=store_result, state=state)

    def on_chord_part_return(self, request: Any, state: str, result: Any, **kwargs: Any) -> None:
        """Count this header part once (a set of ids), then, once all are in, join their results
        (bounded by ``result_chord_join_timeout``) and send the body (its task id gives its call
        id: a second send is a duplicate)."""
        if state in states.EXCEPTION_STATES and (not _final_failure(self.app, request, result)
                                                 or _attempt_runs_again(self.app, result)):
            return  # a failed attempt that will be retried: the member is not done
        gid = getattr(request, "group", None)
        if not gid:
            return
        callback = self._signature(request.chord)
        try:
            deps = GroupResult.restore(gid, backend=self)
        except Exception as exc:
            self.chord_error_from_stack(callback, ChordError(f"Cannot restore group: {exc!r}"))
            return
        if deps is None:
            self.chord_error_from_stack(callback, ChordError(f"GroupResult {gid} no longer exists"))
            return
        answer = self.runs.client.update_item(
            TableName=self.runs.table, Key=self._item_key(self.get_key_for_chord(gid)),
            UpdateExpression="ADD members :me SET expires_at = :exp",
            ExpressionAttributeValues={":me": {"SS": [str(request.id)]},
                                       ":exp": self._expires_at()},
            ReturnValues="ALL_NEW")
        progress = answer["Attributes"]
        size = chord_size(request.chord, progress, deps)
        if len(progress["members"]["SS"]) != size:
            return  # not the last part (or a part counted again after the chord ended)
        try:
            ret = self._join(deps, timeout=self.app.conf.result_chord_join_timeout)
        except Exception as exc:
            culprit = getattr(exc, _DEPENDENCY, None)
            reason = f"Dependency {culprit} raised {exc!r}" if culprit else repr(exc)
            logger.error("Chord %r raised: %r", gid, reason)
            error = ChordError(reason)
            if isinstance(exc, Exception):
                error.__cause__ = exc
            self.chord_error_from_stack(callback, error)
            return
        callback.delay(ret)

    def _join(self, deps: Any, timeout: float | None) -> Any:
        """The header's results, nested as the header is (a group in it gives a list), each
        failure raised; one poll of every part at a time, bounded by ``timeout`` in all
        (Celery's ``join_native`` waits on a nested group's parts without a bound)."""
        leaves = _leaves(deps)
        metas: dict[str, Any] = {}
        with allow_join_result():
            for task_id, meta in self.get_many({r.id for r in leaves}, timeout=timeout,
                                               interval=0.2):
                metas[task_id] = meta

        def build(node: Any) -> Any:
            if isinstance(node, ResultSet):
                return [build(child) for child in node.results]
            meta = metas[node.id]
            if meta["status"] in states.PROPAGATE_STATES:
                exc = meta["result"]
                if isinstance(exc, BaseException):
                    setattr(exc, _DEPENDENCY, node.id)  # (for the reason)
                    raise exc
                raise ChordError(f"Dependency {node.id} raised {exc!r}")
            return meta["result"]

        return build(deps)

    def _signature(self, sig: Any) -> Any:
        from celery.canvas import maybe_signature

        return maybe_signature(sig, app=self.app)


def _for_another_task(task_id: str) -> bool:
    """Whether a task of this process is running and ``task_id`` is not its own id (its own
    end is written by its lifecycle)."""
    from celery._state import get_current_worker_task

    running = get_current_worker_task()
    return running is not None and getattr(running.request, "id", None) != task_id


def _attempt_runs_again(app: Any, exc: Any) -> bool:
    """Whether ``exc`` is the failure of the running task's attempt and that attempt will run
    again. Celery hands a task's every failure on to the tasks chained after it (and to their
    chords) as if it ended the chain; an attempt that is retried on its message does not."""
    from celery._state import get_current_worker_task

    running = get_current_worker_task()
    if not isinstance(exc, BaseException):  # encoded for the store (a dict): the one being handled
        exc = sys.exc_info()[1]
    if running is None or exc is None:
        return False
    return not _final_failure(app, running.request, exc)


def _with_group_members(chain: Any) -> Any:
    """A request's chain (signature dicts) with the tasks of each group in it, and of the
    groups and chains nested in those, added after the group (each frozen with its task id)."""
    try:
        elements = list(chain)
    except TypeError:
        return chain
    out: list[Any] = []
    pending = list(elements)
    while pending:
        element = pending.pop(0)
        out.append(element)
        if isinstance(element, dict) and element.get("subtask_type") in ("group", "chain"):
            tasks = (element.get("kwargs") or {}).get("tasks") or []
            pending[:0] = [task for task in tasks if isinstance(task, dict)]
    return out


def _leaves(node: Any) -> list[Any]:
    """The task results under a (nested) group result, in order."""
    if isinstance(node, ResultSet):
        return [leaf for child in node.results for leaf in _leaves(child)]
    return [node]


def chord_size(chord: Any, progress: dict[str, Any], deps: Any) -> int:
    """How many parts end a chord: the size the sender gave (in the request, or stored by
    ``set_chord_size``) plus the parts ``add_to_chord`` added, else the task results under
    the header (a chain counts its last step, a nested group each member: Celery's count)."""
    extra = int(progress.get("added", {}).get("N", "0"))
    given = chord.get("chord_size") if isinstance(chord, dict) else None
    if given is None and "parts" in progress:
        given = int(progress["parts"]["N"])
    if given is None:
        given = len(_leaves(deps))
    return int(given) + extra


def _final_failure(app: Any, request: Any, exc: Any) -> bool:
    """True when a failed attempt ends the run: the worker dead-letters it (the same decision as
    actionrunner/settle.py; a held or retried message runs again, so it is not an end)."""
    from .settle import DeadLetter, Policy, decide

    task = getattr(request, "task", None)
    action = app.tasks.get(task) if isinstance(task, str) else task
    if action is None or not isinstance(exc, BaseException):
        return True
    sqs = getattr(request, "sqs", None) or {}
    outcome = decide(Policy.of(action), exc, attempt=int(sqs.get("attempt") or 1), jitter=False)
    return isinstance(outcome, DeadLetter)


def _error_fields(result: Any) -> dict[str, Any]:
    """The run record's error fields of a failure that Celery hands to the backend: an exception,
    or (encoded by ``encode_result`` for a JSON serializer) the dict of its parts."""
    if isinstance(result, dict) and "exc_type" in result:
        message = result.get("exc_message")
        if isinstance(message, list | tuple):
            message = message[0] if len(message) == 1 else ", ".join(map(str, message))
        args = result.get("exc_message")
        return {"error_type": str(result["exc_type"]), "error": str(message or "")[:1000],
                "error_module": result.get("exc_module") or None,
                "error_args": (json.dumps(list(args)) if isinstance(args, list | tuple)
                               and len(args) > 1 else None)}
    return {"error_type": type(result).__name__, "error": str(result)[:1000],
            "error_module": error_module_of(result), "error_args": error_args_of(result)}


class ActionResult(AsyncResult):
    """The result of an action's call: Celery's, but asking for a result that is not kept
    raises :class:`ResultsNotKept` instead of answering ``None``. A plain Celery task's
    (``plain=True``) answers as Celery's does: ``.get()`` of an ignored result is ``None``."""

    def __init__(self, id: str, *args: Any, task_name: str | None = None, plain: bool = False,
                 **kwargs: Any) -> None:
        super().__init__(id, *args, **kwargs)
        self.action = task_name
        self.plain = plain

    def _check_kept(self) -> None:
        if self.ignored and not self.plain:
            raise ResultsNotKept(self.action or "?")

    def get(self, *args: Any, **kwargs: Any) -> Any:
        """Celery's ``get``; when it raises and a parent failed too (a chord's body failed
        because a header member did), the parent's failure is raised: the cause, not the
        ``ChordError`` that wraps it, whichever of the two was stored first."""
        self._check_kept()
        try:
            return super().get(*args, **kwargs)
        except Exception:
            if (kwargs.get("propagate", True) and kwargs.get("follow_parents", True)
                    and not args and self.parent is not None):
                self._maybe_reraise_parent_error()
            raise

    wait = get

    def _get_task_meta(self) -> Any:
        self._check_kept()
        if self.ignored:  # a plain task's ignored result, as Celery's: not asked for, PENDING
            return meta_of_run(self.id, None)
        return super()._get_task_meta()
