"""The ECS Fargate part of ``actionrunner.template.json``: workers scaled on the backlog per
worker, one beat, the admin API behind a load balancer, Flower behind basic auth (optional).

All four run the image of ``deploy/Dockerfile`` with one word of command (``worker``, ``beat``,
``api``, ``flower``) and the same environment (:func:`~actionrunner.deploy.params.service_environment`).
"""

from __future__ import annotations

from typing import Any

from ..settings import Settings
from . import iam
from .cfn import NO_VALUE, assume_role, equals, get_att, if_, not_, parameter, policy, ref, sub
from .cfn import allow as allow_
from .core import lanes as lane_pairs
from .params import service_environment

#: Seconds Fargate allows between SIGTERM and SIGKILL at most.
FARGATE_MAX_STOP_TIMEOUT = 120
API_PORT, FLOWER_PORT = 8000, 5555
#: What happens to a stateful resource when the stack deletes or replaces it: the operators' API
#: tokens are kept; logs (which expire anyway) and the generated Flower password go.
KEEP = {"DeletionPolicy": "Retain", "UpdateReplacePolicy": "Retain"}
DROP = {"DeletionPolicy": "Delete", "UpdateReplacePolicy": "Delete"}
#: (cpu units, MiB) of each process's task.
TASK_SIZES = {"beat": ("256", "512"), "api": ("512", "1024"), "flower": ("256", "512")}


def ecs_parameters() -> dict[str, Any]:
    subnets = "List<AWS::EC2::Subnet::Id>"
    return {
        "Image": parameter("String", "Image built from deploy/Dockerfile (e.g. <account>.dkr.ecr."
                           "<region>.amazonaws.com/actionrunner:<tag>)."),
        "VpcId": parameter("AWS::EC2::VPC::Id", "VPC of the services."),
        "SubnetIds": parameter(subnets, "Private subnets of the tasks; they reach SQS, DynamoDB, "
                               "ECR, CloudWatch Logs and Secrets Manager through a NAT gateway or "
                               "VPC endpoints."),
        "AssignPublicIp": parameter("String", "Give tasks a public IP (only for subnets without "
                                    "NAT).", "DISABLED", AllowedValues=["DISABLED", "ENABLED"]),
        "LoadBalancerSubnetIds": parameter(subnets, "Subnets of the API's load balancer."),
        "LoadBalancerScheme": parameter("String", "internal (default: the API is an admin API) or "
                                        "internet-facing.", "internal",
                                        AllowedValues=["internal", "internet-facing"]),
        "AllowedCidr": parameter("String", "Addresses allowed to reach the load balancer (HTTPS).",
                                 "10.0.0.0/8",
                                 AllowedPattern=r"^\d{1,3}(\.\d{1,3}){3}/\d{1,2}$"),
        "CertificateArn": parameter("String", "ACM certificate of the load balancer's HTTPS "
                                    "listener.", AllowedPattern=r"^arn:aws[a-z-]*:acm:.+$"),
        "CpuArchitecture": parameter("String", "Architecture the image was built for.", "X86_64",
                                     AllowedValues=["X86_64", "ARM64"]),
        "WorkerConcurrency": parameter("Number", "celery worker -c: actions one task runs at once "
                                       "(one per message group at a time).", 4,
                                       MinValue=1, MaxValue=64),
        "WorkerCpu": parameter("String", "CPU units of a worker task.", "1024",
                               AllowedValues=["256", "512", "1024", "2048", "4096"]),
        "WorkerMemory": parameter("String", "MiB of a worker task (a valid Fargate pair with "
                                  "WorkerCpu).", "2048"),
        "WorkerMinCount": parameter("Number", "Fewest worker tasks.", 1, MinValue=1),
        "WorkerMaxCount": parameter("Number", "Most worker tasks (more than active groups / "
                                    "WorkerConcurrency adds nothing: see docs/scaling.md).", 10,
                                    MinValue=1),
        "BacklogPerWorker": parameter("Number", "Target visible messages per worker task: "
                                      "acceptable wait (s) x actions per second one task runs.",
                                      100, MinValue=1),
        "ApiDesiredCount": parameter("Number", "API tasks.", 2, MinValue=1),
        "EnableFlower": parameter("String", "Run Flower at /flower behind basic auth (it sees "
                                  "little on SQS: see deploy/README.md).", "false",
                                  AllowedValues=["true", "false"]),
    }


def ecs_conditions() -> dict[str, Any]:
    return {"EnableFlower": equals(ref("EnableFlower"), "true"),
            "HasExtraPolicies": not_(equals({"Fn::Join": ["", ref("ExtraPolicyArns")]}, ""))}


def _role(statements: list[dict[str, Any]], name: str, extra_policies: bool = False,
          condition: str | None = None) -> dict[str, Any]:
    resource: dict[str, Any] = {"Type": "AWS::IAM::Role", "Properties": {
        "AssumeRolePolicyDocument": assume_role("ecs-tasks.amazonaws.com"),
        "Policies": [{"PolicyName": name, "PolicyDocument": policy(statements)}]}}
    if extra_policies:
        resource["Properties"]["ManagedPolicyArns"] = if_("HasExtraPolicies", ref("ExtraPolicyArns"),
                                                          NO_VALUE)
    if condition:
        resource["Condition"] = condition
    return resource


def _container(role: str, *, port: int | None = None, env: dict[str, Any] | None = None,
               secrets: dict[str, Any] | None = None, stop_timeout: int | None = None,
               lanes: list[str] | None = None) -> dict[str, Any]:
    container: dict[str, Any] = {
        "Name": role, "Image": ref("Image"), "Command": [role], "Essential": True,
        "Environment": [{"Name": k, "Value": v}
                        for k, v in service_environment(env, lanes=lanes).items()],
        "LogConfiguration": {"LogDriver": "awslogs", "Options": {
            "awslogs-group": ref("LogGroup"), "awslogs-region": ref("AWS::Region"),
            "awslogs-stream-prefix": role}},
        "HealthCheck": {"Command": ["CMD", "python", "-m", "actionrunner.healthcheck"],
                        "Interval": 30, "Timeout": 10, "Retries": 3, "StartPeriod": 60},
        "ReadonlyRootFilesystem": True,
        "MountPoints": [{"SourceVolume": "tmp", "ContainerPath": "/tmp", "ReadOnly": False}],
    }
    if port:
        container["PortMappings"] = [{"ContainerPort": port, "Protocol": "tcp"}]
    if secrets:
        container["Secrets"] = [{"Name": k, "ValueFrom": v} for k, v in secrets.items()]
    if stop_timeout:
        container["StopTimeout"] = stop_timeout
    return container


def _task(role: str, container: dict[str, Any], cpu: Any, memory: Any) -> dict[str, Any]:
    return {"Type": "AWS::ECS::TaskDefinition", "Properties": {
        "Family": sub(f"${{AWS::StackName}}-{role}"), "Cpu": cpu, "Memory": memory,
        "NetworkMode": "awsvpc", "RequiresCompatibilities": ["FARGATE"],
        "ExecutionRoleArn": get_att("ExecutionRole", "Arn"),
        "TaskRoleArn": get_att(f"{role.title()}TaskRole", "Arn"),
        "RuntimePlatform": {"OperatingSystemFamily": "LINUX", "CpuArchitecture": ref("CpuArchitecture")},
        "Volumes": [{"Name": "tmp"}], "ContainerDefinitions": [container]}}


def _service(role: str, security_group: str, desired: Any = None,
             target_group: tuple[str, int] | None = None) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "Cluster": ref("Cluster"), "TaskDefinition": ref(f"{role.title()}TaskDefinition"),
        "LaunchType": "FARGATE",
        "NetworkConfiguration": {"AwsvpcConfiguration": {
            "Subnets": ref("SubnetIds"), "SecurityGroups": [ref(security_group)],
            "AssignPublicIp": ref("AssignPublicIp")}},
        "DeploymentConfiguration": {"MinimumHealthyPercent": 100, "MaximumPercent": 200,
                                    "DeploymentCircuitBreaker": {"Enable": True, "Rollback": True}},
        "PropagateTags": "SERVICE", "EnableECSManagedTags": True,
    }
    if desired is not None:
        properties["DesiredCount"] = desired
    if target_group:
        properties["LoadBalancers"] = [{"ContainerName": role, "ContainerPort": target_group[1],
                                        "TargetGroupArn": ref(target_group[0])}]
        properties["HealthCheckGracePeriodSeconds"] = 60
    return {"Type": "AWS::ECS::Service", "Properties": properties}


def _security_group(description: str, ingress: list[dict[str, Any]],
                    condition: str | None = None) -> dict[str, Any]:
    group: dict[str, Any] = {"Type": "AWS::EC2::SecurityGroup", "Properties": {
        "GroupDescription": description, "VpcId": ref("VpcId")}}
    if ingress:
        group["Properties"]["SecurityGroupIngress"] = ingress
    if condition:
        group["Condition"] = condition
    return group


def _from_load_balancer(port: int) -> list[dict[str, Any]]:
    return [{"IpProtocol": "tcp", "FromPort": port, "ToPort": port,
             "SourceSecurityGroupId": ref("LoadBalancerSecurityGroup"),
             "Description": "from the load balancer"}]


def _target_group(port: int, health_path: str, codes: str) -> dict[str, Any]:
    return {"Type": "AWS::ElasticLoadBalancingV2::TargetGroup", "Properties": {
        "TargetType": "ip", "Protocol": "HTTP", "Port": port, "VpcId": ref("VpcId"),
        "HealthCheckPath": health_path, "Matcher": {"HttpCode": codes},
        "TargetGroupAttributes": [{"Key": "deregistration_delay.timeout_seconds", "Value": "30"}]}}


def _network() -> dict[str, Any]:
    return {
        "LoadBalancerSecurityGroup": _security_group("ActionRunner API load balancer: HTTPS in", [
            {"IpProtocol": "tcp", "FromPort": 443, "ToPort": 443, "CidrIp": ref("AllowedCidr"),
             "Description": "HTTPS from the allowed addresses"}]),
        "ApiSecurityGroup": _security_group("ActionRunner API tasks", _from_load_balancer(API_PORT)),
        "FlowerSecurityGroup": _security_group("ActionRunner Flower tasks",
                                               _from_load_balancer(FLOWER_PORT), "EnableFlower"),
        "WorkerSecurityGroup": _security_group("ActionRunner worker and beat tasks: no inbound", []),
        "LoadBalancer": {"Type": "AWS::ElasticLoadBalancingV2::LoadBalancer", "Properties": {
            "Type": "application", "Scheme": ref("LoadBalancerScheme"),
            "Subnets": ref("LoadBalancerSubnetIds"),
            "SecurityGroups": [ref("LoadBalancerSecurityGroup")],
            "LoadBalancerAttributes": [{"Key": "routing.http.drop_invalid_header_fields.enabled",
                                        "Value": "true"}]}},
        "ApiTargetGroup": _target_group(API_PORT, "/healthz", "200"),
        "FlowerTargetGroup": {**_target_group(FLOWER_PORT, "/flower/healthcheck", "200,401"),
                              "Condition": "EnableFlower"},
        "HttpsListener": {"Type": "AWS::ElasticLoadBalancingV2::Listener", "Properties": {
            "LoadBalancerArn": ref("LoadBalancer"), "Port": 443, "Protocol": "HTTPS",
            "Certificates": [{"CertificateArn": ref("CertificateArn")}],
            "SslPolicy": "ELBSecurityPolicy-TLS13-1-2-2021-06",
            "DefaultActions": [{"Type": "forward", "TargetGroupArn": ref("ApiTargetGroup")}]}},
        "FlowerListenerRule": {"Type": "AWS::ElasticLoadBalancingV2::ListenerRule",
                               "Condition": "EnableFlower", "Properties": {
            "ListenerArn": ref("HttpsListener"), "Priority": 10,
            "Conditions": [{"Field": "path-pattern", "PathPatternConfig": {
                "Values": ["/flower", "/flower/*"]}}],
            "Actions": [{"Type": "forward", "TargetGroupArn": ref("FlowerTargetGroup")}]}},
    }


def _identity(settings: Settings) -> dict[str, Any]:
    lanes = lane_pairs(settings)
    secrets = [ref("ApiTokensSecret"), if_("EnableFlower", ref("FlowerSecret"), NO_VALUE)]
    execution = [
        allow_(["ecr:GetAuthorizationToken"], "*", "EcrLogin"),
        allow_(["ecr:BatchCheckLayerAvailability", "ecr:GetDownloadUrlForLayer",
                "ecr:BatchGetImage"], "*", "PullImage"),
        allow_(["logs:CreateLogStream", "logs:PutLogEvents"], get_att("LogGroup", "Arn"), "Logs"),
        allow_(["secretsmanager:GetSecretValue"], secrets, "Secrets"),
    ]
    return {
        "ExecutionRole": {"Type": "AWS::IAM::Role", "Properties": {
            "AssumeRolePolicyDocument": assume_role("ecs-tasks.amazonaws.com"),
            "Policies": [{"PolicyName": "pull-log-secrets", "PolicyDocument": policy(execution)}]}},
        "WorkerTaskRole": _role(iam.worker(lanes=lanes), "worker", extra_policies=True),
        "BeatTaskRole": _role(iam.beat(lanes), "beat"),
        "ApiTaskRole": _role(iam.api(lanes), "api"),
        "FlowerTaskRole": _role(iam.flower(lanes), "flower", condition="EnableFlower"),
        "ApiTokensSecret": {"Type": "AWS::SecretsManager::Secret", **KEEP, "Properties": {
            "Description": "ACTIONRUNNER_API_TOKENS of the admin API: a JSON list of hashed "
                           "tokens (make one with `actionrunner api-token`)",
            "SecretString": "[]"}},
        "FlowerSecret": {"Type": "AWS::SecretsManager::Secret", "Condition": "EnableFlower",
                         **DROP, "Properties": {
            "Description": "Flower basic auth (user admin)",
            "GenerateSecretString": {"SecretStringTemplate": '{"username": "admin"}',
                                     "GenerateStringKey": "password", "PasswordLength": 32,
                                     "ExcludePunctuation": True}}},
    }


def _services(settings: Settings) -> dict[str, Any]:
    stop = min(FARGATE_MAX_STOP_TIMEOUT, int(settings.shutdown_timeout) + 10)
    lanes = settings.lanes
    worker = _container("worker", env={"WORKER_CONCURRENCY": ref("WorkerConcurrency")},
                        stop_timeout=stop, lanes=lanes)
    api = _container("api", port=API_PORT, secrets={"ACTIONRUNNER_API_TOKENS": ref("ApiTokensSecret")},
                     lanes=lanes)
    flower = _container("flower", port=FLOWER_PORT, env={"FLOWER_URL_PREFIX": "flower"},
                        secrets={"FLOWER_PASSWORD": sub("${FlowerSecret}:password::")}, lanes=lanes)
    return {
        "Cluster": {"Type": "AWS::ECS::Cluster", "Properties": {
            # Container Insights publishes RunningTaskCount, which the worker scaling divides by
            "ClusterSettings": [{"Name": "containerInsights", "Value": "enabled"}]}},
        "LogGroup": {"Type": "AWS::Logs::LogGroup", **DROP, "Properties": {
            "LogGroupName": sub("/actionrunner/${AWS::StackName}"),
            "RetentionInDays": ref("LogRetentionDays")}},
        "WorkerTaskDefinition": _task("worker", worker, ref("WorkerCpu"), ref("WorkerMemory")),
        "BeatTaskDefinition": _task("beat", _container("beat", lanes=lanes), *TASK_SIZES["beat"]),
        "ApiTaskDefinition": _task("api", api, *TASK_SIZES["api"]),
        "FlowerTaskDefinition": {**_task("flower", flower, *TASK_SIZES["flower"]),
                                 "Condition": "EnableFlower"},
        # no DesiredCount: the scaling policy owns it (a stack update must not reset it)
        "WorkerService": _service("worker", "WorkerSecurityGroup"),
        # two beats at once (a deploy overlap) send each slot once: slot dedup ids
        "BeatService": _service("beat", "WorkerSecurityGroup", desired=1),
        "ApiService": {**_service("api", "ApiSecurityGroup", ref("ApiDesiredCount"),
                                  ("ApiTargetGroup", API_PORT)), "DependsOn": "HttpsListener"},
        "FlowerService": {**_service("flower", "FlowerSecurityGroup", 1,
                                     ("FlowerTargetGroup", FLOWER_PORT)),
                          "Condition": "EnableFlower", "DependsOn": "FlowerListenerRule"},
    }


def _scaling(settings: Settings) -> dict[str, Any]:
    """The workers (which consume every queue) scale on the visible messages of all of them per
    running task."""
    def stat(metric_id: str, namespace: str, name: str, dimensions: dict[str, Any],
             statistic: str) -> dict[str, Any]:
        return {"Id": metric_id, "ReturnData": False, "MetricStat": {"Stat": statistic, "Metric": {
            "Namespace": namespace, "MetricName": name,
            "Dimensions": [{"Name": k, "Value": v} for k, v in dimensions.items()]}}}

    worker_name = get_att("WorkerService", "Name")
    lanes = [(f"lane{i}", pair) for i, pair in enumerate(lane_pairs(settings), 1)]
    visible = " + ".join(["visible", *(metric_id for metric_id, _ in lanes)])
    if lanes:
        visible = f"({visible})"
    return {
        "WorkerScalableTarget": {"Type": "AWS::ApplicationAutoScaling::ScalableTarget", "Properties": {
            "ServiceNamespace": "ecs", "ScalableDimension": "ecs:service:DesiredCount",
            "ResourceId": sub("service/${Cluster}/${WorkerService.Name}"),
            "MinCapacity": ref("WorkerMinCount"), "MaxCapacity": ref("WorkerMaxCount")}},
        "WorkerScalingPolicy": {"Type": "AWS::ApplicationAutoScaling::ScalingPolicy", "Properties": {
            "PolicyName": sub("${AWS::StackName}-backlog-per-worker"),
            "PolicyType": "TargetTrackingScaling", "ScalingTargetId": ref("WorkerScalableTarget"),
            "TargetTrackingScalingPolicyConfiguration": {
                "TargetValue": ref("BacklogPerWorker"), "ScaleOutCooldown": 60,
                "ScaleInCooldown": 300,
                "CustomizedMetricSpecification": {"Metrics": [
                    stat("visible", "AWS/SQS", "ApproximateNumberOfMessagesVisible",
                         {"QueueName": get_att("Queue", "QueueName")}, "Sum"),
                    *(stat(metric_id, "AWS/SQS", "ApproximateNumberOfMessagesVisible",
                           {"QueueName": get_att(pair.queue_logical, "QueueName")}, "Sum")
                      for metric_id, pair in lanes),
                    stat("tasks", "ECS/ContainerInsights", "RunningTaskCount",
                         {"ClusterName": ref("Cluster"), "ServiceName": worker_name}, "Average"),
                    {"Id": "backlog", "Label": "visible messages per running worker task",
                     "Expression": f"{visible} / IF(tasks > 0, tasks, 1)", "ReturnData": True},
                ]}}}},
    }


def ecs_resources(settings: Settings) -> dict[str, Any]:
    return {**_identity(settings), **_network(), **_services(settings), **_scaling(settings)}


def ecs_outputs() -> dict[str, Any]:
    return {
        "ApiUrl": {"Description": "The admin API (OpenAPI docs at /docs).",
                   "Value": sub("https://${LoadBalancer.DNSName}")},
        "FlowerUrl": {"Condition": "EnableFlower", "Description": "Flower (user admin; password "
                      "in FlowerSecret).", "Value": sub("https://${LoadBalancer.DNSName}/flower/")},
        "ApiTokensSecretArn": {"Description": "Put the JSON list of `actionrunner api-token` "
                               "entries here.", "Value": ref("ApiTokensSecret")},
        "ClusterName": {"Value": ref("Cluster")},
        "LogGroupName": {"Value": ref("LogGroup")},
    }
