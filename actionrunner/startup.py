"""One start-up for every kind of ActionRunner process, with the same checks.

Every process that serves — a worker (``celery -A actionrunner worker``), beat, a Lambda
function's cold start, the admin API (``actionrunner api``) — starts the same way, in this
order, and stops at the first step that fails with one sentence naming the problem:

1. **settings** read and validated (:func:`read_settings`: a bad value is an
   :class:`~actionrunner.errors.InvalidSettings` naming the field);
2. **logging**: ActionRunner's JSON lines on stderr (:func:`configure_logging`);
3. **AWS credentials** found (not botocore's traceback at the first request);
4. **action modules** imported (``ACTIONRUNNER_IMPORTS``, Celery's ``imports``/``include``);
5. **queues and table**, in the kinds that need them to start: every queue and its DLQ exist
   (FIFO, with a redrive policy), and the state table exists
   (:func:`~actionrunner.provision.check_queues`, ``check_table``);
6. **runtime**: the process's :class:`~actionrunner.runtime.Runtime` installed (its clients);
7. **run status**, in processes that run actions: the lifecycle observer that writes it
   (:func:`~actionrunner.runs.install_worker_observer`).

What differs between kinds is said by their :class:`Kind`, nowhere else:

* :data:`WORKER` (``celery worker``): logging in Celery's ``setup_logging`` signal (a config
  module's ``logging_config`` wins); runs actions; each pool process starts its own runtime
  (:func:`pool_process`);
* :data:`BEAT`: logging as the worker's; runs no action;
* :data:`LAMBDA` (the cold start): JSON lines, the Lambda runtime's own root handler removed (no
  line written twice); runs actions;
* :data:`API` (``actionrunner api``): JSON lines; runs no action; starts without the queues and
  the table (it serves while SQS or DynamoDB does not answer: a request that needs them gets a
  503, and ``/readyz`` says whether SQS answers).

    >>> from actionrunner.app import app       # doctest: +SKIP
    >>> rt = start(API, app)                  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import logging.config
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from .errors import ConfigurationError
from .runtime import Runtime
from .settings import Settings, get_settings

if TYPE_CHECKING:
    from celery import Celery

#: Who configures a kind's logging: Celery's ``setup_logging`` signal (the worker, beat),
#: :func:`start` (``"plain"``), or :func:`start` inside AWS Lambda's runtime (``"lambda"``).
Logging = Literal["celery", "plain", "lambda"]


@dataclass(frozen=True)
class Kind:
    """A kind of process: what its start-up does differently (see the module docstring)."""

    name: str
    logging: Logging
    #: It runs actions: the run-status observer is installed.
    runs_actions: bool
    #: The queues and the state table must be there (and answer) before it starts.
    needs_aws: bool = True


WORKER = Kind("worker", logging="celery", runs_actions=True)
BEAT = Kind("beat", logging="celery", runs_actions=False)
LAMBDA = Kind("lambda", logging="lambda", runs_actions=True)
API = Kind("api", logging="plain", runs_actions=False, needs_aws=False)


def read_settings(settings: Settings | None = None) -> Settings:
    """``settings``, or the environment's; a value that does not validate is an
    :class:`~actionrunner.errors.InvalidSettings` naming every field that is wrong."""
    return settings or get_settings()


def configure_logging(kind: Kind, settings: Settings, level: str | int | None = None,
                      own: dict[str, Any] | None = None) -> None:
    """The process's logging: ActionRunner's lines on stderr at ``level`` (default: the
    settings'), or the project's ``own`` :func:`logging.config.dictConfig` (a worker's or beat's
    ``logging_config``; levels, handlers and formats are then all the project's)."""
    from .logging import configure, use_own_logging

    if own:
        logging.config.dictConfig(own)
        use_own_logging()
        return
    configure(level or settings.log_level, settings.log_format, actions_level=settings.log_level)
    if kind.logging == "lambda" and os.environ.get("AWS_LAMBDA_FUNCTION_NAME"):
        root = logging.getLogger()
        for handler in list(root.handlers):
            if handler.get_name() != "actionrunner":
                root.removeHandler(handler)


def check(settings: Settings, celery: Celery, *, aws: bool = True) -> None:
    """Steps 3–5 (credentials, action modules, with ``aws`` the queues and the table): a
    :class:`~actionrunner.errors.ConfigurationError` saying what to do, or nothing."""
    from .devsession import missing_credentials
    from .provision import check_queues, check_table

    if (sentence := missing_credentials()) is not None:  # not botocore's 60-line traceback
        raise ConfigurationError(sentence)
    import_action_modules(celery)
    if aws:
        check_queues(settings)
        check_table(settings)


def action_modules(celery: Celery) -> list[str]:
    """The modules of actions and tasks ``celery`` imports: Celery's ``imports``, then
    ``include``."""
    modules: dict[str, None] = {}
    for setting in ("imports", "include"):
        value = celery.conf.get(setting) or ()
        modules.update(dict.fromkeys([value] if isinstance(value, str) else value))
    return list(modules)


def import_action_modules(celery: Celery) -> None:
    """Import every module of actions; a clear error for one that cannot be imported."""
    from celery.utils.imports import import_from_cwd

    for module in action_modules(celery):
        try:
            import_from_cwd(module)
        except ImportError as exc:
            raise ConfigurationError(
                f"cannot import action module {module!r} (from ACTIONRUNNER_IMPORTS or Celery's "
                f"imports/include): {exc}; check the name, and that its directory is on "
                "PYTHONPATH or is the working directory"
            ) from exc


def start(kind: Kind, celery: Celery, settings: Settings | None = None, *,
          level: str | int | None = None, **clients: Any) -> Runtime:
    """A process of ``kind`` starts (the steps of the module docstring); returns its runtime.
    ``clients`` (``sqs=``, ``dynamodb=``, ``s3=``) go to the runtime (tests hand in their own).
    Raises a :class:`~actionrunner.errors.ConfigurationError` (the worker and beat exit with
    its sentence: :func:`celery_start`)."""
    from . import runtime

    settings = read_settings(settings)
    if kind.logging != "celery":  # Celery's own signal did it before (setup_logging)
        configure_logging(kind, settings, level)
    check(settings, celery, aws=kind.needs_aws)
    rt = runtime.start(settings, **clients)
    if kind.runs_actions:
        from .runs import install_worker_observer

        install_worker_observer()
    return rt


def celery_start(kind: Kind, celery: Celery) -> Runtime:
    """:func:`start` for a process Celery runs (``worker_init``, ``beat_init``): a failed check
    ends it with the sentence, not a traceback."""
    try:
        return start(kind, celery)
    except ConfigurationError as exc:
        raise SystemExit(f"actionrunner: {exc}") from None


def pool_process() -> Runtime:
    """A worker's pool process starts (``worker_process_init``): its own runtime, from the
    settings the main process checked (nothing is shared across the fork)."""
    from . import runtime

    return runtime.start(read_settings())


__all__ = ["API", "BEAT", "LAMBDA", "WORKER", "Kind", "action_modules", "celery_start", "check",
           "configure_logging", "import_action_modules", "pool_process", "read_settings", "start"]
