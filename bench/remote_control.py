"""Remote control: how long ``celery inspect`` / ``celery control`` take against a worker on SQS.

    actionrunner bench remote_control [--runs 3] [--sqs fauxqs|moto] [--timeout 1]

A private local stack, one worker ``-c 1`` (1 s long poll on its work queue, as in the other
benches), and each command run ``--runs`` times as a user runs it, a new process each time:

    celery -A actionrunner inspect ping|stats|active|registered -t TIMEOUT
    celery -A actionrunner control rate_limit bench.actions.probe 100/m -t TIMEOUT

first against a worker that stays awake (``ACTIONRUNNER_MAILBOX_DOZE_AFTER=0``), then
``control shutdown`` to it, whose reply must come back and after which the worker must be gone,
then against a worker whose mailbox dozes (``ACTIONRUNNER_MAILBOX_DOZE_AFTER=3``: before each run
the bench waits until its log says it dozes again, since a command wakes it).

Each run's wall time is from the process's start to its end (its Python start-up and imports
included); the first row, *start-up floor*, is a process that only imports
what these commands import (Celery's command line and the ActionRunner app) and does nothing, so
the difference is what the command itself costs. The client's SQS requests go through a counting
proxy (bench/proxy.py): the last column is the requests of one run, by API.

The machine's load average is printed first and last: on a shared machine the wall times grow
with it (the floor row shows by how much).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from rich.table import Table

from bench import harness as h
from bench.proxy import EMPTY_RECEIVE, CountingProxy

console = h.make_console()
ROOT = Path(__file__).resolve().parents[1]
NODE = "rc@%h"
COMMANDS: list[tuple[str, list[str]]] = [
    ("inspect ping", ["inspect", "ping"]),
    ("inspect stats", ["inspect", "stats"]),
    ("inspect active", ["inspect", "active"]),
    ("inspect registered", ["inspect", "registered"]),
    ("control rate_limit", ["control", "rate_limit", "bench.actions.probe", "100/m"]),
]
FLOOR = "from celery.bin.celery import main; import actionrunner.app"


def run_client(args: list[str], env: dict[str, str]) -> tuple[float, subprocess.CompletedProcess[str]]:
    started = time.monotonic()
    done = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120, check=False)
    return time.monotonic() - started, done


def celery(command: list[str], timeout: float) -> list[str]:
    return ["-m", "celery", "-A", "actionrunner", *command, "-t", str(timeout)]


def requests_of(counts: Counter[str]) -> str:
    shown = {api: n for api, n in sorted(counts.items()) if not api.startswith(EMPTY_RECEIVE)}
    return ", ".join(f"{api} {n}" for api, n in shown.items()) or "-"


def said(log: Path, text: str) -> int:
    return log.read_text(errors="replace").count(text) if log.exists() else 0


def wait_until(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise SystemExit(f"bench remote_control: timed out waiting for {what}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="actionrunner bench remote_control", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3, help="runs of each command (median shown)")
    parser.add_argument("--timeout", type=float, default=1.0, help="the commands' -t (Celery's default: 1)")
    parser.add_argument("--sqs", choices=["fauxqs", "moto"], default="fauxqs")
    args = parser.parse_args(argv)
    console.print(f"load average at start: {os.getloadavg()[0]:.2f} ({os.cpu_count()} CPUs)")
    table = Table(title=f"remote control, wall seconds per command (median of {args.runs}; "
                        f"-t {args.timeout:g}; SQS from {args.sqs})")
    for column in ("command", "worker", "median s", "max s", "replied", "client's SQS requests (one run)"):
        table.add_column(column, justify="left" if column in ("command", "worker") or "requests" in column
                         else "right")
    with h.local_stack(sqs=args.sqs, **h.BENCH_ENV), \
            CountingProxy(os.environ["AWS_ENDPOINT_URL_SQS"]) as proxy:
        client_env = {**os.environ, "AWS_ENDPOINT_URL_SQS": proxy.url, "ACTIONRUNNER_LOG_LEVEL": "WARNING"}
        floor = [run_client(["-c", FLOOR], client_env)[0] for _ in range(args.runs)]
        table.add_row("start-up floor (imports only)", "-", f"{statistics.median(floor):.2f}",
                      f"{max(floor):.2f}", "-", "-")
        for state, doze_after in (("awake", "0"), ("dozing", "3")):
            log_name = f"remote-control-{state}"
            log = h.OUT / f"{log_name}.log"
            with h.environ(ACTIONRUNNER_MAILBOX_DOZE_AFTER=doze_after), \
                    h.worker("actionrunner", 1, log_name, "-n", NODE, "-l", "INFO") as proc:
                wait_until(lambda: run_client(celery(["inspect", "ping"], 5), client_env)[1].returncode == 0,
                           120, "the worker to answer")
                for title, command in COMMANDS:
                    times, replied, counts = [], 0, Counter[str]()
                    for _ in range(args.runs):
                        if state == "dozing":  # each command wakes it: wait until it dozes again
                            dozed = said(log, " dozes: ")
                            wait_until(lambda d=dozed, log=log: said(log, " dozes: ") > d, 150,
                                       "the mailbox to doze")
                            time.sleep(0.5)
                        proxy.reset()
                        seconds, done = run_client(celery(command, args.timeout), client_env)
                        counts = proxy.reset()
                        times.append(seconds)
                        replied += done.returncode == 0 and "OK" in done.stdout
                    table.add_row(title, state, f"{statistics.median(times):.2f}", f"{max(times):.2f}",
                                  f"{replied}/{args.runs}", requests_of(counts))
                if state == "awake":
                    proxy.reset()
                    seconds, done = run_client(celery(["control", "shutdown"], args.timeout), client_env)
                    counts = proxy.reset()
                    try:
                        proc.wait(30)
                        stopped = "stopped"
                    except subprocess.TimeoutExpired:
                        stopped = "still running"
                    answer = "replied" if "OK" in done.stdout and done.returncode == 0 else \
                        " ".join((done.stdout + done.stderr).strip().splitlines()[-1:])
                    table.add_row("control shutdown", state, f"{seconds:.2f}", f"{seconds:.2f}",
                                  f"{answer}; worker {stopped}", requests_of(counts))
    console.print(table)
    console.print(f"load average at end: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
