"""``actionrunner-lambda.template.json``: the same actions on AWS Lambda.

A function running :func:`actionrunner.aws_lambda.handler`, fed by an SQS event source mapping
(batches of up to 10, ``ReportBatchItemFailures``, ``ScalingConfig.MaximumConcurrency`` as the
throttle), with the worker's permissions and environment. It names the queues and the table by
the same parameters as the other stacks and creates none of them: deploy it next to
``actionrunner-core`` (or ``actionrunner``, with the ECS workers' count at its minimum), or after
``actionrunner provision``.
"""

from __future__ import annotations

from typing import Any

from ..settings import Settings
from . import iam
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
    queue_arn,
    ref,
    sub,
)
from .core import lanes as lane_pairs
from .core import payload_conditions
from .ecs import DROP
from .params import service_environment

#: The handler, as Lambda names it.
HANDLER = "actionrunner.aws_lambda.handler"
#: Lambda's longest run.
LAMBDA_MAX_TIMEOUT = 900


def lambda_parameters(settings: Settings) -> dict[str, Any]:
    return {
        "CodeS3Bucket": parameter("String", "Bucket of the deployment package (see deploy/README.md)."),
        "CodeS3Key": parameter("String", "Key of the deployment package (.zip)."),
        "Runtime": parameter("String", "Python runtime (Amazon Linux 2023 ones: the package's "
                             "wheels are manylinux_2_28).", "python3.12",
                             AllowedValues=["python3.12", "python3.13"]),
        "Architecture": parameter("String", "Architecture the package was built for.", "x86_64",
                                  AllowedValues=["x86_64", "arm64"]),
        "MemorySize": parameter("Number", "MiB of the function.", 512, MinValue=128, MaxValue=10240),
        "Timeout": parameter(
            "Number", "Seconds one batch may run. Lambda refuses a mapping whose queue's "
            "VisibilityTimeout is shorter; AWS advises a visibility of six times this.",
            settings.visibility_timeout, MinValue=1, MaxValue=LAMBDA_MAX_TIMEOUT),
        "BatchSize": parameter("Number", "Messages per invocation (FIFO: at most 10).", 10,
                               MinValue=1, MaxValue=10),
        "MaximumConcurrency": parameter("Number", "Invocations at once: the throttle (and at most "
                                        "one per message group).", 5, MinValue=2, MaxValue=1000),
    }


def lambda_resources(settings: Settings) -> dict[str, Any]:
    """The function, its role and logs, and an event source mapping on the queue and on each lane
    (the lanes the template was rendered with)."""
    lanes = lane_pairs(settings)
    statements = [*iam.worker(monitoring=False, lanes=lanes),
                  allow(["logs:CreateLogStream", "logs:PutLogEvents"],
                        get_att("FunctionLogGroup", "Arn"), "Logs")]
    return {
        "FunctionLogGroup": {"Type": "AWS::Logs::LogGroup", **DROP, "Properties": {
            "LogGroupName": sub("/actionrunner/${AWS::StackName}/lambda"),
            "RetentionInDays": ref("LogRetentionDays")}},
        "FunctionRole": {"Type": "AWS::IAM::Role", "Properties": {
            "AssumeRolePolicyDocument": assume_role("lambda.amazonaws.com"),
            "Policies": [{"PolicyName": "run-actions", "PolicyDocument": policy(statements)}],
            "ManagedPolicyArns": if_("HasExtraPolicies", ref("ExtraPolicyArns"), NO_VALUE)}},
        "Function": {"Type": "AWS::Lambda::Function", "Properties": {
            "Description": "ActionRunner: runs the actions of the queue",
            "Handler": HANDLER, "Runtime": ref("Runtime"), "Architectures": [ref("Architecture")],
            "Code": {"S3Bucket": ref("CodeS3Bucket"), "S3Key": ref("CodeS3Key")},
            "Role": get_att("FunctionRole", "Arn"), "MemorySize": ref("MemorySize"),
            "Timeout": ref("Timeout"),
            "Environment": {"Variables": service_environment(region=False, lanes=settings.lanes)},
            # the handler writes its own JSON lines; Text keeps them as they are
            "LoggingConfig": {"LogGroup": ref("FunctionLogGroup"), "LogFormat": "Text"}}},
        "EventSourceMapping": _mapping(queue_arn("QueueName")),
        **{f"{pair.prefix}EventSourceMapping": _mapping(pair.queue_arn) for pair in lanes},
    }


def _mapping(queue: Any) -> dict[str, Any]:
    return {"Type": "AWS::Lambda::EventSourceMapping", "Properties": {
        "EventSourceArn": queue, "FunctionName": ref("Function"),
        "BatchSize": ref("BatchSize"), "Enabled": True,
        "FunctionResponseTypes": ["ReportBatchItemFailures"],
        "ScalingConfig": {"MaximumConcurrency": ref("MaximumConcurrency")}}}


def lambda_conditions() -> dict[str, Any]:
    return {"HasExtraPolicies": not_(equals({"Fn::Join": ["", ref("ExtraPolicyArns")]}, "")),
            **payload_conditions()}


def lambda_outputs(settings: Settings | None = None) -> dict[str, Any]:
    return {"FunctionName": {"Value": ref("Function")},
            "EventSourceMappingId": {"Value": ref("EventSourceMapping")},
            **{f"{pair.prefix}EventSourceMappingId": {"Value": ref(f"{pair.prefix}EventSourceMapping")}
               for pair in (lane_pairs(settings) if settings else [])}}
