"""``actionrunner bench concurrency``'s action: capped at 3 across the fleet. While it runs a
marker ``{n}.{pid}`` exists in ``$ACTIONRUNNER_BENCH_RECORD.running/`` (the bench samples them);
its start and end are lines of ``$ACTIONRUNNER_BENCH_RECORD``."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from actionrunner import action


@action(group="capped:{run}:{n}", max_concurrency=3)
def capped(run: str, n: int, sleep_s: float = 0.5) -> None:
    record = Path(os.environ["ACTIONRUNNER_BENCH_RECORD"])
    running = Path(f"{record}.running")
    running.mkdir(exist_ok=True)
    marker = running / f"{n}.{os.getpid()}"
    marker.touch()
    start = time.time()
    time.sleep(sleep_s)
    line = json.dumps({"n": n, "start": start, "end": time.time(), "pid": os.getpid()}) + "\n"
    fd = os.open(record, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)
    marker.unlink()
