"""`actionrunner provision` creates the state table (key ``pk``, TTL on ``expires_at``) next to the
queues: idempotent, drift reported and fixed; a worker without the table says what to do."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from typing import Any

import pytest

from actionrunner import provision
from actionrunner.errors import ConfigurationError, TableMissing
from actionrunner.settings import Settings
from tests.conftest import ROOT

pytestmark = pytest.mark.integration


@pytest.fixture
def fresh(settings: Settings) -> Settings:
    """Settings naming a state table that does not exist yet."""
    return settings.model_copy(update={"state_table": f"state-{uuid.uuid4().hex[:10]}"})


def _ttl(client: Any, table: str) -> dict[str, Any]:
    return dict(client.describe_time_to_live(TableName=table)["TimeToLiveDescription"])


def test_creates_the_state_table_with_its_key_and_ttl(fresh: Settings) -> None:
    client = fresh.client("dynamodb")
    assert [(c.queue, c.kind) for c in provision.apply_table(fresh)] == [(fresh.state_table, "create")]
    table = client.describe_table(TableName=fresh.state_table)["Table"]
    assert table["KeySchema"] == [{"AttributeName": "pk", "KeyType": "HASH"}]
    assert table["AttributeDefinitions"] == [{"AttributeName": "pk", "AttributeType": "S"}]
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    assert _ttl(client, fresh.state_table) == {"TimeToLiveStatus": "ENABLED",
                                               "AttributeName": "expires_at"}


def test_is_idempotent(fresh: Settings) -> None:
    provision.apply_table(fresh)
    assert provision.apply_table(fresh) == []
    assert provision.plan_table(fresh) == []
    provision.check_table(fresh)  # no error


def test_reports_ttl_drift_and_fixes_it(fresh: Settings) -> None:
    # Given a provisioned table whose TTL someone turned off
    provision.apply_table(fresh)
    client = fresh.client("dynamodb")
    client.update_time_to_live(TableName=fresh.state_table, TimeToLiveSpecification={
        "Enabled": False, "AttributeName": "expires_at"})
    # Then the plan names it, with current and desired values
    [drift] = provision.plan_table(fresh)
    assert (drift.kind, drift.attribute, drift.current, drift.desired) == (
        "update", "TimeToLive", None, "expires_at")
    # And apply turns it back on, after which nothing differs
    assert provision.apply_table(fresh) == [drift]
    assert provision.plan_table(fresh) == []
    assert _ttl(fresh.client("dynamodb"), fresh.state_table)["TimeToLiveStatus"] == "ENABLED"


def test_a_table_with_another_key_is_reported_and_not_touched(fresh: Settings) -> None:
    client = fresh.client("dynamodb")
    client.create_table(TableName=fresh.state_table, BillingMode="PAY_PER_REQUEST",
                        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
                        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}])
    drift = {c.attribute: c for c in provision.plan_table(fresh)}
    assert drift["KeySchema"].current == "[('id', 'HASH')]"
    with pytest.raises(ConfigurationError, match="re-create the table"):
        provision.apply_table(fresh)
    with pytest.raises(TableMissing):
        provision.check_table(fresh.model_copy(update={"state_table": fresh.state_table + "-no"}))


def test_cli_provision_creates_the_table_and_check_reports_it_missing(fresh: Settings) -> None:
    env = {**os.environ, "ACTIONRUNNER_STATE_TABLE": fresh.state_table}
    cli = [sys.executable, "-m", "actionrunner.cli", "provision"]
    missing = subprocess.run([*cli, "--check"], env=env, capture_output=True, text=True, cwd=ROOT)
    assert missing.returncode == 1 and fresh.state_table in missing.stderr
    created = subprocess.run(cli, env=env, capture_output=True, text=True, cwd=ROOT)
    assert created.returncode == 0, created.stderr
    clean = subprocess.run([*cli, "--check"], env=env, capture_output=True, text=True, cwd=ROOT)
    assert clean.returncode == 0, clean.stderr
    assert _ttl(fresh.client("dynamodb"), fresh.state_table)["AttributeName"] == "expires_at"


def test_a_worker_without_the_state_table_says_to_provision(fresh: Settings) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "actionrunner", "worker", "-c", "1"], cwd=ROOT,
        env={**os.environ, "ACTIONRUNNER_STATE_TABLE": fresh.state_table},
        capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert f"DynamoDB table {fresh.state_table!r} does not exist" in done.stderr
    assert "actionrunner provision" in done.stderr
