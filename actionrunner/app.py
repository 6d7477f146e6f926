"""The Celery application: ``celery -A actionrunner worker -c N`` finds it here.

Configuration comes from the module named by ``ACTIONRUNNER_CELERY_CONFIG_MODULE``
(``celeryconfig``) when it can be imported (from ``sys.path`` or the working directory, as Celery
imports task modules), else straight from the settings. Action modules (and plain Celery tasks)
load from Celery's ``imports`` and ``include``: ``ACTIONRUNNER_IMPORTS`` (and
``ACTIONRUNNER_DEFAULT_IMPORTS``) by default, or whatever the config module sets. None of these
is part of the installed package, and nothing is imported unless configured: this repository's
``celeryconfig.py`` names its ``tasks``; a project of its own names its own (docs/library.md).
"""

from __future__ import annotations

from typing import Any

from celery import Celery, signals
from celery.app import amqp as celery_amqp
from celery.utils.imports import import_from_cwd, symbol_by_name

from . import sqs  # noqa: F401  (registers the actionrunner:// transport)
from .action import Action, as_action_class, check_plain_group, fill_fifo_ids, plain_group
from .celery_config import celery_config
from .errors import ConfigurationError
from .events import emit
from .settings import get_settings
from .startup import (
    BEAT,
    WORKER,
    celery_start,
    configure_logging,
    import_action_modules,
    pool_process,
)
from .worker import lifecycle, shutdown  # noqa: F401  (connect the lifecycle and shutdown signals)


def _load_config() -> Any:
    settings = get_settings()
    try:
        return import_from_cwd(settings.celery_config_module)
    except ModuleNotFoundError as exc:
        if exc.name != settings.celery_config_module:
            raise
        return celery_config(settings)


class AMQP(celery_amqp.AMQP):
    """Celery's message sending, with the FIFO ids of plain tasks filled in: every task message
    of the app (``Task.apply_async``, ``send_task``, canvas) passes here after routing."""

    def _create_task_sender(self) -> Any:
        send = super()._create_task_sender()

        def send_task_message(producer: Any, name: str, message: Any, **options: Any) -> Any:
            headers = message.headers
            plain = fill_fifo_ids(name, headers, options)
            sent = send(producer, name, message, **options)
            if plain:
                emit("sent", action=name, id=headers.get("id"),
                          group=options["MessageGroupId"],
                          dedup_id=options["MessageDeduplicationId"])
            return sent

        return send_task_message


class ActionRunnerCelery(Celery):
    """The Celery app of ActionRunner: every task of it, ``@action`` or plain Celery task
    (``@app.task``, ``@shared_task``, a class-based task), travels on the FIFO queue and runs as
    :class:`~actionrunner.action.Action` does (see :func:`~actionrunner.action.fill_fifo_ids`)."""

    amqp_cls = "actionrunner.app:AMQP"

    def _task_from_fun(self, fun: Any, name: Any = None, base: Any = None, bind: bool = False,
                       **options: Any) -> Any:
        if base is not None:
            base = as_action_class(symbol_by_name(base))
        if options.get("message_group") is not None and "input_model" not in options:
            # a wrong group is an error at declaration (before it is registered), not at send
            check_plain_group(name or fun.__qualname__, options["message_group"])
        return super()._task_from_fun(fun, name=name, base=base, bind=bind, **options)

    def register_task(self, task: Any, **options: Any) -> Any:
        if isinstance(task, type):
            task = task()
        if not isinstance(task, Action):
            task.__class__ = as_action_class(type(task))
        plain_group(task)
        return super().register_task(task, **options)


def create_app() -> Celery:
    """A new Celery app configured from the settings."""
    celery = ActionRunnerCelery("actionrunner", task_cls="actionrunner.action:Action",
                                events="actionrunner.worker.events:Events")
    celery.config_from_object(_load_config())
    return celery


app = create_app()


@signals.import_modules.connect
def _import_action_modules(sender: Any = None, **_: Any) -> None:
    """Before Celery's loader imports the task modules (``celery worker``/``beat`` at start):
    import them here first, so that one that cannot be imported stops the process with one
    sentence rather than a traceback."""
    if sender is not app:
        return
    try:
        import_action_modules(app)
    except ConfigurationError as exc:
        raise SystemExit(f"actionrunner: {exc}") from None


@signals.setup_logging.connect
def _setup_logging(loglevel: Any = None, **_: Any) -> None:
    """The logging of ``celery worker``/``beat``: ActionRunner's JSON lines on stderr, unless the
    config module brings its own (``logging_config``: a :func:`logging.config.dictConfig` dict;
    levels, handlers and formats are then all the project's, ``-l`` included)."""
    configure_logging(WORKER, get_settings(), loglevel, own=app.conf.get("logging_config"))


@signals.worker_init.connect
def _start_worker(**_: Any) -> None:
    """The worker's start-up (:mod:`actionrunner.startup`): the checks (credentials, action
    modules, queues, table: fail fast with what to do), its runtime, run status."""
    celery_start(WORKER, app)


@signals.beat_init.connect
def _start_beat(**_: Any) -> None:
    celery_start(BEAT, app)


@signals.worker_process_init.connect
def _start_pool_process(**_: Any) -> None:
    """Each pool process's own runtime (built lazily: no client is made before it is used)."""
    pool_process()


@signals.worker_init.connect
@signals.worker_process_init.connect
def _freeze_the_heap(**_: Any) -> None:
    """Move everything loaded so far (Celery, boto3's service models, the actions' modules) out of
    the cyclic garbage collector's reach (``gc.freeze``): it is never garbage, and a full
    collection then scans only what the actions allocate. Without it each full collection walks
    boto3's models too, a pause of tens of ms in the middle of paced work. Called in the main
    process before the pool forks (fewer copy-on-write pages) and in each pool process."""
    import gc

    gc.collect()
    gc.freeze()
