"""Property-based: schemathesis generates requests from the API's own OpenAPI schema, malformed
ones included; none may get a 5xx. Runs in-process (ASGI) against the real local AWS: with a
token, without one (every route but the open health checks must answer 401, whatever the body),
and with bodies over the size cap (413, or 401 first)."""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from actionrunner.api import create_app
from actionrunner.api.auth import hash_token
from actionrunner.settings import ApiToken, Settings

pytestmark = pytest.mark.integration

TOKEN = "fuzz-token"
MAX_BODY = 2048
OPEN = ("/healthz", "/readyz")


# Building the app contacts no server; the requests do (the `aws` fixture starts it).
app = create_app(Settings(api_tokens=[ApiToken(name="fuzz", sha256=hash_token(TOKEN),
                                               scopes=["submit", "admin"])],
                          api_max_body_bytes=MAX_BODY))
schema = schemathesis.openapi.from_asgi("/openapi.json", app)


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_errors_on_any_input(case: Any, aws: Any) -> None:
    if case.path == "/v1/dlq/purge":  # never let the fuzzer purge (it would need the DLQ's name)
        case.body = {"confirm": "no"}
    case.call_and_validate(headers={"Authorization": f"Bearer {TOKEN}"}, checks=[not_a_server_error])


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_without_a_token_every_closed_route_is_401(case: Any, aws: Any) -> None:
    case.headers = {k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"}
    response = case.call()
    if case.method.upper() != case.operation.method.upper():  # an undeclared method: 405
        assert response.status_code == 405
    elif case.path in OPEN:
        assert response.status_code < 500
    else:
        # (413: a body over the cap is refused by its length, before the token is looked at)
        assert response.status_code in (401, 413), (case.path, response.status_code,
                                                     response.text[:200])


@schema.parametrize()
@settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck))
def test_oversized_bodies_are_413(case: Any, aws: Any) -> None:
    if case.method.upper() != case.operation.method.upper() or case.method.upper() != "POST":
        return
    padding = "x" * (MAX_BODY + 1)
    with_token = case.call(headers={"Authorization": f"Bearer {TOKEN}",
                                    "Content-Type": "application/json"},
                           data=f'{{"pad": "{padding}"}}')
    assert with_token.status_code == 413, with_token.text[:200]
    without = case.call(headers={"Content-Type": "application/json"}, data=f'["{padding}"]')
    assert without.status_code in (401, 413)
