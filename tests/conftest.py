"""Fixtures: a real local AWS (moto in server mode, and fauxqs) over HTTP on 127.0.0.1, and real
``celery -A actionrunner worker`` processes.

The emulator's address must be in the environment before ``actionrunner`` is imported (its
settings are read once), so this module picks the ports and sets the variables first.
``ACTIONRUNNER_TEST_SQS=fauxqs`` serves SQS from fauxqs instead of moto.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
LOGS = ROOT / ".local" / "test-logs"
SQS_SERVER = os.environ.get("ACTIONRUNNER_TEST_SQS", "moto")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


MOTO_PORT, SQS_PORT = _free_port(), _free_port()
RECORD_DIR = Path(tempfile.mkdtemp(prefix="actionrunner-test-"))
TEST_ENV = {
    "AWS_ENDPOINT_URL": f"http://127.0.0.1:{MOTO_PORT}",
    "AWS_ENDPOINT_URL_SQS": f"http://127.0.0.1:{SQS_PORT if SQS_SERVER == 'fauxqs' else MOTO_PORT}",
    "AWS_REGION": "us-east-1",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_ACCESS_KEY_ID": "test",
    "AWS_SECRET_ACCESS_KEY": "test",
    "ACTIONRUNNER_WAIT_TIME_SECONDS": "1",  # moto's long poll spins a CPU
    "ACTIONRUNNER_POLLING_INTERVAL": "0.1",
    "ACTIONRUNNER_IMPORTS": "tests.actions",
    "ACTIONRUNNER_LOG_LEVEL": "INFO",
    "ACTIONRUNNER_TEST_RECORD_DIR": str(RECORD_DIR),
    "ACTIONRUNNER_PAYLOAD_BUCKET": "actionrunner-payloads-test",
}
if os.environ.get("ACTIONRUNNER_TEST_WIRE_FORMAT"):  # run the suite with another wire format
    TEST_ENV["ACTIONRUNNER_WIRE_FORMAT"] = os.environ["ACTIONRUNNER_TEST_WIRE_FORMAT"]
for _key in [k for k in os.environ if k.startswith(("ACTIONRUNNER_", "AWS_"))]:
    del os.environ[_key]
os.environ.update(TEST_ENV)

import logging  # noqa: E402

# The test process is a host of the library that chose a level for its lines (as a host does to
# hear of them: docs/library.md): lifecycle lines reach caplog at INFO whatever ran first.
logging.getLogger("actionrunner").setLevel(logging.INFO)

from actionrunner import provision  # noqa: E402
from actionrunner.local import LocalAWS  # noqa: E402
from actionrunner.settings import Settings, get_settings  # noqa: E402


def _interrupted(signum: int, _frame: Any) -> None:
    """The first SIGINT or SIGTERM ends the session as ^C does (its fixtures stop the servers
    they started); later ones are ignored, so they cannot cut that teardown short."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt(f"signal {signum}")


# scripts/test runs the two passes as background jobs, which start with SIGINT ignored, and stops
# them with SIGTERM when it is interrupted: both signals end a session the same way.
signal.signal(signal.SIGINT, _interrupted)
signal.signal(signal.SIGTERM, _interrupted)


@pytest.fixture(scope="session")
def aws() -> Iterator[LocalAWS]:
    """The local AWS, with the default queues provisioned. Stopped (by PID) after the session."""
    emulator = LocalAWS(sqs=SQS_SERVER, moto_port=MOTO_PORT, sqs_port=SQS_PORT, log_dir=LOGS)  # type: ignore[arg-type]
    with emulator:
        provision.apply(get_settings())
        provision.apply_table(get_settings())
        provision.apply_bucket(get_settings())
        yield emulator


@pytest.fixture
def settings(aws: LocalAWS) -> Settings:
    return get_settings()


@pytest.fixture
def sqs(aws: LocalAWS) -> Any:
    return get_settings().client("sqs")


@pytest.fixture
def queue_url(sqs: Any, settings: Settings) -> str:
    """The action queue's URL, with what is visible in it (and its DLQ) deleted before the test.

    (PurgeQueue is limited to once a minute; tests also tell their own messages by a token.)
    """
    for name in (settings.queue_name, settings.dlq_name):
        url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
        while messages := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages"):
            for message in messages:
                sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    return str(sqs.get_queue_url(QueueName=settings.queue_name)["QueueUrl"])


def message_text(message: dict[str, Any]) -> str:
    """The JSON envelope of a message: as it is (compact format), or base64-decoded (stock)."""
    body = message["Body"]
    return body if body.lstrip().startswith("{") else base64.b64decode(body).decode()


def receive_all(
    sqs: Any, url: str, expected: int, timeout: float = 20.0, token: str | None = None
) -> list[dict[str, Any]]:
    """Receive (and delete) until ``expected`` messages arrived (those containing ``token`` when
    given; others are deleted too); with all system attributes."""
    got: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while len(got) < expected and time.monotonic() < deadline:
        response = sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1,
            MessageSystemAttributeNames=["All"],
        )
        for message in response.get("Messages", []):
            if token is None or token in message_text(message):
                got.append(message)
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    return got


def json_lines(path: Path) -> list[dict[str, Any]]:
    """The JSON objects among the lines of a log file."""
    found = []
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            try:
                found.append(json.loads(line))
            except ValueError:
                continue
    return found


class Worker:
    """A ``celery -A actionrunner worker`` subprocess and its JSON log lines."""

    def __init__(self, log_path: Path, proc: subprocess.Popen[bytes]):
        self.log_path, self.proc = log_path, proc

    def events(self) -> list[dict[str, Any]]:
        return json_lines(self.log_path)

    def lifecycle(self, event: str | None = None, **match: Any) -> list[dict[str, Any]]:
        return [
            e for e in self.events()
            if e.get("logger") == "actionrunner.lifecycle"
            and (event is None or e.get("event") == event)
            and all(e.get(k) == v for k, v in match.items())
        ]

    def wait_for(self, predicate: Callable[[], Any], timeout: float = 30.0, what: str = "") -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = predicate()
            if result:
                return result
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited ({self.proc.returncode}) waiting for {what}:\n"
                                     + self.log_path.read_text()[-3000:])
            time.sleep(0.1)
        raise AssertionError(f"timed out after {timeout}s waiting for {what}; worker log tail:\n"
                             + self.log_path.read_text()[-3000:])

    def wait_ready(self, timeout: float = 30.0) -> None:
        self.wait_for(lambda: any("ready." in str(e.get("event")) for e in self.events()),
                      timeout, "the worker to be ready")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return int(self.proc.returncode)


@pytest.fixture
def start_worker(aws: LocalAWS, request: pytest.FixtureRequest) -> Iterator[Callable[..., Worker]]:
    """Start ``celery -A actionrunner worker -c N`` (from the repository root, as a user would)."""
    workers: list[Worker] = []

    def start(concurrency: int = 2, env: dict[str, str] | None = None, wait: bool = True,
              args: tuple[str, ...] = ()) -> Worker:
        LOGS.mkdir(parents=True, exist_ok=True)
        log_path = LOGS / f"{request.node.name}-worker{len(workers)}.log"
        log = open(log_path, "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "actionrunner", "worker", "-c", str(concurrency),
             "--without-mingle", "--without-gossip", "-l", "INFO", *args],
            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
        )
        log.close()
        worker = Worker(log_path, proc)
        workers.append(worker)
        if wait:
            worker.wait_ready()
        return worker

    yield start
    for worker in workers:
        worker.stop()


@pytest.fixture
def record_dir() -> Path:
    return RECORD_DIR


@pytest.fixture(scope="session")
def fast_sqs(aws: LocalAWS) -> Iterator[str]:
    """An SQS endpoint that holds a deep backlog (fauxqs): the session's own when it serves SQS
    from fauxqs, else a fauxqs server of its own (stopped by PID). DynamoDB stays on moto."""
    if aws.fast_sqs is not None:
        yield aws.sqs_url
        return
    from actionrunner.local import FAUXQS_PREFIX, Server, fauxqs_command

    port = _free_port()
    server = Server("fauxqs", fauxqs_command(), "127.0.0.1", port,
                    env={"FAUXQS_DIR": str(FAUXQS_PREFIX), "FAUXQS_PORT": str(port),
                         "FAUXQS_REGION": "us-east-1"},
                    log_path=LOGS / "fauxqs-fast.log", ready_path="/health")
    server.start()
    try:
        server.wait_ready()
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def deep_queue(fast_sqs: str, aws: LocalAWS) -> Callable[..., dict[str, str]]:
    """Make a fresh FIFO queue pair on the deep-backlog SQS server; returns the environment that
    points a worker (or a sender, see :func:`send_many`) at it."""

    if aws.fast_sqs is not None and not os.environ.get("ACTIONRUNNER_TEST_DEEP_AGAIN"):
        pytest.skip("a deep-backlog test runs once, in the first pass (on fauxqs there too); "
                    "ACTIONRUNNER_TEST_DEEP_AGAIN=1 runs it here as well")

    def make(**extra: str) -> dict[str, str]:
        name = f"deep-{uuid.uuid4().hex[:10]}"
        env = {"AWS_ENDPOINT_URL_SQS": fast_sqs, "ACTIONRUNNER_QUEUE_NAME": f"{name}.fifo",
               "ACTIONRUNNER_DLQ_NAME": f"{name}-dlq.fifo", **extra}
        settings = get_settings().model_copy(update={
            "sqs_endpoint_url": fast_sqs, "queue_name": env["ACTIONRUNNER_QUEUE_NAME"],
            "dlq_name": env["ACTIONRUNNER_DLQ_NAME"]})
        provision.apply(settings)
        return env

    return make


def send_many(env: dict[str, str], action: str, calls: list[dict[str, Any]]) -> None:
    """Send ``calls`` of ``action`` (module.name) with ``delay_many`` from a process whose
    settings are ``env`` (this process's app is bound to the session's queue)."""
    module, name = action.rsplit(".", 1)
    code = ("import json, sys\n"
            f"from {module} import {name} as action\n"
            "calls = json.load(sys.stdin)\n"
            "for first in range(0, len(calls), 500):\n"
            "    action.delay_many(calls[first:first + 500])\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, input=json.dumps(calls),
                          env={**os.environ, **env, "ACTIONRUNNER_LOG_LEVEL": "WARNING"},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.fixture
def runtime_logging(settings: Settings) -> Iterator[None]:
    """This test process's logging as one of ActionRunner's runtimes sets it up (the Lambda
    handler's cold start, a worker: ``actionrunner.logging.configure``; lifecycle lines at INFO
    with their CloudWatch EMF block), into a buffer; pytest's own handlers stay, and everything is
    put back afterwards (the rest of the session is a host process again)."""
    import io
    import logging

    from actionrunner import logging as ar_logging

    root = logging.getLogger()
    lifecycle = logging.getLogger(ar_logging.LIFECYCLE_LOGGER)
    levels = {name: logging.getLogger(name).level
              for name in ("actionrunner", "tasks", *ar_logging.QUIET_LOGGERS)}
    saved = (list(root.handlers), root.level, lifecycle.level, ar_logging._direct,
             ar_logging._configured, list(ar_logging._enrichers))
    ar_logging.configure(settings.log_level, "json", stream=io.StringIO())
    try:
        yield
    finally:
        for handler in list(root.handlers):
            if handler not in saved[0]:
                root.removeHandler(handler)
        root.setLevel(saved[1])
        lifecycle.setLevel(saved[2])
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
        ar_logging._direct, ar_logging._configured = saved[3], saved[4]
        ar_logging._enrichers[:] = saved[5]
