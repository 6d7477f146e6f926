"""Property-based: schemathesis generates requests from the API's own OpenAPI schema, malformed
ones included; none may get a 5xx. Runs in-process (ASGI) against the real local AWS: with a
token, without one (every route but the open health checks must answer 401, whatever the body),
and with bodies over the size cap (413, or 401 first). Then hypothesis, over HTTP to the same
app served by uvicorn: integers past 64 bits anywhere in the inputs (422 naming the field), long
strings in every place a value goes (a bounded answer that does not echo them), and chunked
bodies without a token (401, and the connection closed with the body unread)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error

from actionrunner.api import create_app
from actionrunner.api.auth import hash_token
from actionrunner.api.errors import MAX_ECHO
from actionrunner.settings import ApiToken, Settings
from tests.conftest import _free_port

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


# -- over HTTP (uvicorn in a thread of this process, on loopback) ---------------------------------
@pytest.fixture(scope="module")
def served(aws: Any) -> Iterator[str]:
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None,
                                           access_log=False, lifespan="off"))
    thread = threading.Thread(target=server.run, name="fuzz-api", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


FUZZ = settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
HEADERS = {"Authorization": f"Bearer {TOKEN}"}
#: An integer JSON reads and no part of the path holds: 2**64 and up, below -2**63.
too_big = st.one_of(st.integers(min_value=2**64, max_value=2**400),
                    st.integers(min_value=-(2**400), max_value=-(2**63) - 1))
#: Where in a nested input it goes: dict keys and list indexes.
steps = st.lists(st.one_of(st.text(st.characters(codec="ascii", categories=["L", "N"]),
                                   min_size=1, max_size=8),
                           st.integers(min_value=0, max_value=3)), max_size=4)


def _nest(value: Any, path: list[Any]) -> Any:
    for step in reversed(path):
        value = {step: value} if isinstance(step, str) else [0] * step + [value]
    return value


@FUZZ
@given(number=too_big, path=steps)
def test_integers_over_64_bits_are_422_naming_the_field(served: str, number: int,
                                                        path: list[Any]) -> None:
    with httpx.Client(base_url=served, headers=HEADERS, timeout=30) as client:
        typed = client.post("/v1/actions/tests.actions.kept_add", json={"a": number, "b": 1})
        assert typed.status_code == 422, typed.text[:300]
        assert [d["loc"] for d in typed.json()["detail"]] == [["body", "a"]]
        nested = client.post("/v1/actions/tests.actions.echo",
                             json={"run": "fuzz", "value": _nest(number, path)})
        assert nested.status_code == 422, nested.text[:300]
        assert nested.json()["detail"][0]["loc"] == ["body", "value", *map(str, path)]
        assert "out of range" in nested.json()["detail"][0]["msg"]


printable = st.characters(codec="utf-8", exclude_categories=["Cc", "Cs"])


@FUZZ
@given(text=st.text(printable, min_size=130, max_size=6000),  # past SQS ids and MAX_ECHO
       where=st.sampled_from(["body", "group", "key", "name", "run", "queue"]))
def test_long_strings_get_short_answers_that_do_not_echo_them(served: str, text: str,
                                                              where: str) -> None:
    ascii_text = text.encode("ascii", "backslashreplace").decode()  # for the header and the path
    # (an HTTP client refuses to send a header value with whitespace at its ends)
    header_text = ascii_text.strip(" \t") or "k" * 130
    with httpx.Client(base_url=served, headers=HEADERS, timeout=30) as client:
        answer = {
            "body": lambda: client.post("/v1/actions/tests.actions.record",
                                        json={"bucket": text, "token": text}),
            "group": lambda: client.post("/v1/actions/tests.actions.record", params={"group": text},
                                         json={"bucket": "b", "token": "t"}),
            "key": lambda: client.post("/v1/actions/tests.actions.record",
                                       headers={"Idempotency-Key": header_text},
                                       json={"bucket": "b", "token": "t"}),
            "name": lambda: client.post("/v1/actions/" + text, json={}),
            "run": lambda: client.get("/v1/runs/" + text),
            "queue": lambda: client.get("/v1/dlq", params={"queue": text}),
        }[where]()
    assert 400 <= answer.status_code < 500, answer.text[:300]
    assert len(answer.content) < 3000, (where, len(answer.content))
    for echoed in (text, ascii_text):
        assert echoed[:MAX_ECHO + 1] not in answer.text, where


post_paths = sorted(path.replace("{name}", "tests.actions.record")
                    for path, ops in app.openapi()["paths"].items() if "post" in ops)


@FUZZ
@given(path=st.sampled_from(post_paths),
       chunks=st.lists(st.binary(min_size=1, max_size=4096), min_size=1, max_size=6),
       ends=st.booleans())
def test_chunked_bodies_without_a_token_are_401_and_the_connection_closes(
        served: str, path: str, chunks: list[bytes], ends: bool) -> None:
    request = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
               "Transfer-Encoding: chunked\r\n\r\n").encode()
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for chunk in chunks)
    port = int(served.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=4) as conn:
        conn.sendall(request + body + (b"0\r\n\r\n" if ends else b""))
        got = b""
        while chunk := conn.recv(65536):  # a server that kept reading would time out here
            got += chunk
    head = got.split(b"\r\n\r\n", 1)[0].lower()
    assert head.startswith(b"http/1.1 401"), got[:300]
    assert b"connection: close" in head
