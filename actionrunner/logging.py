"""Structured logs: one JSON object per line, through structlog and the standard library.

Every lifecycle event of every action is one line (``event`` is the name)::

    {"event": "succeeded", "action": "tasks.demo.hello", "id": "…", "group": "…",
     "dedup_id": "…", "attempt": 1, "queue_wait_ms": 12.5, "duration_ms": 0.8,
     "outcome": "succeeded", "level": "info", "timestamp": "…", "logger": "actionrunner.lifecycle"}

Events: ``sent``, ``started``, ``succeeded``, ``failed``, ``retrying``, ``dead-lettered``.
Celery's own log records go through the same formatter, so a worker's output is all JSON.

A library in someone else's process: ActionRunner never calls ``structlog.configure`` and never
touches the root logger unless its own process asked (:func:`configure`: the worker, beat, the
CLI, the API). Its loggers are structlog's stdlib integration bound to their own processors
(:func:`get_logger`), so a host application's structlog configuration and logging handlers stay
as the host set them; our records go to the ``actionrunner`` loggers and propagate to the host's
handlers like any library's.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Callable
from typing import Any, TextIO

import orjson
import structlog

from .metrics import emf_fields

#: The lifecycle events an action goes through.
LIFECYCLE_EVENTS = ("sent", "started", "succeeded", "failed", "retrying", "dead-lettered")
#: Name of the logger lifecycle events are written to.
LIFECYCLE_LOGGER = "actionrunner.lifecycle"

_configured = False


def _orjson_dumps(obj: Any, **_: Any) -> str:
    return orjson.dumps(obj, default=str).decode()


def _shared_processors() -> list[Any]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
    ]


def formatter(fmt: str = "json") -> logging.Formatter:
    """A stdlib formatter that renders structlog and plain records alike."""
    renderer: Any = (
        structlog.processors.JSONRenderer(serializer=_orjson_dumps)
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=_shared_processors(),
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )


def _processors() -> list[Any]:
    """The processors of ActionRunner's own loggers (never installed globally)."""
    return [
        structlog.stdlib.filter_by_level,
        *_shared_processors(),
        structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
    ]


#: Loggers that log at INFO what a user need not see (botocore: "Found credentials in
#: environment variables.", once per client); our own processes keep them at WARNING.
QUIET_LOGGERS = ("botocore.credentials", "botocore.tokens", "urllib3.connectionpool")


def _install_metrics() -> None:
    """Embed CloudWatch metrics in this process's lifecycle lines, unless ``metrics`` is ``off``."""
    from .settings import get_settings

    with contextlib.suppress(Exception):  # bad settings are reported elsewhere; logging must not fail
        if get_settings().metrics == "emf":
            enrich(emf_fields)


def configure(
    level: str | int = "INFO",
    fmt: str = "json",
    stream: TextIO | None = None,
    actions_level: str | int | None = None,
) -> None:
    """Send every log record of the process to ``stream`` (stderr) as ``fmt``; idempotent.

    ``level`` is the root level (Celery's ``-l``); ``actions_level`` (default: ``level``) is the
    level of ActionRunner's own loggers and the deployment's ``tasks``, so lifecycle lines are
    written even when Celery runs at its default WARNING."""
    global _configured
    handler = logging.StreamHandler(stream or sys.__stderr__)
    handler.setFormatter(formatter(fmt))
    handler.set_name("actionrunner")
    root = logging.getLogger()
    ours = logging.getLogger("actionrunner")
    for old in list(ours.handlers):  # the fallback of _ensure_lifecycle_output
        if old.get_name() == "actionrunner-fallback":
            ours.removeHandler(old)
    for old in list(root.handlers):
        if old.get_name() == "actionrunner":
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level if isinstance(level, int) else level.upper())
    ours_level = level if actions_level is None else actions_level
    for name in ("actionrunner", "tasks"):
        logging.getLogger(name).setLevel(
            ours_level if isinstance(ours_level, int) else ours_level.upper()
        )
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    _configured = True
    _install_metrics()


def _ensure_lifecycle_output() -> None:
    """In a process that configured no logging (a script calling ``.delay()``), still write
    lifecycle lines, on the ``actionrunner`` logger only: the root logger, and structlog's global
    configuration, are left alone (a process that configured logging gets our lines through its
    own handlers)."""
    global _configured
    if _configured:
        return
    _configured = True
    _install_metrics()
    if logging.getLogger().handlers:
        return
    from .settings import get_settings

    settings = get_settings()
    ours = logging.getLogger("actionrunner")
    if not ours.handlers:
        handler = logging.StreamHandler(sys.__stderr__)
        handler.setFormatter(formatter(settings.log_format))
        handler.set_name("actionrunner-fallback")
        ours.addHandler(handler)
        ours.setLevel(settings.log_level.upper())


_loggers: dict[str, Any] = {}


def get_logger(name: str = "actionrunner") -> Any:
    """A structlog logger over the stdlib logger ``name``, with ActionRunner's processors (not
    structlog's global configuration, which belongs to the host process); its records go
    wherever the process's logging sends them."""
    logger = _loggers.get(name)
    if logger is None:
        logger = _loggers[name] = structlog.wrap_logger(
            logging.getLogger(name), processors=_processors(),
            wrapper_class=structlog.stdlib.BoundLogger,
        )
    return logger


#: Called with ``(event, fields, result)`` after each lifecycle line (e.g. the run-status writer).
LifecycleObserver = Callable[[str, dict[str, Any], Any], None]
_observers: list[LifecycleObserver] = []


def observe(observer: LifecycleObserver) -> LifecycleObserver:
    """Register a function called after every lifecycle event of this process."""
    if observer not in _observers:
        _observers.append(observer)
    return observer


#: Called with ``(event, fields)`` before a lifecycle line is written; returns extra fields for
#: the line (e.g. CloudWatch Embedded Metric Format metadata, see actionrunner/metrics.py).
LineEnricher = Callable[[str, dict[str, Any]], dict[str, Any]]
_enrichers: list[LineEnricher] = []


def enrich(enricher: LineEnricher) -> LineEnricher:
    """Register a function that adds fields to every lifecycle line of this process."""
    if enricher not in _enrichers:
        _enrichers.append(enricher)
    return enricher


def log_event(event: str, *, level: int = logging.INFO, result: Any = None, **fields: Any) -> None:
    """Write one lifecycle line (``event`` plus the fields that are not ``None``), then tell the
    observers (``result``, the action's return value, goes to them, not into the line)."""
    _ensure_lifecycle_output()
    present = {k: v for k, v in fields.items() if v is not None}
    extra: dict[str, Any] = {}
    for enricher in _enrichers:
        extra.update(enricher(event, present))
    get_logger(LIFECYCLE_LOGGER).log(level, event, **present, **extra)
    for observer in _observers:
        try:
            observer(event, present, result)
        except Exception:  # an observer must never break the action's lifecycle
            get_logger("actionrunner").warning("lifecycle-observer-failed", event=event,
                                               observer=getattr(observer, "__name__", "?"),
                                               exc_info=True)
