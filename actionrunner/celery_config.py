"""Celery settings derived from ActionRunner's :class:`~actionrunner.settings.Settings`.

``celeryconfig.py`` at the repository root starts from :func:`celery_config` and may override
any key; ``celery -A actionrunner ...`` loads it.
"""

from __future__ import annotations

from typing import Any

from kombu.entity import Exchange, Queue

from . import constants as C
from .settings import Settings

#: SQS system attributes every receive asks for.
SYSTEM_ATTRIBUTES = [
    "ApproximateReceiveCount",
    "ApproximateFirstReceiveTimestamp",
    "SentTimestamp",
    "MessageGroupId",
    "MessageDeduplicationId",
    "SequenceNumber",
]


def celery_config(settings: Settings) -> dict[str, Any]:
    """The Celery configuration for ``settings``."""
    queues = [Queue(name, Exchange(name, type="direct"), routing_key=name)
              for name in settings.queues]
    return {
        "broker_url": f"{C.TRANSPORT_ALIAS}://",
        "broker_transport_options": {
            "region": settings.region,
            "endpoint_url": settings.sqs_endpoint_url,
            "is_secure": (settings.sqs_endpoint_url or "https").startswith("https"),
            # resolved once with GetQueueUrl; never created implicitly
            "queue_names": [n for q in settings.queues for n in (q, settings.dlq_of(q))],
            "dlq_name": settings.dlq_name,
            # each lane's failures go to its own DLQ (actionrunner.sqs.options: ConsumerOptions.dlq_for)
            "dlq_names": {q: settings.dlq_of(q) for q in settings.queues},
            "max_message_bytes": settings.max_message_bytes,
            "wire_format": settings.wire_format,
            "payload_bucket": settings.payload_bucket,
            "max_decoded_bytes": settings.max_decoded_bytes,
            "s3_endpoint_url": settings.s3_endpoint_url,
            "compress_over_bytes": settings.compress_over_bytes,
            "visibility_timeout": settings.visibility_timeout,
            "wait_time_seconds": settings.wait_time_seconds,
            "polling_interval": settings.polling_interval,
            "heartbeat_interval": settings.heartbeat_interval,
            "payload_fetch_attempts": settings.payload_fetch_attempts,
            "fetch_message_attributes": {"MessageSystemAttributeNames": SYSTEM_ATTRIBUTES,
                                         "MessageAttributeNames": ["All"]},
            "client-config": {"connect_timeout": settings.connect_timeout,
                              "read_timeout": settings.wait_time_seconds + settings.read_timeout,
                              "retries": {"mode": "standard", "max_attempts": 3}},
            # Flower / celery inspect / celery events over SQS (actionrunner.sqs.monitor)
            "monitor_queue_prefix": settings.monitor_queue_prefix,
            "task_events": settings.task_events,
            "mailbox_doze_after": settings.mailbox_doze_after,
            "mailbox_doze_poll": settings.mailbox_doze_poll,
        },
        "broker_connection_retry_on_startup": True,
        "broker_connection_max_retries": 3,
        "task_default_queue": settings.queue_name,
        "task_queues": queues,
        "task_create_missing_queues": False,
        "task_serializer": "arjson" if settings.wire_format == "compact" else "json",
        "accept_content": ["json"],
        # results (AsyncResult.get/.state) read the run records of the state table
        # (actionrunner.results); kept for every action with ACTIONRUNNER_RUN_STATUS=all, else
        # per action with @action(ignore_result=False)
        "result_backend": "actionrunner.results:RunResultBackend",
        "result_serializer": "json",
        "result_accept_content": ["json"],
        "task_ignore_result": settings.run_status != "all",
        "task_acks_late": True,
        "task_acks_on_failure": False,  # failures: retry on the message, or dead-letter
        "task_acks_on_timeout": False,
        "task_reject_on_worker_lost": False,
        # messages held per worker: max(10, concurrency x 2), running or waiting their group's turn
        "worker_prefetch_multiplier": 2,
        "worker_hijack_root_logger": False,
        "worker_redirect_stdouts": False,
        # events go only to running listeners (Flower, celery events): none, no requests
        "worker_send_task_events": settings.task_events != "off",
        "task_send_sent_event": False,  # would be one more request per .delay() while Flower runs
        "worker_enable_remote_control": settings.remote_control,
        "imports": settings.all_imports,
        "beat_schedule": {},
        "beat_scheduler": "actionrunner.beat:Scheduler",
        "timezone": "UTC",
        "enable_utc": True,
    }
