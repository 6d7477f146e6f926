"""An action with a fleet-wide cap, for tests/test_concurrency_e2e.py (the worker loads it with
``ACTIONRUNNER_IMPORTS=tests.actions,tests.capped_actions``)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from actionrunner import action


def _dir(run: str) -> Path:
    path = Path(os.environ["ACTIONRUNNER_TEST_RECORD_DIR"]) / f"{run}.running"
    path.mkdir(exist_ok=True)
    return path


def _append(run: str, line: dict) -> None:
    data = (json.dumps(line) + "\n").encode()
    fd = os.open(Path(os.environ["ACTIONRUNNER_TEST_RECORD_DIR"]) / f"{run}.capped",
                 os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


@action(group="capped:{run}:{n}", max_concurrency=3)
def capped(run: str, n: int, sleep_s: float = 0.5) -> int:
    """At most 3 at once across the fleet. While it runs, a marker ``{n}.{pid}`` exists in
    ``{run}.running/`` (the test samples them); its start and end are lines of ``{run}.capped``."""
    marker = _dir(run) / f"{n}.{os.getpid()}"
    marker.touch()
    _append(run, {"n": n, "event": "start", "at": time.time(), "pid": os.getpid()})
    time.sleep(sleep_s)
    _append(run, {"n": n, "event": "end", "at": time.time(), "pid": os.getpid()})
    marker.unlink()
    return n
