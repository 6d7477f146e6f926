"""Backlog: send N no-op actions in bulk, then drain them with one worker; print the timings.

    actionrunner bench backlog [--count 10000] [--concurrency 2] [--sqs fauxqs|moto] [--no-stock]

Runs on a private local stack (its own emulator on free loopback ports). ActionRunner sends with
``delay_many`` (SendMessageBatch, 10 per request); stock Celery, on the same server in the same run,
sends with ``apply_async`` one message per request and drains with its own worker.
"""

from __future__ import annotations

import argparse
import os
import time

from rich.console import Console
from rich.table import Table

from bench.harness import local_stack, wait_drained, worker

console = Console()


def run_actionrunner(count: int, concurrency: int, settings, timeout: float) -> dict:  # type: ignore[no-untyped-def]
    from tasks.demo import noop

    client = settings.client("sqs")
    url = client.get_queue_url(QueueName=settings.queue_name)["QueueUrl"]
    calls = [{"shard": i % 100, "n": i} for i in range(count)]
    start = time.monotonic()
    for first in range(0, count, 1000):
        noop.delay_many(calls[first : first + 1000])
    sent = time.monotonic() - start
    with worker("actionrunner", concurrency, "backlog-actionrunner-worker"):
        drained = wait_drained(client, url, timeout)
    return {"send_s": sent, "drain_s": drained}


def run_stock(count: int, concurrency: int, settings, timeout: float) -> dict:  # type: ignore[no-untyped-def]
    client = settings.client("sqs")
    url = client.create_queue(QueueName="stock.fifo", Attributes={"FifoQueue": "true"})["QueueUrl"]
    os.environ.update({"STOCK_QUEUE_URL": url, "STOCK_QUEUE_NAME": "stock.fifo"})
    from bench.stock_app import noop

    start = time.monotonic()
    for i in range(count):
        noop.apply_async(kwargs={"shard": i % 100, "n": i}, MessageGroupId=f"bench:{i % 100}")
    sent = time.monotonic() - start
    with worker("bench.stock_app", concurrency, "backlog-stock-worker"):
        drained = wait_drained(client, url, timeout)
    return {"send_s": sent, "drain_s": drained}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="actionrunner bench backlog", description=__doc__)
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--concurrency", "-c", type=int, default=2)
    parser.add_argument("--sqs", choices=["fauxqs", "moto"], default="fauxqs")
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--no-stock", dest="stock", action="store_false")
    args = parser.parse_args(argv)
    from actionrunner.logging import configure

    configure("WARNING", actions_level="WARNING")  # this process sends 10,000: no line per send

    env = {"ACTIONRUNNER_POLLING_INTERVAL": "0.1", "ACTIONRUNNER_WAIT_TIME_SECONDS": "1"}
    results = {}
    with local_stack(args.sqs, **env) as (_, settings):
        console.print(f"local stack: SQS from {args.sqs}; {args.count:,} no-op actions in 100 groups, "
                      f"worker -c {args.concurrency}")
        results["ActionRunner"] = run_actionrunner(args.count, args.concurrency, settings, args.timeout)
        if args.stock:
            results["stock Celery"] = run_stock(args.count, args.concurrency, settings, args.timeout)

    table = Table(title=f"backlog: {args.count:,} actions ({args.sqs})")
    for col in ("", "send (s)", "send (actions/s)", "drain (s)", "drain (actions/s)", "total (s)"):
        table.add_column(col, justify="right")
    for name, r in results.items():
        drain = r["drain_s"]
        table.add_row(
            name, f"{r['send_s']:.1f}", f"{args.count / r['send_s']:,.0f}",
            "timeout" if drain is None else f"{drain:.1f}",
            "-" if drain is None else f"{args.count / drain:,.0f}",
            "-" if drain is None else f"{r['send_s'] + drain:.1f}",
        )
    console.print(table)
    ours = results["ActionRunner"]
    ok = ours["drain_s"] is not None and ours["send_s"] + ours["drain_s"] < 180
    console.print(("[green]within[/]" if ok else "[red]over[/]") + " the 3-minute budget for send + drain")
    return 0 if ours["drain_s"] is not None else 1


if __name__ == "__main__":
    raise SystemExit(main())
