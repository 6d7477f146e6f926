"""Requests: what each side asks of SQS per action, and per minute while idle (the bill).

    actionrunner bench requests [--count 500] [--groups 50] [-c 2] [--sleep-ms 0]
                                [--pool prefork|threads] [--idle 60] [--idle-long 60]
                                [--sqs fauxqs|moto] [--quick] [--no-stock]
    actionrunner bench requests --matrix [--count 3000] [--groups 100] [--stock]

Every SQS request of the side under test, sender and worker, goes through a counting reverse
proxy (bench/proxy.py) in front of the private SQS server, counted by API (``X-Amz-Target``).
For each side: COUNT no-op probe actions are sent (*send*: ActionRunner ``delay_many``, stock
``apply_async``), then one worker ``-c N`` drains them (*worker*: from its start, start-up lookups
included, until every action ran and the queue is empty). Then the worker idles on the empty queue
for IDLE seconds with the bench's 1 s long poll; then a fresh worker idles IDLE_LONG seconds
(from its first receive + 2 s) with ``ACTIONRUNNER_WAIT_TIME_SECONDS=20``, SQS's longest poll
and ActionRunner's default (stock_app reads that variable too). fauxqs, like SQS, answers an empty
long poll after the wait. The start-up requests of that second worker are printed at the end.
ActionRunner's worker then idles on until its remote-control mailbox dozes (nobody watches it:
``ACTIONRUNNER_MAILBOX_DOZE_AFTER``, 2 minutes; the bench waits for its TagQueue) and is measured
IDLE_LONG seconds more ("dozing"): the steady state of an idle worker nobody watches.

Each probe action sleeps SLEEP_MS (default 0: a no-op); the worker runs Celery's POOL (``-P``;
default prefork; ``threads``: one process).

The worker's DynamoDB requests go through a second counting proxy: the third table has them per
action, by API, and the items they write ("write units").

Read the first table as requests per action (0.10 = one request per ten actions); "ReceiveMessage
(empty)" is the part of ReceiveMessage that returned nothing. The second is requests per minute of
an idle worker (×1,440 for a day; SQS bills per request).

``--matrix``: the worker-drain part only (no idle windows), for every action length (0, 5, 50 ms)
× ``-c`` (2, 8, 32) × pool (prefork, threads), ActionRunner only (``--stock``: stock Celery too);
one table of worker requests per action, with the send, drain rate (first action started → last
ended) and worker CPU ms per action. Each cell sends at most COUNT actions, fewer where the
actions are slow (about 30 s of draining at -c N: e.g. 1,200 of 50 ms at -c 2).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from rich.table import Table

from actionrunner.settings import get_settings
from bench import harness as h
from bench.proxy import EMPTY_RECEIVE, CountingProxy, DynamoMeter

console = h.make_console()


def wait_for(proxy: CountingProxy, api: str, timeout: float) -> None:
    """Until the proxy has seen a request to ``api`` (the worker is polling)."""
    deadline = time.monotonic() + timeout
    while not proxy.counts()[api] and time.monotonic() < deadline:
        time.sleep(0.1)


@dataclass
class Drain:
    """One side's drain of ``count`` probe actions: SQS requests by phase ("send", "worker")."""

    count: int
    counts: dict[str, Counter[str]] = field(default_factory=dict)
    rate: float | None = None  #: actions/s, first action started → last ended
    cpu_ms: float | None = None  #: worker CPU per action (main process and pool)


@contextlib.contextmanager
def drained(side: str, count: int, args: argparse.Namespace, proxy: CountingProxy, direct: Any,
            settings: Any, *, concurrency: int, sleep_ms: int, pool: str, tag: str
            ) -> Iterator[Drain]:
    """Send ``count`` probe actions, then drain them with one worker; yields the figures with the
    worker still running on the empty queue (stopped when the block ends)."""
    calls = [(f"g{i % args.groups}", i) for i in range(count)]
    run = uuid.uuid4().hex
    record = h.record_file(tag)
    url = h.probe_queue(side, settings)
    out = Drain(count)
    proxy.reset()
    _dynamodb_reset()
    h.send_probes(side, calls, run, sleep_ms)
    out.counts["send"] = proxy.reset()
    _dynamodb_reset()
    with h.probe_worker(side, concurrency, f"{tag}-worker", record, pool) as proc:
        meter = h.CpuMeter(proc, record)
        meter.wait_first(args.timeout)
        if h.wait_records(record, count, args.timeout, proc) is None:
            console.print(f"[red]{side}: not all {count} actions ran in {args.timeout} s[/]")
        out.cpu_ms = meter.ms_per_action()
        h.wait_drained(direct, url, 30)
        time.sleep(1)  # the last deletes
        out.counts["worker"] = proxy.reset()
        out.counts["worker, DynamoDB"] = _dynamodb_reset()
        records = [r for r in h.read_records(record) if r["run"] == run]
        if len(records) > 1:
            out.rate = len(records) / (max(r["end"] for r in records)
                                       - min(r["start"] for r in records))
        yield out


#: The counting proxy in front of DynamoDB and its meter of write units (set by main()).
_DYNAMODB: tuple[CountingProxy, DynamoMeter] | None = None


def _dynamodb_reset() -> Counter[str]:
    """DynamoDB requests by API since the last reset, and ``write units`` (items written)."""
    if _DYNAMODB is None:
        return Counter()
    proxy, meter = _DYNAMODB
    return proxy.reset() + meter.reset()


def run_side(side: str, args: argparse.Namespace, proxy: CountingProxy, direct: Any,
             settings: Any) -> dict[str, Counter[str]]:
    tag = f"requests-{'ar' if side == 'ActionRunner' else 'stock'}"
    with drained(side, args.count, args, proxy, direct, settings, concurrency=args.concurrency,
                 sleep_ms=args.sleep_ms, pool=args.pool, tag=tag) as drain:
        out = drain.counts
        time.sleep(args.idle)
        out["idle, 1 s poll"] = proxy.reset()
    if args.idle_long:
        time.sleep(1.5)  # the stopped worker's last long poll returns
        proxy.reset()
        with h.probe_worker(side, args.concurrency, f"{tag}-worker-idle", h.record_file(tag),
                            args.pool, ACTIONRUNNER_WAIT_TIME_SECONDS="20"):
            wait_for(proxy, "ReceiveMessage", 60)  # started and polling
            time.sleep(2)
            out["start-up, 20 s poll"] = proxy.reset()
            time.sleep(args.idle_long)
            out["idle, 20 s poll"] = proxy.reset()
            if side == "ActionRunner":  # its mailbox dozes after 2 idle minutes nobody watched
                wait_for(proxy, "TagQueue", get_settings().mailbox_doze_after + 90)
                time.sleep(2)
                proxy.reset()
                time.sleep(args.idle_long)
                out["idle, 20 s poll, dozing"] = proxy.reset()
    return out


#: The matrix: action length (ms) × worker -c × pool.
MATRIX_SLEEP_MS = (0, 5, 50)
MATRIX_CONCURRENCY = (2, 8, 32)
MATRIX_POOLS = ("prefork", "threads")
#: Seconds of draining a matrix cell aims at (at the ideal rate of its slow actions).
MATRIX_CELL_SECONDS = 30


def cell_count(most: int, sleep_ms: int, concurrency: int) -> int:
    """Actions for a matrix cell: ``most``, or fewer (a multiple of 100) when -c N slots of
    ``sleep_ms`` actions would take longer than :data:`MATRIX_CELL_SECONDS` to drain them."""
    if sleep_ms <= 0:
        return most
    ideal_rate = concurrency * 1000 / sleep_ms
    return max(100, min(most, int(MATRIX_CELL_SECONDS * ideal_rate) // 100 * 100))


def worker_split(counts: Counter[str]) -> tuple[int, int, int]:
    """(ReceiveMessage, DeleteMessageBatch, every other request) of a worker's counts."""
    receive, delete = counts["ReceiveMessage"], counts["DeleteMessageBatch"]
    total = sum(n for api, n in counts.items() if api != EMPTY_RECEIVE)
    return receive, delete, total - receive - delete


def run_matrix(args: argparse.Namespace, sides: tuple[str, ...], proxy: CountingProxy,
               direct: Any) -> int:
    cells = list(itertools.product(MATRIX_SLEEP_MS, MATRIX_CONCURRENCY, MATRIX_POOLS))
    results: list[tuple[str, int, int, str, Drain]] = []
    for side, (sleep_ms, concurrency, pool) in itertools.product(sides, cells):
        count = cell_count(args.count, sleep_ms, concurrency)
        tag = f"requests-matrix-{'ar' if side == 'ActionRunner' else 'stock'}"
        with drained(side, count, args, proxy, direct, get_settings(), concurrency=concurrency,
                     sleep_ms=sleep_ms, pool=pool, tag=tag) as drain:
            pass
        results.append((side, sleep_ms, concurrency, pool, drain))
        receive, delete, other = worker_split(drain.counts["worker"])
        console.print(f"  {side}, {sleep_ms} ms, -c {concurrency}, {pool}: {count} actions, "
                      f"{(receive + delete + other) / count:.3f} requests/action in the worker")

    table = Table(title=f"SQS requests per action by action length, -c and pool ({args.groups} "
                        f"groups, {args.sqs}; drain/s indicative: the machine's cores are shared)")
    for col in ("side", "action", "-c", "pool", "actions", "ReceiveMessage", "(empty)",
                "DeleteMessageBatch", "other", "worker total", "with the send", "drain/s",
                "worker CPU ms/action"):
        table.add_column(col, justify="left" if col in ("side", "pool") else "right")
    rows = []
    for side, sleep_ms, concurrency, pool, drain in results:
        receive, delete, other = worker_split(drain.counts["worker"])
        send = sum(n for api, n in drain.counts["send"].items() if api != EMPTY_RECEIVE)
        n = drain.count
        row = {"side": side, "sleep_ms": sleep_ms, "concurrency": concurrency, "pool": pool,
               "actions": n, "receive": receive / n,
               "empty_receive": drain.counts["worker"][EMPTY_RECEIVE] / n,
               "delete": delete / n, "other": other / n,
               "worker": (receive + delete + other) / n,
               "with_send": (receive + delete + other + send) / n,
               "drain_per_s": drain.rate, "cpu_ms": drain.cpu_ms}
        rows.append(row)
        table.add_row(side, f"{sleep_ms} ms", str(concurrency), pool, f"{n:,}",
                      *(f"{row[k]:.3f}" for k in ("receive", "empty_receive", "delete", "other")),
                      f"[b]{row['worker']:.3f}[/]", f"{row['with_send']:.3f}",
                      h.fmt(drain.rate, ",.0f"), h.fmt(drain.cpu_ms, ".2f"))
    console.print(table)
    path = h.OUT / "requests-matrix.json"
    path.write_text(json.dumps(rows, indent=1))
    console.print(f"figures: {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="actionrunner bench requests", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--groups", type=int, default=50)
    parser.add_argument("--concurrency", "-c", type=int, default=2)
    parser.add_argument("--sleep-ms", type=int, default=0, help="each probe action sleeps this long")
    parser.add_argument("--pool", choices=["prefork", "threads"], default="prefork",
                        help="the worker's Celery pool (-P)")
    parser.add_argument("--idle", type=float, default=60, help="seconds of each idle window")
    parser.add_argument("--idle-long", type=float, default=60,
                        help="seconds of the idle window with a 20 s long poll (0: skip it)")
    parser.add_argument("--sqs", choices=["fauxqs", "moto"], default="fauxqs")
    parser.add_argument("--timeout", type=float, default=300)
    parser.add_argument("--stock", action=argparse.BooleanOptionalAction, default=None,
                        help="measure stock Celery too (default: yes; with --matrix: no)")
    parser.add_argument("--matrix", action="store_true",
                        help="worker drain only, for 0/5/50 ms actions × -c 2/8/32 × both pools "
                             "(--count: actions per cell at most)")
    parser.add_argument("--quick", action="store_true",
                        help="200 actions, idle windows of 15 s (1 s poll) and 40 s (20 s poll)")
    args = parser.parse_args(argv)
    if args.quick:
        args.count, args.idle = min(args.count, 200), min(args.idle, 15)
        args.idle_long = min(args.idle_long, 40)
    h.quiet_sender()
    if args.stock is None:
        args.stock = not args.matrix
    sides = h.SIDES if args.stock else h.SIDES[:1]

    results: dict[str, dict[str, Counter[str]]] = {}
    with h.local_stack(args.sqs, **h.BENCH_ENV) as (aws, settings):
        h.stock_queue(settings)
        direct = settings.client("sqs")  # the bench's own checks bypass the proxy
        global _DYNAMODB
        meter = DynamoMeter()
        with CountingProxy(aws.sqs_url) as proxy, h.environ(AWS_ENDPOINT_URL_SQS=proxy.url), \
                CountingProxy(aws.moto.url, label=meter) as ddb, \
                h.environ(AWS_ENDPOINT_URL_DYNAMODB=ddb.url):
            _DYNAMODB = (ddb, meter)
            get_settings.cache_clear()  # senders and workers from here on go through the proxy
            if args.matrix:
                console.print(f"SQS from {args.sqs} behind a counting proxy at {proxy.url}: up "
                              f"to {args.count} actions per cell in {args.groups} groups")
                try:
                    return run_matrix(args, sides, proxy, direct)
                finally:
                    get_settings.cache_clear()
            console.print(f"SQS from {args.sqs} behind a counting proxy at {proxy.url}: "
                          f"{args.count} actions of {args.sleep_ms} ms in {args.groups} groups, "
                          f"worker -c {args.concurrency} -P {args.pool}")
            for side in sides:
                results[side] = run_side(side, args, proxy, direct, get_settings())
                console.print(f"  {side}: done")
        get_settings.cache_clear()

    per_action = [(side, phase) for side in results for phase in ("send", "worker")]
    table = Table(title=f"SQS requests per action: {args.count} actions of {args.sleep_ms} ms, "
                        f"{args.groups} groups, -c {args.concurrency} -P {args.pool} ({args.sqs})")
    table.add_column("API")
    for side, phase in per_action:
        table.add_column(f"{side}\n{phase}", justify="right")
    apis = sorted({api for side in results for phase in ("send", "worker")
                   for api in results[side][phase]}, key=lambda a: (a.split(" ")[0], a))
    for api in apis:
        table.add_row(api, *(h.fmt(results[s][p][api] / args.count, ".3f") if results[s][p][api]
                             else "" for s, p in per_action))
    totals = [sum(n for a, n in results[s][p].items() if a != EMPTY_RECEIVE) for s, p in per_action]
    table.add_row("[b]total[/]", *(f"[b]{t / args.count:.3f}[/]" for t in totals))
    console.print(table)

    table = Table(title="DynamoDB per action in the worker (requests by API; write units: items "
                        "written, a transactional write counted twice)")
    table.add_column("API")
    for side in results:
        table.add_column(side, justify="right")
    apis = sorted({api for side in results for api in results[side]["worker, DynamoDB"]})
    for api in apis:
        table.add_row(api, *(h.fmt(results[s]["worker, DynamoDB"][api] / args.count, ".3f")
                             for s in results))
    console.print(table)

    windows = {"idle, 1 s poll": args.idle, "idle, 20 s poll": args.idle_long,
               "idle, 20 s poll, dozing": args.idle_long}
    idle = [(side, phase) for side in results for phase in windows
            if windows[phase] and phase in results[side]]
    table = Table(title="SQS requests per minute while idle")
    table.add_column("API")
    for side, phase in idle:
        table.add_column(f"{side}\n{phase}\n({windows[phase]:.0f} s window)", justify="right")
    apis = sorted({api for s, p in idle for api in results[s][p]})
    for api in apis:
        table.add_row(api, *(h.fmt(results[s][p][api] * 60 / windows[p], ".1f") for s, p in idle))
    totals = [sum(n for a, n in results[s][p].items() if a != EMPTY_RECEIVE) / windows[p]
              for s, p in idle]
    table.add_row("[b]total /min[/]", *(f"[b]{t * 60:.1f}[/]" for t in totals))
    table.add_row("total /day", *(f"{t * 86400:,.0f}" for t in totals))
    console.print(table)
    for side in results if args.idle_long else ():
        startup = results[side]["start-up, 20 s poll"]
        console.print(f"{side} worker start-up (until its first receive, + 2 s): "
                      + ", ".join(f"{api} {n}" for api, n in sorted(startup.items())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
