"""The incident, downstream: what bulk writes do to a DynamoDB stream's consumer.

    actionrunner bench incident --stream [--quick] [--items 10000] [--capacity 400]
                                [--lag-bound 5] [--budget 300] [--slow-at SECONDS:CAPACITY]
                                [--throttle-wcu W] [--no-slow-start]

A stream-enabled table on moto (which serves DynamoDB Streams over HTTP: a record exists as soon
as its write returns), the stream processor (``python -m actionrunner.streams``: PublishBatch to
an SNS FIFO topic, on a moto of its own) held to ``--capacity`` records/s like a Lambda stream
processor of fixed concurrency, and three ways of writing ``--items`` new items, one after the
other, each into a fresh table:

* **naive**: inline, as fast as the table takes them (8 BatchWriteItem calls in flight);
* **fixed**: a fixed budget of ``--budget`` writes/s (:class:`actionrunner.dynamo.Pacer`);
* **adaptive**: :class:`actionrunner.pacing.AdaptivePacer` — floor ``--floor``, ceiling
  ``--ceiling``, bound ``--lag-bound``, fed by the processor's watermark in the state table.

Per mode: write time and rate, throttled calls, the downstream lag of each record (the time the
processor published it minus the time the stream recorded it) p50/p99/max, the share over the
bound, catch-up time (last write → last record published), time until the downstream is
consistent (first write → last record published), ratios to naive. ``--slow-at 10:200`` makes
the processor slow to 200 records/s 10 s after its first record; ``--throttle-wcu W`` puts a
proxy in front of DynamoDB that throttles BatchWriteItem beyond W items a second (burst of one
second), as a provisioned table would. JSON: bench/out/incident-stream.json; plot:
docs/bench/incident-stream.png.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

from botocore.config import Config
from rich.table import Table

from actionrunner import constants as C
from actionrunner.dynamo import MAX_BATCH_WRITE, Pacer, WriteStats, write_batch
from actionrunner.local import Server, free_port, stop_process
from bench.harness import OUT, environ, fmt, make_console, percentile, pyplot
from bench.proxy import CountingProxy

ROOT = Path(__file__).resolve().parents[1]
PLOT = ROOT / "docs" / "bench" / "incident-stream.png"
RESULT = OUT / "incident-stream.json"
MODES = ("naive", "fixed", "adaptive")
#: BatchWriteItem calls in flight at most (each mode).
WRITERS = 8
console = make_console()


class ThrottlingProxy(CountingProxy):
    """Forwards to DynamoDB, but answers a BatchWriteItem ProvisionedThroughputExceededException
    when its items would take the table over ``wcu`` items a second (a bucket of one second's
    burst), as a provisioned table does; counts the throttled answers."""

    def __init__(self, upstream: str, wcu: float) -> None:
        super().__init__(upstream)
        self.wcu, self.tokens, self.at = wcu, wcu, time.monotonic()
        self.throttled = 0
        self._bucket = threading.Lock()

    def relay(self, handler: BaseHTTPRequestHandler) -> None:
        api, body = self.read_request(handler)
        if api == "BatchWriteItem":
            items = sum(len(v) for v in json.loads(body).get("RequestItems", {}).values())
            with self._bucket:
                now = time.monotonic()
                self.tokens = min(self.wcu, self.tokens + (now - self.at) * self.wcu)
                self.at = now
                allowed = self.tokens >= items
                if allowed:
                    self.tokens -= items
                else:
                    self.throttled += 1
            if not allowed:
                answer = json.dumps({"__type": "com.amazonaws.dynamodb.v20120810#"
                                     "ProvisionedThroughputExceededException",
                                     "message": "The level of configured provisioned throughput "
                                                "for the table was exceeded."}).encode()
                self.respond(handler, 400, [("Content-Type", "application/x-amz-json-1.0")], answer)
                return
        self.relay_read(handler, api, body)


@contextlib.contextmanager
def emulators() -> Iterator[tuple[str, str]]:
    """Two motos: DynamoDB + Streams + the state table, and SNS (a process of its own: publishing
    is the processor's main cost, and moto serves from one Python process)."""
    servers = [Server(name, [sys.executable, "-m", "actionrunner.moto_serve", "-H", "127.0.0.1",
                             "-p", str(port)], "127.0.0.1", port, log_path=OUT / f"{name}.log",
                      env={"ACTIONRUNNER_MOTO_GC": "off"})
               for name, port in (("incident-moto", free_port()), ("incident-moto-sns", free_port()))]
    try:
        for server in servers:
            server.start()
        for server in servers:
            server.wait_ready()
        yield servers[0].url, servers[1].url
    finally:
        for server in servers:
            server.stop()


def create_table(client: Any, name: str) -> None:
    client.create_table(TableName=name, BillingMode="PAY_PER_REQUEST",
                        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
                        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_IMAGE"})


@contextlib.contextmanager
def processor(table: str, watermark: str, capacity: float, trace: Path,
              slow_at: str | None) -> Iterator[subprocess.Popen[bytes]]:
    argv = [sys.executable, "-m", "actionrunner.streams", "--table", table, "--topic",
            f"{table}.fifo", "--create", "--capacity", str(capacity), "--trace", str(trace),
            "--watermark", watermark, "--from", "trim-horizon", "--dlq", f"{table}-dlq"]
    if slow_at:
        argv += ["--slow-at", slow_at]
    log = open(OUT / f"incident-stream-{table.rsplit('-', 1)[0]}.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "ACTIONRUNNER_LOG_LEVEL": "WARNING"})
    try:
        yield proc
    finally:
        stop_process(proc, 15)
        log.close()


def wait_watermark(settings: Any, name: str, timeout: float = 30) -> None:
    from actionrunner.pacing import WatermarkStore

    store = WatermarkStore(name, table=settings.state_table, client=settings.client("dynamodb"))
    deadline = time.monotonic() + timeout
    while store.read() is None:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the stream processor did not publish watermark {name!r}")
        time.sleep(0.1)


def write_all(client: Any, table: str, items: int, pacer: Any) -> dict[str, Any]:
    """Write ``items`` new items, 25 a call, ``WRITERS`` calls in flight, each batch after
    ``pacer.take`` (None: as fast as it goes). Throttling is retried with backoff and, with an
    adaptive pacer, reported to it."""
    stats = WriteStats()
    counts = Counter()
    lock = threading.Lock()
    tell = getattr(pacer, "throttled", None)

    def throttled(kind: str) -> None:
        with lock:
            counts[kind] += 1
        if tell is not None:
            tell()

    in_flight = threading.BoundedSemaphore(WRITERS)
    started = time.time()

    def write(first: int, n: int) -> None:
        try:
            now = repr(time.time())
            batch = [{"PutRequest": {"Item": {"pk": {"S": f"item#{i:07d}"}, "n": {"N": str(i)},
                                              "written_at": {"N": now}}}}
                     for i in range(first, first + n)]
            local = WriteStats()
            write_batch(client, table, batch, max_attempts=50, stats=local,
                        on_throttle=lambda: throttled("throttled"),
                        on_unprocessed=lambda: throttled("unprocessed"))
            with lock:
                stats.written += local.written
                stats.requests += local.requests
        finally:
            in_flight.release()

    sent: list[Future[None]] = []
    with ThreadPoolExecutor(WRITERS) as pool:
        for first in range(0, items, MAX_BATCH_WRITE):
            n = min(MAX_BATCH_WRITE, items - first)
            if pacer is not None:
                pacer.take(n)
            in_flight.acquire()
            sent.append(pool.submit(write, first, n))
        for future in sent:
            future.result()
    ended = time.time()
    return {"started": started, "ended": ended, "written": stats.written,
            "requests": stats.requests, "throttled_calls": counts["throttled"] + counts["unprocessed"],
            "throttled_answers": counts["throttled"], "unprocessed_answers": counts["unprocessed"]}


def read_trace(path: Path) -> list[tuple[float, float]]:
    """(created, published) of each record the processor published (the last of a retried one)."""
    seen: dict[str, tuple[float, float]] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) == 3:
                seen[parts[0]] = (float(parts[1]), float(parts[2]))
    return sorted(seen.values())


def wait_consistent(path: Path, items: int, timeout: float) -> list[tuple[float, float]]:
    deadline = time.monotonic() + timeout
    while True:
        records = read_trace(path)
        if len(records) >= items or time.monotonic() > deadline:
            return records
        time.sleep(0.25)


def run_mode(mode: str, args: argparse.Namespace, settings: Any, run: str,
             dynamodb_url: str) -> dict[str, Any]:
    from actionrunner.pacing import AdaptivePacer, PaceLimits

    table = f"{mode}-{run}"
    watermark = f"incident-{mode}-{run}"
    trace = OUT / f"incident-stream-{mode}.trace"
    trace.unlink(missing_ok=True)
    admin = settings.client("dynamodb")
    create_table(admin, table)
    proxy: ThrottlingProxy | None = None
    endpoint = dynamodb_url
    if args.throttle_wcu:
        proxy = ThrottlingProxy(dynamodb_url, args.throttle_wcu).start()
        endpoint = proxy.url
    import boto3

    writer = boto3.session.Session().client(
        "dynamodb", region_name=settings.region, endpoint_url=endpoint,
        config=Config(max_pool_connections=WRITERS + 4, retries={"total_max_attempts": 1}))
    pacer: Any = None
    with processor(table, watermark, args.capacity, trace, args.slow_at):
        wait_watermark(settings, watermark)
        if mode == "fixed":
            pacer = Pacer(args.budget, clock=time.time)
        elif mode == "adaptive":
            pacer = AdaptivePacer(f"incident-{run}", PaceLimits(
                floor=args.floor, ceiling=args.ceiling, lag_bound=args.lag_bound,
                slow_start=args.slow_start),
                watermark=watermark, table=settings.state_table, client=admin)
        try:
            written = write_all(writer, table, args.items, pacer)
        finally:
            if proxy is not None:
                proxy.stop()
        slowest = min(args.capacity, float(args.slow_at.split(":")[1]) if args.slow_at else args.capacity)
        records = wait_consistent(trace, args.items, timeout=args.items / slowest * 2 + 60)
    lags = [published - created for created, published in records]
    start = written["started"]
    last = max((p for _, p in records), default=float("nan"))
    result = {
        "items": args.items, "processed": len(records),
        "write_s": written["ended"] - start,
        "write_rate": args.items / (written["ended"] - start),
        "throttled_calls": written["throttled_calls"], "requests": written["requests"],
        "lag_p50_s": percentile(lags, 50), "lag_p99_s": percentile(lags, 99),
        "lag_max_s": max(lags, default=float("nan")),
        "over_bound_share": sum(lag > args.lag_bound for lag in lags) / len(lags) if lags else 1.0,
        "catch_up_s": last - written["ended"], "done_s": last - start,
        # what the consumer managed (its --capacity is a most; the machine may give it less)
        "consumer_per_s": len(records) / (last - min(p for _, p in records)) if len(records) > 1
        else float("nan"),
        "writes_per_s": per_second([c for c, _ in records], start),
        "lag_by_s": lag_per_second(records, start),
    }
    if mode == "adaptive":
        result["rate_changes"] = pacer.stats.changes
        result["cuts"] = pacer.stats.cuts
        result["rate_by_s"] = [(round(t - start, 2), round(rate, 1), reason)
                               for t, rate, reason, _, _ in pacer.stats.history]
    if len(records) < args.items:
        result["missing"] = args.items - len(records)
    return result


def per_second(times: list[float], start: float) -> list[int]:
    counts = Counter(int(t - start) for t in times if t >= start)
    return [counts.get(s, 0) for s in range(max(counts, default=-1) + 1)]


def lag_per_second(records: list[tuple[float, float]], start: float) -> list[float]:
    """The largest lag of the records published in each second."""
    worst: dict[int, float] = {}
    for created, published in records:
        second = int(published - start)
        worst[second] = max(worst.get(second, 0.0), published - created)
    return [round(worst.get(s, 0.0), 3) for s in range(max(worst, default=-1) + 1)]


def plot(results: dict[str, dict[str, Any]], args: argparse.Namespace) -> Path | None:
    plt = pyplot()
    if plt is None:
        return None
    PLOT.parent.mkdir(parents=True, exist_ok=True)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 6.5), sharex=True)
    colors = {"naive": "tab:red", "fixed": "tab:orange", "adaptive": "tab:blue"}
    labels = {"naive": "naive burst", "fixed": f"fixed {args.budget:,.0f}/s",
              "adaptive": "adaptive (watermark)"}
    for mode, result in results.items():
        top.plot(result["writes_per_s"], label=labels[mode], color=colors[mode])
        bottom.plot(result["lag_by_s"], label=labels[mode], color=colors[mode])
    top.axhline(args.capacity, color="gray", linestyle=":", label=f"consumer {args.capacity:,.0f}/s")
    top.set_ylabel("writes per second (stream)")
    bottom.axhline(args.lag_bound, color="gray", linestyle="--", label=f"bound {args.lag_bound:g} s")
    bottom.set_ylabel("downstream lag (s, worst per second)")
    bottom.set_xlabel("seconds since the first write")
    conditions = [f"{args.items:,} writes", f"consumer {args.capacity:,.0f} records/s"]
    if args.slow_at:
        conditions.append(f"slows at {args.slow_at}")
    if args.throttle_wcu:
        conditions.append(f"table {args.throttle_wcu:,.0f} WCU")
    top.set_title("Bulk writes and the stream consumer: " + ", ".join(conditions))
    top.legend()
    bottom.legend()
    fig.tight_layout()
    suffix = "-slow" if args.slow_at else "-throttled" if args.throttle_wcu else ""
    where = PLOT.with_name(f"incident-stream{suffix}.png")
    fig.savefig(where, dpi=110)
    return where


def report(results: dict[str, dict[str, Any]], args: argparse.Namespace) -> None:
    naive = results["naive"]
    table = Table(title=f"incident downstream: {args.items:,} writes, consumer "
                        f"{args.capacity:,.0f}/s, bound {args.lag_bound:g} s"
                        + (f", slows at {args.slow_at}" if args.slow_at else "")
                        + (f", table {args.throttle_wcu:,.0f} WCU" if args.throttle_wcu else ""))
    for column in ("mode", "write (s)", "writes/s", "consumer/s", "throttled calls", "lag p50 (s)",
                   "lag p99 (s)", "lag max (s)", "over bound", "catch-up (s)", "done (s)",
                   "lag max vs naive", "done vs naive"):
        table.add_column(column, justify="right")
    for mode, r in results.items():
        table.add_row(mode, fmt(r["write_s"]), fmt(r["write_rate"], ",.0f"),
                      fmt(r.get("consumer_per_s"), ",.0f"),
                      f"{r['throttled_calls']:,}", fmt(r["lag_p50_s"], ".2f"),
                      fmt(r["lag_p99_s"], ".2f"), fmt(r["lag_max_s"], ".2f"),
                      f"{r['over_bound_share']:.1%}", fmt(r["catch_up_s"]), fmt(r["done_s"]),
                      fmt(r["lag_max_s"] / naive["lag_max_s"], ".2f"),
                      fmt(r["done_s"] / naive["done_s"], ".2f") + "×")
    console.print(table)
    adaptive, fixed = results["adaptive"], results["fixed"]
    checks = [(f"adaptive lag max {adaptive['lag_max_s']:.2f} s <= bound {args.lag_bound:g} s",
               adaptive["lag_max_s"] <= args.lag_bound),
              (f"adaptive done {adaptive['done_s']:.1f} s <= 1.2 x naive's {naive['done_s']:.1f} s",
               adaptive["done_s"] <= 1.2 * naive["done_s"])]
    if args.slow_at:
        checks += [(f"adaptive over bound {adaptive['over_bound_share']:.1%} <= 5 %",
                    adaptive["over_bound_share"] <= 0.05),
                   (f"fixed {args.budget:,.0f}/s over bound {fixed['over_bound_share']:.1%} > 30 %",
                    fixed["over_bound_share"] > 0.3)]
    if args.throttle_wcu:
        checks.append((f"adaptive throttled calls {adaptive['throttled_calls']} <= 0.3 x naive's "
                       f"{naive['throttled_calls']}",
                       adaptive["throttled_calls"] <= 0.3 * naive["throttled_calls"]))
    for text, ok in checks:
        console.print(("[green]ok[/]   " if ok else "[red]FAIL[/] ") + text)
    for mode, r in results.items():
        if r.get("missing"):
            console.print(f"[red]{mode}: {r['missing']} records not published in time[/]")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="actionrunner bench incident --stream", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--capacity", type=float, default=400.0, help="consumer records/s")
    parser.add_argument("--lag-bound", type=float, default=5.0, help="seconds")
    parser.add_argument("--budget", type=float, default=300.0, help="the fixed mode's writes/s")
    parser.add_argument("--floor", type=float, default=20.0, help="adaptive floor, writes/s")
    parser.add_argument("--ceiling", type=float, default=1000.0, help="adaptive ceiling, writes/s")
    parser.add_argument("--no-slow-start", dest="slow_start", action="store_false",
                        help="adaptive: additive increase from the floor (PaceLimits(slow_start=False))")
    parser.add_argument("--slow-at", default=None, metavar="SECONDS:CAPACITY")
    parser.add_argument("--throttle-wcu", type=float, default=None, metavar="W")
    parser.add_argument("--modes", default=",".join(MODES), help="a subset, e.g. adaptive")
    parser.add_argument("--quick", action="store_true", help="4,000 writes")
    args = parser.parse_args(argv)
    if args.quick:
        args.items = min(args.items, 4_000)
    if args.items <= 0 or args.capacity <= 0 or args.lag_bound <= 0 or args.budget <= 0:
        parser.error("--items, --capacity, --lag-bound and --budget must be more than 0")
    if args.throttle_wcu is not None and args.throttle_wcu < MAX_BATCH_WRITE:
        parser.error(f"--throttle-wcu must be at least {MAX_BATCH_WRITE} (one BatchWriteItem)")
    if args.slow_at:
        from actionrunner.streams.__main__ import _slow_at

        _slow_at(args.slow_at)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not set(modes) <= set(MODES) or "naive" not in modes and len(modes) > 1:
        parser.error(f"--modes: from {', '.join(MODES)}")
    OUT.mkdir(exist_ok=True)
    began = time.monotonic()
    run = uuid.uuid4().hex[:6]
    with emulators() as (dynamodb_url, sns_url), environ(
            AWS_ENDPOINT_URL=dynamodb_url, AWS_ENDPOINT_URL_SNS=sns_url,
            AWS_ENDPOINT_URL_SQS=dynamodb_url, AWS_REGION=C.DEFAULT_REGION,
            AWS_DEFAULT_REGION=C.DEFAULT_REGION, AWS_ACCESS_KEY_ID=C.LOCAL_ACCESS_KEY,
            AWS_SECRET_ACCESS_KEY=C.LOCAL_SECRET_KEY, ACTIONRUNNER_LOG_LEVEL="WARNING"):
        from actionrunner import provision
        from actionrunner.logging import configure
        from actionrunner.settings import get_settings

        get_settings.cache_clear()
        settings = get_settings()
        configure("WARNING")
        provision.apply_table(settings)
        results: dict[str, dict[str, Any]] = {}
        for mode in modes:
            console.print(f"{mode}: writing {args.items:,} items...")
            results[mode] = run_mode(mode, args, settings, run, dynamodb_url)
            r = results[mode]
            console.print(f"  done in {r['done_s']:.1f} s, lag max {r['lag_max_s']:.2f} s")
        get_settings.cache_clear()
    if set(results) == set(MODES):
        report(results, args)
        where = plot(results, args)
        if where:
            console.print(f"plot: {where.relative_to(ROOT)}")
    document = {"lag_bound_s": args.lag_bound, "capacity": args.capacity, "items": args.items,
                "budget": args.budget, "floor": args.floor, "ceiling": args.ceiling,
                "slow_start": args.slow_start,
                "slow_at": args.slow_at, "throttle_wcu": args.throttle_wcu,
                "bench_s": round(time.monotonic() - began, 1), "modes": results}
    text = json.dumps(document, indent=1, default=float)
    RESULT.write_text(text)
    suffix = "-slow" if args.slow_at else "-throttled" if args.throttle_wcu else ""
    if suffix:
        RESULT.with_name(f"incident-stream{suffix}.json").write_text(text)
    console.print(f"JSON: {RESULT.relative_to(ROOT)}  ({document['bench_s']:.0f} s in all)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
