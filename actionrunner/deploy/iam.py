"""Least-privilege policies of each process, from the calls its code makes.

=========  =====================================================================================
process    SQS / DynamoDB / other calls (and where they are made)
=========  =====================================================================================
worker     queue: receive, delete, change visibility (sqs/fifo.py, sqs/housekeeper.py), send
           (actions that send actions, continue_with); DLQ: send (dead-lettering); both:
           GetQueueUrl, GetQueueAttributes (the start-up check); state table: get, put, update,
           delete, condition check (state/, runs.py), DescribeTable (the start-up check)
beat       queue: send; both queues: GetQueueUrl, GetQueueAttributes; table: DescribeTable
api        queue: send, GetQueueUrl, GetQueueAttributes (/readyz); DLQ: receive, delete, change
           visibility, purge (dlq.py); table: get, put, update (runs, Idempotency-Key);
           cloudwatch:GetMetricStatistics (age of the oldest message; no resource-level scope)
flower     both queues: GetQueueUrl, GetQueueAttributes; ListQueues
monitor    worker and flower, on the monitoring queues (sqs/monitor/: ``<MonitorQueuePrefix>*``):
           create, delete, list, send, receive, GetQueueUrl, GetQueueAttributes
lambda     as the worker (the event source mapping receives and deletes with the same role),
           without the monitoring queues (no Celery worker runs there)
=========  =====================================================================================

With a payload bucket (claim check, sqs/claimcheck.py), senders may put payload objects, and
the worker and the function get and delete them; only objects under its key prefix.

IAM names SendMessage for SendMessageBatch, DeleteMessage for DeleteMessageBatch, and so on; a
TransactWriteItems is authorized by the actions of its items. What the actions themselves touch
(their own tables, buckets...) is granted by the ``ExtraPolicyArns`` parameter.
"""

from __future__ import annotations

from typing import Any

from ..sqs.claimcheck import KEY_PREFIX
from .cfn import NO_VALUE, allow, if_, queue_arn, sub, table_arn

SQS_LOOKUP = ["sqs:GetQueueUrl", "sqs:GetQueueAttributes"]
SQS_SEND = ["sqs:SendMessage", *SQS_LOOKUP]
SQS_CONSUME = ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility",
               *SQS_LOOKUP]
STATE_RUN = ["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem",
             "dynamodb:ConditionCheckItem", "dynamodb:DescribeTable"]

QUEUE, DLQ, TABLE = queue_arn("QueueName"), queue_arn("DeadLetterQueueName"), table_arn("StateTableName")
MONITOR = sub("arn:${AWS::Partition}:sqs:${AWS::Region}:${AWS::AccountId}:${MonitorQueuePrefix}*")
#: Flower / celery inspect / celery events (sqs/monitor/): each worker and Flower creates its
#: own monitoring queue, finds the others with ListQueues, and sends to and receives from them.
SQS_MONITOR = ["sqs:CreateQueue", "sqs:DeleteQueue", "sqs:SendMessage", "sqs:ReceiveMessage",
               *SQS_LOOKUP]
PAYLOADS = sub(f"arn:${{AWS::Partition}}:s3:::${{PayloadBucketName}}/{KEY_PREFIX}*")


def payloads(actions: list[str]) -> dict[str, Any]:
    """Claim-checked payloads (only with a payload bucket): senders put, consumers get and
    delete (sqs/claimcheck.py)."""
    return if_("HasPayloadBucket", allow([f"s3:{a}" for a in actions], PAYLOADS, "Payloads"),
               NO_VALUE)


def worker(monitoring: bool = True) -> list[dict[str, Any]]:
    """Run actions: consume the queue, dead-letter, keep state; with ``monitoring`` (ECS, not
    Lambda), answer remote control and send events."""
    return [allow([*SQS_CONSUME, *SQS_SEND], QUEUE, "ConsumeAndSendActions"),
            allow(SQS_SEND, DLQ, "DeadLetter"),
            allow(STATE_RUN, TABLE, "StateTable"),
            *(monitor() if monitoring else []),
            payloads(["PutObject", "GetObject", "DeleteObject"])]


def beat() -> list[dict[str, Any]]:
    """Send scheduled actions."""
    return [allow(SQS_SEND, QUEUE, "SendActions"),
            allow(SQS_LOOKUP, DLQ, "CheckDeadLetterQueue"),
            allow(["dynamodb:DescribeTable"], TABLE, "CheckStateTable"),
            payloads(["PutObject"])]


def api() -> list[dict[str, Any]]:
    """Validate and send; read run status; inspect, redrive and purge the DLQ."""
    return [allow(SQS_SEND, QUEUE, "SendActions"),
            allow([*SQS_CONSUME, "sqs:PurgeQueue"], DLQ, "ManageDeadLetterQueue"),
            allow(["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"], TABLE,
                  "RunStatusAndIdempotencyKeys"),
            allow(["cloudwatch:GetMetricStatistics"], "*", "QueueAge"),
            payloads(["PutObject"])]


def flower() -> list[dict[str, Any]]:
    """Look at the broker (Flower)."""
    return [allow(SQS_LOOKUP, [QUEUE, DLQ], "LookAtQueues"),
            allow(["sqs:ListQueues"], "*", "ListQueues"),
            allow(SQS_MONITOR, MONITOR, "MonitoringQueues")]


def monitor() -> list[dict[str, Any]]:
    """A worker's remote-control mailbox and its events (sqs/monitor/)."""
    return [allow(SQS_MONITOR, MONITOR, "MonitoringQueues"),
            allow(["sqs:ListQueues"], "*", "ListMonitoringQueues")]
