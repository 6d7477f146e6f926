"""Requests: what each side asks of SQS per action, and per minute while idle (the bill).

    actionrunner bench requests [--count 500] [--groups 50] [-c 2] [--idle 60] [--idle-long 60]
                                [--sqs fauxqs|moto] [--quick]

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

Read the first table as requests per action (0.10 = one request per ten actions); "ReceiveMessage
(empty)" is the part of ReceiveMessage that returned nothing. The second is requests per minute of
an idle worker (×1,440 for a day; SQS bills per request).
"""

from __future__ import annotations

import argparse
import time
import uuid
from collections import Counter
from typing import Any

from rich.table import Table

from actionrunner.settings import get_settings
from bench import harness as h
from bench.proxy import EMPTY_RECEIVE, CountingProxy

console = h.make_console()


def wait_for(proxy: CountingProxy, api: str, timeout: float) -> None:
    """Until the proxy has seen a request to ``api`` (the worker is polling)."""
    deadline = time.monotonic() + timeout
    while not proxy.counts()[api] and time.monotonic() < deadline:
        time.sleep(0.1)


def run_side(side: str, args: argparse.Namespace, proxy: CountingProxy, direct: Any,
             settings: Any) -> dict[str, Counter[str]]:
    calls = [(f"g{i % args.groups}", i) for i in range(args.count)]
    run = uuid.uuid4().hex
    tag = f"requests-{'ar' if side == 'ActionRunner' else 'stock'}"
    record = h.record_file(tag)
    url = h.probe_queue(side, settings)
    out: dict[str, Counter[str]] = {}
    proxy.reset()
    h.send_probes(side, calls, run)
    out["send"] = proxy.reset()
    with h.probe_worker(side, args.concurrency, f"{tag}-worker", record) as proc:
        if h.wait_records(record, args.count, args.timeout, proc) is None:
            console.print(f"[red]{side}: not all {args.count} actions ran in {args.timeout} s[/]")
        h.wait_drained(direct, url, 30)
        time.sleep(1)  # the last deletes
        out["worker"] = proxy.reset()
        time.sleep(args.idle)
        out["idle, 1 s poll"] = proxy.reset()
    if args.idle_long:
        time.sleep(1.5)  # the stopped worker's last long poll returns
        proxy.reset()
        with h.probe_worker(side, args.concurrency, f"{tag}-worker-idle", record,
                            ACTIONRUNNER_WAIT_TIME_SECONDS="20"):
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="actionrunner bench requests", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--groups", type=int, default=50)
    parser.add_argument("--concurrency", "-c", type=int, default=2)
    parser.add_argument("--idle", type=float, default=60, help="seconds of each idle window")
    parser.add_argument("--idle-long", type=float, default=60,
                        help="seconds of the idle window with a 20 s long poll (0: skip it)")
    parser.add_argument("--sqs", choices=["fauxqs", "moto"], default="fauxqs")
    parser.add_argument("--timeout", type=float, default=300)
    parser.add_argument("--no-stock", dest="stock", action="store_false")
    parser.add_argument("--quick", action="store_true",
                        help="200 actions, idle windows of 15 s (1 s poll) and 40 s (20 s poll)")
    args = parser.parse_args(argv)
    if args.quick:
        args.count, args.idle = min(args.count, 200), min(args.idle, 15)
        args.idle_long = min(args.idle_long, 40)
    h.quiet_sender()
    sides = h.SIDES if args.stock else h.SIDES[:1]

    results: dict[str, dict[str, Counter[str]]] = {}
    with h.local_stack(args.sqs, **h.BENCH_ENV) as (aws, settings):
        h.stock_queue(settings)
        direct = settings.client("sqs")  # the bench's own checks bypass the proxy
        with CountingProxy(aws.sqs_url) as proxy, h.environ(AWS_ENDPOINT_URL_SQS=proxy.url):
            get_settings.cache_clear()  # senders and workers from here on go through the proxy
            console.print(f"SQS from {args.sqs} behind a counting proxy at {proxy.url}: "
                          f"{args.count} actions in {args.groups} groups, worker -c "
                          f"{args.concurrency}")
            for side in sides:
                results[side] = run_side(side, args, proxy, direct, get_settings())
                console.print(f"  {side}: done")
        get_settings.cache_clear()

    per_action = [(side, phase) for side in results for phase in ("send", "worker")]
    table = Table(title=f"SQS requests per action: {args.count} actions, {args.groups} groups, "
                        f"-c {args.concurrency} ({args.sqs})")
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
