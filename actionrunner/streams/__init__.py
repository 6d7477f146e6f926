"""The stream side of the incident: DynamoDB Streams → SNS, with a watermark for the pacers.

* :mod:`.records` — a stream record (Lambda's or GetRecords') made one shape, or refused;
* :mod:`.processor` — :class:`StreamProcessor`: PublishBatch, order per key, keys in parallel,
  partial failures, dead letters, the watermark;
* :mod:`.poller` — the processor as a local process (``python -m actionrunner.streams``);
* :mod:`.handler` — the processor as a Lambda function (``actionrunner.streams.handler.handler``).

See docs/pacing.md.
"""

from __future__ import annotations

import os
from typing import Any

from .processor import Outcome, StreamProcessor, sqs_dead_letter
from .records import StreamChange, parse

__all__ = ["Outcome", "StreamChange", "StreamProcessor", "parse", "sns_client", "sqs_dead_letter",
           "streams_client"]


def sns_client(settings: Any) -> Any:
    """An SNS client at ``AWS_ENDPOINT_URL_SNS`` if set (boto3's own variable), else as
    :meth:`~actionrunner.settings.Settings.client` makes it."""
    if endpoint := os.environ.get("AWS_ENDPOINT_URL_SNS"):
        import boto3

        return boto3.session.Session().client("sns", region_name=settings.region,
                                               endpoint_url=endpoint)
    return settings.client("sns")


def streams_client(settings: Any) -> Any:
    """A DynamoDB Streams client at ``AWS_ENDPOINT_URL_DYNAMODBSTREAMS`` (else the DynamoDB
    endpoint: moto serves both on one port)."""
    import boto3
    from botocore.config import Config

    endpoint = os.environ.get("AWS_ENDPOINT_URL_DYNAMODBSTREAMS") or settings.dynamodb_endpoint_url
    return boto3.session.Session().client(
        "dynamodbstreams", region_name=settings.region, endpoint_url=endpoint,
        config=Config(connect_timeout=settings.connect_timeout, read_timeout=settings.read_timeout,
                      retries={"mode": "standard", "max_attempts": 3}))
