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
handlers like any library's, as ``event key=value`` text under the host's formatters (a
:class:`Line`, never a dict's repr). The host controls them by name: lifecycle lines
(``actionrunner.lifecycle``) stay at WARNING in a host process until it sets that logger's level,
and carry no CloudWatch EMF block unless ``ACTIONRUNNER_METRICS=emf`` is set
(:func:`_ensure_lifecycle_output`). A worker of a project that brings its own logging
configuration (``logging_config`` in its celeryconfig) keeps it (:func:`use_own_logging`).
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import sys
import time
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
_lifecycle_logger = logging.getLogger(LIFECYCLE_LOGGER)
#: The handler :func:`configure` installed with the JSON format: lifecycle lines that would reach
#: it alone are rendered straight to its stream (:func:`_write_direct`), the same JSON line
#: without a LogRecord and a second pass through the processors.
_direct: logging.Handler | None = None
_second: list[Any] = [None, ""]  # (epoch second, its ISO text): the timestamp's cached part
_LEVEL_NAMES = {logging.DEBUG: "debug", logging.INFO: "info", logging.WARNING: "warning",
                logging.ERROR: "error", logging.CRITICAL: "critical"}


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


class Line(dict[str, Any]):
    """The fields of one of our log records, as structlog hands them to a formatter: our
    :func:`formatter` renders them (JSON, console); any other formatter (a host application's
    ``%(message)s``) gets ``event key=value ...`` text from ``str()``, never a dict's repr."""

    __slots__ = ()

    def __str__(self) -> str:
        parts = [str(self.get("event", ""))]
        for key, value in self.items():
            if key in ("event", "level", "logger", "timestamp", "_aws") or value is None:
                continue
            text = value if isinstance(value, str) and value and " " not in value \
                else _orjson_dumps(value)
            parts.append(f"{key}={text}")
        return " ".join(parts)

    __repr__ = __str__


def _wrap_for_formatter(logger: Any, name: str, event_dict: Any) -> Any:
    args, kwargs = structlog.stdlib.ProcessorFormatter.wrap_for_formatter(logger, name, event_dict)
    return (Line(args[0]),), kwargs


def _processors() -> list[Any]:
    """The processors of ActionRunner's own loggers (never installed globally)."""
    return [
        structlog.stdlib.filter_by_level,
        *_shared_processors(),
        _wrap_for_formatter,
    ]


#: Loggers that log at INFO what a user need not see (botocore: "Found credentials in
#: environment variables.", once per client); our own processes keep them at WARNING.
QUIET_LOGGERS = ("botocore.credentials", "botocore.tokens", "urllib3.connectionpool")


def _install_metrics(*, asked: bool = False) -> None:
    """Embed CloudWatch metrics in this process's lifecycle lines, unless ``metrics`` is ``off``
    (``asked``: only if ``ACTIONRUNNER_METRICS=emf`` is set explicitly — in a process whose
    logging is its own, a host application's or a project's)."""
    from .settings import get_settings

    with contextlib.suppress(Exception):  # bad settings are reported elsewhere; logging must not fail
        settings = get_settings()
        if settings.metrics == "emf" and (not asked or "metrics" in settings.model_fields_set):
            enrich(emf_fields)


def use_own_logging() -> None:
    """This process's logging is configured by its owner (a project's ``logging_config`` in its
    celeryconfig, see :func:`actionrunner.startup.configure_logging`): ActionRunner adds no
    handler and sets no level; its records go to the ``actionrunner`` loggers (lifecycle lines to
    ``actionrunner.lifecycle``) and from there wherever that configuration sends them, as
    ``event key=value`` text under a formatter of the project's, as JSON under
    :func:`formatter`. CloudWatch EMF blocks only with ``ACTIONRUNNER_METRICS=emf``."""
    global _configured, _direct
    _direct = None
    _configured = True
    _install_metrics(asked=True)


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
    global _configured, _direct
    handler = logging.StreamHandler(stream or sys.__stderr__)
    handler.setFormatter(formatter(fmt))
    _direct = handler if fmt == "json" else None
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
    # our own process: lifecycle lines follow our level (a host-process default of WARNING from
    # _ensure_lifecycle_output, set before this process configured itself, no longer holds)
    _lifecycle_logger.setLevel(logging.NOTSET)
    _configured = True
    _install_metrics()


def _ensure_lifecycle_output() -> None:
    """In a process whose logging ActionRunner did not configure (a host application, a script
    calling ``.delay()``): the root logger, its handlers and structlog's global configuration are
    left alone, and no CloudWatch EMF block is added unless ``ACTIONRUNNER_METRICS=emf`` is set.
    A process that configured logging (root handlers) hears of ``actionrunner.lifecycle`` only at
    WARNING and above unless it sets that logger's level itself (``sent`` lines are INFO: one
    per ``.delay()``); a process that configured none still gets the lifecycle lines, on the
    ``actionrunner`` logger's own stderr handler."""
    global _configured
    if _configured:
        return
    _configured = True
    _install_metrics(asked=True)
    if logging.getLogger().handlers:
        for name in (LIFECYCLE_LOGGER, "actionrunner"):
            if logging.getLogger(name).level != logging.NOTSET:
                return  # the host chose a level for our lines: its choice
        _lifecycle_logger.setLevel(logging.WARNING)
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


#: Called with ``(event, fields)`` before a lifecycle line is written; returns extra fields for
#: the line (e.g. CloudWatch Embedded Metric Format metadata, see actionrunner/metrics.py).
LineEnricher = Callable[[str, dict[str, Any]], dict[str, Any]]
_enrichers: list[LineEnricher] = []


def enrich(enricher: LineEnricher) -> LineEnricher:
    """Register a function that adds fields to every lifecycle line of this process."""
    if enricher not in _enrichers:
        _enrichers.append(enricher)
    return enricher


def write_line(event: str, level: int, fields: dict[str, Any]) -> None:
    """Write one lifecycle line: ``event`` and ``fields`` (with the enrichers' fields, e.g. the
    metric metadata). The lifecycle itself — the line and its observers — is
    :func:`actionrunner.events.emit`."""
    _ensure_lifecycle_output()
    extra: dict[str, Any] = {}
    for enricher in _enrichers:
        extra.update(enricher(event, fields))
    if not _write_direct(event, level, fields, extra):
        get_logger(LIFECYCLE_LOGGER).log(level, event, **fields, **extra)


def _timestamp() -> str:
    """Now as structlog's ``TimeStamper(fmt="iso", utc=True)`` writes it
    (``2026-11-27T10:00:00.123456Z``), its seconds formatted once per second."""
    now = time.time()
    second = int(now)
    if _second[0] != second:
        _second[1] = datetime.datetime.fromtimestamp(second, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S")
        _second[0] = second
    return f"{_second[1]}.{min(999_999, int((now - second) * 1_000_000)):06d}Z"


def _direct_handler(level: int) -> logging.StreamHandler[Any] | None:
    """The JSON handler of :func:`configure` if a lifecycle line at ``level`` reaches it and
    nothing else: no other handler or filter on the way, nothing disabled, its formatter ours."""
    handler = _direct
    if handler is None or handler.filters or level < handler.level:
        return None
    logger: logging.Logger | None = _lifecycle_logger
    assert logger is not None
    if not logger.isEnabledFor(level):
        return None
    while logger is not None and logger is not logging.root:
        if logger.handlers or logger.filters or logger.disabled or not logger.propagate:
            return None
        logger = logger.parent
    root = logging.root
    if len(root.handlers) != 1 or root.handlers[0] is not handler or root.filters or root.disabled:
        return None
    if not isinstance(handler, logging.StreamHandler) \
            or not isinstance(handler.formatter, structlog.stdlib.ProcessorFormatter):
        return None
    return handler


def _write_direct(event: str, level: int, present: dict[str, Any], extra: dict[str, Any]) -> bool:
    """Write a lifecycle line straight to :func:`configure`'s JSON handler, exactly as the
    processors and the formatter would; False (nothing written) if the line must take the
    logging path (another handler, a filter, a level, another format: see _direct_handler)."""
    handler = _direct_handler(level)
    if handler is None or "exc_info" in present:
        return False
    line: dict[str, Any] = {**present, **extra, "event": event}
    structlog.contextvars.merge_contextvars(None, "", line)
    line["level"] = _LEVEL_NAMES.get(level) or logging.getLevelName(level).lower()
    line["logger"] = LIFECYCLE_LOGGER
    line["timestamp"] = _timestamp()
    text = _orjson_dumps(line) + "\n"
    stream, lock = handler.stream, handler.lock
    assert lock is not None  # (every Handler makes its lock in __init__)
    with lock:
        try:
            stream.write(text)
            stream.flush()
        except Exception:  # as logging does: a broken stream never breaks the action
            handler.handleError(logging.makeLogRecord({"msg": event}))
    return True
