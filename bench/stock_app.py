"""Stock Celery on the same SQS server, for comparison: kombu's own SQS transport, no ActionRunner.

Configured from the environment the benchmark sets (``AWS_ENDPOINT_URL_SQS``, ``STOCK_QUEUE_URL``).
"""

from __future__ import annotations

import os
from urllib.parse import urlparse

from celery import Celery

from bench.probe import run_probe

endpoint = urlparse(os.environ.get("AWS_ENDPOINT_URL_SQS", "http://127.0.0.1:5056"))
queue_name = os.environ.get("STOCK_QUEUE_NAME", "stock.fifo")

app = Celery("stock", broker=f"sqs://{endpoint.hostname}:{endpoint.port}")
app.conf.update(
    broker_transport_options={
        "region": os.environ.get("AWS_REGION", "us-east-1"),
        "predefined_queues": {queue_name: {"url": os.environ.get("STOCK_QUEUE_URL", "")}},
        "wait_time_seconds": int(os.environ.get("ACTIONRUNNER_WAIT_TIME_SECONDS", "20")),
        "polling_interval": float(os.environ.get("ACTIONRUNNER_POLLING_INTERVAL", "1")),
        "visibility_timeout": 30,
    },
    task_default_queue=queue_name,
    worker_enable_remote_control=False,
    task_ignore_result=True,
)


@app.task(name="stock.noop")
def noop(shard: int, n: int) -> None:
    """Does nothing."""


@app.task(name="stock.probe")
def probe(group: str, seq: int, sleep_ms: int = 0, run: str = "") -> None:
    """The same probe as bench/actions.py: sleep ``sleep_ms`` and record the execution."""
    run_probe("stock", group, seq, sleep_ms, run)
