"""Create, or check, the SQS queues and the DynamoDB state table the settings describe.
Idempotent; reports drift.

For the queue, its dead-letter queue and the state table, :func:`plan` compares what exists with
what the settings ask for and lists the :class:`Change` s; :func:`apply` carries them out. Running
it twice makes no change the second time.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from botocore.exceptions import ClientError, EndpointConnectionError

from .errors import EndpointUnreachable, QueueMisconfigured, QueueMissing, TableMissing
from .settings import Settings
from .state.schema import STATE_KEY, STATE_TTL_ATTRIBUTE

#: Attributes whose values are JSON documents (compared parsed, not as text).
JSON_ATTRIBUTES = frozenset({"RedrivePolicy", "RedriveAllowPolicy"})
#: Attributes some local emulators accept but never store (moto drops RedriveAllowPolicy). Against
#: a custom endpoint, their absence is reported as ``unsupported`` instead of drift.
EMULATOR_OPTIONAL = frozenset({"RedriveAllowPolicy"})


@dataclass(frozen=True)
class Change:
    """One difference between a queue and the settings."""

    queue: str
    kind: Literal["create", "update", "unsupported"]
    attribute: str | None = None
    current: str | None = None
    desired: str | None = None

    def __str__(self) -> str:
        if self.kind == "create":
            return f"{self.queue}: missing → create"
        if self.kind == "unsupported":
            return f"{self.queue}: {self.attribute} is not kept by this endpoint (emulator); skipped"
        return f"{self.queue}: {self.attribute} {self.current!r} → {self.desired!r}"


def _normalize(name: str, value: str | None) -> Any:
    if value is None:
        return None
    if name in JSON_ATTRIBUTES:
        try:
            doc = json.loads(value)
        except ValueError:
            return value
        return {k: (str(v) if not isinstance(v, list) else sorted(map(str, v))) for k, v in doc.items()}
    return str(value).lower() if value in ("true", "false", "True", "False") else str(value)


def _arn(region: str, account: str, name: str) -> str:
    return f"arn:aws:sqs:{region}:{account}:{name}"


def _queue_url(client: Any, name: str, endpoint: str | None) -> str | None:
    from .sqs.transport import find_queue_url

    return find_queue_url(client, name, endpoint)


def _account_of(client: Any, urls: dict[str, str | None]) -> str:
    """The account id in the ARNs of this endpoint's queues (AWS: yours; emulators: their own)."""
    for url in urls.values():
        if url:
            arn = client.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
            return str(arn["Attributes"]["QueueArn"].split(":")[4])
    return "000000000000"  # no queue yet: only "create" changes, which need no ARN


def _current(client: Any, url: str) -> dict[str, str]:
    # RedriveAllowPolicy is asked for by name too: some servers leave it out of "All" (fauxqs),
    # others refuse the name (moto)
    try:
        response = client.get_queue_attributes(
            QueueUrl=url, AttributeNames=["All", "RedriveAllowPolicy"]
        )
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "InvalidAttributeName":
            raise
        response = client.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])
    return dict(response.get("Attributes", {}))


def queue_names(settings: Settings) -> list[str]:
    """Every queue to provision, each DLQ before its queue: the queue and its DLQ, then each lane
    (``ACTIONRUNNER_LANES``) and its own DLQ."""
    return [name for queue in settings.queues for name in (settings.dlq_of(queue), queue)]


def desired_attributes(settings: Settings, account: str) -> dict[str, dict[str, str]]:
    """The attributes of every queue and DLQ, as SQS spells them: each queue's RedrivePolicy
    points at its own DLQ, and each DLQ takes redrives from its own queue only."""
    wanted: dict[str, dict[str, str]] = {}
    for queue in settings.queues:
        wanted.update(_pair_attributes(settings, account, queue, settings.dlq_of(queue)))
    return wanted


def _pair_attributes(settings: Settings, account: str, queue: str,
                     dlq: str) -> dict[str, dict[str, str]]:
    common = {
        "FifoQueue": "true",
        "ContentBasedDeduplication": "false",
        "MessageRetentionPeriod": str(settings.message_retention_seconds),
        "MaximumMessageSize": str(settings.max_message_bytes),
        "VisibilityTimeout": str(settings.visibility_timeout),
    }
    queue_arn = _arn(settings.region, account, queue)
    dlq_arn = _arn(settings.region, account, dlq)
    return {
        dlq: {
            **common,
            "RedriveAllowPolicy": json.dumps(
                {"redrivePermission": "byQueue", "sourceQueueArns": [queue_arn]},
                separators=(",", ":"),
            ),
        },
        queue: {
            **common,
            "RedrivePolicy": json.dumps(
                {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": settings.max_receive_count},
                separators=(",", ":"),
            ),
        },
    }


def plan(settings: Settings, client: Any | None = None) -> list[Change]:
    """What :func:`apply` would change: queues to create and attributes that drifted (plus
    ``unsupported`` notes, which :func:`apply` leaves alone). The DLQ comes first."""
    client = client or settings.client("sqs")
    urls = {name: _queue_url(client, name, settings.sqs_endpoint_url)
            for name in queue_names(settings)}
    wanted = desired_attributes(settings, _account_of(client, urls))
    changes: list[Change] = []
    for name, attributes in wanted.items():
        url = urls[name]
        if url is None:
            changes.append(Change(name, "create"))
            continue
        current = _current(client, url)
        for attribute, want in attributes.items():
            have = current.get(attribute)
            if have is None and attribute in EMULATOR_OPTIONAL and settings.sqs_endpoint_url:
                changes.append(Change(name, "unsupported", attribute, None, want))
                continue
            if _normalize(attribute, have) != _normalize(attribute, want):
                changes.append(Change(name, "update", attribute, have, want))
    return changes


def apply(settings: Settings, client: Any | None = None) -> list[Change]:
    """Create missing queues and correct drifted attributes; returns what it changed.

    The DLQ is made first and the ARNs come from the server, so the queue's RedrivePolicy points
    at the DLQ whatever account id the endpoint uses.
    """
    client = client or settings.client("sqs")
    done: list[Change] = []
    for name in queue_names(settings):
        urls = {n: _queue_url(client, n, settings.sqs_endpoint_url)
                for n in queue_names(settings)}
        attributes = desired_attributes(settings, _account_of(client, urls))[name]
        url = urls[name]
        if url is None:
            try:
                client.create_queue(QueueName=name, Attributes=attributes)
            except ClientError as exc:  # a server that refuses an optional attribute
                optional = {k: v for k, v in attributes.items() if k not in EMULATOR_OPTIONAL}
                if not settings.sqs_endpoint_url or optional == attributes:
                    raise
                del exc
                client.create_queue(QueueName=name, Attributes=optional)
            done.append(Change(name, "create"))
            continue
        current = _current(client, url)
        for attribute, want in attributes.items():
            have = current.get(attribute)
            if have is None and attribute in EMULATOR_OPTIONAL and settings.sqs_endpoint_url:
                continue
            if _normalize(attribute, have) == _normalize(attribute, want):
                continue
            if attribute == "FifoQueue":
                raise QueueMisconfigured(name, ["is not a FIFO queue; delete and re-create it"])
            client.set_queue_attributes(QueueUrl=url, Attributes={attribute: want})
            done.append(Change(name, "update", attribute, have, want))
    return done


# -- the DynamoDB state table -------------------------------------------------------------------
# Its shape (key, TTL attribute, kinds of items) is defined in actionrunner.state.schema.


def _table_status(client: Any, name: str, endpoint: str | None) -> dict[str, Any] | None:
    try:
        return dict(client.describe_table(TableName=name)["Table"])
    except EndpointConnectionError as exc:
        raise EndpointUnreachable("DynamoDB", endpoint, exc) from exc
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
            return None
        raise


def _ttl_attribute(client: Any, name: str) -> str | None:
    description = client.describe_time_to_live(TableName=name).get("TimeToLiveDescription", {})
    if description.get("TimeToLiveStatus") in ("ENABLED", "ENABLING"):
        return str(description.get("AttributeName"))
    return None


def plan_table(settings: Settings, client: Any | None = None) -> list[Change]:
    """What :func:`apply_table` would change on the state table."""
    client = client or settings.client("dynamodb")
    table = _table_status(client, settings.state_table, settings.dynamodb_endpoint_url)
    if table is None:
        return [Change(settings.state_table, "create")]
    changes = []
    keys = [(k["AttributeName"], k["KeyType"]) for k in table.get("KeySchema", [])]
    if keys != [(STATE_KEY, "HASH")]:
        changes.append(Change(settings.state_table, "update", "KeySchema", str(keys),
                              f"[('{STATE_KEY}', 'HASH')]"))
    ttl = _ttl_attribute(client, settings.state_table)
    if ttl != STATE_TTL_ATTRIBUTE:
        changes.append(Change(settings.state_table, "update", "TimeToLive", ttl, STATE_TTL_ATTRIBUTE))
    return changes


def apply_table(settings: Settings, client: Any | None = None) -> list[Change]:
    """Create the state table (on-demand capacity) with TTL on ``expires_at``."""
    client = client or settings.client("dynamodb")
    changes = plan_table(settings, client)
    for change in changes:
        if change.kind == "create":
            client.create_table(
                TableName=settings.state_table, BillingMode="PAY_PER_REQUEST",
                AttributeDefinitions=[{"AttributeName": STATE_KEY, "AttributeType": "S"}],
                KeySchema=[{"AttributeName": STATE_KEY, "KeyType": "HASH"}],
            )
            client.get_waiter("table_exists").wait(TableName=settings.state_table,
                                                   WaiterConfig={"Delay": 1, "MaxAttempts": 60})
            client.update_time_to_live(
                TableName=settings.state_table,
                TimeToLiveSpecification={"Enabled": True, "AttributeName": STATE_TTL_ATTRIBUTE},
            )
        elif change.attribute == "TimeToLive":
            client.update_time_to_live(
                TableName=settings.state_table,
                TimeToLiveSpecification={"Enabled": True, "AttributeName": STATE_TTL_ATTRIBUTE},
            )
        else:
            raise QueueMisconfigured(settings.state_table,
                                     [f"{change.attribute} is {change.current}; re-create the table"])
    return changes


# -- the S3 bucket of claim-checked payloads ------------------------------------------------------
def apply_bucket(settings: Settings, client: Any | None = None) -> list[Change]:
    """Create the payload bucket (if one is configured) with a rule that expires leftovers."""
    if not settings.payload_bucket:
        return []
    from .sqs.claimcheck import KEY_PREFIX

    client = client or settings.client("s3")
    changes = []
    try:
        client.head_bucket(Bucket=settings.payload_bucket)
    except ClientError:
        kwargs: dict[str, Any] = {}
        if settings.region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": settings.region}
        client.create_bucket(Bucket=settings.payload_bucket, **kwargs)
        changes.append(Change(settings.payload_bucket, "create"))
    days = max(1, settings.message_retention_seconds // 86_400)
    client.put_bucket_lifecycle_configuration(
        Bucket=settings.payload_bucket,
        LifecycleConfiguration={"Rules": [{
            "ID": "actionrunner-expire-payloads", "Status": "Enabled",
            "Filter": {"Prefix": KEY_PREFIX}, "Expiration": {"Days": days},
        }]},
    )
    return changes


def check_table(settings: Settings, client: Any | None = None) -> None:
    """Raise a clear error unless the state table exists."""
    client = client or settings.client("dynamodb")
    if _table_status(client, settings.state_table, settings.dynamodb_endpoint_url) is None:
        raise TableMissing(settings.state_table, settings.dynamodb_endpoint_url)


def check_queues(settings: Settings, client: Any | None = None) -> None:
    """Raise a clear :class:`~actionrunner.errors.ConfigurationError` unless the queue and its
    DLQ exist and the queue is FIFO with a redrive policy. (Other drift is reported by
    ``actionrunner provision --check``.)"""
    client = client or settings.client("sqs")
    for name in queue_names(settings):
        url = _queue_url(client, name, settings.sqs_endpoint_url)
        if url is None:
            raise QueueMissing(name, settings.sqs_endpoint_url)
    for queue in settings.queues:
        url = _queue_url(client, queue, settings.sqs_endpoint_url)
        if url is None:  # (deleted since the names were checked above)
            raise QueueMissing(queue, settings.sqs_endpoint_url)
        attrs = _current(client, url)
        problems = []
        if attrs.get("FifoQueue", "").lower() != "true":
            problems.append("it is not a FIFO queue")
        if "RedrivePolicy" not in attrs:
            problems.append("it has no RedrivePolicy (dead-letter queue)")
        if problems:
            raise QueueMisconfigured(queue, problems)
