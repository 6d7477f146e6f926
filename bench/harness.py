"""What the benchmarks share: a private local AWS, queues, worker processes, queue depth."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from actionrunner import provision
from actionrunner.local import LocalAWS, free_port
from actionrunner.settings import Settings, get_settings

OUT = Path(__file__).resolve().parent / "out"


@contextlib.contextmanager
def local_stack(sqs: str = "fauxqs", **env: str) -> Iterator[tuple[LocalAWS, Settings]]:
    """A private emulator on free ports, with the queues provisioned; the environment points at it."""
    OUT.mkdir(exist_ok=True)
    saved = dict(os.environ)
    with LocalAWS(sqs=sqs, moto_port=free_port(), sqs_port=free_port(), log_dir=OUT) as aws:  # type: ignore[arg-type]
        os.environ.update(aws.env())
        os.environ.update(env)
        get_settings.cache_clear()
        settings = get_settings()
        provision.apply(settings)
        try:
            yield aws, settings
        finally:
            os.environ.clear()
            os.environ.update(saved)
            get_settings.cache_clear()


def queue_depth(client: Any, url: str) -> int:
    """Messages visible plus in flight."""
    attrs = client.get_queue_attributes(
        QueueUrl=url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"])


def wait_drained(client: Any, url: str, timeout: float, every: float = 0.25) -> float | None:
    """Seconds until the queue is empty, or None after ``timeout``."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if queue_depth(client, url) == 0:
            return time.monotonic() - start
        time.sleep(every)
    return None


@contextlib.contextmanager
def worker(app: str, concurrency: int, log_name: str, *extra: str) -> Iterator[subprocess.Popen[bytes]]:
    """``celery -A app worker -c N`` in the background; stopped (by PID) when the block ends."""
    log = open(OUT / f"{log_name}.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", app, "worker", "-c", str(concurrency),
         "--without-mingle", "--without-gossip", *extra],
        stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ),
        cwd=Path(__file__).resolve().parents[1],
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()
