"""The conftest of Celery's own integration suite when it runs against ActionRunner
(scripts/celery-suite copies this file over the sdist's ``t/integration/conftest.py``; the test
modules and ``tasks.py`` are Celery's, unedited).

It gives the suite's fixtures what Celery's conftest gave them, pointed at ActionRunner: the
app is ActionRunner's (``actionrunner.app``, configured by ``celery_suite_config``: its FIFO
queue, its result backend on the state table), the session worker is a real
``celery -A actionrunner worker`` process on a private local stack (moto for DynamoDB and S3,
fauxqs for SQS, on 127.0.0.1), and the names the test modules import from their conftest
(``TEST_BACKEND``, ``flaky``, ``check_for_logs``, the Redis helpers) are here. The worker's log
records come back over a socket and are logged again here, so ``caplog`` sees them as it would
an in-process worker's.

Tests listed in ``expected_failures.txt`` (next to this file in the checkout) are marked
expected failures with their reason and not run (``CELERY_SUITE_RUN_EXPECTED=1`` runs them,
strictly: one that passes fails the run, so the list stays true). Tests that need Redis (they
talk to it, or check for its result backend) are skipped by the suite itself.
"""

from __future__ import annotations

import logging
import os
import pickle
import re
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]  # the suite's root (holds t/ and celery_suite_config)
LOGS = Path(os.environ.get("CELERY_SUITE_LOGS", ROOT / "logs"))
#: A test's time limit (Celery's marks give 300 s): a failing chord waits out its whole timeout.
TIME_LIMIT = float(os.environ.get("CELERY_SUITE_TIMEOUT", "90"))
EXPECTED = Path(os.environ.get("CELERY_SUITE_EXPECTED", ROOT / "expected_failures.txt"))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


MOTO_PORT, SQS_PORT, LOG_PORT = _free_port(), _free_port(), _free_port()
ENV = {
    "AWS_ENDPOINT_URL": f"http://127.0.0.1:{MOTO_PORT}",
    "AWS_ENDPOINT_URL_SQS": f"http://127.0.0.1:{SQS_PORT}",
    "AWS_REGION": "us-east-1",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_ACCESS_KEY_ID": "test",
    "AWS_SECRET_ACCESS_KEY": "test",
    "ACTIONRUNNER_CELERY_CONFIG_MODULE": "celery_suite_config",
    "ACTIONRUNNER_RUN_STATUS": "all",  # results kept: the suite reads every task's result
    "ACTIONRUNNER_WAIT_TIME_SECONDS": "1",
    "ACTIONRUNNER_POLLING_INTERVAL": "0.1",
    "ACTIONRUNNER_LOG_LEVEL": "INFO",
    "ACTIONRUNNER_PAYLOAD_BUCKET": "actionrunner-payloads-suite",
    "CELERY_SUITE_LOG_PORT": str(LOG_PORT),
}
for _key in [k for k in os.environ if k.startswith(("ACTIONRUNNER_", "AWS_"))]:
    del os.environ[_key]
os.environ.update(ENV)

from celery.contrib.testing.manager import Manager  # noqa: E402
from celery.exceptions import TimeoutError  # noqa: E402
from kombu.exceptions import ContentDisallowed  # noqa: E402

from actionrunner import provision  # noqa: E402
from actionrunner.app import app as actionrunner_app  # noqa: E402
from actionrunner.local import LocalAWS  # noqa: E402
from actionrunner.settings import get_settings  # noqa: E402

logger = logging.getLogger(__name__)


def _interrupted(signum: int, _frame: Any) -> None:
    """SIGTERM (scripts/test stopping) ends the session as ^C does: the fixtures stop the worker
    and the servers they started."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt(f"signal {signum}")


signal.signal(signal.SIGINT, _interrupted)
signal.signal(signal.SIGTERM, _interrupted)

#: What the test modules compare against (``TEST_BACKEND.startswith('rpc')`` and the like).
TEST_BACKEND = os.environ.get("TEST_BACKEND", str(actionrunner_app.conf.result_backend))
TEST_BROKER = str(actionrunner_app.conf.broker_url)
RETRYABLE_EXCEPTIONS = (OSError, ConnectionError, TimeoutError)

_timeout = pytest.mark.timeout(timeout=300)

__all__ = ("TEST_BACKEND", "check_for_logs", "flaky", "get_active_redis_channels",
           "get_redis_connection")


def is_retryable_exception(exc: BaseException) -> bool:
    return isinstance(exc, RETRYABLE_EXCEPTIONS)


def flaky(fn: Any) -> Any:
    """Celery's ``flaky`` (its reruns need pytest-rerunfailures, which is not used here: a test
    passes on its first run or it fails)."""
    return _timeout(pytest.mark.flaky(reruns=5, reruns_delay=1, cause=is_retryable_exception)(fn))


def get_redis_connection() -> Any:
    pytest.skip("needs a Redis server: the test talks to Redis itself")


def get_active_redis_channels() -> Any:
    return get_redis_connection()


def check_for_logs(caplog: Any, message: str, max_wait: float = 1.0, interval: float = 0.1) -> bool:
    start_time = time.monotonic()
    while time.monotonic() - start_time < max_wait:
        if any(re.search(message, record.message) for record in caplog.records):
            return True
        time.sleep(interval)
    return False


# -- the worker's log records, logged again in this process (caplog) ------------------------
class _Records(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        while True:
            head = self.rfile.read(4)
            if len(head) < 4:
                return
            data = pickle.loads(self.rfile.read(int.from_bytes(head, "big")))  # noqa: S301 (our worker's)
            record = logging.makeLogRecord(data)
            logging.getLogger(record.name).handle(record)


class _RecordServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


# -- the stack and the worker -------------------------------------------------------------
@pytest.fixture(scope="session")
def local_stack() -> Iterator[LocalAWS]:
    """moto (DynamoDB, S3) and fauxqs (SQS) on loopback, provisioned; stopped by PID."""
    LOGS.mkdir(parents=True, exist_ok=True)
    with LocalAWS(sqs="fauxqs", moto_port=MOTO_PORT, sqs_port=SQS_PORT, log_dir=LOGS) as aws:
        settings = get_settings()
        provision.apply(settings)
        provision.apply_table(settings)
        provision.apply_bucket(settings)
        yield aws


@pytest.fixture(scope="session")
def celery_session_app(local_stack: LocalAWS) -> Any:
    """ActionRunner's app (Celery's conftest builds a test app from ``celery_config``)."""
    return actionrunner_app


@pytest.fixture(scope="session")
def celery_session_worker(celery_session_app: Any) -> Iterator[subprocess.Popen[bytes]]:
    """``celery -A actionrunner worker`` from the suite's root, as a user starts it; its log in
    logs/worker.log; stopped by PID (SIGTERM) after the session."""
    server = _RecordServer(("127.0.0.1", LOG_PORT), _Records)
    threading.Thread(target=server.serve_forever, name="celery-suite-logs", daemon=True).start()
    log_path = LOGS / "worker.log"
    concurrency = os.environ.get("CELERY_SUITE_CONCURRENCY", "4")
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "actionrunner", "worker", "-c", concurrency,
             "-P", "prefork", "-l", "INFO", "-n", "celery-suite@%h", "--without-mingle",
             "--without-gossip"],
            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=os.environ.copy())
    try:
        deadline = time.monotonic() + 90
        while b" ready." not in log_path.read_bytes():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the worker did not start:\n" + log_path.read_text()[-3000:])
            time.sleep(0.2)
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        server.shutdown()
        server.server_close()


@pytest.fixture
def celery_app(celery_session_app: Any) -> Iterator[Any]:
    """The session's app, started afresh for each test as Celery's own ``celery_app`` (a new app
    per test, celery.contrib.pytest) would be: what the test changes with ``app.conf.update`` is
    undone after it, and the task sender and event dispatcher Celery builds from the conf once
    (``app.amqp.send_task_message``, ``app.amqp._event_dispatcher``: cached) are built again from
    the test's conf. Without this, ``test_task_sent_event_respects_publish_retry_limit`` sent
    with the retry policy of an earlier test's sender (``max_retries`` 3 for its 0) and a
    test's ``task_send_sent_event=True`` stayed on for every later test."""
    app = celery_session_app
    changes = app.conf.changes
    before = dict(changes)
    _drop_cached_senders(app)
    yield app
    for key in [k for k in changes if k not in before]:
        del changes[key]
    changes.update(before)
    _drop_cached_senders(app)  # (for a later test that uses celery_session_app alone)


def _drop_cached_senders(app: Any) -> None:
    for name in ("send_task_message", "_event_dispatcher"):
        app.amqp.__dict__.pop(name, None)


@pytest.fixture
def app(celery_app: Any) -> Iterator[Any]:
    yield celery_app


@pytest.fixture
def celery_worker() -> None:
    pytest.fail("The integration suite runs against a single shared session worker "
                "(celery_session_worker); spawning per-test workers is not supported.")


@pytest.fixture
def manager(app: Any, celery_session_worker: Any) -> Iterator[Manager]:
    manager = Manager(app)
    yield manager
    try:
        _wait_until_idle(app, IDLE_WAIT)
    except Exception as e:
        logger.warning("Failed to stop Celery test manager cleanly: %s", e)


#: How long a test's teardown waits for the worker to be idle (Celery's waits without a bound:
#: one task that never ends would hold every later test).
IDLE_WAIT = float(os.environ.get("CELERY_SUITE_IDLE_WAIT", "30"))


def _wait_until_idle(app: Any, within: float) -> None:
    """Celery's ``Manager.wait_until_idle`` (purge the queue, then wait for no active task),
    with a bound: past it, says which tasks are still active and goes on."""
    control = app.control
    deadline = time.monotonic() + within
    with app.connection() as connection:
        while control.purge(connection=connection) and time.monotonic() < deadline:
            pass
        inspect = control.inspect(timeout=1.0)
        inspect.connection = connection
        while True:
            try:
                active = inspect.active() or {}
            except ContentDisallowed:  # (as Celery's: test_security_task_done may cause it)
                return
            running = [task for tasks in active.values() for task in tasks]
            if not running:
                return
            if time.monotonic() > deadline:
                names = ", ".join(f"{t.get('name')}[{t.get('id')}]" for t in running)
                raise TimeoutError(f"the worker is still running {names} after {within:.0f} s")
            time.sleep(0.2)


@pytest.fixture(autouse=True)
def ZZZZ_set_app_current(app: Any, celery_session_worker: Any) -> Iterator[None]:  # noqa: N802 (Celery's name)
    """The ActionRunner app is the current one (the suite's ``shared_task``s bind to it), and
    the worker runs for every test (some use neither ``manager`` nor the worker fixture)."""
    app.set_current()
    app.set_default()
    yield


@pytest.fixture(scope="session")
def celery_class_tasks() -> list[Any]:
    from t.integration.tasks import ClassBasedAutoRetryTask
    return [ClassBasedAutoRetryTask]


# -- the expected failures and the counts -------------------------------------------------
def _expected() -> dict[str, str]:
    """``test id | reason`` lines (``#`` comments); ids as pytest prints them, without the path
    (``test_canvas.py::test_chord::test_x``)."""
    found: dict[str, str] = {}
    if EXPECTED.exists():
        for line in EXPECTED.read_text().splitlines():
            line = line.split("#", 1)[0].strip() if line.lstrip().startswith("#") else line.strip()
            if not line:
                continue
            test, _, reason = (part.strip() for part in line.partition("|"))
            if not reason:
                raise pytest.UsageError(f"{EXPECTED}: no reason given for {test!r}")
            found[test] = reason
    return found


def _short_id(item: pytest.Item) -> str:
    return item.nodeid.rsplit("/", 1)[-1]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "flaky: Celery's marker for pytest-rerunfailures (unused here)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    expected = _expected()
    run = os.environ.get("CELERY_SUITE_RUN_EXPECTED") == "1"
    seen = set()
    for item in items:
        item.add_marker(pytest.mark.timeout(TIME_LIMIT), append=False)
        reason = expected.get(_short_id(item))
        if reason is not None:
            seen.add(_short_id(item))
            item.add_marker(pytest.mark.xfail(reason=reason, run=run, strict=True))
    unknown = sorted(set(expected) - seen)
    if unknown and not config.getoption("keyword") and not config.getoption("markexpr"):
        config.stash[_UNKNOWN] = unknown


_UNKNOWN = pytest.StashKey[list[str]]()


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    stats = terminalreporter.stats
    count = {key: len({getattr(r, "nodeid", id(r)) for r in stats.get(key, [])})
             for key in ("passed", "failed", "xfailed", "xpassed", "skipped", "error")}
    considered = count["passed"] + count["failed"] + count["xfailed"] + count["xpassed"] + count["error"]
    # (an xpassed test is one of Celery's own xfail marks, non-strict, that passes here)
    share = 100.0 * (count["passed"] + count["xpassed"]) / considered if considered else 0.0
    write = terminalreporter.write_line
    terminalreporter.section("Celery's integration suite on ActionRunner")
    write(f"passed {count['passed']}, expected failures {count['xfailed']}, failed {count['failed']}, "
          f"errors {count['error']}, passed against Celery's own xfail {count['xpassed']}, skipped by "
          f"the suite (Redis, RabbitMQ or another backend only) {count['skipped']}")
    write(f"{share:.1f} % of the {considered} tests that do not need Redis or RabbitMQ pass")
    reasons: dict[str, list[str]] = {}
    for report in stats.get("xfailed", []):
        reasons.setdefault(str(getattr(report, "wasxfail", "")).removeprefix("reason: "), []).append(
            report.nodeid.rsplit("/", 1)[-1])
    if reasons:
        write("expected failures, by reason:")
        for reason, tests in sorted(reasons.items(), key=lambda kv: -len(kv[1])):
            write(f"  {len(tests):3d}  {reason}")
    for test in config.stash.get(_UNKNOWN, []):
        write(f"expected_failures.txt names a test that was not collected: {test}")
