"""``@action``: declare a function as an action of the Celery app (:mod:`actionrunner.app`).

What an action is and how it is sent lives in :mod:`actionrunner.action`; this module only puts
one on an app, so that the worker's modules (which ask :func:`~actionrunner.action.is_action`)
never depend on the app they are wired into.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from . import keys
from .action import REFUSED_TASK_OPTIONS, Action, build_input_model
from .errors import ActionDefinitionError


def action(
    fn: Callable[..., Any] | None = None,
    *,
    group: keys.IdSpec | None = None,
    key: keys.IdSpec | None = None,
    name: str | None = None,
    app: Any = None,
    **options: Any,
) -> Any:
    """Declare an action. Use as ``@action`` or ``@action(group=..., key=..., rate_limit=...)``.

    ``options`` are Celery task options (``rate_limit``, ``time_limit``, ``bind``...); an unknown
    one is an error here, not a silent no-op.
    """

    def decorate(func: Callable[..., Any]) -> Action:
        for option in options:
            if option in REFUSED_TASK_OPTIONS:
                raise ActionDefinitionError(
                    f"@action on {func.__qualname__}: {option}= does nothing here (a retry runs "
                    f"the same message again); use {REFUSED_TASK_OPTIONS[option]}")
            if not hasattr(Action, option):
                raise ActionDefinitionError(
                    f"@action on {func.__qualname__}: unknown option {option!r}"
                )
        queue = options.get("queue")
        if queue is not None:
            from .settings import get_settings

            known = get_settings().queues
            if queue not in known:
                raise ActionDefinitionError(
                    f"@action on {func.__qualname__}: queue={queue!r} is not one of this "
                    f"deployment's queues {known}; add it to ACTIONRUNNER_LANES (then "
                    "`actionrunner provision` creates it and its DLQ)")
        if options.get("on_exhausted", "continue") not in ("continue", "hold"):
            raise ActionDefinitionError(
                f"@action on {func.__qualname__}: on_exhausted must be 'continue' or 'hold'"
            )
        if int(options.get("max_attempts", 1)) < 1:
            raise ActionDefinitionError(f"@action on {func.__qualname__}: max_attempts must be >= 1")
        if options.get("max_concurrency") is not None:
            from .state.concurrency import check_limit

            check_limit(f"@action on {func.__qualname__}", options["max_concurrency"])
        from .state.guard import check_options  # loaded with the first action, not on import

        check_options(func.__qualname__, options)
        bound = bool(options.get("bind"))
        model = build_input_model(func, bound=bound)
        names = tuple(model.model_fields)
        for label, spec in (("group", group), ("key", key)):
            if isinstance(spec, str):
                unknown = keys.template_fields(spec) - set(names)
                if unknown:
                    raise ActionDefinitionError(
                        f"@action on {func.__qualname__}: {label} template {spec!r} names "
                        f"{sorted(unknown)}, which are not inputs (inputs: {list(names)})"
                    )
            elif spec is not None and not callable(spec):
                raise ActionDefinitionError(
                    f"@action on {func.__qualname__}: {label}= must be a template string or a callable"
                )
        target = app
        if target is None:
            from .app import app as target  # created on first use (see actionrunner.__init__)
        return cast(Action, target.task(  # (Celery is untyped: app.task(base=Action) makes one)
            func,
            base=Action,
            name=name,
            # a plain function stored on the class would turn into a method: keep it static
            message_group=staticmethod(group) if callable(group) else group,
            idempotency_key=staticmethod(key) if callable(key) else key,
            input_model=model,
            input_names=names,
            typing=False,  # its inputs are validated by its model at send (not by the signature)
            **options,
        ))

    if fn is not None:
        return decorate(fn)
    return decorate
