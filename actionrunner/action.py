"""Actions: Celery tasks that travel on an SQS FIFO queue, with validated inputs.

    >>> from actionrunner import action
    >>> @action(group="tenant:{tenant_id}")
    ... def recalc_leaderboard(tenant_id: str, season: int) -> dict:
    ...     return {"tenant": tenant_id, "season": season}
    >>> recalc_leaderboard.delay(tenant_id="t1", season=3)          # doctest: +SKIP
    <AsyncResult: ...>

* ``group`` (template over the inputs, or a callable) gives the MessageGroupId: actions of one group
  run one at a time in order; different groups run in parallel. Without it, every call of the
  action shares one group named after the action.
* Every call runs: each ``.delay()`` / ``apply_async`` gets a call id (message header
  ``ar_call``); the MessageDeduplicationId and the idempotency key derive from it, so a
  redelivered or retried message is still one call (run once), and a second call with equal
  inputs is a second run — Celery's semantics.
* ``key`` (template or callable) opts in to content-based dedup: the MessageDeduplicationId and
  the idempotency key are a hash of the action's name and that key, so the same key sent again
  within SQS's 5-minute window is dropped, and within ``ACTIONRUNNER_IDEMPOTENCY_TTL_SECONDS``
  returns the saved result without running.
* Inputs are validated from the type hints (pydantic) when the action is *sent*: a bad call raises
  :class:`~actionrunner.errors.ActionInputError` naming each bad field, and nothing is sent.
  The worker validates them again and calls the function with the typed values.
* Per call, kombu's own spelling overrides: ``apply_async(kwargs=..., MessageGroupId="x",
  MessageDeduplicationId="y")``.

Plain Celery tasks of the app (``@app.task``, ``@shared_task``, class-based, or sent by name) are
actions without typed inputs: :func:`fill_fifo_ids` gives their messages a group (the call's, the
task's ``message_group``, a route's, else the task's name) and a call id (the task id) when they
are sent (:class:`actionrunner.app.AMQP`), and :func:`as_action_class` gives class-based ones this
class's worker side (settlement, same-message retries, results).
"""

from __future__ import annotations

import hashlib
import inspect
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from celery import Task
from celery.result import AsyncResult
from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from . import constants as C
from . import keys
from .errors import (
    ActionDefinitionError,
    ActionError,
    ActionInputError,
    RetryLater,
    SchemaVersionRejected,
    WrongArguments,
)
from .events import emit

#: Message header that records the version of the inputs' schema.
VERSION_HEADER = "ar_schema"

#: Misspellings kombu would silently ignore, and what to write instead.
_MISSPELLED_OPTIONS = {
    "message_group_id": "MessageGroupId",
    "message_deduplication_id": "MessageDeduplicationId",
    "deduplication_id": "MessageDeduplicationId",
}


#: Celery's built-in canvas tasks that cannot travel as actions, and what sent them.
_UNSUPPORTED_BUILTINS = {
    "celery.chunks": "task.chunks()",
    "celery.map": "task.map()",
    "celery.starmap": "task.starmap() or task.chunks()",
    "celery.chord_unlock": "a chord polled by a task: this app's result backend joins chords itself",
}


@dataclass(frozen=True, slots=True)
class PreparedCall:
    """A validated call of an action, ready to send."""

    kwargs: dict[str, Any]  #: the inputs as JSON-able values (what goes on the wire)
    group: str  #: MessageGroupId
    dedup_id: str  #: MessageDeduplicationId
    call_id: str | None = None  #: the call id it derives from (``None``: keyed by content)


def _field_errors(exc: ValidationError) -> dict[str, str]:
    errors: dict[str, str] = {}
    for err in exc.errors(include_url=False):
        loc = ".".join(str(part) for part in err["loc"]) or "(inputs)"
        errors[loc] = err["msg"]
    return errors


def build_input_model(fn: Callable[..., Any], *, bound: bool) -> type[BaseModel]:
    """A pydantic model of ``fn``'s parameters, from its type hints."""
    try:
        hints = typing.get_type_hints(fn)
    except Exception as exc:  # an annotation that does not resolve
        raise ActionDefinitionError(f"{fn.__qualname__}: cannot read its type hints: {exc}") from exc
    params = list(inspect.signature(fn).parameters.values())
    if bound:
        params = params[1:]
    fields: dict[str, Any] = {}
    for param in params:
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise ActionDefinitionError(
                f"{fn.__qualname__}: *{param.name} is not supported; declare each input by name "
                "so it can be validated and sent as JSON"
            )
        default = ... if param.default is param.empty else param.default
        fields[param.name] = (hints.get(param.name, Any), default)
    return create_model(
        f"{fn.__name__}_inputs",
        __config__=ConfigDict(extra="forbid", arbitrary_types_allowed=False),
        **fields,
    )


class Action(Task):
    """Base class of every ``@action``: validated inputs, FIFO ids, structured logs."""

    #: Requests carry the SQS message's attributes to the action (receive count, sent time...).
    Request = "actionrunner.worker.request:ActionRequest"
    #: Delete the message only after the action ran.
    acks_late = True
    #: Results are kept (run records in the state table, read by ``AsyncResult``) when
    #: ``ACTIONRUNNER_RUN_STATUS=all`` (Celery's ``task_ignore_result`` off) or per action with
    #: ``@action(ignore_result=False)``; see actionrunner/results.py.
    ignore_result = None
    #: Celery's check of a plain task's arguments against its signature at send (``typing``,
    #: default ``strict_typing``); an ``@action`` validates its inputs with its model instead.
    typing = None

    #: MessageGroupId template / callable (``None``: the action's name).
    message_group: keys.IdSpec | None = None
    #: Idempotency key template / callable (``None``: the call id, one per call).
    idempotency_key: keys.IdSpec | None = None
    #: The queue (lane) this action travels on (``None``: ``ACTIONRUNNER_QUEUE_NAME``); one of
    #: ``ACTIONRUNNER_LANES``. Celery routes it (``task.queue``), ``-Q`` selects it.
    queue: str | None = None
    # -- failures (see actionrunner/settle.py) ----------------------------------------
    #: Runs of one message before it is dead-lettered (1 = no retry).
    max_attempts: int = 3
    #: Exceptions that are retried; any other goes to the DLQ at once.
    retry_for: tuple[type[BaseException], ...] = (Exception,)
    #: Backoff before attempt n+1: ``min(retry_backoff_max, retry_backoff * 2**(n-1))``, jittered
    #: (the failure rule itself is :func:`actionrunner.settle.decide`).
    retry_backoff: float = 1.0
    retry_backoff_max: float = 60.0
    retry_jitter: bool = True
    #: What the rest of the group does when a message fails for good: ``"continue"`` (the message
    #: goes to the DLQ and the group goes on) or ``"hold"`` (the message stays at the head of its
    #: group, hidden for ``hold_seconds`` at a time, until the queue's redrive policy moves it).
    on_exhausted: str = "continue"
    hold_seconds: int = 300
    #: Compress this action's messages always (``"zlib"``), whatever their size (the global
    #: ``ACTIONRUNNER_COMPRESS_OVER_BYTES`` covers the rest).
    compression: str | None = None
    # -- payload versions ------------------------------------------------------------------
    #: Version of the inputs' schema this code sends (recorded in each message's headers).
    version: int = 1
    #: Versions this code runs (default: its own); a message of another is dead-lettered.
    accepts_versions: tuple[int, ...] | None = None
    # -- state on DynamoDB (see actionrunner/state/) ------------------------------------------
    #: Claim the call's key before running, return the saved result of a completed one
    #: (``None``: ``ACTIONRUNNER_IDEMPOTENCY``, on by default).
    idempotent: bool | None = None
    #: Runs per second shared by every worker (``"500/s"``, ``"30/m"``), from bucket ``bucket``
    #: (default: the action's name) in the state table.
    rate_limit_shared: str | None = None
    bucket: str | None = None
    #: Runs of this action at once across the fleet (every worker and Lambda invocation), held as
    #: leases in the state table (``None``: no cap, no request); a run over it waits without
    #: using an attempt. A live value (``actionrunner concurrency set``) overrides it.
    max_concurrency: int | None = None

    #: The pydantic model of the inputs (built from the type hints).
    input_model: type[BaseModel]
    #: Names of the inputs, in declaration order.
    input_names: tuple[str, ...] = ()

    # -- validation ------------------------------------------------------------------------
    def validate_inputs(self, args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None = None) -> BaseModel:
        """The inputs as the action's model; :class:`ActionInputError` naming each bad field."""
        kwargs = dict(kwargs or {})
        if len(args) > len(self.input_names):
            raise ActionInputError(
                self.name,
                {"(args)": f"takes {len(self.input_names)} inputs, {len(args)} positional given"},
            )
        for name, value in zip(self.input_names, args, strict=False):
            if name in kwargs:
                raise ActionInputError(self.name, {name: "given both by position and by name"})
            kwargs[name] = value
        try:
            return self.input_model.model_validate(kwargs)
        except ValidationError as exc:
            raise ActionInputError(self.name, _field_errors(exc)) from None

    def prepare(
        self,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        *,
        group: str | None = None,
        dedup_id: str | None = None,
        call_id: str | None = None,
    ) -> PreparedCall:
        """Validate a call and compute its wire inputs, MessageGroupId and dedup id.

        The dedup id is ``dedup_id`` if given, else from the action's ``key=`` if it has one,
        else from ``call_id`` if given, else (a message from before call ids) from the inputs."""
        model = self.validate_inputs(args, kwargs)
        values = {name: getattr(model, name) for name in self.input_names}
        wire = model.model_dump(mode="json")
        try:
            if group is None:
                group = (
                    keys.render(self.message_group, values)
                    if self.message_group is not None
                    else self.name
                )
            if dedup_id is None:
                key = (keys.render(self.idempotency_key, values)
                       if self.idempotency_key is not None else None)
                dedup_id = keys.call_key(self.name, key=key, call_id=call_id, inputs=wire)
        except (KeyError, AttributeError, IndexError, ValueError) as exc:
            raise ActionError(f"action {self.name!r}: cannot compute its group or key: {exc!r}") from exc
        keys.check_id(self.name, "MessageGroupId", group)
        keys.check_id(self.name, "MessageDeduplicationId", dedup_id)
        return PreparedCall(kwargs=wire, group=group, dedup_id=dedup_id, call_id=call_id)

    # -- sending ---------------------------------------------------------------------------
    def apply_async(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        task_id: str | None = None,
        producer: Any = None,
        link: Any = None,
        link_error: Any = None,
        shadow: str | None = None,
        **options: Any,
    ) -> AsyncResult:
        """Validate and send; returns once SQS accepted the message (see Celery's apply_async)."""
        if not is_action(self):  # one of Celery's built-in tasks (the app's task_cls is Action)
            if self.name in _UNSUPPORTED_BUILTINS:
                raise ActionError(f"{self.name} ({_UNSUPPORTED_BUILTINS[self.name]}) is not "
                                  "supported on SQS FIFO: send a group of signatures instead, "
                                  "e.g. group(action.s(...) for ... in ...)")
            return super().apply_async(args, kwargs, task_id, producer, link, link_error, shadow,
                                       **options)
        for wrong, right in _MISSPELLED_OPTIONS.items():
            if wrong in options:
                raise ActionError(f"action {self.name!r}: {wrong}= is not an SQS option; use {right}=")
        _check_canvas_options(self, options)
        headers = {**(options.pop("headers", None) or {}), VERSION_HEADER: self.version}
        # one call id per call; a message sent again for the same call (a retry) keeps it. A
        # task id given by the caller names the call (canvas freezes its members' ids, the API
        # passes its run id): the same task id sent again is the same call
        headers.setdefault(C.CALL_ID_HEADER, task_id or keys.new_call_id())
        call = self.prepare(
            args or (),
            kwargs,
            group=options.pop("MessageGroupId", None),
            dedup_id=options.pop("MessageDeduplicationId", None),
            call_id=headers[C.CALL_ID_HEADER],
        )
        dedup_id = call.dedup_id
        retries = options.get("retries") or 0
        if retries:  # a Celery retry is a new message: it must not be dropped as a duplicate
            dedup_id = keys.dedup_id(self.name, f"{call.dedup_id}:retry:{retries}")
        if self.compression and "compression" not in options:
            options["compression"] = self.compression
        result = super().apply_async(
            (), call.kwargs, task_id, producer, link, link_error, shadow,
            MessageGroupId=call.group, MessageDeduplicationId=dedup_id, headers=headers, **options,
        )
        if not self.app.conf.task_always_eager:
            emit("sent", action=self.name, id=result.id, group=call.group, dedup_id=dedup_id)
        return result

    def delay_many(self, calls: Iterable[Mapping[str, Any]]) -> list[AsyncResult]:
        """Send many calls (keyword inputs each) with SendMessageBatch, ten per request.

        Every call is validated before anything is sent. Entries SQS refuses for a transient
        reason are retried; if some still fail, :class:`~actionrunner.errors.SendError` lists their
        positions and all the others were sent.
        """
        prepared = [self.prepare((), call, call_id=keys.new_call_id()) for call in calls]
        results: list[AsyncResult] = []
        with self.app.producer_or_acquire() as producer, producer.channel.batch():
            for call in prepared:
                results.append(
                    Task.apply_async(
                        self, (), call.kwargs, producer=producer,
                        MessageGroupId=call.group, MessageDeduplicationId=call.dedup_id,
                        headers={VERSION_HEADER: self.version, C.CALL_ID_HEADER: call.call_id},
                        **({"compression": self.compression} if self.compression else {}),
                    )
                )
        for call, result in zip(prepared, results, strict=True):
            emit("sent", action=self.name, id=result.id, group=call.group, dedup_id=call.dedup_id)
        return results

    # -- running ---------------------------------------------------------------------------
    def check_version(self, sent: int | None) -> None:
        """Refuse a message whose inputs' schema version this code does not run (a message
        without one, from stock Celery or before versions, is version 1)."""
        accepted = self.accepts_versions or (self.version,)
        version = 1 if sent is None else sent
        if version not in accepted:
            raise SchemaVersionRejected(self.name, version, tuple(accepted))

    def retry(
        self, args: Any = None, kwargs: Any = None, exc: BaseException | None = None,
        throw: bool = True, eta: Any = None, countdown: float | None = None, **options: Any,
    ) -> Any:
        """Run again later *on the same message* (no republish: order and group are kept).

        A plain Celery task keeps Celery's ``max_retries`` (the task's, or this call's): past it,
        ``exc`` (or ``MaxRetriesExceededError``) is raised and the message is dead-lettered."""
        if self.request.called_directly:
            raise exc or RetryLater("retry called outside a worker")
        if not is_action(self):
            limit = options.get("max_retries", self.max_retries)
            done = int(self.request.retries or 0)
            if isinstance(limit, int) and done >= limit:
                from .settle import RETRIES_EXHAUSTED

                final = exc if exc is not None else self.MaxRetriesExceededError(
                    f"Can't retry {self.name}[{self.request.id}] args:{self.request.args} "
                    f"kwargs:{self.request.kwargs}")
                setattr(final, RETRIES_EXHAUSTED, True)
                raise final
        raise RetryLater(exc=exc, when=countdown)

    def continue_with(self, **changes: Any) -> AsyncResult:
        """From inside a running action: send this action again with ``changes`` to its inputs,
        in the same message group — a long job as a chain of short, ordered, resumable steps::

            @action(group="migrate:{table}")
            def migrate(table: str, cursor: int = 0) -> None:
                ...  # one chunk
                if more:
                    migrate.continue_with(cursor=cursor + CHUNK)

        The continuation's call id derives from the current call and the changes (not from a
        fresh id), so a redelivered step does not start a second chain: SQS drops the re-send
        within its window, and after it the continuation's idempotency record replays it.
        """
        request = self.request
        if request.called_directly:
            raise ActionError(f"{self.name}.continue_with() works only inside a running action")
        sqs = getattr(request, "sqs", None) or {}
        current = dict(request.kwargs or {})
        unknown = set(changes) - set(self.input_names)
        if unknown:
            raise ActionInputError(self.name, {name: "not an input of this action" for name in unknown})
        step = hashlib.sha256(keys.canonical_json(changes)).hexdigest()[:32]
        call_id = keys.dedup_id(self.name, f"{sqs.get('dedup_id') or request.id}:next:{step}")
        return self.apply_async(
            kwargs={**current, **changes},
            MessageGroupId=sqs.get("group") or None,
            headers={C.CALL_ID_HEADER: call_id},
        )

    def backoff(self, attempt: int) -> float:
        """Seconds to wait after failed attempt ``attempt`` (1-based): the action's
        :class:`~actionrunner.settle.Policy` says."""
        from .settle import Policy

        return Policy.of(self).backoff(attempt)

    def _get_exec_options(self) -> dict[str, Any]:
        """Celery's per-task send options, and a plain task's ``message_group`` as its
        MessageGroupId (so a call's own option wins over it, and it over a route, as Celery
        orders its options; :meth:`Celery.send_task` of a registered name reads it too)."""
        options: dict[str, Any] = super()._get_exec_options()
        group = plain_group(self)
        return options if group is None else {**options, "MessageGroupId": group}

    def AsyncResult(self, task_id: str, **kwargs: Any) -> AsyncResult:  # noqa: N802 (Celery's name)
        """The result of a call (:class:`~actionrunner.results.ActionResult`: asking for a result
        that is not kept raises an error naming the setting)."""
        if not (is_action(self) or is_plain_task(self)):
            return super().AsyncResult(task_id, **kwargs)
        from .results import ActionResult

        return ActionResult(task_id, backend=self.backend, task_name=self.name, app=self.app,
                            plain=not is_action(self), **kwargs)

    def apply(self, args: Any = None, kwargs: Any = None, *rest: Any, **options: Any) -> Any:
        """Run in this process (Celery's ``apply``); a call of its own, like ``apply_async``."""
        if is_action(self):
            options["headers"] = {C.CALL_ID_HEADER: keys.new_call_id(),
                                  **(options.get("headers") or {})}
        return super().apply(args, kwargs, *rest, **options)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if not is_action(self):
            if not self.request.called_directly:
                _check_arguments(self, args, kwargs)
            return super().__call__(*args, **kwargs)
        request = self.request
        if not request.called_directly:
            self.check_version(getattr(request, VERSION_HEADER, None))
        model = self.validate_inputs(args, kwargs)
        values = {name: getattr(model, name) for name in self.input_names}
        if request.called_directly:
            return super().__call__(**values)
        guarded = _guarded_run()
        if self.max_concurrency is None:
            return guarded(self, values, lambda: self.run(**values), model)
        from .state.concurrency import capped_run  # a lease of the fleet-wide cap around it

        return capped_run(self, lambda: guarded(self, values, lambda: self.run(**values), model))


def _check_arguments(task: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Raise :class:`WrongArguments` when a plain task's received arguments do not fit its
    function's signature (Celery's ``__header__``, as its own check at send uses): so that the call
    is dead-lettered at once instead of retried; a ``TypeError`` raised inside the task is not
    this."""
    header = getattr(task, "__header__", None)
    if header is None:
        return
    try:
        header(*args, **kwargs)
    except TypeError as exc:
        raise WrongArguments(f"task {task.name!r} was called with arguments that do not fit its "
                             f"signature: {exc}") from exc


#: Celery task options that would be silent no-ops here, and what to use instead.
REFUSED_TASK_OPTIONS = {
    "max_retries": "max_attempts= (runs of one message, retries included)",
    "default_retry_delay": "retry_backoff= / retry_backoff_max= (seconds)",
    "autoretry_for": "retry_for= (failures of these types are retried on the same message; "
                     "the default is every Exception)",
    "dont_autoretry_for": "retry_for= (list the types that are retried)",
    "retry_kwargs": "max_attempts= / retry_backoff=",
}


def _check_canvas_options(task: Action, options: Mapping[str, Any]) -> None:
    """Refuse, before anything is sent, what cannot work (see the README's compatibility table)."""
    if options.get("priority") is not None:
        raise ActionError(f"action {task.name!r}: priority= is not supported: SQS FIFO has no "
                          "priorities (order is per message group; use another group, or queue)")
    ignores = options.get("ignore_result")
    ignores = task.ignore_result if ignores is None else ignores
    if options.get("chord") is not None and ignores:
        raise ActionError(
            f"action {task.name!r} is in a chord's header, but its results are not kept: a chord "
            "needs them (set ACTIONRUNNER_RUN_STATUS=all, or @action(ignore_result=False) on "
            "each header action)")


def _guarded_run() -> Callable[..., Any]:
    """:func:`actionrunner.state.guard.guarded_run` (idempotency, shared rate limit, staged
    writes; imported on first use: the state package imports this module's dependents)."""
    global _GUARDED_RUN
    if _GUARDED_RUN is None:
        from .state.guard import guarded_run

        _GUARDED_RUN = guarded_run
    return _GUARDED_RUN


_GUARDED_RUN: Callable[..., Any] | None = None


def is_action(task: Any) -> bool:
    """True for tasks declared with ``@action`` (not Celery's built-in tasks)."""
    return isinstance(task, Action) and getattr(task, "input_model", None) is not None


# -- plain Celery tasks ------------------------------------------------------------------------
#: Options kombu's SQS transport would silently drop on a plain task's send, and what to write.
_MISSPELLED_SEND_OPTIONS = {**_MISSPELLED_OPTIONS, "message_group": "MessageGroupId"}


def is_plain_task(task: Any) -> bool:
    """True for a plain Celery task of the deployment (``@app.task``, ``@shared_task``, a
    class-based task): a task of the app that is not an ``@action`` nor one of Celery's own."""
    from .runnable import is_builtin

    return (isinstance(task, Task) and not is_action(task)
            and not is_builtin(str(getattr(task, "name", None) or "celery.")))


def plain_group(task: Any) -> str | None:
    """The MessageGroupId a plain task declares (its ``message_group`` option), or None.

    Groups computed from the inputs are an ``@action``'s own (it validates its inputs first): a
    plain task's group is a fixed name, and a template or a callable is refused here."""
    spec = getattr(task, "message_group", None)
    if spec is None or is_action(task):
        return None
    return check_plain_group(getattr(task, "name", None) or type(task).__qualname__, spec)


def check_plain_group(name: str, spec: Any) -> str:
    """``spec`` if it can be plain task ``name``'s ``message_group``, else the reason why not."""
    if not isinstance(spec, str) or keys.template_fields(spec):
        raise ActionDefinitionError(
            f"task {name!r}: message_group={spec!r} is computed from the inputs; only an @action "
            "does that (it validates them first): give a plain task a fixed group name, or "
            "declare it with @action(group=...)")
    return keys.check_id(name, "MessageGroupId", spec)


def as_action_class(cls: type) -> type:
    """``cls`` (a Celery task class), with :class:`Action` under it if it has not: a class-based
    task gets the worker side of every task of this app (the request that settles its message,
    retries on the same message, results) while its own attributes and methods win."""
    if issubclass(cls, Action):
        return cls
    if not (isinstance(cls, type) and issubclass(cls, Task)):
        raise ActionDefinitionError(f"{cls!r} is not a Celery task class")
    mixed = type(cls.__name__, (cls, Action), {"__module__": cls.__module__,
                                              "__qualname__": cls.__qualname__})
    return mixed


def fill_fifo_ids(name: str, headers: dict[str, Any], options: dict[str, Any]) -> bool:
    """Give a message that is about to be sent (``headers``: its Celery headers; ``options``: its
    send options, after routing) what a FIFO queue needs, unless it has it: the MessageGroupId
    (the task's name, when neither the call, nor the task's ``message_group``, nor a route gave
    one) and a MessageDeduplicationId from its call id (header ``ar_call``: the task id, unless
    the message carries one; a Celery retry, a new message of the same call, gets one of its
    own, and so does a ``Task.replace`` replacement). Returns True when the ids were made here
    (the message is not an ``@action``'s)."""
    for wrong, right in _MISSPELLED_SEND_OPTIONS.items():
        if wrong in options:
            raise ActionError(f"task {name!r}: {wrong}= is not an SQS option; use {right}=")
    if options.get("priority") is not None:  # kombu would drop it without a word
        raise ActionError(f"task {name!r}: priority= is not supported: SQS FIFO has no "
                          "priorities (order is per message group; use another group, or queue)")
    made = False
    if options.get("MessageGroupId") is None:
        options["MessageGroupId"] = name
        made = True
    if options.get("MessageDeduplicationId") is None:
        extra = options.get("headers") or {}
        call_id = extra.get(C.CALL_ID_HEADER) or headers.get(C.CALL_ID_HEADER)
        if not call_id:
            call_id = headers["id"]
            nesting = headers.get("replaced_task_nesting") or 0
            if isinstance(nesting, int) and nesting > 0:
                # Task.replace sends its replacement with the replaced task's id: a call of its
                # own (else SQS drops it as a duplicate, and the group waits for it forever)
                call_id = f"{call_id}:replaced:{nesting}"
        headers[C.CALL_ID_HEADER] = call_id
        dedup_id = keys.call_dedup_id(name, str(call_id))
        retries = headers.get("retries") or 0
        if retries:
            dedup_id = keys.dedup_id(name, f"{dedup_id}:retry:{retries}")
        options["MessageDeduplicationId"] = dedup_id
        made = True
    keys.check_id(name, "MessageGroupId", options["MessageGroupId"])
    return made
