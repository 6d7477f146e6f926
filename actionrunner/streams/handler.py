"""The stream processor as a Lambda function, fed by a DynamoDB stream event source mapping
(``deploy/actionrunner-streams.template.json``: ParallelizationFactor,
BisectBatchOnFunctionError, an on-failure destination, ``ReportBatchItemFailures``).

Environment: ``ACTIONRUNNER_STREAM_TOPIC_ARN`` (the SNS topic; ``.fifo``: per-key order),
``ACTIONRUNNER_STREAM_WATERMARK`` (the watermark's name; empty: none), ``ACTIONRUNNER_STATE_TABLE``,
``ACTIONRUNNER_STREAM_DLQ_URL`` (an SQS queue for records that cannot be published; empty: they
fail, and the mapping's retries, bisection and on-failure destination take them), and
``ACTIONRUNNER_STREAM_PARALLELISM`` (lanes of keys published at once, default 4).
"""

from __future__ import annotations

import os
from typing import Any

from ..errors import ConfigurationError
from ..pacing.watermark import WatermarkPublisher, WatermarkStore
from .processor import StreamProcessor, sqs_dead_letter

_processor: StreamProcessor | None = None


def _build() -> StreamProcessor:
    from ..settings import get_settings

    settings = get_settings()
    topic = os.environ.get("ACTIONRUNNER_STREAM_TOPIC_ARN", "")
    if not topic.startswith("arn:"):
        raise ConfigurationError(f"ACTIONRUNNER_STREAM_TOPIC_ARN is {topic!r}, not an SNS topic ARN")
    watermark = None
    if name := os.environ.get("ACTIONRUNNER_STREAM_WATERMARK", ""):
        watermark = WatermarkPublisher(WatermarkStore(name, table=settings.state_table,
                                                      client=settings.client("dynamodb")))
    dlq = os.environ.get("ACTIONRUNNER_STREAM_DLQ_URL", "")
    from . import sns_client

    return StreamProcessor(sns_client(settings), topic,
                           parallelism=int(os.environ.get("ACTIONRUNNER_STREAM_PARALLELISM", "4")),
                           watermark=watermark,
                           dead_letter=sqs_dead_letter(settings.client("sqs"), dlq) if dlq else None)


def handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    """One batch of a DynamoDB stream → SNS; returns the partial batch response."""
    global _processor
    if _processor is None:
        _processor = _build()
    outcome = _processor.process(event.get("Records") or [])
    if _processor.watermark is not None:
        _processor.watermark.flush()  # the invocation may freeze after it returns
    return {"batchItemFailures": outcome.batch_item_failures}
