"""The fault-injecting proxy (bench/faults.py): each kind of fault reaches a boto3 client as the
exception AWS would cause, and the proxy counts what it injected, by kind and by API call."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, ConnectionClosedError, ReadTimeoutError

from actionrunner.settings import Settings
from bench.faults import KINDS, FaultProxy
from tests.conftest import SQS_SERVER

pytestmark = pytest.mark.integration
#: DynamoDB is moto's in both passes of the suite (scripts/test): its tests run in the first only.
dynamodb_only = pytest.mark.skipif(SQS_SERVER == "fauxqs", reason="DynamoDB only: run in pass 1")

#: No retries, a short read timeout: every fault reaches the caller as it is.
BARE = Config(retries={"total_max_attempts": 1, "mode": "standard"}, read_timeout=0.5,
              connect_timeout=2)


@pytest.fixture
def proxies(settings: Settings) -> Iterator[dict[str, FaultProxy]]:
    """A fault proxy in front of each of the local SQS and DynamoDB servers (no faults yet)."""
    sqs = FaultProxy(settings.sqs_endpoint_url or "", rate=0.0, seed=1, slow_seconds=1.0).start()
    dynamodb = FaultProxy(settings.dynamodb_endpoint_url or "", rate=0.0, seed=2,
                          slow_seconds=1.0).start()
    try:
        yield {"sqs": sqs, "dynamodb": dynamodb}
    finally:
        sqs.stop()
        dynamodb.stop()


def _client(settings: Settings, service: str, proxy: FaultProxy, config: Config = BARE) -> Any:
    import boto3

    return boto3.session.Session().client(service, region_name=settings.region,  # type: ignore[call-overload]
                                          endpoint_url=proxy.url, config=config)


def _table_item(settings: Settings, key: str) -> dict[str, Any]:
    return {"pk": {"S": key}, "expires_at": {"N": "9999999999"}}


def _get(settings: Settings, key: str) -> Any:
    direct = settings.client("dynamodb")
    return direct.get_item(TableName=settings.state_table, Key={"pk": {"S": key}},
                           ConsistentRead=True).get("Item")


EXPECTED_CODES = {
    ("sqs", "error"): {"InternalError"},
    ("sqs", "throttle"): {"RequestThrottled"},
    ("dynamodb", "error"): {"InternalServerError"},
    ("dynamodb", "throttle"): {"ProvisionedThroughputExceededException", "ThrottlingException"},
}


@dynamodb_only
@pytest.mark.parametrize("kind", KINDS)
def test_each_fault_reaches_dynamodb_client(settings: Settings, proxies: dict[str, FaultProxy],
                                            kind: str) -> None:
    proxy = proxies["dynamodb"]
    proxy.rate, proxy.kinds = 1.0, (kind,)
    client = _client(settings, "dynamodb", proxy)
    key = f"faults#{uuid.uuid4().hex}"
    for _ in range(2):
        with pytest.raises((ClientError, ConnectionClosedError, ReadTimeoutError)) as caught:
            client.put_item(TableName=settings.state_table, Item=_table_item(settings, key))
        _check(caught.value, "dynamodb", kind)
    assert proxy.faults() == {(kind, "PutItem"): 2}
    assert proxy.faults_by_kind() == {kind: 2} and proxy.faults_by_api() == {"PutItem": 2}
    assert proxy.counts()["PutItem"] == 2
    applied = _get(settings, key) is not None
    assert applied == (kind in ("lost", "slow")), "lost and slow answers are applied; others not"
    proxy.rate = 0.0
    client.put_item(TableName=settings.state_table, Item=_table_item(settings, key))  # recovers


@pytest.mark.parametrize("kind", KINDS)
def test_each_fault_reaches_sqs_client(settings: Settings, proxies: dict[str, FaultProxy],
                                       kind: str) -> None:
    proxy = proxies["sqs"]
    direct = settings.client("sqs")
    url = direct.create_queue(QueueName=f"faults-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    client = _client(settings, "sqs", proxy)
    proxy.rate, proxy.kinds, proxy.apis = 1.0, (kind,), {"SendMessage"}
    with pytest.raises((ClientError, ConnectionClosedError, ReadTimeoutError)) as caught:
        client.send_message(QueueUrl=url, MessageBody="hello")
    _check(caught.value, "sqs", kind)
    assert proxy.faults() == {(kind, "SendMessage"): 1}
    got = direct.receive_message(QueueUrl=url, WaitTimeSeconds=0).get("Messages", [])
    assert len(got) == (1 if kind in ("lost", "slow") else 0)
    # other calls are not eligible: they go through
    assert client.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert proxy.faults_by_api() == {"SendMessage": 1}
    direct.delete_queue(QueueUrl=url)


def _check(exc: BaseException, service: str, kind: str) -> None:
    if kind in ("error", "throttle"):
        assert isinstance(exc, ClientError), repr(exc)
        assert exc.response["Error"]["Code"] in EXPECTED_CODES[(service, kind)]
        status = exc.response["ResponseMetadata"]["HTTPStatusCode"]
        assert status == (500 if kind == "error" else 400)
    elif kind in ("reset", "lost"):
        assert isinstance(exc, ConnectionClosedError), repr(exc)
    else:
        assert isinstance(exc, ReadTimeoutError), repr(exc)


@dynamodb_only
def test_rate_seed_and_counts(settings: Settings, proxies: dict[str, FaultProxy]) -> None:
    """At 30% (errors and throttling only), botocore's standard retries hide most faults; the
    proxy's counts add up to what it injected, all on the eligible API."""
    proxy = proxies["dynamodb"]
    proxy.rate, proxy.kinds, proxy.apis = 0.3, ("error", "throttle"), {"PutItem"}
    client = _client(settings, "dynamodb", proxy,
                     Config(retries={"mode": "standard", "max_attempts": 10}))
    for n in range(15):
        key = f"faults#{uuid.uuid4().hex}-{n}"
        client.put_item(TableName=settings.state_table, Item=_table_item(settings, key))
        client.get_item(TableName=settings.state_table, Key={"pk": {"S": key}})
    faults = proxy.faults()
    injected = sum(faults.values())
    assert injected > 0
    assert set(faults) <= {("error", "PutItem"), ("throttle", "PutItem")}
    assert proxy.counts()["PutItem"] == 15 + injected  # every fault was one more request
    assert proxy.counts()["GetItem"] == 15
    assert sum(proxy.faults_by_kind().values()) == injected == proxy.faults_by_api()["PutItem"]
    assert proxy.reset_faults() == faults and not proxy.faults()


def test_unknown_kind_refused() -> None:
    with pytest.raises(ValueError, match="unknown fault kinds"):
        FaultProxy("http://127.0.0.1:9", kinds=("explode",))
