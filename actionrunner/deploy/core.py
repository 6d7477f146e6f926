"""The core of every stack: the FIFO queue and its DLQ, the state table, the alarm topic and the
alarms; and each lane (``ACTIONRUNNER_LANES``) with its own DLQ, redrive policy and alarms.

Lanes are generated resources, not a parameter: their names are the ones the code declares
(``@action(queue="bulk.fifo")``), so they are rendered from the settings
(``actionrunner deploy template --lanes bulk.fifo``), each as ``Lane<Name>Queue`` and
``Lane<Name>DeadLetterQueue`` (:func:`lanes`).

The failure-rate alarm reads the metrics the lifecycle lines carry (CloudWatch Embedded Metric
Format, :mod:`actionrunner.metrics`: CloudWatch Logs extracts them from the workers' and the
function's log lines), by the names that module gives them.

The queue attributes are not written here: they are :func:`actionrunner.provision.desired_attributes`
(what ``actionrunner provision`` creates), translated attribute by attribute. An attribute that
provision sets and this module cannot translate is an error, so the two cannot drift apart.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .. import metrics
from ..provision import desired_attributes
from ..settings import Settings
from ..sqs.claimcheck import KEY_PREFIX
from ..state.schema import STATE_KEY, STATE_TTL_ATTRIBUTE
from .cfn import equals, flag, get_att, if_, parameter, queue_arn, ref, sub
from .params import BY_FIELD

#: The account id provision's ARNs are rendered with before translation (replaced by the stack's).
_ACCOUNT = "000000000000"

#: The metrics the failure rate is made of: runs started and failed (dimensionless totals).
STARTED, FAILED = metrics.COUNT_OF_EVENT["started"], metrics.COUNT_OF_EVENT["failed"]
#: The failure-rate alarm stays quiet over periods with fewer starts than this.
FAILURE_RATE_MIN_STARTS = 20
#: Seconds of each period the alarms look at.
FAILURE_RATE_PERIOD = 300


class TemplateDriftError(ValueError):
    """``actionrunner provision`` sets something the generator cannot express (update deploy/)."""


def _from_setting(field: str) -> Callable[[str, Settings], Any]:
    parameter_name = BY_FIELD[field].name

    def render(value: str, settings: Settings) -> Any:
        if value != str(getattr(settings, field)):
            raise TemplateDriftError(f"provision sets {value!r}, but {field} is "
                                     f"{getattr(settings, field)!r}")
        return ref(parameter_name)

    return render


@dataclass(frozen=True)
class QueuePair:
    """A queue and its DLQ as template resources: the default pair (names from the
    ``QueueName`` / ``DeadLetterQueueName`` parameters) or a lane (names as the code declares
    them)."""

    queue: str  #: the queue's name in the settings
    dlq: str
    prefix: str  #: of the logical ids: "" (the default pair) or "Lane<Name>"
    queue_name: Any  #: the QueueName property: a Ref of a parameter, or the lane's name
    dlq_name: Any

    @property
    def queue_logical(self) -> str:
        return f"{self.prefix}Queue"

    @property
    def dlq_logical(self) -> str:
        return f"{self.prefix}DeadLetterQueue"

    @property
    def queue_arn(self) -> Any:
        """The queue's ARN without a dependency on its resource (roles, other stacks)."""
        if not self.prefix:
            return queue_arn("QueueName")
        return sub(f"arn:${{AWS::Partition}}:sqs:${{AWS::Region}}:${{AWS::AccountId}}:{self.queue}")

    @property
    def dlq_arn(self) -> Any:
        if not self.prefix:
            return queue_arn("DeadLetterQueueName")
        return sub(f"arn:${{AWS::Partition}}:sqs:${{AWS::Region}}:${{AWS::AccountId}}:{self.dlq}")


def _lane_prefix(name: str, taken: set[str]) -> str:
    words = re.split(r"[^A-Za-z0-9]+", name.removesuffix(".fifo"))
    base = "Lane" + "".join(w[:1].upper() + w[1:] for w in words if w)
    prefix, n = base, 2
    while prefix in taken:
        prefix, n = f"{base}{n}", n + 1
    taken.add(prefix)
    return prefix


def lanes(settings: Settings) -> list[QueuePair]:
    """The lanes of ``settings``, each with the logical-id prefix of its resources."""
    taken: set[str] = set()
    return [QueuePair(lane, settings.dlq_of(lane), _lane_prefix(lane, taken), lane,
                      settings.dlq_of(lane)) for lane in settings.lanes]


def queue_pairs(settings: Settings) -> list[QueuePair]:
    """The default queue and its DLQ, then each lane and its DLQ."""
    default = QueuePair(settings.queue_name, settings.dlq_name, "", ref("QueueName"),
                        ref("DeadLetterQueueName"))
    return [default, *lanes(settings)]


def _redrive_policy(value: str, settings: Settings, pair: QueuePair) -> Any:
    doc = json.loads(value)
    if set(doc) != {"deadLetterTargetArn", "maxReceiveCount"} or not str(
            doc["deadLetterTargetArn"]).endswith(f":{pair.dlq}"):
        raise TemplateDriftError(f"RedrivePolicy {value} is not the generator's")
    return {"deadLetterTargetArn": get_att(pair.dlq_logical, "Arn"),
            "maxReceiveCount": _from_setting("max_receive_count")(str(doc["maxReceiveCount"]),
                                                                  settings)}


def _redrive_allow_policy(value: str, settings: Settings, pair: QueuePair) -> Any:
    doc = json.loads(value)
    if doc.get("sourceQueueArns") != [f"arn:aws:sqs:{settings.region}:{_ACCOUNT}:{pair.queue}"]:
        raise TemplateDriftError(f"RedriveAllowPolicy {value} is not the generator's")
    return {"redrivePermission": doc["redrivePermission"], "sourceQueueArns": [pair.queue_arn]}


def _setting(field: str) -> Callable[[str, Settings, QueuePair], Any]:
    render = _from_setting(field)
    return lambda value, settings, _: render(value, settings)


#: How each attribute ``actionrunner provision`` sets becomes a property of AWS::SQS::Queue.
QUEUE_ATTRIBUTES: dict[str, Callable[[str, Settings, QueuePair], Any]] = {
    "FifoQueue": lambda value, _, __: value == "true",
    "ContentBasedDeduplication": lambda value, _, __: value == "true",
    "MessageRetentionPeriod": _setting("message_retention_seconds"),
    "MaximumMessageSize": _setting("max_message_bytes"),
    "VisibilityTimeout": _setting("visibility_timeout"),
    "RedrivePolicy": _redrive_policy,
    "RedriveAllowPolicy": _redrive_allow_policy,
}


def queue_properties(settings: Settings) -> dict[str, dict[str, Any]]:
    """``{"Queue": properties, "DeadLetterQueue": properties, "Lane<Name>Queue": ...}`` from
    provision's attributes, for the default queue and each lane."""
    wanted = desired_attributes(settings, _ACCOUNT)
    out: dict[str, dict[str, Any]] = {}
    for pair in queue_pairs(settings):
        for logical, name, name_property in ((pair.dlq_logical, pair.dlq, pair.dlq_name),
                                             (pair.queue_logical, pair.queue, pair.queue_name)):
            properties: dict[str, Any] = {"QueueName": name_property}
            for attribute, value in wanted[name].items():
                if attribute not in QUEUE_ATTRIBUTES:
                    raise TemplateDriftError(f"provision sets {attribute} on {name}; teach "
                                             "actionrunner/deploy/core.py QUEUE_ATTRIBUTES about it")
                properties[attribute] = QUEUE_ATTRIBUTES[attribute](value, settings, pair)
            # high-throughput FIFO (not a setting: provision neither sets nor checks these two)
            properties["DeduplicationScope"] = if_("HighThroughput", "messageGroup", "queue")
            properties["FifoThroughputLimit"] = if_("HighThroughput", "perMessageGroupId", "perQueue")
            properties["SqsManagedSseEnabled"] = True
            out[logical] = properties
    return out


def table_properties() -> dict[str, Any]:
    """The state table, as ``actionrunner provision`` creates it (on demand; key ``pk``; TTL)."""
    return {
        "TableName": ref("StateTableName"),
        "BillingMode": "PAY_PER_REQUEST",
        "AttributeDefinitions": [{"AttributeName": STATE_KEY, "AttributeType": "S"}],
        "KeySchema": [{"AttributeName": STATE_KEY, "KeyType": "HASH"}],
        "TimeToLiveSpecification": {"AttributeName": STATE_TTL_ATTRIBUTE, "Enabled": True},
    }


def _retained(kind: str, properties: dict[str, Any]) -> dict[str, Any]:
    # a stack deleted by mistake must not take queued actions or state with it
    return {"Type": kind, "DeletionPolicy": "Retain", "UpdateReplacePolicy": "Retain",
            "Properties": properties}


def core_parameters() -> dict[str, Any]:
    """Parameters of the core (besides the settings')."""
    return {
        "HighThroughput": flag("High-throughput FIFO: DeduplicationScope=messageGroup and "
                               "FifoThroughputLimit=perMessageGroupId (the quota is per group)."),
        "AlarmEmail": parameter("String", "Address subscribed to the alarm topic (empty: none; "
                                "confirm the subscription from the email).", ""),
        "OldestMessageAgeThreshold": parameter(
            "Number", "Alarm when the oldest message has waited this many seconds.", 600,
            MinValue=60),
        "FailureRatePercent": parameter(
            "Number", "Alarm when more than this percent of started actions fail (over "
                      f"{FAILURE_RATE_PERIOD} s, at least {FAILURE_RATE_MIN_STARTS} starts).", 5,
            MinValue=0, MaxValue=100),
    }


def core_conditions() -> dict[str, Any]:
    return {"HighThroughput": equals(ref("HighThroughput"), "true"),
            "HasAlarmEmail": {"Fn::Not": [equals(ref("AlarmEmail"), "")]},
            **payload_conditions()}


def payload_conditions() -> dict[str, Any]:
    return {"HasPayloadBucket": {"Fn::Not": [equals(ref("PayloadBucketName"), "")]}}


def payload_bucket(settings: Settings) -> dict[str, Any]:
    """The claim-check bucket, as ``actionrunner provision`` makes it (``apply_bucket``): payload
    objects under ``KEY_PREFIX`` expire after the queue's retention; private, encrypted."""
    days = max(1, settings.message_retention_seconds // 86_400)
    return {"Type": "AWS::S3::Bucket", "Condition": "HasPayloadBucket",
            "DeletionPolicy": "Retain", "UpdateReplacePolicy": "Retain", "Properties": {
                "BucketName": ref("PayloadBucketName"),
                "LifecycleConfiguration": {"Rules": [{
                    "Id": "actionrunner-expire-payloads", "Status": "Enabled",
                    "Prefix": KEY_PREFIX, "ExpirationInDays": days}]},
                "PublicAccessBlockConfiguration": {
                    "BlockPublicAcls": True, "BlockPublicPolicy": True, "IgnorePublicAcls": True,
                    "RestrictPublicBuckets": True},
                "OwnershipControls": {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]},
                "BucketEncryption": {"ServerSideEncryptionConfiguration": [
                    {"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]}}}


def _alarm(name: str, description: str, **properties: Any) -> dict[str, Any]:
    topic = [ref("AlarmTopic")]
    return {"Type": "AWS::CloudWatch::Alarm", "Properties": {
        "AlarmName": sub(f"${{AWS::StackName}}-{name}"), "AlarmDescription": description,
        "AlarmActions": topic, "OKActions": topic, "TreatMissingData": "notBreaching",
        **properties}}


def alarms(settings: Settings | None = None) -> dict[str, Any]:
    """DLQ not empty, oldest message too old (of the queue and of each lane), failure rate too
    high, DLQ sends failing."""
    def sqs_metric(queue: str, metric: str) -> dict[str, Any]:
        return {"Namespace": "AWS/SQS", "MetricName": metric, "Statistic": "Maximum", "Period": 60,
                "Dimensions": [{"Name": "QueueName", "Value": get_att(queue, "QueueName")}]}

    def count(metric_id: str, metric: str) -> dict[str, Any]:
        return {"Id": metric_id, "ReturnData": False, "MetricStat": {
            "Metric": {"Namespace": metrics.NAMESPACE, "MetricName": metric},
            "Period": FAILURE_RATE_PERIOD, "Stat": "Sum"}}

    return {
        "DeadLetterQueueNotEmptyAlarm": _alarm(
            "dlq-not-empty", "Messages are waiting in the dead-letter queue (actionrunner dlq list).",
            **sqs_metric("DeadLetterQueue", "ApproximateNumberOfMessagesVisible"),
            ComparisonOperator="GreaterThanThreshold", Threshold=0, EvaluationPeriods=1),
        "OldestMessageAgeAlarm": _alarm(
            "oldest-message-age", "Actions wait too long: add workers (or groups), or look for a "
            "held group.", **sqs_metric("Queue", "ApproximateAgeOfOldestMessage"),
            ComparisonOperator="GreaterThanThreshold", Threshold=ref("OldestMessageAgeThreshold"),
            EvaluationPeriods=5, DatapointsToAlarm=3),
        "FailureRateAlarm": _alarm(
            "failure-rate", "Too many action runs fail (EMF metrics of the lifecycle lines).",
            Metrics=[count("failed", FAILED), count("started", STARTED), {
                "Id": "rate", "Label": "failed runs, % of started", "ReturnData": True,
                "Expression": f"IF(started >= {FAILURE_RATE_MIN_STARTS}, "
                              "100 * failed / started, 0)"}],
            ComparisonOperator="GreaterThanThreshold", Threshold=ref("FailureRatePercent"),
            EvaluationPeriods=3, DatapointsToAlarm=2),
        "DeadLetterSendFailingAlarm": _alarm(
            "dead-letter-send-failing", "Workers cannot send failed messages to the DLQ (its "
            "groups wait meanwhile): check the DLQ's existence, IAM and KMS.",
            Namespace=metrics.NAMESPACE, MetricName="DeadLetterSendFailures", Statistic="Sum",
            Period=60, ComparisonOperator="GreaterThanThreshold", Threshold=0,
            EvaluationPeriods=5, DatapointsToAlarm=3),
        **{name: alarm for pair in (lanes(settings) if settings else [])
           for name, alarm in lane_alarms(pair, sqs_metric).items()},
    }


def lane_alarms(pair: QueuePair, sqs_metric: Callable[[str, str], dict[str, Any]]) -> dict[str, Any]:
    """A lane's own: its DLQ not empty, its oldest message too old."""
    slug = pair.queue.removesuffix(".fifo")
    return {
        f"{pair.prefix}DeadLetterQueueNotEmptyAlarm": _alarm(
            f"{slug}-dlq-not-empty", f"Messages are waiting in {pair.dlq}, the dead-letter queue "
            f"of lane {pair.queue} (actionrunner dlq list --queue {pair.queue}).",
            **sqs_metric(pair.dlq_logical, "ApproximateNumberOfMessagesVisible"),
            ComparisonOperator="GreaterThanThreshold", Threshold=0, EvaluationPeriods=1),
        f"{pair.prefix}OldestMessageAgeAlarm": _alarm(
            f"{slug}-oldest-message-age", f"Actions of lane {pair.queue} wait too long: add "
            f"workers on it (-Q {pair.queue}), or look for a held group.",
            **sqs_metric(pair.queue_logical, "ApproximateAgeOfOldestMessage"),
            ComparisonOperator="GreaterThanThreshold", Threshold=ref("OldestMessageAgeThreshold"),
            EvaluationPeriods=5, DatapointsToAlarm=3),
    }


def core_resources(settings: Settings) -> dict[str, Any]:
    """Queue, DLQ, the lanes and theirs, state table, alarm topic (and its optional email),
    alarms."""
    queues = queue_properties(settings)
    return {
        **{logical: _retained("AWS::SQS::Queue", properties) for logical, properties in queues.items()},
        "StateTable": _retained("AWS::DynamoDB::Table", table_properties()),
        "PayloadBucket": payload_bucket(settings),
        "AlarmTopic": {"Type": "AWS::SNS::Topic",
                       "Properties": {"DisplayName": sub("${AWS::StackName} alarms")}},
        "AlarmEmailSubscription": {"Type": "AWS::SNS::Subscription", "Condition": "HasAlarmEmail",
                                   "Properties": {"TopicArn": ref("AlarmTopic"), "Protocol": "email",
                                                  "Endpoint": ref("AlarmEmail")}},
        **alarms(settings),
    }


def core_outputs(settings: Settings | None = None) -> dict[str, Any]:
    def out(description: str, value: Any, export: str) -> dict[str, Any]:
        return {"Description": description, "Value": value,
                "Export": {"Name": sub(f"${{AWS::StackName}}-{export}")}}

    return {
        "QueueUrl": out("URL of the action queue.", ref("Queue"), "QueueUrl"),
        "QueueArn": out("ARN of the action queue.", get_att("Queue", "Arn"), "QueueArn"),
        "DeadLetterQueueUrl": out("URL of the DLQ.", ref("DeadLetterQueue"), "DeadLetterQueueUrl"),
        "StateTableArn": out("ARN of the state table.", get_att("StateTable", "Arn"), "StateTableArn"),
        "AlarmTopicArn": out("SNS topic the alarms notify.", ref("AlarmTopic"), "AlarmTopicArn"),
        **{name: value for pair in (lanes(settings) if settings else []) for name, value in (
            (f"{pair.queue_logical}Url", out(f"URL of lane {pair.queue}.", ref(pair.queue_logical),
                                             f"{pair.queue_logical}Url")),
            (f"{pair.dlq_logical}Url", out(f"URL of {pair.dlq}, the DLQ of lane {pair.queue}.",
                                           ref(pair.dlq_logical), f"{pair.dlq_logical}Url")))},
    }

