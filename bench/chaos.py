"""Chaos: a worker drains a backlog while SQS and DynamoDB misbehave (and, optionally, it is killed).

    actionrunner bench chaos [--count 1000] [--groups 50] [--rate 0.05] [--kills 2]
                             [--sqs fauxqs|moto] [--concurrency 4] [--seed 1] [--quick]

Runs on a private local stack (moto for DynamoDB, fauxqs or moto for SQS, free loopback ports).
Two runs in the same invocation, each with ``count`` actions in ``groups`` FIFO groups (sent in
order: seq 0 of every group, then seq 1...), drained by ``celery -A actionrunner worker -c N``:

1. **fault-free**: every request of the worker goes through the fault proxies (bench/faults.py),
   which inject nothing — the reference drain time;
2. **chaos**: the same through proxies that inject a fault into ``rate`` of the worker's SQS and
   DynamoDB requests (500s, throttling, resets before the request is forwarded, answers lost after
   it was applied, answers slower than the client's timeout); with ``--kills K``, K SIGKILLs
   to the worker (its whole process group) at even steps of the drain.

A supervisor restarts the worker whenever it exits (so a worker that falls over is counted, not
fatal to the run). The action (``bench.actions.chaos``) appends its ``seq`` to its group's item in
the state table through the staged-effects API — exactly once, with the completion — and records
each execution. The bench reads the items directly (not through the proxy) and prints, per run:
actions completed, duplicate effects, order violations (a group's effects out of send order),
executions (at least once: a run killed or whose completion was lost runs again), DLQ depth,
worker exits (unplanned) and restarts, drain time (worker start to the queue empty), and the
faults injected by kind and by API call.

A slow answer is held ``--slow-sqs`` / ``--slow-dynamodb`` seconds: above the worker's read
timeouts (SQS: the bench's 1 s long poll + ACTIONRUNNER_READ_TIMEOUT, 20 s; the state table:
ACTIONRUNNER_STATE_READ_TIMEOUT, 5 s), so the client gives up and tries again.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from actionrunner.local import stop_process
from bench.faults import KINDS, FaultProxy
from bench.harness import (
    BENCH_ENV,
    OUT,
    count_records,
    environ,
    fmt,
    local_stack,
    make_console,
    queue_depth,
    quiet_sender,
    record_file,
)

ROOT = Path(__file__).resolve().parents[1]


# -- the worker, supervised --------------------------------------------------------------------
class Supervisor:
    """Runs ``celery -A actionrunner worker -c N`` and starts it again whenever it exits.

    Each worker is the leader of its own process group, so :meth:`kill` (SIGKILL) takes its pool
    processes down with it. ``exits`` counts the exits nobody asked for (with their codes),
    ``kills`` the SIGKILLs sent, ``starts`` every start.
    """

    def __init__(self, concurrency: int, env: dict[str, str], log_name: str,
                 restart_delay: float = 0.5) -> None:
        self.concurrency, self.env, self.log_name = concurrency, env, log_name
        self.restart_delay = restart_delay
        self.starts = self.kills = 0
        self.exits: list[int] = []
        self.logs: list[Path] = []
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at: float | None = None
        self._killed: set[int] = set()
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="chaos-supervisor", daemon=True)

    def start(self) -> Supervisor:
        self.started_at = time.monotonic()
        self._thread.start()
        return self

    def _spawn(self) -> subprocess.Popen[bytes]:
        OUT.mkdir(exist_ok=True)
        path = OUT / f"{self.log_name}-{self.starts}.log"
        self.logs.append(path)
        with open(path, "wb") as log:
            return subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "actionrunner", "worker",
                 "-c", str(self.concurrency), "--without-mingle", "--without-gossip"],
                stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **self.env}, cwd=ROOT,
                start_new_session=True,
            )

    def _loop(self) -> None:
        while not self._stopping.is_set():
            with self._lock:
                self.proc = self._spawn()
                self.starts += 1
            code = self.proc.wait()
            _kill_group(self.proc)  # a killed worker's pool processes
            if self._stopping.is_set():
                return
            if self.proc.pid not in self._killed:
                self.exits.append(code)
            self._stopping.wait(self.restart_delay)

    def kill(self) -> None:
        """SIGKILL the running worker and its pool processes (the loop starts a new one)."""
        with self._lock:
            proc = self.proc
            if proc is None or proc.poll() is not None:
                return
            self._killed.add(proc.pid)
            self.kills += 1
            _kill_group(proc)

    def stop(self) -> None:
        self._stopping.set()
        with self._lock:
            proc = self.proc
        if proc is not None:
            stop_process(proc, 30)
            _kill_group(proc)
        self._thread.join(35)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the process group led by ``proc`` (a worker we started), if anything is left of it."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


# -- one run -----------------------------------------------------------------------------------
@dataclass
class Result:
    """What one drain under faults gave."""

    label: str
    count: int
    completed: int = 0  #: distinct (group, seq) effects written
    duplicates: int = 0  #: effects written more than once
    order_violations: int = 0  #: a group's effect written after a later one of the same group
    executions: int = 0  #: runs of the action's body (at least once)
    dlq: int = 0  #: messages dead-lettered during the run
    left: int = 0  #: messages still in the queue at the end
    exits: list[int] = field(default_factory=list)  #: unplanned worker exits (their codes)
    kills: int = 0
    starts: int = 0
    drain_s: float | None = None  #: worker start to every effect written and the queue empty
    timed_out: bool = False
    requests: Counter[str] = field(default_factory=Counter)  #: the worker's requests, by API
    faults: Counter[tuple[str, str]] = field(default_factory=Counter)  #: (kind, API) → injected
    logs: list[Path] = field(default_factory=list)

    @property
    def restarts(self) -> int:
        return max(0, self.starts - 1)

    def faults_by(self, index: int) -> Counter[str]:
        counts: Counter[str] = Counter()
        for key, n in self.faults.items():
            counts[key[index]] += n
        return counts


def read_effects(client: Any, table: str, run: str, groups: int) -> dict[int, list[int]]:
    """Each group's list of seqs as written (in write order), read directly from the table."""
    found: dict[int, list[int]] = {}
    for first in range(0, groups, 100):
        keys = [{"pk": {"S": f"chaos#{run}#{g}"}} for g in range(first, min(groups, first + 100))]
        request: dict[str, Any] = {table: {"Keys": keys, "ConsistentRead": True}}
        while request:
            response = client.batch_get_item(RequestItems=request)
            for item in response["Responses"].get(table, []):
                group = int(item["pk"]["S"].rsplit("#", 1)[1])
                found[group] = [int(v["N"]) for v in item.get("seqs", {}).get("L", [])]
            request = response.get("UnprocessedKeys") or {}
    return found


def score(effects: dict[int, list[int]]) -> tuple[int, int, int]:
    """(completed, duplicates, order violations) of the groups' effects."""
    completed = duplicates = violations = 0
    for seqs in effects.values():
        distinct = set(seqs)
        completed += len(distinct)
        duplicates += len(seqs) - len(distinct)
        violations += sum(1 for a, b in zip(seqs, seqs[1:], strict=False) if b < a)
    return completed, duplicates, violations


def drain(settings: Any, *, label: str, count: int, groups: int, rate: float, kills: int = 0,
          seed: int = 1, concurrency: int = 4, timeout: float = 900.0,
          kinds: tuple[str, ...] = KINDS, sqs_kinds: tuple[str, ...] | None = None,
          slow_sqs: float = 31.0, slow_dynamodb: float = 6.0,
          worker_env: dict[str, str] | None = None, stop_on_exit: bool = False,
          send: Callable[[list[dict[str, Any]]], Any] | None = None,
          progress: Any = None) -> Result:
    """Send ``count`` chaos actions in ``groups`` groups, drain them with a supervised worker
    whose every SQS and DynamoDB request goes through a fault proxy at ``rate``; what happened.

    ``settings``: where the queues and the state table are (this process sends directly).
    ``kinds``: the faults injected (``sqs_kinds``: into SQS requests, if other).
    ``stop_on_exit``: give up at the first unplanned worker exit (tests: fail fast).
    ``send``: sends the calls (default: ``bench.actions.chaos.delay_many`` in this process).
    """
    from bench.actions import chaos

    run = uuid.uuid4().hex[:10]
    result = Result(label, count)
    sqs, dynamodb = settings.client("sqs"), settings.client("dynamodb")
    url = sqs.get_queue_url(QueueName=settings.queue_name)["QueueUrl"]
    dlq_url = sqs.get_queue_url(QueueName=settings.dlq_name)["QueueUrl"]
    dlq_before = queue_depth(sqs, dlq_url)
    table = settings.state_table
    calls = [{"run": run, "group": i % groups, "seq": i // groups, "table": table}
             for i in range(count)]
    for first in range(0, count, 500):
        (send or chaos.delay_many)(calls[first : first + 500])

    record = record_file(f"chaos-{run}")
    proxies = [FaultProxy(settings.sqs_endpoint_url, rate=rate, seed=seed,
                          kinds=kinds if sqs_kinds is None else sqs_kinds,
                          slow_seconds=slow_sqs),
               FaultProxy(settings.dynamodb_endpoint_url, rate=rate, seed=seed + 1, kinds=kinds,
                          slow_seconds=slow_dynamodb)]
    env = {**BENCH_ENV, **(worker_env or {}), "ACTIONRUNNER_BENCH_RECORD": str(record),
           "AWS_ENDPOINT_URL_SQS": proxies[0].url, "AWS_ENDPOINT_URL_DYNAMODB": proxies[1].url,
           "ACTIONRUNNER_QUEUE_NAME": settings.queue_name, "ACTIONRUNNER_DLQ_NAME": settings.dlq_name,
           "ACTIONRUNNER_STATE_TABLE": table,
           "ACTIONRUNNER_VISIBILITY_TIMEOUT": str(settings.visibility_timeout)}
    kill_at = [count * (k + 1) // (kills + 1) for k in range(kills)]
    for proxy in proxies:
        proxy.start()
    supervisor = Supervisor(concurrency, env, f"chaos-{label.split()[0]}-{run}").start()
    try:
        empty_since: float | None = None
        while True:
            elapsed = time.monotonic() - (supervisor.started_at or 0)
            done, result.duplicates, result.order_violations = score(
                read_effects(dynamodb, table, run, groups))
            result.completed = done
            if progress is not None:
                progress(done)
            if kill_at and done >= kill_at[0]:
                kill_at.pop(0)
                supervisor.kill()
            depth, now = queue_depth(sqs, url), time.monotonic()
            empty_since = (empty_since or now) if depth == 0 else None
            # done: the queue is empty and every effect written (or it stays empty: the rest
            # was dead-lettered or lost)
            if empty_since is not None and (done >= count or now - empty_since >= 3):
                result.drain_s = elapsed
                break
            if elapsed > timeout or (stop_on_exit and supervisor.exits):
                result.timed_out = elapsed > timeout
                break
            time.sleep(0.5)
    finally:
        supervisor.stop()
        for proxy in proxies:
            proxy.stop()
    effects = read_effects(dynamodb, table, run, groups)
    result.completed, result.duplicates, result.order_violations = score(effects)
    result.executions = count_records(record)
    result.dlq = queue_depth(sqs, dlq_url) - dlq_before
    result.left = queue_depth(sqs, url)
    result.exits, result.kills, result.starts = supervisor.exits, supervisor.kills, supervisor.starts
    result.logs = supervisor.logs
    for proxy in proxies:
        result.requests.update(proxy.counts())
        result.faults.update(proxy.faults())
    return result


# -- the table ---------------------------------------------------------------------------------
def table(results: list[Result], title: str) -> Any:
    from rich.table import Table

    grid = Table(caption=title, caption_justify="left")
    grid.add_column("")
    for r in results:
        grid.add_column(r.label, justify="right")
    base = next((r.drain_s for r in results if r.label == "fault-free"), None)

    def row(name: str, values: list[str]) -> None:
        grid.add_row(name, *values)

    row("actions completed", [f"{r.completed:,}/{r.count:,}" for r in results])
    row("duplicate effects", [f"{r.duplicates:,}" for r in results])
    row("order violations", [f"{r.order_violations:,}" for r in results])
    row("executions (at least once)", [f"{r.executions:,}" for r in results])
    row("in the DLQ", [f"{r.dlq:,}" for r in results])
    row("left in the queue", [f"{r.left:,}" for r in results])
    row("worker exits (unplanned)", [f"{len(r.exits)}" + (f" (codes {sorted(set(r.exits))})"
                                                          if r.exits else "") for r in results])
    row("SIGKILLs / restarts", [f"{r.kills} / {r.restarts}" for r in results])
    row("drain time (s)", [fmt(r.drain_s) + (" (timed out)" if r.timed_out else "")
                           for r in results])
    row("vs fault-free", [fmt(r.drain_s / base if r.drain_s and base else None, ".2f", "-") + "x"
                          for r in results] if base else ["-"] * len(results))
    row("worker requests", [f"{sum(r.requests.values()):,}" for r in results])
    row("faults injected", [f"{sum(r.faults.values()):,}" for r in results])
    for kind in KINDS:
        row(f"  {kind}", [f"{r.faults_by(0)[kind]:,}" for r in results])
    apis = sorted({api for r in results for api in r.faults_by(1)},
                  key=lambda a: -sum(r.faults_by(1)[a] for r in results))
    for api in apis:
        row(f"  on {api}", [f"{r.faults_by(1)[api]:,}" for r in results])
    return grid


def summary(result: Result) -> dict[str, Any]:
    """A result as plain values (faults by kind and API call, e.g. ``slow ReceiveMessage``)."""
    plain = {k: v for k, v in vars(result).items() if k not in ("requests", "faults", "logs")}
    return {**plain, "requests": dict(result.requests),
            "faults": {f"{kind} {api}": n for (kind, api), n in sorted(result.faults.items())},
            "logs": [str(path) for path in result.logs]}


@contextlib.contextmanager
def _progress(count: int, label: str) -> Iterator[Any]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=make_console(), transient=True) as bar:
        task = bar.add_task(label, total=count)
        yield lambda done: bar.update(task, completed=done)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="actionrunner bench chaos", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=1000, help="actions per run")
    parser.add_argument("--groups", type=int, default=50, help="FIFO groups they are sent in")
    parser.add_argument("--rate", type=float, default=0.05, help="share of requests with a fault")
    parser.add_argument("--kills", type=int, default=0, help="SIGKILLs to the worker mid-run")
    parser.add_argument("--kinds", default=",".join(KINDS), help="fault kinds to inject")
    parser.add_argument("--concurrency", "-c", type=int, default=4)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--sqs", choices=["fauxqs", "moto"], default="fauxqs")
    parser.add_argument("--slow-sqs", type=float, default=31.0,
                        help="seconds a slow SQS answer is held (above the worker's timeouts)")
    parser.add_argument("--slow-dynamodb", type=float, default=6.0,
                        help="seconds a slow DynamoDB answer is held (above its read timeout)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per run at most")
    parser.add_argument("--no-baseline", dest="baseline", action="store_false",
                        help="skip the fault-free run")
    parser.add_argument("--quick", action="store_true", help="200 actions in 20 groups")
    args = parser.parse_args(argv)
    if args.quick:
        args.count, args.groups = 200, 20
    kinds = tuple(k.strip() for k in args.kinds.split(",") if k.strip())
    console = make_console()
    quiet_sender()
    options = {"count": args.count, "groups": args.groups, "seed": args.seed,
               "concurrency": args.concurrency, "timeout": args.timeout, "kinds": kinds,
               "slow_sqs": args.slow_sqs, "slow_dynamodb": args.slow_dynamodb}
    chaos_label = f"{args.rate:.0%} faults" + (f" + {args.kills} SIGKILLs" if args.kills else "")
    results: list[Result] = []
    with local_stack(args.sqs) as (_, settings), environ(ACTIONRUNNER_LOG_LEVEL="INFO"):
        runs = [("fault-free", 0.0, 0)] if args.baseline else []
        runs.append((chaos_label, args.rate, args.kills))
        for label, rate, kills in runs:
            with _progress(args.count, label) as progress:
                results.append(drain(settings, label=label, rate=rate, kills=kills,
                                     progress=progress, **options))  # type: ignore[arg-type]
    title = (f"bench chaos: {args.count:,} actions in {args.groups} groups, worker -c "
             f"{args.concurrency}, SQS from {args.sqs}, DynamoDB from moto, fault kinds "
             f"{', '.join(kinds)}, seed {args.seed}")
    console.print(table(results, title))
    out = OUT / f"chaos-{args.sqs}.json"
    out.write_text(json.dumps({"title": title, "runs": [summary(r) for r in results]}, indent=1))
    console.print(f"figures: {out.relative_to(ROOT)}", markup=False)
    logs = [str(path.relative_to(ROOT)) for r in results for path in r.logs]
    console.print(f"worker logs: {', '.join(logs)}", markup=False)
    bad = [r for r in results if r.completed < r.count or r.duplicates or r.order_violations
           or r.dlq or r.exits]
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
