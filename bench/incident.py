"""The incident, replayed: an admin call that rewrites 100,000 DynamoDB items.

    actionrunner bench incident [--items 100000] [--budget 1000] [--chunk 20000] [--quick]
                                [--moto-gc on|off]
    actionrunner bench incident --stream ...   # the downstream: bench/incident_stream.py

(a) the naive way: an API handler does the writes inline (bench/naive_api.py);
(b) the ActionRunner way: the admin API sends one `tasks.migrate.migrate_table` action, which
    chunks and paces the writes (a cursor chain, BatchWriteItem 25 at a time, at `--budget`/s).

For both it prints the API's response time and the write rate per second over time, measured
twice: as *issued* (each rewritten item carries the time its BatchWriteItem was sent) and as
*received* by DynamoDB (a counting proxy in front of the emulator records each BatchWriteItem's
items on arrival); windows are whole seconds from the first write, the first and last (partial)
ones left out. It saves a plot of the received rates.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
from rich.table import Table

from actionrunner.api.auth import hash_token
from actionrunner.local import free_port, stop_process
from bench.harness import OUT, environ, local_stack, make_console, percentile, pyplot, worker
from bench.proxy import CountingProxy

ROOT = Path(__file__).resolve().parents[1]
PLOT = ROOT / "docs" / "bench" / "incident.png"
console = make_console()


def seed(client: Any, table: str, items: int) -> None:
    client.create_table(TableName=table, BillingMode="PAY_PER_REQUEST",
                        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}])

    def put(first: int) -> None:
        batch = [{"PutRequest": {"Item": {"pk": {"S": f"item#{i:07d}"}, "n": {"N": str(i)},
                                          "schema_version": {"N": "1"}}}}
                 for i in range(first, min(first + 25, items))]
        client.batch_write_item(RequestItems={table: batch})

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(put, range(0, items, 25)))


def write_times(client: Any, table: str) -> list[float]:
    times, key = [], None
    while True:
        page = client.scan(TableName=table, ProjectionExpression="migrated_at",
                           **({"ExclusiveStartKey": key} if key else {}))
        times += [float(i["migrated_at"]["N"]) for i in page["Items"] if "migrated_at" in i]
        key = page.get("LastEvaluatedKey")
        if not key:
            return sorted(times)


class Arrivals:
    """BatchWriteItem items of one table, by arrival time at the proxy (a CountingProxy label)."""

    def __init__(self, table: str) -> None:
        self.table = table
        self.times: list[float] = []

    def __call__(self, api: str, body: bytes) -> str:
        if api == "BatchWriteItem":
            try:
                items = json.loads(body).get("RequestItems", {}).get(self.table, [])
            except ValueError:
                items = []
            now = time.time()
            self.times.extend([now] * len(items))
        return api


@contextlib.contextmanager
def dynamodb_counted(settings: Any, table: str) -> Iterator[Arrivals]:
    """Point the processes started in the block at a counting proxy in front of DynamoDB."""
    arrivals = Arrivals(table)
    with CountingProxy(settings.dynamodb_endpoint_url, label=arrivals) as proxy, \
            environ(AWS_ENDPOINT_URL_DYNAMODB=proxy.url):
        yield arrivals


def per_second(times: list[float]) -> list[int]:
    """Writes in each whole second from the first write to the last."""
    if not times:
        return []
    start = times[0]
    counts = Counter(int(t - start) for t in times)
    return [counts.get(s, 0) for s in range(int(times[-1] - start) + 1)]


def serve(argv: list[str], port: int, log_name: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    log = open(OUT / f"{log_name}.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(argv, cwd=ROOT, env={**os.environ, **env}, stdout=log,
                            stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/docs", timeout=1)
            return proc
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"{log_name} did not start")


def run_naive(client: Any, settings: Any, table: str) -> dict[str, Any]:
    port = free_port()
    with dynamodb_counted(settings, table) as arrivals:
        proc = serve([sys.executable, "-m", "uvicorn", "bench.naive_api:app", "--port", str(port),
                      "--host", "127.0.0.1", "--log-level", "warning"], port, "incident-naive-api", {})
        try:
            began = time.monotonic()
            response = httpx.post(f"http://127.0.0.1:{port}/migrate", params={"table": table},
                                  timeout=3600)
            elapsed = time.monotonic() - began
            response.raise_for_status()
        finally:
            stop_process(proc, 15)
    return {"api_ms": [elapsed * 1000], "rates": per_second(write_times(client, table)),
            "received": per_second(sorted(arrivals.times))}


def run_actionrunner(client: Any, settings: Any, table: str, budget: float, chunk: int,
                     items: int) -> dict[str, Any]:
    token = "bench-" + os.urandom(8).hex()
    tokens = json.dumps([{"name": "bench", "sha256": hash_token(token), "scopes": ["submit"]}])
    port = free_port()
    api = serve([sys.executable, "-m", "actionrunner.cli", "api", "--port", str(port)], port,
                "incident-api", {"ACTIONRUNNER_API_TOKENS": tokens})
    headers = {"Authorization": f"Bearer {token}"}
    try:
        with dynamodb_counted(settings, table) as arrivals, \
                worker("actionrunner", 2, "incident-worker"), httpx.Client(timeout=60) as http:
            latencies = []
            http.get(f"http://127.0.0.1:{port}/readyz")  # connections warm, as in a running service
            http.post(f"http://127.0.0.1:{port}/v1/actions/tasks.demo.hello", json={"name": "warm"},
                      headers=headers).raise_for_status()
            for i in range(20):  # the API's own latency, on a cheap action
                began = time.monotonic()
                http.post(f"http://127.0.0.1:{port}/v1/actions/tasks.demo.hello",
                          json={"name": f"probe{i}"}, headers=headers).raise_for_status()
                latencies.append((time.monotonic() - began) * 1000)
            began = time.monotonic()
            accepted = http.post(f"http://127.0.0.1:{port}/v1/actions/tasks.migrate.migrate_table",
                                 json={"table": table, "writes_per_second": budget, "chunk": chunk},
                                 headers=headers)
            migrate_ms = (time.monotonic() - began) * 1000
            accepted.raise_for_status()
            deadline = time.monotonic() + items / budget * 3 + 120
            log = OUT / "incident-worker.log"
            while "migration-done" not in log.read_text(errors="replace"):
                if time.monotonic() > deadline:
                    raise RuntimeError("the migration did not finish; see " + str(log))
                time.sleep(1)
    finally:
        stop_process(api, 15)
    return {"api_ms": latencies, "migrate_ms": migrate_ms,
            "rates": per_second(write_times(client, table)),
            "received": per_second(sorted(arrivals.times))}


def summarize(name: str, result: dict[str, Any], budget: float | None,
              series: str = "rates") -> dict[str, Any]:
    rates = result[series]
    whole = rates[1:-1] if len(rates) > 2 else rates  # the first and last seconds are partial
    row = {
        "name": name,
        "api": result.get("migrate_ms", result["api_ms"][0]),
        "api_p50": percentile(result["api_ms"], 50), "api_p99": percentile(result["api_ms"], 99),
        "seconds": len(rates), "peak": max(rates, default=0),
        "mean": sum(rates) / len(rates) if rates else 0,
    }
    if budget:
        deviations = [abs(r - budget) / budget for r in whole]
        row["within"] = sum(d <= 0.05 for d in deviations) / len(deviations) if deviations else 0
        row["worst"] = max(deviations, default=0)
    return row


def plot(naive: list[int], ours: list[int], budget: float) -> Path | None:
    plt = pyplot()
    if plt is None:
        return None
    PLOT.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(9, 4))
    ax.plot(range(len(naive)), naive, label="naive: inline in the API handler", color="tab:red")
    ax.plot(range(len(ours)), ours, label="ActionRunner: one action, paced", color="tab:blue")
    ax.axhline(budget, color="gray", linestyle="--", label=f"budget {budget:,.0f} writes/s")
    ax.set_xlabel("seconds since the first write")
    ax.set_ylabel("writes per second received by DynamoDB")
    ax.set_title("Rewriting a table: write rate over time")
    ax.legend()
    fig.tight_layout()
    fig.savefig(PLOT, dpi=110)
    return PLOT


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--stream" in argv:  # what the writes do to the stream's consumer
        from bench import incident_stream

        return incident_stream.main([a for a in argv if a != "--stream"])
    parser = argparse.ArgumentParser(prog="actionrunner bench incident", description=__doc__)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--budget", type=float, default=1000.0, help="writes per second")
    parser.add_argument("--chunk", type=int, default=0,
                        help="items per step of the cursor chain (default: the whole job in one step; "
                             "each further step starts with a Scan, ~0.3 s on moto's O(table) Scan)")
    parser.add_argument("--sqs", choices=["fauxqs", "moto"], default="fauxqs")
    parser.add_argument("--quick", action="store_true", help="10,000 items")
    parser.add_argument("--moto-gc", choices=["on", "off"], default="off",
                        help="the emulator's cyclic garbage collector (default off: with 10^5 items "
                             "in moto's one process a full collection stalls every request for "
                             "~2 s, which would show up in the windows as the emulator's pause)")
    args = parser.parse_args(argv)
    if args.quick:
        args.items = 10_000
    args.chunk = args.chunk or args.items
    # fauxqs wakes a long poll in 0.5 s steps (real SQS answers within tens of ms), which would
    # show up as a gap at every step of a chain: then poll short and often instead. One step
    # (the default) needs no such polling, which would only take CPU from the emulator.
    env = ({"ACTIONRUNNER_WAIT_TIME_SECONDS": "0", "ACTIONRUNNER_POLLING_INTERVAL": "0.02"}
           if args.chunk < args.items else {"ACTIONRUNNER_WAIT_TIME_SECONDS": "1"})
    with environ(ACTIONRUNNER_MOTO_GC=args.moto_gc), local_stack(args.sqs, **env) as (_, settings):
        from bench.harness import quiet_sender

        quiet_sender()
        client = settings.client("dynamodb")
        # One table at a time: moto keeps every item in its one Python process, and the fewer
        # objects it holds, the shorter its garbage-collection pauses (which stall every request).
        console.print(f"seeding a table with {args.items:,} items...")
        seed(client, "naive-items", args.items)
        console.print("(a) naive: the API handler rewrites the table inline")
        naive = run_naive(client, settings, "naive-items")
        client.delete_table(TableName="naive-items")
        console.print(f"seeding a table with {args.items:,} items...")
        seed(client, "paced-items", args.items)
        console.print(f"(b) ActionRunner: the API sends one action, paced at {args.budget:,.0f}/s")
        ours = run_actionrunner(client, settings, "paced-items", args.budget, args.chunk, args.items)

    rows = [summarize("naive (inline), issued", naive, args.budget),
            summarize("naive (inline), received", naive, args.budget, "received"),
            summarize("ActionRunner (one action), issued", ours, args.budget),
            summarize("ActionRunner (one action), received", ours, args.budget, "received")]
    table = Table(title=f"incident: rewrite {args.items:,} items, budget {args.budget:,.0f} writes/s")
    for column in ("", "API response (ms)", "job (s)", "peak writes/s", "mean writes/s",
                   "1-s windows within ±5% of budget", "worst window"):
        table.add_column(column, justify="right")
    for r in rows:
        table.add_row(r["name"], f"{r['api']:,.1f}", f"{r['seconds']:,}", f"{r['peak']:,}",
                      f"{r['mean']:,.0f}", f"{r['within']:.0%}", f"{r['worst']:+.1%}".replace("+", "±"))
    console.print(table)
    console.print(f"ActionRunner API latency on 20 submits: p50 {rows[2]['api_p50']:.1f} ms, "
                  f"p99 {rows[2]['api_p99']:.1f} ms")
    where = plot(naive["received"], ours["received"], args.budget)
    if where:
        console.print(f"plot: {where.relative_to(ROOT)}")
    (OUT / "incident.json").write_text(json.dumps({"naive": naive, "actionrunner": ours}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
