"""Ordering: does a worker keep FIFO's promise within a group, whatever -c N is?

    actionrunner bench ordering [--count 200] [--groups 10] [--concurrency 1 4 8] [--sleep-ms 20]
                                [--sqs fauxqs|moto] [--quick]

For each backlog shape, each worker concurrency N and each side (ActionRunner, then stock Celery,
on the same private SQS server), COUNT probe actions in GROUPS groups are sent first, then one
worker ``-c N`` drains them; every action records its start and end time (bench/probe.py).
Backlogs: *grouped* (all of g0, then all of g1, ...) and *interleaved* (round robin over groups).

How to read it, per group, with actions numbered in send order (seq):
* out-of-order: pairs (i < j) where j started before i. Should be 0.
* overlapping: pairs whose run intervals intersect (both running at once). Should be 0.
* max at once: the most actions of one group running at the same moment. Should be 1.
* groups hit: groups with at least one out-of-order or overlapping pair.
* ran: executions recorded; more than sent means redeliveries (duplicates).

fauxqs hands out at most one message per group per receive; real SQS and moto can return several
messages of one group in one receive, which is what lets stock Celery run them in parallel
(celery issue 8352): run ``--sqs moto`` too (small counts: moto slows down past a few hundred).
"""

from __future__ import annotations

import argparse
import uuid
from collections import defaultdict
from typing import Any

from rich.table import Table

from bench import harness as h

console = h.make_console()


def backlog(shape: str, count: int, groups: int) -> list[tuple[str, int]]:
    """(group, seq) in send order: group by group, or round robin over groups."""
    per = count // groups
    if shape == "grouped":
        return [(f"g{g}", s) for g in range(groups) for s in range(per)]
    return [(f"g{g}", s) for s in range(per) for g in range(groups)]


def max_at_once(runs: list[dict[str, Any]]) -> int:
    """The most intervals [start, end) open at one moment."""
    events = sorted([(r["start"], 1) for r in runs] + [(r["end"], -1) for r in runs])
    best = now = 0
    for _, step in events:  # at equal times an end (-1) sorts before a start (+1)
        now += step
        best = max(best, now)
    return best


def analyse(records: list[dict[str, Any]], sent: int) -> dict[str, Any]:
    by_group: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        by_group[r["group"]].append(r)
    out_of_order = overlapping = most = 0
    hit = set()
    for group, runs in by_group.items():
        runs.sort(key=lambda r: r["seq"])
        for i, a in enumerate(runs):
            for b in runs[i + 1 :]:
                if b["seq"] > a["seq"] and b["start"] < a["start"]:
                    out_of_order += 1
                    hit.add(group)
                if a["start"] < b["end"] and b["start"] < a["end"]:
                    overlapping += 1
                    hit.add(group)
        most = max(most, max_at_once(runs))
    distinct = len({(r["group"], r["seq"]) for r in records})
    span = max(r["end"] for r in records) - min(r["start"] for r in records) if records else None
    return {"ran": len(records), "missing": sent - distinct, "out_of_order": out_of_order,
            "overlapping": overlapping, "max_at_once": most, "groups_hit": len(hit),
            "span": span}


def run_once(side: str, shape: str, n: int, args: argparse.Namespace, settings: Any
             ) -> dict[str, Any]:
    calls = backlog(shape, args.count, args.groups)
    run = uuid.uuid4().hex
    tag = f"ordering-{'ar' if side == 'ActionRunner' else 'stock'}-{shape}-c{n}"
    record = h.record_file(tag)
    h.send_probes(side, calls, run, args.sleep_ms)
    with h.probe_worker(side, n, f"{tag}-worker", record) as proc:
        took = h.wait_records(record, len(calls), args.timeout, proc)
        h.wait_drained(settings.client("sqs"), h.probe_queue(side, settings), 30)  # acks are in
    records = [r for r in h.read_records(record) if r["run"] == run]
    return {"side": side, "shape": shape, "n": n, "took": took, "records": records,
            **analyse(records, len(calls))}


def plot(results: list[dict[str, Any]], path: str) -> str | None:
    """Start time vs seq, one line per group: a staircase going up is in order."""
    plt = h.pyplot()
    if plt is None:
        return None
    top = max(r["n"] for r in results)
    picked = [r for r in results if r["n"] == top]
    fig, axes = plt.subplots(2, 2, figsize=(12, 8), squeeze=False)
    for ax, r in zip(axes.flat, picked, strict=False):
        t0 = min((x["start"] for x in r["records"]), default=0)
        by_group: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for x in r["records"]:
            by_group[x["group"]].append(x)
        for runs in by_group.values():
            runs.sort(key=lambda x: x["start"])
            ax.plot([x["start"] - t0 for x in runs], [x["seq"] for x in runs], ".-", lw=0.8, ms=3)
        ax.set_title(f"{r['side']}, {r['shape']}, -c {top}: {r['out_of_order']} out of order")
        ax.set_xlabel("start (s)")
        ax.set_ylabel("seq within group")
    fig.tight_layout()
    fig.savefig(path)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="actionrunner bench ordering", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=200, help="actions per backlog (default 200)")
    parser.add_argument("--groups", type=int, default=10)
    parser.add_argument("--concurrency", "-c", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--sleep-ms", type=int, default=20, help="each action's run time")
    parser.add_argument("--shapes", nargs="+", choices=["grouped", "interleaved"],
                        default=["grouped", "interleaved"])
    parser.add_argument("--sqs", choices=["fauxqs", "moto"], default="fauxqs")
    parser.add_argument("--timeout", type=float, default=300, help="per run")
    parser.add_argument("--no-stock", dest="stock", action="store_false")
    parser.add_argument("--quick", action="store_true", help="60 actions, -c 1 4")
    args = parser.parse_args(argv)
    if args.quick:
        args.count, args.concurrency = min(args.count, 60), [1, 4]
    h.quiet_sender()
    sides = h.SIDES if args.stock else h.SIDES[:1]

    results = []
    with h.local_stack(args.sqs, **h.BENCH_ENV) as (_, settings):
        h.stock_queue(settings)
        console.print(f"SQS from {args.sqs}: {args.count} actions in {args.groups} groups, "
                      f"{args.sleep_ms} ms each; worker -c {args.concurrency}")
        for shape in args.shapes:
            for n in args.concurrency:
                for side in sides:
                    r = run_once(side, shape, n, args, settings)
                    console.print(f"  {shape:<11} -c {n} {side:<12} {h.fmt(r['took'])} s")
                    results.append(r)

    table = Table(title=f"ordering within a group: {args.count} actions, {args.groups} groups, "
                        f"{args.sleep_ms} ms each ({args.sqs})")
    for col in ("backlog", "-c", "", "ran", "out-of-order pairs", "overlapping pairs",
                "max at once (1 = FIFO)", f"groups hit (of {args.groups})",
                "worker start → done (s)", "first start → last end (s)"):
        table.add_column(col, justify="right")
    for r in results:
        ok = r["out_of_order"] == r["overlapping"] == 0 and r["max_at_once"] <= 1
        style = "green" if ok and not r["missing"] else "red"
        ran = f"{r['ran']}" + (f" ({r['missing']} missing)" if r["missing"] else "")
        table.add_row(r["shape"], str(r["n"]), f"[{style}]{r['side']}[/]", ran,
                      f"{r['out_of_order']:,}", f"{r['overlapping']:,}", str(r["max_at_once"]),
                      str(r["groups_hit"]), h.fmt(r["took"], ".1f", "timeout"), h.fmt(r["span"]))
    console.print(table)
    path = plot(results, str(h.OUT / f"ordering-{args.sqs}.png"))
    console.print(f"plot: {path}" if path else "(matplotlib not installed: no plot)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
