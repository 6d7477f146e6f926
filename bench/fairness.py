"""Fairness: do quiet groups wait behind a hot group's backlog?

    actionrunner bench fairness [--hot 2000] [--cold-groups 20] [--seconds 30] [-c 2]
                                [--sqs fauxqs|moto] [--quick]

For each side on one private SQS server: HOT actions of one group ("hot") are queued, then a
worker ``-c N`` starts; once it runs the first one, a thread in this process sends one action per
second to each of COLD_GROUPS other groups for SECONDS seconds (spread evenly over each second)
while the hot backlog drains. Every action records when it started (bench/probe.py); a cold
action's *queue wait* is send time (just before the send call) → start time.

How to read it: the cold waits should stay near the polling latency (tens of ms) however deep the
hot group is; a p99 of seconds means quiet groups queue behind the hot one. "hot done in window"
is how much of the hot backlog ran while the cold actions were being sent; "all done" is worker
start → every action (hot and cold) ran.

ActionRunner runs with its defaults, which include the idempotency store and run status on
DynamoDB (moto's, here: slow); ``ACTIONRUNNER_IDEMPOTENCY=false ACTIONRUNNER_RUN_STATUS=false``
in the environment measures the SQS path alone.
"""

from __future__ import annotations

import argparse
import threading
import time
import uuid
from typing import Any

from rich.table import Table

from bench import harness as h

console = h.make_console()


def send_cold(side: str, run: str, args: argparse.Namespace, sent: dict[tuple[str, int], float]
              ) -> None:
    """One action per second per cold group, spread over each second; send times into ``sent``."""
    t0 = time.monotonic()
    for tick in range(args.seconds):
        for g in range(args.cold_groups):
            delay = t0 + tick + g / args.cold_groups - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            sent[(f"cold{g}", tick)] = time.time()
            h.send_probe(side, f"cold{g}", tick, run)


def run_side(side: str, args: argparse.Namespace) -> dict[str, Any]:
    run = uuid.uuid4().hex
    tag = f"fairness-{'ar' if side == 'ActionRunner' else 'stock'}"
    record = h.record_file(tag)
    h.send_probes(side, [("hot", i) for i in range(args.hot)], run, args.hot_sleep_ms)
    cold_total = args.cold_groups * args.seconds
    sent: dict[tuple[str, int], float] = {}
    with h.probe_worker(side, args.concurrency, f"{tag}-worker", record) as proc:
        t0 = time.time()
        if h.wait_records(record, 1, 120, proc) is None:
            raise SystemExit(f"{side}: the worker ran nothing within 120 s; "
                             f"see bench/out/{tag}-worker.log")
        sender = threading.Thread(target=send_cold, args=(side, run, args, sent))
        window_start = time.time()
        sender.start()
        sender.join()
        window_end = time.time()
        all_done = h.wait_records(record, args.hot + cold_total, args.timeout, proc)
    records = [r for r in h.read_records(record) if r["run"] == run]
    cold = [r for r in records if r["group"] != "hot"]
    hot = [r for r in records if r["group"] == "hot"]
    waits = [(r["start"] - sent[(r["group"], r["seq"])]) * 1000 for r in cold]
    return {
        "waits": waits, "sent_at": [sent[(r["group"], r["seq"])] - window_start for r in cold],
        "cold_ran": len({(r["group"], r["seq"]) for r in cold}), "cold_sent": len(sent),
        "hot_in_window": sum(window_start <= r["end"] <= window_end for r in hot),
        "hot_ran": len(hot), "all_done": max(r["end"] for r in records) - t0 if all_done else None,
    }


def plot(results: dict[str, dict[str, Any]], path: str) -> str | None:
    plt = h.pyplot()
    if plt is None:
        return None
    fig, ax = plt.subplots(figsize=(9, 5))
    for side, r in results.items():
        ax.scatter(r["sent_at"], r["waits"], s=6, label=side)
    ax.set_yscale("log")
    ax.set_xlabel("sent at (s into the cold window)")
    ax.set_ylabel("cold action's queue wait (ms)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="actionrunner bench fairness", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hot", type=int, default=2000, help="actions queued in the hot group")
    parser.add_argument("--hot-sleep-ms", type=int, default=0, help="each hot action's run time")
    parser.add_argument("--cold-groups", type=int, default=20)
    parser.add_argument("--seconds", type=int, default=30, help="how long the cold groups send")
    parser.add_argument("--concurrency", "-c", type=int, default=2)
    parser.add_argument("--sqs", choices=["fauxqs", "moto"], default="fauxqs")
    parser.add_argument("--timeout", type=float, default=600,
                        help="after the cold window, for everything to have run")
    parser.add_argument("--no-stock", dest="stock", action="store_false")
    parser.add_argument("--quick", action="store_true", help="500 hot actions, 10 s of cold sends")
    args = parser.parse_args(argv)
    if args.quick:
        args.hot, args.seconds = min(args.hot, 500), min(args.seconds, 10)
    h.quiet_sender()
    sides = h.SIDES if args.stock else h.SIDES[:1]

    results: dict[str, dict[str, Any]] = {}
    with h.local_stack(args.sqs, **h.BENCH_ENV) as (_, settings):
        h.stock_queue(settings)
        console.print(f"SQS from {args.sqs}: {args.hot:,} queued in group 'hot' "
                      f"({args.hot_sleep_ms} ms each), then {args.cold_groups} cold groups sending "
                      f"1/s each for {args.seconds} s; worker -c {args.concurrency}")
        for side in sides:
            results[side] = r = run_side(side, args)
            console.print(f"  {side}: cold p50 {h.fmt(h.percentile(r['waits'], 50), ',.0f')} ms")

    table = Table(title=f"fairness: cold groups' queue wait behind a hot group of {args.hot:,} "
                        f"(-c {args.concurrency}, {args.sqs})")
    for col in ("", "cold ran", "wait p50 (ms)", "p90 (ms)", "p99 (ms)", "max (ms)",
                "hot done in window", "all done (s)"):
        table.add_column(col, justify="right")
    for side, r in results.items():
        w = r["waits"]
        table.add_row(side, f"{r['cold_ran']} / {r['cold_sent']}",
                      *(h.fmt(h.percentile(w, p), ",.0f") for p in (50, 90, 99, 100)),
                      f"{r['hot_in_window']:,} / {args.hot:,}",
                      h.fmt(r["all_done"], ".1f", "timeout"))
    console.print(table)
    path = plot(results, str(h.OUT / f"fairness-{args.sqs}.png"))
    console.print(f"plot: {path}" if path else "(matplotlib not installed: no plot)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
