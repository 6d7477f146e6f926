"""Least-privilege policies of each process, from the calls its code makes.

=========  =====================================================================================
process    SQS / DynamoDB / other calls (and where they are made)
=========  =====================================================================================
worker     queue: receive, delete, change visibility (sqs/consumer.py, sqs/housekeeper.py), send
           (actions that send actions, continue_with); DLQ: send (dead-lettering); both:
           GetQueueUrl, GetQueueAttributes (the start-up check); state table: get, put, update,
           delete, condition check (state/, runs.py), DescribeTable (the start-up check)
beat       queue: send; both queues: GetQueueUrl, GetQueueAttributes; table: DescribeTable
api        queue: send, GetQueueUrl, GetQueueAttributes (/readyz); DLQ: receive, delete, change
           visibility, purge (dlq.py); table: get, put, update (runs, Idempotency-Key);
           cloudwatch:GetMetricStatistics (age of the oldest message; no resource-level scope)
flower     both queues: GetQueueUrl, GetQueueAttributes; ListQueues
monitor    worker and flower, on the monitoring queues (sqs/monitor/: ``<MonitorQueuePrefix>*``):
           create, delete, list, send, receive, GetQueueUrl, GetQueueAttributes, tag, untag,
           list tags (a dozing mailbox, sqs/monitor/mailbox.py)
lambda     as the worker (the event source mapping receives and deletes with the same role),
           without the monitoring queues (no Celery worker runs there)
=========  =====================================================================================

With a payload bucket (claim check, sqs/claimcheck.py), senders may put payload objects, and
the worker and the function get and delete them; only objects under its key prefix. They may
also list the bucket (s3:ListBucket), so a payload that is gone answers 404, told from a 403.

With lanes (``ACTIONRUNNER_LANES``), each of these grants on "the queue" and "the DLQ" covers every
lane and its DLQ too (``lanes``: :func:`actionrunner.deploy.core.lanes`).

IAM names SendMessage for SendMessageBatch, DeleteMessage for DeleteMessageBatch, and so on; a
TransactWriteItems is authorized by the actions of its items. What the actions themselves touch
(their own tables, buckets...) is granted by the ``ExtraPolicyArns`` parameter.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

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
               # a dozing worker tags its mailbox; control clients read the tag
               "sqs:TagQueue", "sqs:UntagQueue", "sqs:ListQueueTags", *SQS_LOOKUP]
if TYPE_CHECKING:
    from .core import QueuePair

PAYLOADS = sub(f"arn:${{AWS::Partition}}:s3:::${{PayloadBucketName}}/{KEY_PREFIX}*")
PAYLOAD_BUCKET = sub("arn:${AWS::Partition}:s3:::${PayloadBucketName}")


def _queues(lanes: Sequence[QueuePair]) -> Any:
    """The queue's ARN, or with lanes the list of every queue's."""
    return [QUEUE, *(p.queue_arn for p in lanes)] if lanes else QUEUE


def _dlqs(lanes: Sequence[QueuePair]) -> Any:
    return [DLQ, *(p.dlq_arn for p in lanes)] if lanes else DLQ


def payloads(actions: list[str]) -> dict[str, Any]:
    """Claim-checked payloads (only with a payload bucket): senders put, consumers get and
    delete (sqs/claimcheck.py)."""
    return if_("HasPayloadBucket", allow([f"s3:{a}" for a in actions], PAYLOADS, "Payloads"),
               NO_VALUE)


def payload_listing() -> dict[str, Any]:
    """s3:ListBucket on the payload bucket: with it, S3 answers a missing payload 404
    (dead-lettered at once as gone), without it 403, which a worker can only try a bounded number
    of times (sqs/claimcheck.py: ``give_up_after``). Unconditioned: S3 decides 404 or 403 for a
    GetObject without an ``s3:prefix`` in the request, so a prefix condition would not match."""
    return if_("HasPayloadBucket", allow(["s3:ListBucket"], PAYLOAD_BUCKET, "TellMissingPayloads"),
               NO_VALUE)


def worker(monitoring: bool = True, lanes: Sequence[QueuePair] = ()) -> list[dict[str, Any]]:
    """Run actions: consume the queues, dead-letter, keep state; with ``monitoring`` (ECS, not
    Lambda), answer remote control and send events."""
    return [allow([*SQS_CONSUME, *SQS_SEND], _queues(lanes), "ConsumeAndSendActions"),
            allow(SQS_SEND, _dlqs(lanes), "DeadLetter"),
            allow(STATE_RUN, TABLE, "StateTable"),
            *(monitor() if monitoring else []),
            payloads(["PutObject", "GetObject", "DeleteObject"]),
            payload_listing()]


def beat(lanes: Sequence[QueuePair] = ()) -> list[dict[str, Any]]:
    """Send scheduled actions."""
    return [allow(SQS_SEND, _queues(lanes), "SendActions"),
            allow(SQS_LOOKUP, _dlqs(lanes), "CheckDeadLetterQueue"),
            allow(["dynamodb:DescribeTable"], TABLE, "CheckStateTable"),
            payloads(["PutObject"])]


def api(lanes: Sequence[QueuePair] = ()) -> list[dict[str, Any]]:
    """Validate and send (redrive sends too); read run status; inspect, redrive and purge the
    DLQs."""
    return [allow(SQS_SEND, _queues(lanes), "SendActions"),
            allow([*SQS_CONSUME, "sqs:PurgeQueue"], _dlqs(lanes), "ManageDeadLetterQueue"),
            allow(["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"], TABLE,
                  "RunStatusAndIdempotencyKeys"),
            allow(["cloudwatch:GetMetricStatistics"], "*", "QueueAge"),
            payloads(["PutObject"])]


def flower(lanes: Sequence[QueuePair] = ()) -> list[dict[str, Any]]:
    """Look at the broker (Flower)."""
    looked_at = [QUEUE, DLQ, *(arn for p in lanes for arn in (p.queue_arn, p.dlq_arn))]
    return [allow(SQS_LOOKUP, looked_at, "LookAtQueues"),
            allow(["sqs:ListQueues"], "*", "ListQueues"),
            allow(SQS_MONITOR, MONITOR, "MonitoringQueues")]


def monitor() -> list[dict[str, Any]]:
    """A worker's remote-control mailbox and its events (sqs/monitor/)."""
    return [allow(SQS_MONITOR, MONITOR, "MonitoringQueues"),
            allow(["sqs:ListQueues"], "*", "ListMonitoringQueues")]
