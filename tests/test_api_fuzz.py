"""Property-based: schemathesis generates requests from the API's own OpenAPI schema, malformed
ones included; none may get a 5xx. Runs in-process (ASGI) against the real local AWS."""

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


# Building the app contacts no server; the requests do (the `aws` fixture starts it).
app = create_app(Settings(api_tokens=[ApiToken(name="fuzz", sha256=hash_token(TOKEN),
                                               scopes=["submit", "admin"])]))
schema = schemathesis.openapi.from_asgi("/openapi.json", app)


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_errors_on_any_input(case: Any, aws: Any) -> None:
    if case.path == "/v1/dlq/purge":  # never let the fuzzer purge (it would need the DLQ's name)
        case.body = {"confirm": "no"}
    case.call_and_validate(headers={"Authorization": f"Bearer {TOKEN}"}, checks=[not_a_server_error])
