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

from typing import Any

from ..settings import Settings
from .runner import LambdaRunner

_runner: LambdaRunner | None = None


def cold_start(settings: Settings | None = None) -> LambdaRunner:
    """The worker's start-up (:func:`actionrunner.startup.start`: settings, logs, the checks,
    the process's runtime, run status), then the runner on the runtime's clients."""
    from ..app import app
    from ..startup import LAMBDA, start

    rt = start(LAMBDA, app, settings)
    return LambdaRunner(app, rt.settings, sqs=rt.sqs, dynamodb=rt.client("dynamodb"))


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """The Lambda entry point: ``{"batchItemFailures": [{"itemIdentifier": id}, ...]}``."""
    global _runner
    if _runner is None:
        _runner = cold_start()
    return _runner.handle(event, context)


__all__ = ["LambdaRunner", "cold_start", "handler"]
