"""The admin API over HTTP (a real `actionrunner api` server), a real worker, real local AWS."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from actionrunner.api.auth import hash_token
from actionrunner.api.errors import MAX_ECHO
from tests.conftest import ROOT, Worker, _free_port, receive_all

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

SUBMIT, ADMIN = "tok-submit-" + uuid.uuid4().hex, "tok-admin-" + uuid.uuid4().hex
TOKENS = json.dumps([
    {"name": "submitter", "sha256": hash_token(SUBMIT), "scopes": ["submit"]},
    {"name": "operator", "sha256": hash_token(ADMIN), "scopes": ["submit", "admin"]},
])


def _serve(env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "actionrunner.cli", "api", "--port", str(port)], cwd=ROOT,
        env={**os.environ, "ACTIONRUNNER_API_TOKENS": TOKENS, **env},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(base + "/healthz", timeout=1)
            return proc, base
        except httpx.TransportError:
            assert proc.poll() is None, "api exited"
            time.sleep(0.1)
    proc.kill()
    raise AssertionError("api did not start")


@pytest.fixture(scope="module")
def api(aws: Any) -> Iterator[httpx.Client]:
    proc, base = _serve({})
    try:
        with httpx.Client(base_url=base, timeout=30) as client:
            yield client
    finally:
        proc.terminate()
        proc.wait(10)


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_submit_returns_202_and_the_run_is_followed_to_succeeded(
    api: httpx.Client, start_worker: Callable[..., Worker], queue_url: str, record_dir: Path
) -> None:
    worker = start_worker()
    bucket = f"api-{uuid.uuid4().hex[:8]}"
    response = api.post("/v1/actions/tests.actions.record", json={"bucket": bucket, "token": "t1"},
                        headers=auth(SUBMIT))
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["status_url"] == f"/v1/runs/{body['run_id']}" and body["group"] == f"rec:{bucket}"
    status = api.get(body["status_url"], headers=auth(SUBMIT)).json()["status"]
    assert status in ("queued", "running", "succeeded")
    deadline = time.monotonic() + 30
    while (run := api.get(body["status_url"], headers=auth(SUBMIT)).json())["status"] != "succeeded":
        assert time.monotonic() < deadline, run
        time.sleep(0.2)
    assert run["result"] == "t1" and run["attempts"] == 1 and run["action"] == "tests.actions.record"
    assert run["queued_at"] <= run["started_at"] <= run["finished_at"]
    assert worker.lifecycle("succeeded", id=body["run_id"])


def test_bad_requests_get_the_right_status(api: httpx.Client, queue_url: str) -> None:
    bad = api.post("/v1/actions/tests.actions.record", json={"bucket": 3, "sleep_s": "x"},
                   headers=auth(SUBMIT))
    assert bad.status_code == 422
    assert {tuple(d["loc"]) for d in bad.json()["detail"]} == {
        ("body", "bucket"), ("body", "token"), ("body", "sleep_s")}
    assert api.post("/v1/actions/no.such", json={}, headers=auth(SUBMIT)).status_code == 404
    assert api.post("/v1/actions/tests.actions.record", json={}).status_code == 401
    assert api.post("/v1/actions/tests.actions.record", json={},
                    headers=auth("wrong")).status_code == 401
    assert api.get("/v1/dlq", headers=auth(SUBMIT)).status_code == 403
    assert api.get("/v1/queues", headers=auth(ADMIN)).status_code == 200
    assert api.get("/v1/runs/" + uuid.uuid4().hex, headers=auth(SUBMIT)).status_code == 404
    assert api.get("/healthz").status_code == 200 and api.get("/readyz").status_code == 200
    actions = {a["name"]: a for a in api.get("/v1/actions", headers=auth(SUBMIT)).json()}
    assert actions["tests.actions.record"]["input_schema"]["required"] == ["bucket", "token"]


def test_idempotency_key_returns_the_same_run_and_sends_one_message(
    api: httpx.Client, sqs: Any, queue_url: str
) -> None:
    key, token = uuid.uuid4().hex, uuid.uuid4().hex
    first = api.post("/v1/actions/tests.actions.record", json={"bucket": "idem", "token": token},
                     headers={**auth(SUBMIT), "Idempotency-Key": key})
    again = api.post("/v1/actions/tests.actions.record", json={"bucket": "idem", "token": token},
                     headers={**auth(SUBMIT), "Idempotency-Key": key})
    assert first.status_code == again.status_code == 202
    assert first.json()["run_id"] == again.json()["run_id"]
    assert again.headers["Idempotent-Replayed"] == "true"
    assert len(receive_all(sqs, queue_url, 2, timeout=4, token=token)) == 1
    other = api.post("/v1/actions/tests.actions.record", json={"bucket": "idem", "token": "other"},
                     headers={**auth(SUBMIT), "Idempotency-Key": key})
    assert other.status_code == 422 and "different inputs" in other.text


def test_two_submits_with_equal_inputs_are_two_runs_and_a_keyed_repeat_runs_once(
    api: httpx.Client, start_worker: Callable[..., Worker], record_dir: Path
) -> None:
    worker = start_worker()
    bucket, token = f"api-twice-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    body = {"bucket": bucket, "token": token}
    runs = [api.post("/v1/actions/tests.actions.record", json=body, headers=auth(SUBMIT)).json()
            for _ in range(2)]
    assert runs[0]["run_id"] != runs[1]["run_id"] and runs[0]["dedup_id"] != runs[1]["dedup_id"]
    for run in runs:
        worker.wait_for(lambda r=run: worker.lifecycle("succeeded", id=r["run_id"]), what="a run")
    assert (record_dir / f"{bucket}.txt").read_text().splitlines() == [token, token]
    # an Idempotency-Key: the repeat sends nothing new, the call ran once
    keyed = {"bucket": bucket + "-k", "token": token}
    headers = {**auth(SUBMIT), "Idempotency-Key": uuid.uuid4().hex}
    one = api.post("/v1/actions/tests.actions.record", json=keyed, headers=headers).json()
    worker.wait_for(lambda: worker.lifecycle("succeeded", id=one["run_id"]), what="the keyed run")
    two = api.post("/v1/actions/tests.actions.record", json=keyed, headers=headers).json()
    assert two["run_id"] == one["run_id"] and two["replayed"] is True
    time.sleep(2)
    assert len(worker.lifecycle("succeeded", id=one["run_id"])) == 1
    assert (record_dir / f"{bucket}-k.txt").read_text().splitlines() == [token]


def test_redrive_moves_dlq_messages_back_and_they_run(
    api: httpx.Client, start_worker: Callable[..., Worker], queue_url: str
) -> None:
    run = uuid.uuid4().hex[:8]
    sent = api.post("/v1/actions/tests.actions.broken_once", json={"run": run}, headers=auth(SUBMIT))
    run_id = sent.json()["run_id"]
    worker = start_worker()
    worker.wait_for(lambda: worker.lifecycle("dead-lettered", id=run_id), timeout=30, what="DLQ")
    # the status row is written just after the log line
    status = worker.wait_for(
        lambda: (st := api.get(f"/v1/runs/{run_id}", headers=auth(SUBMIT)).json())["status"]
        == "dead-lettered" and st, timeout=10, what="the run's status to say dead-lettered")
    assert status["error_type"] == "RuntimeError" and status["attempts"] == 1
    listed = api.get("/v1/dlq", headers=auth(ADMIN)).json()
    assert [d["failure"]["error_type"] for d in listed if d["run_id"] == run_id] == ["RuntimeError"]
    moved = api.post("/v1/dlq/redrive", json={"group": f"once:{run}"}, headers=auth(ADMIN))
    assert moved.status_code == 200 and moved.json()["moved"] == 1
    worker.wait_for(lambda: worker.lifecycle("succeeded", id=run_id), timeout=30, what="the redriven run")
    final = worker.wait_for(
        lambda: (st := api.get(f"/v1/runs/{run_id}", headers=auth(SUBMIT)).json())["status"]
        == "succeeded" and st, timeout=10, what="the run's status to say succeeded")
    assert final["result"] == f"fixed {run}"


def test_purge_needs_the_explicit_confirmation(api: httpx.Client) -> None:
    assert api.post("/v1/dlq/purge", headers=auth(ADMIN)).status_code == 400
    assert api.post("/v1/dlq/purge", json={"confirm": "yes"}, headers=auth(ADMIN)).status_code == 400
    assert api.post("/v1/dlq/purge", json={"confirm": "yes"}, headers=auth(SUBMIT)).status_code == 403


@pytest.fixture(scope="module")
def unreachable(aws: Any) -> Iterator[str]:
    """An API whose SQS endpoint is a closed port."""
    proc, base = _serve({"AWS_ENDPOINT_URL_SQS": f"http://127.0.0.1:{_free_port()}"})
    try:
        yield base
    finally:
        proc.terminate()
        proc.wait(10)


def test_sqs_unreachable_is_503_and_never_202(unreachable: str) -> None:
    sent = httpx.post(unreachable + "/v1/actions/tests.actions.record",
                      json={"bucket": "b", "token": "t"}, headers=auth(SUBMIT), timeout=60)
    assert sent.status_code == 503 and "SQS" in sent.json()["detail"]
    assert httpx.get(unreachable + "/readyz", timeout=30).status_code == 503


def test_readyz_keeps_internals_out_of_its_open_answer(unreachable: str) -> None:
    ready = httpx.get(unreachable + "/readyz", timeout=30)
    assert ready.status_code == 503 and ready.json()["detail"].startswith("SQS is unavailable")
    for internal in ("http", "127.0.0.1", str(urlsplit(unreachable).port), "amazonaws", "arn:"):
        assert internal not in ready.text


def _raw(base: str, request: bytes) -> tuple[int, float]:
    """Send ``request`` on a socket of its own; the answer's status and the seconds it took."""
    url = urlsplit(base)
    start = time.monotonic()
    with socket.create_connection((url.hostname, url.port), timeout=10) as conn:
        conn.sendall(request)
        head = conn.recv(65536)
    return int(head.split(b" ")[1]), time.monotonic() - start


def test_an_unauthenticated_huge_body_is_refused_without_being_read(api: httpx.Client) -> None:
    path, host = b"/v1/actions/tests.actions.record", b"Host: 127.0.0.1\r\n"
    # 50 MB announced, 1 KB sent: an answer proves the server did not wait for the rest
    announced = (b"POST " + path + b" HTTP/1.1\r\n" + host + b"Content-Type: application/json\r\n"
                 b"Content-Length: 52428800\r\n\r\n" + b"[" * 1024)
    status, took = _raw(str(api.base_url), announced)
    assert status in (401, 413) and took < 5
    # no length (chunked): the token is checked before the first byte of the body is read
    chunked = (b"POST " + path + b" HTTP/1.1\r\n" + host + b"Content-Type: application/json\r\n"
               b"Transfer-Encoding: chunked\r\n\r\n" + b"400\r\n" + b"[" * 1024 + b"\r\n")
    status, took = _raw(str(api.base_url), chunked)
    assert status == 401 and took < 5


def test_a_streamed_body_over_the_cap_is_413(api: httpx.Client) -> None:
    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it streams in
        yield b'{"bucket": "'
        for _ in range(40):
            yield b"x" * 65536
        yield b'", "token": "t"}'

    sent = api.post("/v1/actions/tests.actions.record", content=chunks(),
                    headers={**auth(SUBMIT), "Content-Type": "application/json"})
    assert sent.status_code == 413


def test_deep_nesting_without_a_token_is_401(api: httpx.Client) -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    assert api.post("/v1/actions/tests.actions.record", content=deep,
                    headers={"Content-Type": "application/json"}).status_code == 401
    assert api.post("/v1/dlq/redrive", content=deep,
                    headers={**auth(SUBMIT), "Content-Type": "application/json"}).status_code == 403
    assert api.post("/v1/actions/tests.actions.record", content=deep,
                    headers={**auth(SUBMIT), "Content-Type": "application/json"}).status_code < 500


def test_values_that_cannot_travel_are_422_naming_the_field(api: httpx.Client) -> None:
    # Given inputs JSON reads but the wire cannot carry as they are
    def post(name: str, content: bytes) -> httpx.Response:
        return api.post(f"/v1/actions/tests.actions.{name}", content=content,
                        headers={**auth(SUBMIT), "Content-Type": "application/json"})

    cases = {  # body -> the field the 422 must name
        b'{"a": 18446744073709551616}': ["body", "a"],                      # 2**64
        b'{"a": -9223372036854775809}': ["body", "a"],                      # -2**63 - 1
        b'{"a": "' + b"9" * 40 + b'"}': ["body", "a"],                      # coerced to 133 bits
    }
    for body, loc in cases.items():
        # When it is submitted, Then 422 names the field, and no 500 from kombu's EncodeError
        answer = post("kept_add", body)
        assert answer.status_code == 422, (body, answer.text)
        assert [d["loc"] for d in answer.json()["detail"]] == [loc], answer.text
        assert "64" in answer.json()["detail"][0]["msg"]
    nested = {
        b'{"run": "r", "value": {"x": [1, 340282366920938463463374607431768211456]}}':
            (["body", "value", "x", "1"], "out of range"),
        b'{"run": "r", "value": NaN}': (["body", "value"], "finite"),
        b'{"run": "r", "value": {"k": "\\ud800"}}': (["body", "value", "k"], "surrogate"),
    }
    for body, (loc, what) in nested.items():
        answer = post("echo", body)
        assert answer.status_code == 422, (body, answer.text)
        assert answer.json()["detail"][0]["loc"] == loc and what in answer.json()["detail"][0]["msg"]


def test_error_answers_never_echo_a_long_value(api: httpx.Client) -> None:
    long = "q" * 300_000
    answers = [
        # a group rendered from a 300 KB input (the MessageGroupId error quotes it)
        api.post("/v1/actions/tests.actions.record", json={"bucket": long, "token": "t"},
                 headers=auth(SUBMIT)),
        # a too-long query value (FastAPI's validation error carries the input)
        api.post("/v1/actions/tests.actions.record", params={"group": long[:60_000]},
                 json={"bucket": "b", "token": "t"}, headers=auth(SUBMIT)),
        # 300 unknown fields with long names
        api.post("/v1/actions/tests.actions.record",
                 json={"bucket": "b", "token": "t", **{f"{i}{long[:2000]}": i for i in range(300)}},
                 headers=auth(SUBMIT)),
        api.get("/v1/runs/" + long[:5000], headers=auth(SUBMIT)),
    ]
    for answer in answers:
        assert answer.status_code == 422, answer.text[:300]
        assert len(answer.content) < 3000, (len(answer.content), answer.text[:300])
        assert "q" * (MAX_ECHO + 1) not in answer.text
    assert "is 300004 characters; SQS accepts at most 128" in answers[0].text  # the reason stays


def _exchange(base: str, head: bytes, first: bytes, wait: float = 4) -> tuple[int, bytes, bool]:
    """Send ``head`` and a first piece of a body that never ends; the answer's status, its
    headers, and whether the server closed the connection after answering (within ``wait`` s;
    uvicorn closes an idle kept-alive connection after 5 s)."""
    url = urlsplit(base)
    with socket.create_connection((url.hostname, url.port), timeout=wait) as conn:
        conn.sendall(head + first)
        got = b""
        try:
            while chunk := conn.recv(65536):
                got += chunk
            closed = True
        except TimeoutError:
            closed = False
    head_part = got.split(b"\r\n\r\n", 1)[0]
    return int(got.split(b" ")[1]), head_part.lower(), closed


def test_an_answer_to_an_unread_body_closes_the_connection(api: httpx.Client) -> None:
    base, host = str(api.base_url), b"Host: 127.0.0.1\r\nContent-Type: application/json\r\n"
    chunked = b"Transfer-Encoding: chunked\r\n\r\n"
    piece = b"400\r\n" + b"[" * 1024 + b"\r\n"
    submit = b"POST /v1/actions/tests.actions.record HTTP/1.1\r\n" + host
    redrive = b"POST /v1/dlq/redrive HTTP/1.1\r\n" + host
    cases = [
        (submit + chunked, 401),                                                     # no token
        (submit + b"Authorization: Bearer nope\r\n" + chunked, 401),                 # unknown
        (redrive + f"Authorization: Bearer {SUBMIT}\r\n".encode() + chunked, 403),   # no scope
        (submit + f"Authorization: Bearer {SUBMIT}\r\n".encode()
         + b"Content-Length: 52428800\r\n\r\n", 413),                               # too large
    ]
    for head, expected in cases:
        status, headers, closed = _exchange(base, head, piece)
        assert status == expected, (head, status)
        assert b"connection: close" in headers and closed, (head, headers)
    # a body read to its end keeps the connection (keep-alive)
    body = b'{"bucket": 3}'
    status, headers, closed = _exchange(
        base, submit + f"Authorization: Bearer {SUBMIT}\r\nContent-Length: {len(body)}\r\n\r\n"
        .encode(), body, wait=2)
    assert status == 422 and b"connection: close" not in headers and not closed


def test_docs_are_served_from_this_server_only(api: httpx.Client) -> None:
    import re

    page = api.get("/docs")
    assert page.status_code == 200 and "swagger-ui" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    # every script, style and icon the page loads is ours, and each is there
    links = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", page.text)
    assert len(links) >= 3, page.text
    for link in links:
        assert link.startswith("/") and not link.startswith("//"), link
        assert api.get(link).status_code == 200, link
    assert "://" not in re.sub(r"<!--.*?-->", "", page.text, flags=re.S)  # no other origin at all
    assert api.get("/openapi.json").json()["info"]["title"] == "ActionRunner admin API"
    assert api.get("/redoc").status_code == 404  # FastAPI's ReDoc page loads from a CDN
