"""Small builders for CloudFormation JSON: intrinsic functions, parameters, tags.

    >>> ref("QueueName")
    {'Ref': 'QueueName'}
    >>> sub("arn:${AWS::Partition}:sqs:${AWS::Region}:${AWS::AccountId}:${QueueName}")["Fn::Sub"][:8]
    'arn:${AW'
"""

from __future__ import annotations

import json
from typing import Any

#: Template format version written at the top of every template.
FORMAT_VERSION = "2010-09-09"


def ref(name: str) -> dict[str, Any]:
    return {"Ref": name}


def get_att(resource: str, attribute: str) -> dict[str, Any]:
    return {"Fn::GetAtt": [resource, attribute]}


def sub(text: str) -> dict[str, Any]:
    return {"Fn::Sub": text}


def if_(condition: str, then: Any, otherwise: Any) -> dict[str, Any]:
    return {"Fn::If": [condition, then, otherwise]}


def equals(left: Any, right: Any) -> dict[str, Any]:
    return {"Fn::Equals": [left, right]}


def not_(condition: dict[str, Any]) -> dict[str, Any]:
    return {"Fn::Not": [condition]}


NO_VALUE = ref("AWS::NoValue")


def queue_arn(name_parameter: str) -> dict[str, Any]:
    """The ARN of the SQS queue named by parameter ``name_parameter`` (no dependency on a
    resource, so roles and the Lambda stack can name queues made elsewhere)."""
    return sub(f"arn:${{AWS::Partition}}:sqs:${{AWS::Region}}:${{AWS::AccountId}}:${{{name_parameter}}}")


def table_arn(name_parameter: str) -> dict[str, Any]:
    """The ARN of the DynamoDB table named by parameter ``name_parameter``."""
    return sub("arn:${AWS::Partition}:dynamodb:${AWS::Region}:${AWS::AccountId}:table/"
               f"${{{name_parameter}}}")


def parameter(kind: str, description: str, default: Any = None, **constraints: Any) -> dict[str, Any]:
    """A template parameter (``kind``: String, Number, CommaDelimitedList, AWS::EC2::VPC::Id...)."""
    spec: dict[str, Any] = {"Type": kind, "Description": description}
    if default is not None:
        spec["Default"] = default
    spec.update({k: v for k, v in constraints.items() if v is not None})
    return spec


def flag(description: str, default: bool = False) -> dict[str, Any]:
    """A "true"/"false" parameter."""
    return parameter("String", description, "true" if default else "false",
                     AllowedValues=["true", "false"])


def policy(statements: list[dict[str, Any]]) -> dict[str, Any]:
    return {"Version": "2012-10-17", "Statement": statements}


def allow(actions: list[str], resources: list[Any] | Any, sid: str | None = None) -> dict[str, Any]:
    statement: dict[str, Any] = {"Effect": "Allow", "Action": sorted(set(actions)),
                                 "Resource": resources}
    if sid:
        statement = {"Sid": sid, **statement}
    return statement


def assume_role(service: str) -> dict[str, Any]:
    """A trust policy that lets ``service`` (e.g. ``ecs-tasks.amazonaws.com``) assume the role."""
    return policy([{"Effect": "Allow", "Principal": {"Service": service},
                    "Action": "sts:AssumeRole"}])


def dumps(template: dict[str, Any]) -> str:
    """The template as committed: two-space JSON, keys in the order they were built, one final
    newline (so a regenerated file is byte-identical)."""
    return json.dumps(template, indent=2, ensure_ascii=False) + "\n"
