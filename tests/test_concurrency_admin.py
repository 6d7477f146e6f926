"""Changing an action's fleet-wide cap live: ``actionrunner concurrency`` and
``/v1/concurrency`` (a real API server and the real command line, real local AWS)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from actionrunner.settings import Settings
from actionrunner.state.concurrency import FleetLimit, read
from tests.conftest import ROOT
from tests.test_api import ADMIN, SUBMIT, _serve, auth

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

CAPPED = "tests.capped_actions.capped"  # max_concurrency=3
IMPORTS = {"ACTIONRUNNER_IMPORTS": "tests.actions,tests.capped_actions"}


@pytest.fixture(scope="module")
def api(aws: Any) -> Iterator[httpx.Client]:
    proc, base = _serve(IMPORTS)
    try:
        with httpx.Client(base_url=base, timeout=30) as client:
            yield client
    finally:
        proc.terminate()
        proc.wait(10)


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "actionrunner.cli", "concurrency", *args],
                          cwd=ROOT, env={**os.environ, **IMPORTS, "COLUMNS": "200"},
                          capture_output=True, text=True, timeout=60)


def test_the_api_sets_reads_and_removes_the_live_cap(api: httpx.Client, settings: Settings) -> None:
    admin = auth(ADMIN)
    try:
        # When an operator sets it live
        put = api.put(f"/v1/concurrency/{CAPPED}", json={"max_concurrency": 5}, headers=admin)
        assert put.status_code == 200, put.text
        assert put.json() | {"holders": []} == {"action": CAPPED, "declared": 3, "live": 5,
                                                  "in_force": 5, "running": 0, "expired": 0,
                                                  "holders": []}
        # Then it is in the state table, where every worker's next lease obeys it
        limit = FleetLimit(CAPPED, 3, table=settings.state_table,
                           client=settings.client("dynamodb"), lease_seconds=30)
        leases = [limit.acquire() for _ in range(6)]
        assert sum(lease is not None for lease in leases) == 5
        got = api.get(f"/v1/concurrency/{CAPPED}", headers=admin).json()
        assert got["running"] == 5 and len(got["holders"]) == 5
        assert [c["action"] for c in api.get("/v1/concurrency", headers=admin).json()] == [CAPPED]
        for lease in leases:
            if lease is not None:
                limit.release(lease)
        # When it is removed, the declared value is in force again
        deleted = api.delete(f"/v1/concurrency/{CAPPED}", headers=admin).json()
        assert deleted["live"] is None and deleted["in_force"] == 3
    finally:
        api.delete(f"/v1/concurrency/{CAPPED}", headers=admin)


@pytest.mark.parametrize("body", [{"max_concurrency": 0}, {"max_concurrency": -2},
                                  {"max_concurrency": "4"}, {"max_concurrency": 2.5},
                                  {"max_concurrency": True}, {"max_concurrency": 1001}, {}])
def test_the_api_refuses_a_bad_cap_naming_the_field(api: httpx.Client, settings: Settings,
                                                    body: dict[str, Any]) -> None:
    answer = api.put(f"/v1/concurrency/{CAPPED}", json=body, headers=auth(ADMIN))
    assert answer.status_code == 422
    assert any(e["loc"][-1] == "max_concurrency" for e in answer.json()["detail"]), answer.text
    assert read(settings.state_table, settings.client("dynamodb"), CAPPED).live is None


def test_the_api_refuses_unknown_and_uncapped_actions_and_non_admins(api: httpx.Client) -> None:
    body = {"max_concurrency": 2}
    assert api.put("/v1/concurrency/no.such.action", json=body, headers=auth(ADMIN)).status_code == 404
    uncapped = api.put("/v1/concurrency/tests.actions.record", json=body, headers=auth(ADMIN))
    assert uncapped.status_code == 409 and "declares no max_concurrency" in uncapped.text
    assert api.put(f"/v1/concurrency/{CAPPED}", json=body, headers=auth(SUBMIT)).status_code == 403


def test_the_command_line_sets_shows_and_resets_the_live_cap(settings: Settings) -> None:
    try:
        done = cli("set", CAPPED, "7")
        assert done.returncode == 0, done.stderr
        assert read(settings.state_table, settings.client("dynamodb"), CAPPED).live == 7
        shown = cli("show")
        assert shown.returncode == 0 and CAPPED in shown.stdout and " 7 " in shown.stdout
        reset = cli("reset", CAPPED)
        assert reset.returncode == 0, reset.stderr
        assert read(settings.state_table, settings.client("dynamodb"), CAPPED).live is None
    finally:
        cli("reset", CAPPED)


@pytest.mark.parametrize(("args", "message"), [
    (("set", CAPPED, "0"), "max_concurrency must be a whole number from 1 to 1000, not 0"),
    (("set", "--", CAPPED, "-3"), "not -3"),  # (without --: "No such option: -3")
    (("set", CAPPED, "2.5"), "not '2.5'"),
    (("set", CAPPED, "many"), "not 'many'"),
    (("set", "no.such.action", "2"), "no action named 'no.such.action'"),
    (("set", "tests.actions.record", "2"), "declares no max_concurrency"),
])
def test_the_command_line_refuses_bad_input_with_a_clear_error(
        settings: Settings, args: tuple[str, ...], message: str) -> None:
    done = cli(*args)
    assert done.returncode == 2 and message in " ".join(done.stderr.split()), done.stderr
    assert "Traceback" not in done.stderr
    assert read(settings.state_table, settings.client("dynamodb"), CAPPED).live is None
