"""One run of an action, guarded: idempotency claim → shared rate limit → run → completion with
the staged writes. Called from :meth:`actionrunner.action.Action.__call__` in the pool process.

* **idempotent** (the default; ``@action(idempotent=False)`` or ``ACTIONRUNNER_IDEMPOTENCY=false``
  turn it off): the run claims its key ``idem#{action}#{dedup id}``, the dedup id of, in order:
  the call's own key (header :data:`~actionrunner.constants.IDEMPOTENCY_KEY_HEADER`: the API's
  ``Idempotency-Key``, beat's slot); the action's ``key=`` over the inputs; the call id (header
  :data:`~actionrunner.constants.CALL_ID_HEADER`, one per ``.delay()``); the inputs (a message
  sent before call ids). So a redelivered message finds its own record, a keyed call sent again
  after SQS's 5-minute window finds the first one's, and a second ``.delay()`` of an unkeyed
  action is a run of its own. A completed key returns its saved result as the task's return
  value (the run logs ``idempotent_replay: true``); a key another run holds raises
  :class:`~actionrunner.errors.IdempotencyInProgress` (the worker tries again later, without
  using an attempt); a failed run releases its claim so that the retry can run.
* **one read and one write on the common path**: a *first delivery* (the message's first
  receive, its first attempt, its first run in this worker: ``task.request.sqs``) of a
  *per-call* key (a call id minted for one send: no ``key=``, no call key, not a continuation,
  not a canvas member whose task id is its call id) makes no claim. Its key is read before it
  runs — by the worker's main process, batched, handed over as ``request.sqs["seen"]``
  (:mod:`.completions`), or here (one consistent GetItem) when nobody read it: a completed key
  is a replay, so a *copy* of a completed call (same call id, any dedup id: a re-published or
  re-sent message) never runs; a held key waits. Then it runs and writes its completion — with
  the staged writes — in one conditional write (:meth:`~.store.IdempotencyStore.complete_first`)
  that fails if another delivery of the call claimed the key meanwhile (its message came back:
  the worker died or lost it) or completed it. Then nothing of this run is written: if the other
  delivery completed, its saved result is this run's return value (``idempotent_replay``); if
  it still holds the key, :class:`~actionrunner.errors.IdempotencyInProgress` (the message
  waits, and its next run claims). A run without staged writes in a worker hands its completion
  to the main process instead (``request.sqs["sink"]``), which writes it in a batch before the
  message is deleted: the pool slot never waits on DynamoDB. A failed first delivery writes
  nothing at all. Redeliveries, retries, waits and explicitly keyed calls claim, run and
  complete (two writes): such a call may have run before, so it must not run unguarded.
* **rate_limit_shared** (with ``bucket=``): the run waits for a token of the shared bucket
  before it starts (after the claim: a replay takes no token).
* **effects**: writes staged with :mod:`actionrunner.state.effects` are committed with the
  completion, in one transaction.
* **the state table unavailable** (throttled, 5xx, unreachable, timing out, after the client's
  retries and the store's patience): :class:`~actionrunner.errors.StateUnavailable` — the worker
  runs the message again later without using an attempt. Before the claim, nothing ran; after
  the run, the claim is released if it can be (else its lease runs out), so the message's next
  run finds the completion (a replay) or claims the key again: a run never goes unguarded, and
  waiting for DynamoDB never sends a message to the DLQ.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from .. import constants as C
from .. import keys, runtime
from ..errors import ActionDefinitionError, LeaseLost, StateUnavailable
from ..logging import get_logger
from ..runs import API_RUN_HEADER
from ..runtime import Runtime
from ..settings import Settings
from . import completions, effects
from .dynamodb import from_item
from .lease import keeper
from .ratelimit import SharedRateLimit, current_limiter, drawing_from, parse_rate
from .record import Replay, encode_result
from .schema import idempotency_pk
from .store import IdempotencyStore
from .throttling import is_throttling, is_transient, unavailable_wait

log = get_logger("actionrunner.state")

_BUCKET_NAME = re.compile(r"^[A-Za-z0-9_.:\-]{1,200}$")
#: Rate declared for each named bucket (actions sharing a bucket must agree on its rate).
_bucket_rates: dict[str, float] = {}


def check_options(owner: str, options: Mapping[str, Any]) -> None:
    """Refuse, at declaration, state options that cannot work (``@action(...)`` calls this)."""
    idempotent = options.get("idempotent")
    if idempotent is not None and not isinstance(idempotent, bool):
        raise ActionDefinitionError(f"@action on {owner}: idempotent= must be True or False")
    shared, bucket = options.get("rate_limit_shared"), options.get("bucket")
    if bucket is not None and shared is None:
        raise ActionDefinitionError(f"@action on {owner}: bucket= needs rate_limit_shared=, "
                                    "e.g. rate_limit_shared='500/s'")
    if shared is None:
        return
    try:
        rate = parse_rate(shared)
    except ValueError as exc:
        raise ActionDefinitionError(f"@action on {owner}: rate_limit_shared: {exc}") from None
    if bucket is None:
        return
    if not isinstance(bucket, str) or not _BUCKET_NAME.match(bucket):
        raise ActionDefinitionError(f"@action on {owner}: bucket={bucket!r} must be 1-200 "
                                    "letters, digits or _ . : -")
    known = _bucket_rates.setdefault(bucket, rate)
    if known != rate:
        raise ActionDefinitionError(
            f"@action on {owner}: bucket {bucket!r} is already declared at {known:g}/s by another "
            f"action; actions sharing a bucket must declare the same rate (not {shared!r})")


# -- per-process state (in the process's runtime: a forked pool process builds its own) -------
#: The runtime part of the idempotency store (:meth:`actionrunner.runtime.Runtime.part`).
STORE = "idempotency-store"


def _dynamodb_store(rt: Runtime) -> IdempotencyStore:
    from .dynamodb import DynamoDBStore

    return DynamoDBStore.from_settings(rt.settings, rt.dynamodb)


def use_store(store: IdempotencyStore | None) -> None:
    """Use ``store`` for the runs of this process (``None``: the DynamoDB store of the settings)."""
    runtime.current().set_part(STORE, store)


def get_store(rt: Runtime | None = None) -> IdempotencyStore:
    """The idempotency store of ``rt`` (default: this process's runtime): the state table,
    unless :func:`use_store` said else."""
    return (rt or runtime.current()).part(STORE, _dynamodb_store)


def limiter_for(task: Any, rt: Runtime | None = None) -> SharedRateLimit | None:
    """The shared bucket ``task`` draws from, or None."""
    if getattr(task, "rate_limit_shared", None) is None:
        return None
    name, rate = task.bucket or task.name, parse_rate(task.rate_limit_shared)
    return (rt or runtime.current()).part(("rate-limit", name, rate), lambda rt: SharedRateLimit(
        name, rate, table=rt.settings.state_table, client=rt.dynamodb))


def is_idempotent(task: Any, settings: Settings | None = None) -> bool:
    flag = getattr(task, "idempotent", None)
    if flag is not None:
        return bool(flag)
    return (settings or runtime.current().settings).idempotency


# -- the run -----------------------------------------------------------------------------------
def guarded_run(task: Any, values: dict[str, Any], run: Callable[[], Any],
                model: Any = None) -> Any:
    """Run ``run()`` (the action with its validated ``values``; ``model``: the validated inputs,
    if the caller has them, not validated again) as the module docstring says."""
    rt = runtime.current()
    limiter = limiter_for(task, rt)
    if limiter is None and not is_idempotent(task, rt.settings) and current_limiter() is None:
        with effects.collecting() as staged:  # the plain path
            result = run()
        if staged:
            effects.commit(rt.dynamodb, staged)
        return result
    with effects.collecting() as staged, drawing_from(limiter):
        if not is_idempotent(task, rt.settings):
            result = _limited(limiter, run)
            if staged:
                effects.commit(rt.dynamodb, staged)
            return result
        store = get_store(rt)
        request = task.request
        explicit = _header(request, C.IDEMPOTENCY_KEY_HEADER)
        call_id = _header(request, C.CALL_ID_HEADER)
        if explicit or (task.idempotency_key is None and call_id):
            # the inputs as sent (their JSON form), from the model Action.__call__ validated
            wire = model.model_dump(mode="json") if model is not None \
                else task.prepare(kwargs=values).kwargs
            dedup_id = keys.call_key(task.name, explicit=explicit, call_id=call_id)
        else:  # keyed: by its key=; else by the inputs (old messages)
            call = task.prepare(kwargs=values)
            wire, dedup_id = call.kwargs, call.dedup_id
        key = idempotency_pk(task.name, dedup_id)
        inputs_hash = keys.default_key(wire)
        if not explicit and task.idempotency_key is None and _first_delivery(request, call_id):
            return _run_first(task, store, key, inputs_hash, staged, lambda: _limited(limiter, run))
        outcome = _state_call("claim", lambda: store.begin(
            key, inputs_hash, action=task.name, run_id=request.id))
        if isinstance(outcome, Replay):
            task.request.idempotency = {"idempotent_replay": True, "idempotency_key": key,
                                        "result_saved": None if outcome.record.result_saved else False}
            return outcome.result
        try:
            with keeper().keep(store, outcome):
                result = _limited(limiter, run)
            _state_call("complete", lambda: store.complete(outcome, result, staged))
        except BaseException as exc:
            _release(store, outcome, exc)
            raise
        if not outcome.record.result_saved:
            log.warning("result-not-saved", action=task.name, key=key,
                        why="not JSON-able or over 300 KB; a replay returns None")
        return result


def _first_delivery(request: Any, call_id: str | None) -> bool:
    """Whether this run is the first delivery of a call sent once (see the module docstring):
    no run of it can have happened before, so it may run before it writes anything."""
    sqs = getattr(request, "sqs", None)
    if not sqs or not call_id or sqs.get("receive_count") != 1 or sqs.get("attempt") != 1 \
            or (sqs.get("runs") or 1) != 1:
        return False
    if request.get(API_RUN_HEADER) or (request.get("headers") or {}).get(API_RUN_HEADER):
        return True  # the API sends each run once (with Idempotency-Key: an explicit key)
    return keys.is_minted_call_id(str(call_id), request.id)


def first_delivery_key(task: Any, headers: Mapping[str, Any],
                       settings: Settings | None = None) -> str | None:
    """(Worker main process) the key a message's first run reads before it runs, if that run
    takes the first-delivery path (:func:`_first_delivery`, and the call is per-call keyed);
    else None. Its receive count and attempt are the caller's to check."""
    if getattr(task, "idempotency_key", None) is not None or not is_idempotent(task, settings):
        return None
    call_id = headers.get(C.CALL_ID_HEADER)
    if not call_id or headers.get(C.IDEMPOTENCY_KEY_HEADER):
        return None
    if not (headers.get(API_RUN_HEADER) or keys.is_minted_call_id(str(call_id), headers.get("id"))):
        return None
    return idempotency_pk(task.name, keys.call_dedup_id(task.name, str(call_id)))


def _run_first(task: Any, store: IdempotencyStore, key: str, inputs_hash: str,
               staged: list[Any], run: Callable[[], Any]) -> Any:
    """A first delivery: look at the key (the worker's main process read it as it handed the
    message over; else one read here), then run and complete in one write (see the module
    docstring). A key another delivery completed is a replay: this copy never runs."""
    request = task.request
    sqs = request.sqs or {}
    seen = sqs.get("seen")
    if seen is None:  # nobody read it for this run: one (consistent) read
        record = _state_call("read", lambda: store.get(key))
    else:
        record = from_item(seen) if seen else None
    now = store.clock()
    if record is not None and record.holds(now):
        # a copy of a completed call (same call id, any dedup id): its saved result, no run;
        # a call another delivery holds: wait (IdempotencyInProgress), the next run claims
        outcome = store._answer_held(record, key, inputs_hash, task.name, now)
        log.info("copy-of-a-completed-call", action=task.name, key=key, id=request.id,
                 why="this call completed before (same call id): its saved result, not a run")
        return _replayed(task, key, outcome)
    result = run()  # a failure writes nothing: there is no claim to release
    sink = sqs.get("sink")
    if sink and not staged:  # the worker's main process writes it before the message is deleted
        text, saved = encode_result(result)
        fields = completions.completion_fields(request.id, key, inputs_hash, text, saved,
                                               store._expiry(store.clock()), task.name)
        if completions.send(sink, fields):
            if not saved:
                log.warning("result-not-saved", action=task.name, key=key,
                            why="not JSON-able or over 300 KB; a replay returns None")
            return result
    outcome = _state_call("complete", lambda: store.complete_first(
        key, inputs_hash, result, staged, action=task.name, run_id=request.id))
    if isinstance(outcome, Replay):  # another delivery completed the call first
        log.warning("first-delivery-superseded", action=task.name, key=key,
                    why="another delivery of this call completed it while this one ran; "
                        "nothing of this run was written, its saved result stands")
        return _replayed(task, key, outcome)
    if not outcome.result_saved:
        log.warning("result-not-saved", action=task.name, key=key,
                    why="not JSON-able or over 300 KB; a replay returns None")
    return result


def _replayed(task: Any, key: str, outcome: Replay) -> Any:
    task.request.idempotency = {"idempotent_replay": True, "idempotency_key": key,
                                "result_saved": None if outcome.record.result_saved else False}
    return outcome.result


def _header(request: Any, name: str) -> str | None:
    """A message header of the running call (the call id, the call's own idempotency key)."""
    headers = request.get("headers") or {}  # an eager apply() keeps headers apart
    return request.get(name) or headers.get(name)


def _limited(limiter: SharedRateLimit | None, run: Callable[[], Any]) -> Any:
    if limiter is not None:
        _state_call("rate-limit", limiter.acquire)
    try:
        return run()
    except Exception as exc:
        if limiter is not None and is_throttling(exc):
            try:
                limiter.report_throttling()
            except Exception as report:  # the action's own error is the one to raise
                log.warning("rate-limit-report-failed", bucket=limiter.name, error=repr(report)[:300])
        raise


def _state_call(operation: str, call: Callable[[], Any]) -> Any:
    """``call()``, a request to the state table: a transient failure that reaches here (a store
    without patience of its own) is :class:`StateUnavailable`, so the run waits."""
    try:
        return call()
    except StateUnavailable:
        raise
    except Exception as exc:
        if not is_transient(exc):
            raise
        raise StateUnavailable(operation, repr(exc)[:300],
                               when=unavailable_wait()) from exc


def _release(store: IdempotencyStore, claim: Any, cause: BaseException) -> None:
    """Give the key up after a failed run (best effort: if this fails, the lease runs out)."""
    if isinstance(cause, LeaseLost):
        return
    try:
        store.release(claim)
    except Exception as exc:
        log.warning("idempotency-release-failed", key=claim.key, error=repr(exc)[:300])


def lifecycle_fields(task: Any) -> dict[str, Any]:
    """Fields for the run's ``succeeded`` line (``idempotent_replay`` on a replay)."""
    fields = getattr(task.request, "idempotency", None)
    return dict(fields) if fields else {}
