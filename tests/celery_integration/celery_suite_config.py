"""Celery settings of the worker and the client of Celery's own integration suite
(scripts/celery-suite): ActionRunner's, with Celery's ``t/integration/tasks.py`` as the task
module, results kept (``ACTIONRUNNER_RUN_STATUS=all``) and ``result_extended`` as Celery's
conftest sets it. Copied to the suite's root as ``celery_suite_config`` (the
``ACTIONRUNNER_CELERY_CONFIG_MODULE``); nothing else of the suite is changed."""

from __future__ import annotations

import logging
import logging.handlers
import os
import pickle
from typing import Any

from celery import signals

from actionrunner.celery_config import celery_config
from actionrunner.settings import get_settings

globals().update(celery_config(get_settings()))

imports = ["t.integration.tasks"]
result_extended = True


@signals.worker_init.connect
def _register_class_based_tasks(sender: Any = None, **_: Any) -> None:
    """Celery's conftest registers its class-based task with the session app
    (``celery_class_tasks``); this worker is a process of its own, so it registers it here,
    before the pool forks."""
    from t.integration.tasks import ClassBasedAutoRetryTask

    sender.app.register_task(ClassBasedAutoRetryTask())


class _RecordSender(logging.handlers.SocketHandler):
    """Sends each log record, unformatted (``msg`` and ``args`` as logged, as pytest's
    ``caplog`` keeps them), to the suite's conftest, which logs it again in the test process."""

    def makePickle(self, record: logging.LogRecord) -> bytes:  # noqa: N802 (logging's name)
        if record.exc_info:
            self.format(record)  # fills exc_text
        data = {k: v for k, v in record.__dict__.items() if k not in ("exc_info", "stack_info")}
        try:
            body = pickle.dumps(data, 1)
        except Exception:  # an argument that cannot be pickled: send it formatted
            data.update(msg=record.getMessage(), args=None)
            body = pickle.dumps({k: (v if _picklable(v) else repr(v)) for k, v in data.items()}, 1)
        return len(body).to_bytes(4, "big") + body


def _picklable(value: Any) -> bool:
    try:
        pickle.dumps(value, 1)
    except Exception:
        return False
    return True


@signals.worker_ready.connect
@signals.worker_process_init.connect
def _forward_records(**_: Any) -> None:
    """The worker's (and each pool process's) records to the suite (``caplog`` tests)."""
    port = os.environ.get("CELERY_SUITE_LOG_PORT")
    root = logging.getLogger()
    if port and not any(isinstance(h, _RecordSender) for h in root.handlers):
        handler = _RecordSender("127.0.0.1", int(port))
        handler.setLevel(logging.INFO)
        root.addHandler(handler)
