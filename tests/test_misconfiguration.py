"""Misconfiguration fails fast, with a message that says what to do."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from typing import Any

import pytest

from tests.conftest import ROOT

WORKER = [sys.executable, "-m", "celery", "-A", "actionrunner", "worker", "-c", "1"]


def _run(cmd: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True,
                          timeout=60)


@pytest.mark.integration
def test_worker_with_a_missing_queue_says_to_provision(aws: Any) -> None:
    done = _run(WORKER, ACTIONRUNNER_QUEUE_NAME=f"missing-{uuid.uuid4().hex[:8]}.fifo")
    assert done.returncode != 0
    assert "does not exist" in done.stderr and "actionrunner provision" in done.stderr


def test_worker_with_an_unreachable_endpoint_says_what_to_start() -> None:
    with socket_closed_port() as port:
        done = _run(WORKER, AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}",
                    AWS_ENDPOINT_URL_SQS=f"http://127.0.0.1:{port}")
    assert done.returncode != 0
    assert f"cannot reach SQS at http://127.0.0.1:{port}" in done.stderr
    assert "actionrunner local-aws" in done.stderr


def test_queue_name_without_fifo_is_refused_by_worker_and_cli() -> None:
    worker = _run(WORKER, ACTIONRUNNER_QUEUE_NAME="orders")
    assert worker.returncode != 0
    assert "ACTIONRUNNER_QUEUE_NAME='orders' must end with '.fifo'" in worker.stderr
    cli = _run([sys.executable, "-m", "actionrunner.cli", "provision"], ACTIONRUNNER_QUEUE_NAME="orders")
    assert cli.returncode == 2
    assert "must end with '.fifo'" in cli.stderr
    assert "Traceback" not in cli.stderr


class socket_closed_port:
    """A loopback port nothing listens on."""

    def __enter__(self) -> int:
        import socket

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            return int(sock.getsockname()[1])

    def __exit__(self, *exc: object) -> None:
        return None
