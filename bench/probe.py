"""The probe both sides run: record one execution as a JSON line, for the benchmarks to read.

No ActionRunner or Celery import here: bench/actions.py (ActionRunner) and bench/stock_app.py
(stock Celery) both call :func:`run_probe`.
"""

from __future__ import annotations

import json
import os
import time

#: File (JSON lines) each execution is appended to; unset: nothing is recorded.
RECORD_ENV = "ACTIONRUNNER_BENCH_RECORD"


def run_probe(side: str, group: str, seq: int, sleep_ms: int, run: str) -> None:
    """Sleep ``sleep_ms``, then append {side, group, seq, run, start, end, pid} to the record file.

    The line goes out in one ``os.write`` on an ``O_APPEND`` descriptor, so lines from concurrent
    processes never interleave.
    """
    start = time.time()
    if sleep_ms > 0:
        time.sleep(sleep_ms / 1000)
    end = time.time()
    path = os.environ.get(RECORD_ENV)
    if not path:
        return
    line = json.dumps({"side": side, "group": group, "seq": seq, "run": run,
                       "start": start, "end": end, "pid": os.getpid()}) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)
