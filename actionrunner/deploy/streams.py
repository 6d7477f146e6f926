"""``actionrunner-streams.template.json``: the stream processor on AWS Lambda.

The seed's stream side: a function running :func:`actionrunner.streams.handler.handler` on a
table's DynamoDB stream, publishing every change to an SNS topic (FIFO, one message group per
item key, or standard), and its watermark into the state table for the adaptive pacers. The
event source mapping reports partial batch failures (``ReportBatchItemFailures``), processes
``ParallelizationFactor`` batches of a shard at once (per-key order holds: Lambda keeps one key
in one batch stream), bisects a failing batch (``BisectBatchOnFunctionError``) and, after
``MaximumRetryAttempts``, sends the batch's description to the failure queue (which also takes
records the function cannot publish, with their reason); an alarm watches ``IteratorAge``.
"""

from __future__ import annotations

from typing import Any

from .cfn import (
    NO_VALUE,
    allow,
    assume_role,
    equals,
    get_att,
    if_,
    not_,
    parameter,
    policy,
    ref,
    sub,
    table_arn,
)
from .ecs import DROP
from .params import TABLE_NAME_PATTERN

#: The handler, as Lambda names it.
HANDLER = "actionrunner.streams.handler.handler"


def streams_parameters() -> dict[str, Any]:
    return {
        "StreamArn": parameter("String", "The table's stream (its LatestStreamArn; the stream must "
                               "carry NEW_IMAGE or NEW_AND_OLD_IMAGES).",
                               AllowedPattern=r"^arn:[a-z-]+:dynamodb:[a-z0-9-]+:\d{12}:table/.+/stream/.+$"),
        "StateTableName": parameter("String", "The ActionRunner state table (the watermark goes "
                                    "there).", "actionrunner-state", AllowedPattern=TABLE_NAME_PATTERN),
        "WatermarkName": parameter("String", "Name of the watermark the pacers read (their "
                                   "`watermark=`).", AllowedPattern=r"^[A-Za-z0-9_.:@/-]{1,200}$"),
        "FifoTopic": parameter("String", "true: a FIFO topic (each item's changes in order); "
                               "false: a standard topic (no order, more throughput).", "true",
                               AllowedValues=["true", "false"]),
        "CodeS3Bucket": parameter("String", "Bucket of the deployment package (see deploy/README.md)."),
        "CodeS3Key": parameter("String", "Key of the deployment package (.zip)."),
        "Runtime": parameter("String", "Python runtime.", "python3.12",
                             AllowedValues=["python3.12", "python3.13"]),
        "Architecture": parameter("String", "Architecture the package was built for.", "x86_64",
                                  AllowedValues=["x86_64", "arm64"]),
        "MemorySize": parameter("Number", "MiB of the function.", 512, MinValue=128, MaxValue=10240),
        "BatchSize": parameter("Number", "Stream records per invocation.", 100, MinValue=1,
                               MaxValue=10000),
        "ParallelizationFactor": parameter("Number", "Batches of one shard processed at once.", 2,
                                           MinValue=1, MaxValue=10),
        "MaximumRetryAttempts": parameter("Number", "Retries of a failing batch before it goes to "
                                          "the failure queue.", 10, MinValue=0, MaxValue=10000),
        "IteratorAgeAlarmMilliseconds": parameter(
            "Number", "IteratorAge (the age of the newest record read) above which the alarm "
            "fires.", 30000, MinValue=1000),
        "AlarmTopicArn": parameter("String", "SNS topic the alarm notifies (empty: none).", ""),
        "LogRetentionDays": parameter(
            "Number", "Days the log lines are kept.", 30,
            AllowedValues=[1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1827,
                           3653]),
    }


def streams_conditions() -> dict[str, Any]:
    return {"IsFifo": equals(ref("FifoTopic"), "true"),
            "HasAlarmTopic": not_(equals(ref("AlarmTopicArn"), ""))}


def streams_resources() -> dict[str, Any]:
    statements = [
        allow(["dynamodb:DescribeStream", "dynamodb:GetRecords", "dynamodb:GetShardIterator",
               "dynamodb:ListStreams"], ref("StreamArn"), "ReadTheStream"),
        allow(["sns:Publish"], ref("ChangesTopic"), "PublishChanges"),
        allow(["sqs:SendMessage"], get_att("FailureQueue", "Arn"), "FailedRecords"),
        allow(["dynamodb:GetItem", "dynamodb:UpdateItem"], table_arn("StateTableName"), "Watermark"),
        allow(["logs:CreateLogStream", "logs:PutLogEvents"],
              get_att("ProcessorLogGroup", "Arn"), "Logs"),
    ]
    return {
        "ChangesTopic": {"Type": "AWS::SNS::Topic", "Properties": {
            "TopicName": if_("IsFifo", sub("${AWS::StackName}-changes.fifo"),
                             sub("${AWS::StackName}-changes")),
            "FifoTopic": if_("IsFifo", True, NO_VALUE),
            "KmsMasterKeyId": "alias/aws/sns"}},
        "FailureQueue": {"Type": "AWS::SQS::Queue", **DROP, "Properties": {
            "MessageRetentionPeriod": 1209600, "SqsManagedSseEnabled": True}},
        "ProcessorLogGroup": {"Type": "AWS::Logs::LogGroup", **DROP, "Properties": {
            "LogGroupName": sub("/actionrunner/${AWS::StackName}/streams"),
            "RetentionInDays": ref("LogRetentionDays")}},
        "ProcessorRole": {"Type": "AWS::IAM::Role", "Properties": {
            "AssumeRolePolicyDocument": assume_role("lambda.amazonaws.com"),
            "Policies": [{"PolicyName": "process-the-stream", "PolicyDocument": policy(statements)}]}},
        "Processor": {"Type": "AWS::Lambda::Function", "Properties": {
            "Description": "ActionRunner: a DynamoDB stream's changes to SNS, with a watermark",
            "Handler": HANDLER, "Runtime": ref("Runtime"), "Architectures": [ref("Architecture")],
            "Code": {"S3Bucket": ref("CodeS3Bucket"), "S3Key": ref("CodeS3Key")},
            "Role": get_att("ProcessorRole", "Arn"), "MemorySize": ref("MemorySize"), "Timeout": 60,
            "Environment": {"Variables": {
                "ACTIONRUNNER_LOG_FORMAT": "json",
                "ACTIONRUNNER_STATE_TABLE": ref("StateTableName"),
                "ACTIONRUNNER_STREAM_DLQ_URL": ref("FailureQueue"),
                "ACTIONRUNNER_STREAM_TOPIC_ARN": ref("ChangesTopic"),
                "ACTIONRUNNER_STREAM_WATERMARK": ref("WatermarkName")}},
            "LoggingConfig": {"LogGroup": ref("ProcessorLogGroup"), "LogFormat": "Text"}}},
        "StreamMapping": {"Type": "AWS::Lambda::EventSourceMapping", "Properties": {
            "EventSourceArn": ref("StreamArn"), "FunctionName": ref("Processor"),
            "StartingPosition": "TRIM_HORIZON", "BatchSize": ref("BatchSize"), "Enabled": True,
            "ParallelizationFactor": ref("ParallelizationFactor"),
            "BisectBatchOnFunctionError": True,
            "MaximumRetryAttempts": ref("MaximumRetryAttempts"),
            "FunctionResponseTypes": ["ReportBatchItemFailures"],
            "DestinationConfig": {"OnFailure": {"Destination": get_att("FailureQueue", "Arn")}}}},
        "IteratorAgeAlarm": {"Type": "AWS::CloudWatch::Alarm", "Properties": {
            "AlarmDescription": "The stream processor is falling behind (IteratorAge): the "
                                "downstream waits on changes; adaptive pacers slow down on it too",
            "Namespace": "AWS/Lambda", "MetricName": "IteratorAge",
            "Dimensions": [{"Name": "FunctionName", "Value": ref("Processor")}],
            "Statistic": "Maximum", "Period": 60, "EvaluationPeriods": 1,
            "Threshold": ref("IteratorAgeAlarmMilliseconds"),
            "ComparisonOperator": "GreaterThanThreshold", "TreatMissingData": "notBreaching",
            "AlarmActions": if_("HasAlarmTopic", [ref("AlarmTopicArn")], NO_VALUE)}},
    }


def streams_outputs() -> dict[str, Any]:
    return {"ChangesTopicArn": {"Value": ref("ChangesTopic")},
            "FailureQueueUrl": {"Value": ref("FailureQueue")},
            "ProcessorName": {"Value": ref("Processor")},
            "StreamMappingId": {"Value": ref("StreamMapping")}}
