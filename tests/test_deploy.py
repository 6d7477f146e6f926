"""deploy/*.template.json: generated from the code, linted by cfn-lint, and deployed into the
local emulator's CloudFormation (moto) as far as it goes.

What moto 5.2.5's CloudFormation creates, and so what is checked against a live stack here:
AWS::SQS::Queue (all the attributes provision sets except RedriveAllowPolicy, which moto's SQS
drops whatever the API), AWS::DynamoDB::Table (its TimeToLiveSpecification through
actionrunner/moto_serve.py, which applies the property moto's CloudFormation drops, as AWS does),
AWS::SNS::Topic, AWS::IAM::Role, AWS::Lambda::Function and AWS::Lambda::EventSourceMapping. It
skips AWS::CloudWatch::Alarm (the alarms are put through the CloudWatch API instead, from the
template's own properties), and the ECS part (Application Auto Scaling, Secrets Manager, the
listener wiring) is checked by cfn-lint only.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import uuid
import zipfile
from collections.abc import Iterator
from importlib import import_module
from pathlib import Path
from typing import Any

import boto3
import pytest
from cfnlint.api import ManualArgs, lint_file
from typer.testing import CliRunner

from actionrunner import deploy, provision
from actionrunner.cli import cli
from actionrunner.deploy import core
from actionrunner.deploy.params import SETTING_PARAMETERS
from actionrunner.settings import Settings
from tests.conftest import MOTO_PORT

MOTO = f"http://127.0.0.1:{MOTO_PORT}"
REGION, ACCOUNT = "us-east-1", "123456789012"  # moto's account


def committed(name: str) -> dict[str, Any]:
    return dict(json.loads((deploy.DEPLOY_DIR / name).read_text()))


class Stack:
    """Resolves a template's intrinsic functions as CloudFormation would for one stack:
    parameters (defaults unless given), pseudo parameters, and resources' Ref / attributes."""

    def __init__(self, template: dict[str, Any], parameters: dict[str, str] | None = None,
                 resources: dict[str, dict[str, str]] | None = None, name: str = "stack") -> None:
        self.template, self.resources = template, resources or {}
        self.values = {k: str(v.get("Default", "")) for k, v in template["Parameters"].items()}
        self.values.update(parameters or {})
        self.values.update({"AWS::Region": REGION, "AWS::AccountId": ACCOUNT,
                            "AWS::Partition": "aws", "AWS::StackName": name})

    def ref(self, name: str) -> str:
        if "." in name:
            resource, attribute = name.split(".", 1)
            return self.resources[resource][attribute]
        return self.values[name] if name in self.values else self.resources[name]["Ref"]

    def condition(self, name: str) -> bool:
        def evaluate(node: Any) -> Any:
            if isinstance(node, dict) and "Fn::Equals" in node:
                left, right = (self.resolve(v) for v in node["Fn::Equals"])
                return left == right
            if isinstance(node, dict) and "Fn::Not" in node:
                return not evaluate(node["Fn::Not"][0])
            raise AssertionError(f"condition {node} is not understood by this test")

        return bool(evaluate(self.template["Conditions"][name]))

    def resolve(self, value: Any) -> Any:
        if isinstance(value, list):
            return [self.resolve(v) for v in value]
        if not isinstance(value, dict):
            return value
        if "Ref" in value:
            return self.ref(value["Ref"])
        if "Fn::GetAtt" in value:
            return self.ref(".".join(value["Fn::GetAtt"]))
        if "Fn::Sub" in value:
            return re.sub(r"\$\{([^}]+)\}", lambda m: self.ref(m.group(1)), value["Fn::Sub"])
        if "Fn::If" in value:
            name, then, otherwise = value["Fn::If"]
            return self.resolve(then if self.condition(name) else otherwise)
        if "Fn::Join" in value:
            separator, items = value["Fn::Join"]
            return separator.join(self.resolve(items))
        return {k: self.resolve(v) for k, v in value.items()}


def _as_attributes(properties: dict[str, Any], wanted: dict[str, str]) -> dict[str, Any]:
    """The queue properties as provision compares attributes (its own normalization)."""
    return {name: provision._normalize(name, json.dumps(properties[name])
                                       if isinstance(properties[name], dict)
                                       else str(properties[name]).lower()
                                       if isinstance(properties[name], bool)
                                       else str(properties[name]))
            for name in wanted}


# -- one source of truth -------------------------------------------------------------------------
def test_the_committed_templates_are_the_generators_output() -> None:
    # the templates in deploy/ are `actionrunner deploy template`'s output, byte for byte
    assert deploy.stale() == [], "run `actionrunner deploy template` and commit deploy/"


@pytest.mark.parametrize("high_throughput", ["false", "true"])
def test_the_queues_are_what_provision_creates(high_throughput: str) -> None:
    # Given the core template with its parameters' defaults (the settings' defaults)
    template = committed("actionrunner-core.template.json")
    settings = deploy.default_settings()
    arns = {"Queue": settings.queue_name, "DeadLetterQueue": settings.dlq_name}
    stack = Stack(template, {"HighThroughput": high_throughput}, {
        logical: {"Arn": f"arn:aws:sqs:{REGION}:{ACCOUNT}:{name}", "QueueName": name}
        for logical, name in arns.items()})
    # Then each queue has exactly the attributes `actionrunner provision` gives it
    wanted = provision.desired_attributes(settings, ACCOUNT)
    for logical, name in arns.items():
        properties = stack.resolve(template["Resources"][logical]["Properties"])
        assert properties["QueueName"] == name
        assert _as_attributes(properties, wanted[name]) == {
            k: provision._normalize(k, v) for k, v in wanted[name].items()}
        # and the high-throughput switch, which provision leaves alone
        high = high_throughput == "true"
        assert properties["DeduplicationScope"] == ("messageGroup" if high else "queue")
        assert properties["FifoThroughputLimit"] == ("perMessageGroupId" if high else "perQueue")


def test_the_table_is_what_provision_creates() -> None:
    table = committed("actionrunner-core.template.json")["Resources"]["StateTable"]["Properties"]
    assert table["KeySchema"] == [{"AttributeName": provision.STATE_KEY, "KeyType": "HASH"}]
    assert table["AttributeDefinitions"] == [{"AttributeName": provision.STATE_KEY,
                                              "AttributeType": "S"}]
    assert table["TimeToLiveSpecification"] == {"AttributeName": provision.STATE_TTL_ATTRIBUTE,
                                                "Enabled": True}
    assert table["BillingMode"] == "PAY_PER_REQUEST"


def test_the_payload_bucket_expires_payloads_as_provision_does() -> None:
    # Given what `actionrunner provision` puts on a payload bucket (a recording client)
    class Recorder:
        calls: dict[str, Any] = {}

        def head_bucket(self, **_: Any) -> dict[str, Any]:
            return {}

        def put_bucket_lifecycle_configuration(self, **kwargs: Any) -> None:
            self.calls = kwargs

    recorder = Recorder()
    provision.apply_bucket(Settings(payload_bucket="b"), recorder)
    [wanted] = recorder.calls["LifecycleConfiguration"]["Rules"]
    # Then the template's bucket carries the same rule
    bucket = committed("actionrunner-core.template.json")["Resources"]["PayloadBucket"]
    [rule] = bucket["Properties"]["LifecycleConfiguration"]["Rules"]
    assert (rule["Id"], rule["Status"], rule["Prefix"], rule["ExpirationInDays"]) == (
        wanted["ID"], wanted["Status"], wanted["Filter"]["Prefix"], wanted["Expiration"]["Days"])
    assert bucket["Condition"] == "HasPayloadBucket"


def _environments(template: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for logical, resource in template["Resources"].items():
        properties = resource["Properties"]
        if resource["Type"] == "AWS::ECS::TaskDefinition":
            for container in properties["ContainerDefinitions"]:
                yield f"{logical}/{container['Name']}", {
                    **{e["Name"]: e["Value"] for e in container["Environment"]},
                    **{s["Name"]: s["ValueFrom"] for s in container.get("Secrets", [])}}
        elif resource["Type"] == "AWS::Lambda::Function":
            yield logical, properties["Environment"]["Variables"]


@pytest.mark.parametrize("name", ["actionrunner.template.json", "actionrunner-lambda.template.json"])
def test_every_process_gets_the_settings_the_stack_was_deployed_with(name: str) -> None:
    # Given the processes of a stack deployed with other names than the defaults
    template = committed(name)
    given = {"QueueName": "orders.fifo", "DeadLetterQueueName": "orders-dlq.fifo",
             "StateTableName": "orders-state", "MaxReceiveCount": "7"}
    stack = Stack(template, given, {n: {"Ref": f"arn:{n}"} for n in template["Resources"]})
    environments = dict(_environments(template))
    assert environments, "no process found"
    for process, environment in environments.items():
        env = stack.resolve(environment)
        # Then every ACTIONRUNNER_* variable names a setting, and the settings they make are the
        # stack's: what runs reads exactly what was deployed
        fields = {k.removeprefix("ACTIONRUNNER_").lower(): v for k, v in env.items()
                  if k.startswith("ACTIONRUNNER_")}
        unknown = set(fields) - set(Settings.model_fields)
        assert not unknown, f"{process}: {unknown} are not settings"
        settings = Settings(**{k: v for k, v in fields.items() if k != "api_tokens"})
        assert (settings.queue_name, settings.dlq_name, settings.state_table,
                settings.max_receive_count) == ("orders.fifo", "orders-dlq.fifo", "orders-state", 7)
        for parameter in SETTING_PARAMETERS:
            assert env[parameter.env] == stack.values[parameter.name], process


def test_parameter_bounds_are_the_settings_bounds() -> None:
    parameters = committed("actionrunner.template.json")["Parameters"]
    for parameter in SETTING_PARAMETERS:
        spec = parameters[parameter.name]
        default = getattr(deploy.default_settings(), parameter.field)
        assert spec["Default"] == ("" if default is None else default)
        for bound, inside in (("MinValue", 0), ("MaxValue", 0), ("MinValue", -1), ("MaxValue", 1)):
            if bound not in spec:
                continue
            value = spec[bound] + inside
            if inside:
                with pytest.raises(ValueError):
                    Settings(**{parameter.field: value})
            else:
                assert getattr(Settings(**{parameter.field: value}), parameter.field) == value


def test_an_attribute_the_generator_does_not_know_stops_it(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given provision starting to set an attribute the templates do not carry
    original = provision.desired_attributes

    def more(settings: Settings, account: str) -> dict[str, dict[str, str]]:
        wanted = original(settings, account)
        wanted[settings.queue_name]["DelaySeconds"] = "5"
        return wanted

    monkeypatch.setattr(core, "desired_attributes", more)
    # Then rendering fails and says where to teach it
    with pytest.raises(core.TemplateDriftError, match="QUEUE_ATTRIBUTES"):
        deploy.render()


def test_the_cli_renders_and_checks(tmp_path: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(cli, ["deploy", "template", "--out", str(tmp_path)]).exit_code == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(deploy.TEMPLATES)
    assert runner.invoke(cli, ["deploy", "template", "--out", str(tmp_path), "--check"]).exit_code == 0
    (tmp_path / "actionrunner-core.template.json").write_text("{}\n")
    assert runner.invoke(cli, ["deploy", "template", "--out", str(tmp_path), "--check"]).exit_code == 1


# -- cfn-lint ------------------------------------------------------------------------------------
LINT = ManualArgs(include_checks=["I"], regions=["us-east-1", "eu-west-1", "ap-southeast-2"])


@pytest.mark.parametrize("name", sorted(deploy.TEMPLATES))
def test_cfn_lint_finds_nothing(name: str) -> None:
    # no error, no warning, not even an informational note, in three regions
    matches = lint_file(deploy.DEPLOY_DIR / name, config=LINT)
    assert [str(m) for m in matches] == []


def test_cfn_lint_would_catch_a_mistake(tmp_path: Path) -> None:
    # Given the Lambda template with a variable Lambda reserves
    template = committed("actionrunner-lambda.template.json")
    template["Resources"]["Function"]["Properties"]["Environment"]["Variables"]["AWS_REGION"] = "x"
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(template))
    # Then cfn-lint reports it: the test above is not vacuous
    assert any(m.rule.id == "E3663" for m in lint_file(path, config=LINT))


# -- the emulator's CloudFormation ---------------------------------------------------------------
def _client(service: str) -> Any:
    return boto3.client(service, endpoint_url=MOTO, region_name=REGION,
                        aws_access_key_id="test", aws_secret_access_key="test")


def _create(name: str, template: str, parameters: dict[str, str]) -> dict[str, dict[str, str]]:
    """Create stack ``name``; its resources' Ref (and the attributes this test reads)."""
    cfn = _client("cloudformation")
    cfn.create_stack(StackName=name, TemplateBody=template, Capabilities=["CAPABILITY_IAM"],
                     Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()])
    status = cfn.describe_stacks(StackName=name)["Stacks"][0]["StackStatus"]
    assert status == "CREATE_COMPLETE", status
    resources: dict[str, dict[str, str]] = {}
    for item in cfn.describe_stack_resources(StackName=name)["StackResources"]:
        if item.get("LogicalResourceId"):  # moto lists the resources it skipped without one
            resources[item["LogicalResourceId"]] = {"Ref": item["PhysicalResourceId"],
                                                    "Type": item["ResourceType"]}
    for queue in (r for r in resources.values() if r["Type"] == "AWS::SQS::Queue"):
        queue["QueueName"] = queue["Ref"].rsplit("/", 1)[-1]
        queue["Arn"] = f"arn:aws:sqs:{REGION}:{ACCOUNT}:{queue['QueueName']}"
    return resources


@pytest.fixture(scope="module")
def core_stack(aws: Any) -> Iterator[tuple[Settings, dict[str, dict[str, str]], Stack]]:
    """The core template deployed to moto with names of its own (high-throughput on)."""
    run = uuid.uuid4().hex[:8]
    parameters = {"QueueName": f"cfn-{run}.fifo", "DeadLetterQueueName": f"cfn-{run}-dlq.fifo",
                  "StateTableName": f"cfn-{run}-state", "HighThroughput": "true",
                  "PayloadBucketName": f"cfn-{run}-payloads"}
    name = f"core-{run}"
    text = (deploy.DEPLOY_DIR / "actionrunner-core.template.json").read_text()
    resources = _create(name, text, parameters)  # (moto skips the alarms: see below)
    settings = Settings(queue_name=parameters["QueueName"], dlq_name=parameters["DeadLetterQueueName"],
                        state_table=parameters["StateTableName"],
                        payload_bucket=parameters["PayloadBucketName"],
                        AWS_ENDPOINT_URL_SQS=MOTO, AWS_ENDPOINT_URL_DYNAMODB=MOTO,
                        AWS_ENDPOINT_URL_S3=MOTO)
    yield settings, resources, Stack(json.loads(text), parameters, resources, name)
    _client("cloudformation").delete_stack(StackName=name)
    sqs = _client("sqs")
    for queue in (settings.queue_name, settings.dlq_name):  # retained by the stack (Retain)
        with contextlib.suppress(Exception):
            sqs.delete_queue(QueueUrl=sqs.get_queue_url(QueueName=queue)["QueueUrl"])
    with contextlib.suppress(Exception):
        _client("dynamodb").delete_table(TableName=settings.state_table)


@pytest.mark.integration
def test_the_deployed_queues_are_what_provision_checks(core_stack: Any) -> None:
    settings, resources, _ = core_stack
    # The worker's start-up checks pass against the stack
    provision.check_queues(settings)
    provision.check_table(settings)
    # and `actionrunner provision --check` finds nothing to change but what moto cannot keep
    changes = provision.plan(settings)
    assert [(c.queue, c.kind, c.attribute) for c in changes] == [
        (settings.dlq_name, "unsupported", "RedriveAllowPolicy")]
    sqs = settings.client("sqs")
    attrs = sqs.get_queue_attributes(QueueUrl=resources["Queue"]["Ref"],
                                     AttributeNames=["All"])["Attributes"]
    assert (attrs["DeduplicationScope"], attrs["FifoThroughputLimit"]) == ("messageGroup",
                                                                            "perMessageGroupId")
    assert json.loads(attrs["RedrivePolicy"]) == {
        "deadLetterTargetArn": resources["DeadLetterQueue"]["Arn"],
        "maxReceiveCount": settings.max_receive_count}


@pytest.mark.integration
def test_the_deployed_table_has_the_key_provision_checks(core_stack: Any) -> None:
    settings, _, _ = core_stack
    changes = provision.plan_table(settings)
    assert changes == []
    table = settings.client("dynamodb").describe_table(TableName=settings.state_table)["Table"]
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"


@pytest.mark.integration
def test_the_deployed_payload_bucket_is_private_and_encrypted(core_stack: Any) -> None:
    settings, _, _ = core_stack
    s3 = settings.client("s3")
    s3.head_bucket(Bucket=settings.payload_bucket)
    encryption = s3.get_bucket_encryption(Bucket=settings.payload_bucket)
    [rule] = encryption["ServerSideEncryptionConfiguration"]["Rules"]
    assert rule["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    # (moto's CloudFormation drops the lifecycle rule: it is compared with provision's statically)


@pytest.mark.integration
def test_the_deployed_table_expires_items_on_expires_at(core_stack: Any) -> None:
    settings, _, _ = core_stack
    ttl = settings.client("dynamodb").describe_time_to_live(TableName=settings.state_table)
    assert ttl["TimeToLiveDescription"] == {"TimeToLiveStatus": "ENABLED",
                                            "AttributeName": provision.STATE_TTL_ATTRIBUTE}


@pytest.mark.integration
def test_the_alarms_watch_the_deployed_queues_and_notify_the_topic(core_stack: Any) -> None:
    settings, resources, stack = core_stack
    topic = resources["AlarmTopic"]["Ref"]
    assert topic in [t["TopicArn"] for t in _client("sns").list_topics()["Topics"]]
    # Given the template's alarms, put through the CloudWatch API (moto's CloudFormation skips
    # them; the API validates every property name and shape)
    cloudwatch = _client("cloudwatch")
    alarms = {k: v for k, v in stack.template["Resources"].items()
              if v["Type"] == "AWS::CloudWatch::Alarm"}
    assert set(alarms) == {"DeadLetterQueueNotEmptyAlarm", "OldestMessageAgeAlarm", "FailureRateAlarm",
                           "DeadLetterSendFailingAlarm"}
    for alarm in alarms.values():
        properties = stack.resolve(alarm["Properties"])
        for number in ("Threshold", "EvaluationPeriods", "DatapointsToAlarm", "Period"):
            if number in properties:
                properties[number] = float(properties[number]) if number == "Threshold" \
                    else int(properties[number])
        cloudwatch.put_metric_alarm(**properties)
    name = stack.values["AWS::StackName"]
    found = {a["AlarmName"]: a
             for a in cloudwatch.describe_alarms(AlarmNamePrefix=name)["MetricAlarms"]}
    dlq, oldest, rate, sends = (found[f"{name}-{n}"] for n in (
        "dlq-not-empty", "oldest-message-age", "failure-rate", "dead-letter-send-failing"))
    assert (sends["MetricName"], sends["Namespace"]) == ("DeadLetterSendFailures", "ActionRunner")
    # Then they watch the deployed queues and notify the deployed topic
    assert dlq["Dimensions"] == [{"Name": "QueueName", "Value": settings.dlq_name}]
    assert oldest["Dimensions"] == [{"Name": "QueueName", "Value": settings.queue_name}]
    assert (dlq["Threshold"], oldest["Threshold"]) == (0.0, 600.0)
    for alarm in (dlq, oldest, rate):
        assert alarm["AlarmActions"] == alarm["OKActions"] == [topic]
    metrics = {m["Id"]: m for m in rate["Metrics"]}
    assert metrics["failed"]["MetricStat"]["Metric"]["MetricName"] == "ActionsFailed"
    assert metrics["started"]["MetricStat"]["Metric"]["Namespace"] == "ActionRunner"
    assert metrics["rate"]["ReturnData"] is True


@pytest.mark.integration
def test_the_lambda_stack_consumes_the_deployed_queue(core_stack: Any) -> None:
    settings, resources, _ = core_stack
    # Given a deployment package in the emulator's S3 (its code is not run here)
    run = uuid.uuid4().hex[:8]
    s3 = _client("s3")
    s3.create_bucket(Bucket=f"code-{run}")
    package = io.BytesIO()
    with zipfile.ZipFile(package, "w") as archive:
        archive.writestr("README", "placeholder")
    s3.put_object(Bucket=f"code-{run}", Key="actionrunner.zip", Body=package.getvalue())
    # When the Lambda stack is deployed over the core's queues
    text = (deploy.DEPLOY_DIR / "actionrunner-lambda.template.json").read_text()
    name = f"lambda-{run}"
    resources_ = _create(name, text, {
        "QueueName": settings.queue_name, "DeadLetterQueueName": settings.dlq_name,
        "StateTableName": settings.state_table, "CodeS3Bucket": f"code-{run}",
        "CodeS3Key": "actionrunner.zip"})
    try:
        lambda_ = _client("lambda")
        function = lambda_.get_function_configuration(FunctionName=resources_["Function"]["Ref"])
        [mapping] = lambda_.list_event_source_mappings(FunctionName=function["FunctionName"])[
            "EventSourceMappings"]
        # Then the mapping feeds it the deployed queue, with partial batch responses and a
        # concurrency cap, and the function runs the real handler with the stack's settings
        assert mapping["EventSourceArn"] == resources["Queue"]["Arn"]
        assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
        assert mapping["ScalingConfig"] == {"MaximumConcurrency": 5}
        assert mapping["BatchSize"] == 10
        module, attribute = function["Handler"].rsplit(".", 1)
        assert callable(getattr(import_module(module), attribute))
        env = function["Environment"]["Variables"]
        assert (env["ACTIONRUNNER_QUEUE_NAME"], env["ACTIONRUNNER_DLQ_NAME"],
                env["ACTIONRUNNER_STATE_TABLE"]) == (settings.queue_name, settings.dlq_name,
                                                     settings.state_table)
        assert function["Timeout"] <= int(env["ACTIONRUNNER_VISIBILITY_TIMEOUT"])
    finally:
        _client("cloudformation").delete_stack(StackName=name)


# -- lanes ---------------------------------------------------------------------------------------
LANES = ["bulk.fifo", "reports.fifo"]


def _laned(lanes: list[str] = LANES) -> Settings:
    return deploy.default_settings().model_copy(update={"lanes": lanes})


def _statements(template: dict[str, Any], role: str) -> dict[str, Any]:
    [document] = template["Resources"][role]["Properties"]["Policies"]
    return {s["Sid"]: s["Resource"] for s in document["PolicyDocument"]["Statement"]
            if isinstance(s, dict) and "Sid" in s}


def test_each_lane_gets_its_queue_dlq_alarms_permissions_and_environment() -> None:
    # Given the templates rendered with two lanes (`actionrunner deploy template --lanes ...`)
    settings = _laned()
    core_t, full, function = (build(settings) for build in (
        deploy.core_template, deploy.full_template, deploy.lambda_template))
    wanted = provision.desired_attributes(settings, ACCOUNT)
    for lane, prefix in zip(LANES, ("LaneBulk", "LaneReports"), strict=True):
        dlq = settings.dlq_of(lane)
        arns = {f"{prefix}Queue": lane, f"{prefix}DeadLetterQueue": dlq}
        stack = Stack(core_t, {}, {logical: {"Arn": f"arn:aws:sqs:{REGION}:{ACCOUNT}:{name}",
                                             "QueueName": name} for logical, name in arns.items()})
        # Then each lane and its own DLQ carry exactly provision's attributes (its redrive policy
        # points at its own DLQ, which takes redrives from it only)
        for logical, name in arns.items():
            properties = stack.resolve(core_t["Resources"][logical]["Properties"])
            assert properties["QueueName"] == name
            assert _as_attributes(properties, wanted[name]) == {
                k: provision._normalize(k, v) for k, v in wanted[name].items()}
        redrive = core_t["Resources"][f"{prefix}Queue"]["Properties"]["RedrivePolicy"]
        assert redrive["deadLetterTargetArn"] == {"Fn::GetAtt": [f"{prefix}DeadLetterQueue", "Arn"]}
        # and alarms of their own: the DLQ not empty, the oldest message too old
        alarm = core_t["Resources"][f"{prefix}DeadLetterQueueNotEmptyAlarm"]["Properties"]
        assert alarm["Dimensions"] == [{"Name": "QueueName",
                                        "Value": {"Fn::GetAtt": [f"{prefix}DeadLetterQueue",
                                                                 "QueueName"]}}]
        assert f"{prefix}OldestMessageAgeAlarm" in core_t["Resources"]
        assert f"{prefix}DeadLetterQueueUrl" in core_t["Outputs"]
        # and the full stack has them too, with every role that touches queues allowed on them
        assert f"{prefix}Queue" in full["Resources"] and f"{prefix}DeadLetterQueue" in full["Resources"]
        queue_arn, dlq_arn = (stack.resolve(core.lanes(settings)[LANES.index(lane)].queue_arn),
                              stack.resolve(core.lanes(settings)[LANES.index(lane)].dlq_arn))
        assert (queue_arn, dlq_arn) == (f"arn:aws:sqs:{REGION}:{ACCOUNT}:{lane}",
                                        f"arn:aws:sqs:{REGION}:{ACCOUNT}:{dlq}")
        for template, role, sids in (
                (full, "WorkerTaskRole", {"ConsumeAndSendActions": queue_arn, "DeadLetter": dlq_arn}),
                (full, "ApiTaskRole", {"SendActions": queue_arn, "ManageDeadLetterQueue": dlq_arn}),
                (full, "BeatTaskRole", {"SendActions": queue_arn}),
                (function, "FunctionRole", {"ConsumeAndSendActions": queue_arn,
                                            "DeadLetter": dlq_arn})):
            statements = _statements(template, role)
            for sid, arn in sids.items():
                assert arn in stack.resolve(statements[sid]), (role, sid)
        # and the function consumes each lane through a mapping of its own
        mapping = function["Resources"][f"{prefix}EventSourceMapping"]["Properties"]
        assert stack.resolve(mapping["EventSourceArn"]) == queue_arn
        assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    # Every process is told the lanes (ACTIONRUNNER_LANES), so that it routes and consumes them
    for template in (full, function):
        for process, environment in _environments(template):
            assert Settings(lanes=environment["ACTIONRUNNER_LANES"]).lanes == LANES, process
    # and the workers scale on the backlog of every queue
    scaling = full["Resources"]["WorkerScalingPolicy"]["Properties"][
        "TargetTrackingScalingPolicyConfiguration"]["CustomizedMetricSpecification"]["Metrics"]
    assert {"lane1", "lane2"} <= {m["Id"] for m in scaling}
    assert scaling[-1]["Expression"].startswith("(visible + lane1 + lane2) /")


def test_templates_with_lanes_are_cfn_lint_clean(tmp_path: Path) -> None:
    runner = CliRunner()
    done = runner.invoke(cli, ["deploy", "template", "--out", str(tmp_path), "--lanes", ",".join(LANES)])
    assert done.exit_code == 0, done.output
    assert runner.invoke(cli, ["deploy", "template", "--out", str(tmp_path), "--lanes",
                               ",".join(LANES), "--check"]).exit_code == 0
    assert runner.invoke(cli, ["deploy", "template", "--out", str(tmp_path), "--check"]).exit_code == 1
    assert "LaneBulkQueue" in (tmp_path / "actionrunner.template.json").read_text()
    for name in sorted(deploy.TEMPLATES):
        assert [str(m) for m in lint_file(tmp_path / name, config=LINT)] == [], name
    # a lane that is not a FIFO name is refused as the setting refuses it
    bad = runner.invoke(cli, ["deploy", "template", "--out", str(tmp_path), "--lanes", "bulk"])
    assert bad.exit_code != 0


@pytest.mark.integration
def test_a_deployed_lane_is_what_provision_checks(aws: Any) -> None:
    # Given the core template with a lane, deployed to moto
    run = uuid.uuid4().hex[:8]
    lane = f"cfn-{run}-bulk.fifo"
    settings = Settings(queue_name=f"cfn-{run}.fifo", dlq_name=f"cfn-{run}-dlq.fifo",
                        state_table=f"cfn-{run}-state", lanes=[lane],
                        AWS_ENDPOINT_URL_SQS=MOTO, AWS_ENDPOINT_URL_DYNAMODB=MOTO,
                        AWS_ENDPOINT_URL_S3=MOTO)
    text = deploy.render(_laned([lane]))["actionrunner-core.template.json"]
    name = f"core-lane-{run}"
    resources = _create(name, text, {"QueueName": settings.queue_name,
                                     "DeadLetterQueueName": settings.dlq_name,
                                     "StateTableName": settings.state_table})
    try:
        prefix = core.lanes(settings)[0].prefix
        # Then the lane and its own DLQ exist, and `provision --check` with the lane finds
        # nothing to change but what moto cannot keep
        provision.check_queues(settings)
        changes = provision.plan(settings)
        assert {(c.kind, c.attribute) for c in changes} <= {("unsupported", "RedriveAllowPolicy")}
        attrs = settings.client("sqs").get_queue_attributes(
            QueueUrl=resources[f"{prefix}Queue"]["Ref"], AttributeNames=["All"])["Attributes"]
        assert json.loads(attrs["RedrivePolicy"]) == {
            "deadLetterTargetArn": resources[f"{prefix}DeadLetterQueue"]["Arn"],
            "maxReceiveCount": settings.max_receive_count}
        assert resources[f"{prefix}DeadLetterQueue"]["QueueName"] == settings.dlq_of(lane)
    finally:
        _client("cloudformation").delete_stack(StackName=name)
        sqs = _client("sqs")
        for queue in provision.queue_names(settings):
            with contextlib.suppress(Exception):
                sqs.delete_queue(QueueUrl=sqs.get_queue_url(QueueName=queue)["QueueUrl"])
        with contextlib.suppress(Exception):
            _client("dynamodb").delete_table(TableName=settings.state_table)


# -- the lock files (scripts/lock) ------------------------------------------------------------------
LOCKS = {  # lock -> the extras of pyproject it was made for
    "requirements.lock": ["dev"], "deploy/image.lock": ["flower", "api-docs"], "deploy/lambda.lock": [],
}


def _lock_entries(path: Path) -> list[tuple[Any, list[str]]]:
    """(requirement, hashes) of each entry of a pip requirements file with hashes."""
    from packaging.requirements import Requirement

    text = path.read_text().replace("\\\n", " ")
    entries = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        spec, *hashes = line.split(" --hash=")
        entries.append((Requirement(spec), [h.strip() for h in hashes]))
    return entries


def _wanted(project: dict[str, Any], extras: list[str]) -> list[Any]:
    """pyproject's requirements for ``extras``, self-references (``actionrunner[local]``) expanded."""
    from packaging.requirements import Requirement

    wanted, todo, seen = [Requirement(r) for r in project["dependencies"]], list(extras), set()
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for text in project["optional-dependencies"][extra]:
            req = Requirement(text)
            if req.name == project["name"]:
                todo.extend(req.extras)
            else:
                wanted.append(req)
    return wanted


@pytest.mark.parametrize("lock", [*LOCKS, "deploy/build.lock"])
def test_each_lock_pins_every_package_with_its_hashes(lock: str) -> None:
    from tests.conftest import ROOT

    entries = _lock_entries(ROOT / lock)
    assert entries
    for req, hashes in entries:
        assert [s.operator for s in req.specifier] == ["=="], str(req)
        assert hashes and all(re.fullmatch(r"sha256:[0-9a-f]{64}", h) for h in hashes), str(req)


@pytest.mark.parametrize("lock", LOCKS)
def test_each_lock_holds_what_pyproject_asks_for(lock: str) -> None:
    # a dependency added or bumped in pyproject.toml without `scripts/lock` fails here
    import tomllib

    from packaging.utils import canonicalize_name

    from tests.conftest import ROOT

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pinned: dict[str, list[str]] = {}
    for req, _ in _lock_entries(ROOT / lock):
        pinned.setdefault(canonicalize_name(req.name), []).append(next(iter(req.specifier)).version)
    for req in _wanted(project, LOCKS[lock]):
        versions = pinned.get(canonicalize_name(req.name))
        assert versions, f"{lock} lacks {req}: run scripts/lock"
        for version in versions:
            assert req.specifier.contains(version, prereleases=True), \
                f"{lock} pins {req.name}=={version}, pyproject asks {req}: run scripts/lock"


def test_the_locks_agree_on_every_version_they_share() -> None:
    from tests.conftest import ROOT

    seen: dict[tuple[str, str], tuple[str, str]] = {}
    for lock in LOCKS:
        for req, _ in _lock_entries(ROOT / lock):
            key = (req.name.lower(), str(req.marker))
            version = next(iter(req.specifier)).version
            other = seen.setdefault(key, (lock, version))
            assert other[1] == version, f"{req.name}: {other} but {lock} {version}"
