"""Actions used by the tests. The worker loads them through ACTIONRUNNER_IMPORTS=tests.actions."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from actionrunner import action


def _record_path() -> Path:
    return Path(os.environ["ACTIONRUNNER_TEST_RECORD_DIR"])


@action(group="rec:{bucket}")
def record(bucket: str, token: str, sleep_s: float = 0.0) -> str:
    """Append ``token`` to the bucket's file, so tests can see what ran, how often, in what order."""
    if sleep_s:
        time.sleep(sleep_s)
    with open(_record_path() / f"{bucket}.txt", "a") as out:
        out.write(token + "\n")
    return token


@action(group="explode:{token}")
def explode(token: str) -> None:
    """Always fails."""
    raise ValueError(f"boom {token}")


def _append_json(name: str, line: dict) -> None:
    import json

    data = (json.dumps(line) + "\n").encode()
    fd = os.open(_record_path() / name, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


@action(group="probe:{run}:{group}")
def probe(run: str, group: str, seq: int, sleep_s: float = 0.0, fail_times: int = 0) -> None:
    """Record start/end of each run (one JSON line) to ``{run}.jsonl``; fail the first
    ``fail_times`` attempts."""
    start = time.time()
    attempts_file = _record_path() / f"{run}-{group}-{seq}.attempts"
    with open(attempts_file, "a") as out:
        out.write("x")
    attempt = len(attempts_file.read_text())
    if sleep_s:
        time.sleep(sleep_s)
    ok = attempt > fail_times
    _append_json(f"{run}.jsonl", {"group": group, "seq": seq, "start": start, "end": time.time(),
                                 "pid": os.getpid(), "attempt": attempt, "ok": ok})
    if not ok:
        raise RuntimeError(f"flaky failure {attempt}/{fail_times}")


@action(group="boom:{run}", max_attempts=2, retry_backoff=0.2, retry_backoff_max=0.5)
def boom(run: str, n: int = 0) -> None:
    """Always fails; two attempts, then the DLQ."""
    raise ValueError(f"boom {run} {n}")


@action(group="hold:{run}", max_attempts=1, on_exhausted="hold", hold_seconds=2)
def fragile_head(run: str, fail_receives: int = 1) -> None:
    """Fails on its first ``fail_receives`` runs; held (not dead-lettered) when it does."""
    attempts_file = _record_path() / f"{run}-head.attempts"
    with open(attempts_file, "a") as out:
        out.write("x")
    attempt = len(attempts_file.read_text())
    _append_json(f"{run}.jsonl", {"group": "head", "seq": 0, "start": time.time(),
                                 "end": time.time(), "attempt": attempt,
                                 "ok": attempt > fail_receives, "pid": os.getpid()})
    if attempt <= fail_receives:
        raise RuntimeError("not yet")


@action(group="chunks:{run}")
def chunked(run: str, total: int, cursor: int = 0, chunk: int = 3) -> dict:
    """One step of a cursor chain: records its cursor, then continues itself until done."""
    _append_json(f"{run}.jsonl", {"group": "chunks", "seq": cursor, "start": time.time(),
                                 "end": time.time(), "attempt": 1, "ok": True, "pid": os.getpid()})
    if cursor + chunk < total:
        chunked.continue_with(cursor=cursor + chunk)
    return {"cursor": cursor}


@action(group="once:{run}", max_attempts=1)
def broken_once(run: str) -> str:
    """Fails on its first run only (so it lands in the DLQ), succeeds when redriven."""
    marker = _record_path() / f"{run}-broken.attempts"
    with open(marker, "a") as out:
        out.write("x")
    if len(marker.read_text()) == 1:
        raise RuntimeError("broken the first time")
    return f"fixed {run}"


# -- exactly-once effects and shared rate limits (tests/test_idempotency.py, test_rate_limit.py) --
@action(group="tally:{run}", key="{run}:{token}")
def tally(run: str, token: str) -> dict:
    """Keyed by its inputs (content-based dedup, opted in). Appends ``token`` to ``{run}.tally``
    (its effect); returns what only this run knows."""
    with open(_record_path() / f"{run}.tally", "a") as out:
        out.write(token + "\n")
    return {"token": token, "ran_at": time.time(), "pid": os.getpid()}


@action(group="gated:{run}", key="{run}:{token}")
def gated(run: str, token: str) -> dict:
    """Keyed by its inputs. Records its start, waits for ``{run}.gate`` to exist (up to 2
    minutes), records its end."""
    _append_json(f"{run}.gated", {"event": "start", "at": time.time(), "pid": os.getpid()})
    gate = _record_path() / f"{run}.gate"
    deadline = time.monotonic() + 120
    while not gate.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    _append_json(f"{run}.gated", {"event": "end", "at": time.time(), "pid": os.getpid()})
    return {"token": token, "pid": os.getpid(), "at": time.time()}


@action(group="keyed:{order}", key="{order}")
def charge_order(order: str, cents: int) -> str:
    """Keyed by the order only: the same order with another amount is a reused key."""
    return f"{order}:{cents}"


@action(group="bump:{shard}")
def bump(table: str, id: str, shard: int) -> int:
    """Adds 1 to item ``id``'s counter, exactly once (staged, committed with the completion)."""
    from actionrunner.state import effects

    effects.update(table, {"pk": id}, "ADD n :one", values={":one": 1})
    return 1


@action(group="paced:{run}:{shard}", rate_limit_shared="20/s", bucket="tests-paced")
def paced(run: str, shard: int, n: int) -> None:
    """Records when it ran; 20 runs a second between all workers."""
    _append_json(f"{run}.paced", {"at": time.time(), "pid": os.getpid(), "n": n})


@action(group="echo:{run}")
def echo(run: str, value: Any = None) -> None:
    """Record the value it received (JSON), to compare with what was sent."""
    _append_json(f"{run}.jsonl", {"value": value, "group": "echo", "seq": 0, "start": time.time(),
                                 "end": time.time(), "attempt": 1, "ok": True, "pid": os.getpid()})


@action(group="slowpoke:{run}", time_limit=1, max_attempts=2, retry_backoff=0.1)
def slowpoke(run: str) -> None:
    """Always exceeds its 1 s hard time limit."""
    time.sleep(5)


@action(group="zipped:{run}", compression="zlib")
def echo_zipped(run: str, value: Any = None) -> None:
    """Like echo, but its messages are always zlib-compressed (kombu's own option, per action)."""
    _append_json(f"{run}.jsonl", {"value": value, "group": "zipped", "seq": 0, "start": time.time(),
                                 "end": time.time(), "attempt": 1, "ok": True, "pid": os.getpid()})


# -- results and canvas (tests/test_results_canvas.py) ---------------------------------------------
@action(group="kept:{a}", ignore_result=False)
def kept_add(a: int, b: int = 0) -> int:
    """Its results are kept (per action): AsyncResult.get() reads them."""
    return a + b


@action(group="kept-total", ignore_result=False)
def kept_total(values: list[int]) -> int:
    """A chord's body: the sum of its header's results."""
    return sum(values)


@action(group="kept-fail:{token}", ignore_result=False, max_attempts=1)
def kept_fail(token: str) -> None:
    """Fails for good at once (one attempt)."""
    raise ValueError(f"kept failure {token}")


@action(group="paced-local:{run}:{n}", rate_limit="2/s", ignore_result=False)
def paced_local(run: str, n: int) -> float:
    """Celery's own (per worker) rate limit: returns when it ran."""
    return time.time()


@action(group="auto:{run}", retry_for=(ValueError,), max_attempts=3, retry_backoff=0.2,
        ignore_result=False)
def auto_retried(run: str) -> int:
    """Fails its first attempt with ValueError (retried: retry_for); returns its attempt."""
    attempts = _record_path() / f"{run}-auto.attempts"
    with open(attempts, "a") as out:
        out.write("x")
    attempt = len(attempts.read_text())
    if attempt == 1:
        raise ValueError("first attempt fails")
    return attempt


@action(group="soft:{run}", soft_time_limit=0.5, ignore_result=False)
def soft_limited(run: str) -> str:
    """Catches its soft time limit."""
    from celery.exceptions import SoftTimeLimitExceeded

    try:
        time.sleep(3)
    except SoftTimeLimitExceeded:
        return "soft limit"
    return "no limit"
