"""Run actions on AWS Lambda, fed by an SQS FIFO event source mapping.

Handler: ``actionrunner.aws_lambda.handler``; the mapping needs ``FunctionResponseTypes:
[ReportBatchItemFailures]`` and takes ``ScalingConfig.MaximumConcurrency`` as its throttle
(``deploy/actionrunner-lambda.template.json`` sets both). The same actions, unchanged, run here
or under ``celery -A actionrunner worker -c N``, with the same semantics (group order, retries
with backoff on the same message, the DLQ with the failure recorded, hold, idempotency, run
status, lifecycle lines): see :mod:`.runner`.

    >>> handler({"Records": []}, None)            # doctest: +SKIP
    {'batchItemFailures': []}

What differs from a worker: Celery's ``rate_limit`` and time limits are the worker's and do not
apply (the function's timeout does; ``rate_limit_shared`` does apply); a wait for another run's
idempotency key, and every retry, costs a receive of the message, which the queue's
``maxReceiveCount`` counts.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from ..settings import Settings, get_settings
from .runner import LambdaRunner

_runner: LambdaRunner | None = None


def _configure_logging(settings: Settings) -> None:
    """One JSON line per record on stderr, as on a worker; inside Lambda, the runtime's own
    handler on the root logger is removed so that lines are not written twice."""
    from ..logging import configure

    configure(settings.log_level, settings.log_format)
    if os.environ.get("AWS_LAMBDA_FUNCTION_NAME"):
        root = logging.getLogger()
        for handler_ in list(root.handlers):
            if handler_.get_name() != "actionrunner":
                root.removeHandler(handler_)


def cold_start(settings: Settings | None = None) -> LambdaRunner:
    """Everything a worker does at start-up: settings, logs, action modules, the process's
    runtime (:mod:`actionrunner.runtime`: its clients and stores), run status."""
    from .. import runtime
    from ..app import app, import_action_modules
    from ..runs import install_worker_observer

    settings = settings or get_settings()
    _configure_logging(settings)
    import_action_modules(app)
    rt = runtime.start(settings)
    install_worker_observer()
    return LambdaRunner(app, settings, sqs=rt.sqs, dynamodb=rt.client("dynamodb"))


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """The Lambda entry point: ``{"batchItemFailures": [{"itemIdentifier": id}, ...]}``."""
    global _runner
    if _runner is None:
        _runner = cold_start()
    return _runner.handle(event, context)


__all__ = ["LambdaRunner", "cold_start", "handler"]
