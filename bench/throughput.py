"""Throughput: end-to-end actions/s draining a backlog of no-op actions, vs what the server allows.

    actionrunner bench throughput [--count 2000] [--groups 100] [-c 2] [--sqs fauxqs|moto] [--quick]

On one private SQS server, for each side: send COUNT no-op probe actions in GROUPS groups
(ActionRunner: ``delay_many``, SendMessageBatch; stock Celery: ``apply_async``, one request each),
then start one worker ``-c N`` and time worker start → every action recorded. Then the *bound*:
a bare boto3 loop on the same server (SendMessageBatch 10 at a time, then ReceiveMessage 10 +
DeleteMessageBatch until all are received) — what one sequential client gets from this server.

Columns: send and drain times and rates; *steady* is first action start → last action end (drain
without the worker's start-up); *% of bound* compares each rate with the bare loop's; *worker
CPU ms/action* is the CPU time (user + system, from /proc) of the worker's main process and pool
from its first action to its last, per action. A worker with
-c N can beat a sequential loop in principle; here all three share the machine's cores.

ActionRunner runs with its defaults, which include the idempotency store on DynamoDB (moto's,
here); ``--store-off`` adds a third side, ActionRunner with ``ACTIONRUNNER_IDEMPOTENCY=false``
(the SQS path alone), sent and drained in the same run.

``--latency-sqs-ms N`` / ``--latency-ddb-ms N`` put every SQS / DynamoDB request of every side
(senders, workers, the bare loop) through a proxy (bench/proxy.py) that adds N ms to each, as
AWS's in-region round trips do (about 10 ms and 5 ms): what a pool slot waits on then shows.
"""

from __future__ import annotations

import argparse
import contextlib
import time
import uuid
from typing import Any

from rich.table import Table

from actionrunner.settings import get_settings
from bench import harness as h
from bench.proxy import Proxies

console = h.make_console()


STORE_OFF = "ActionRunner, store off"
#: Each side: the harness side it runs as, and the worker's environment.
SIDE_ENV: dict[str, tuple[str, dict[str, str]]] = {
    "ActionRunner": ("ActionRunner", {}),
    "stock Celery": ("stock Celery", {}),
    STORE_OFF: ("ActionRunner", {"ACTIONRUNNER_IDEMPOTENCY": "false"}),
}


def run_side(name: str, args: argparse.Namespace, settings: Any) -> dict[str, Any]:
    side, env = SIDE_ENV[name]
    calls = [(f"g{i % args.groups}", i) for i in range(args.count)]
    run = uuid.uuid4().hex
    tag = f"throughput-{'stock' if side != 'ActionRunner' else 'ar' if not env else 'ar-off'}"
    record = h.record_file(tag)
    sent = h.send_probes(side, calls, run)
    with h.probe_worker(side, args.concurrency, f"{tag}-worker", record, **env) as proc:
        t0 = time.time()
        meter = h.CpuMeter(proc, record)
        meter.wait_first(args.timeout)
        drain = h.wait_records(record, args.count, args.timeout, proc)
        cpu_ms = meter.ms_per_action()
        h.wait_drained(settings.client("sqs"), h.probe_queue(side, settings), 30)
    records = [r for r in h.read_records(record) if r["run"] == run]
    steady = max(r["end"] for r in records) - min(r["start"] for r in records) if records else None
    return {"send_s": sent, "drain_s": drain, "steady_s": steady, "cpu_ms": cpu_ms,
            "done": sorted(r["end"] - t0 for r in records)}


def run_bound(args: argparse.Namespace, settings: Any) -> dict[str, Any]:
    """The bare boto3 loop: SendMessageBatch ×10, then ReceiveMessage 10 + DeleteMessageBatch."""
    client = settings.client("sqs")
    url = client.create_queue(QueueName="raw.fifo", Attributes={"FifoQueue": "true"})["QueueUrl"]
    body = '{"group": "g0", "seq": 0, "sleep_ms": 0, "run": ""}'
    start = time.monotonic()
    for first in range(0, args.count, 10):
        entries = [{"Id": str(i), "MessageBody": body, "MessageDeduplicationId": uuid.uuid4().hex,
                    "MessageGroupId": f"bench:g{i % args.groups}"}
                   for i in range(first, min(first + 10, args.count))]
        client.send_message_batch(QueueUrl=url, Entries=entries)
    sent = time.monotonic() - start
    received, done = 0, []
    start = time.monotonic()
    deadline = start + args.timeout
    while received < args.count and time.monotonic() < deadline:
        messages = client.receive_message(QueueUrl=url, MaxNumberOfMessages=10,
                                          WaitTimeSeconds=1).get("Messages", [])
        if messages:
            client.delete_message_batch(QueueUrl=url, Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                for i, m in enumerate(messages)])
            received += len(messages)
            done += [time.monotonic() - start] * len(messages)
    drain = time.monotonic() - start if received >= args.count else None
    return {"send_s": sent, "drain_s": drain, "steady_s": drain, "done": done}


def plot(results: dict[str, dict[str, Any]], path: str) -> str | None:
    plt = h.pyplot()
    if plt is None:
        return None
    fig, ax = plt.subplots(figsize=(8, 5))
    for name, r in results.items():
        ax.plot(r["done"], range(1, len(r["done"]) + 1), label=name)
    ax.set_xlabel("seconds since worker start (bound: since first receive)")
    ax.set_ylabel("actions done")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="actionrunner bench throughput", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--groups", type=int, default=100)
    parser.add_argument("--concurrency", "-c", type=int, default=2)
    parser.add_argument("--sqs", choices=["fauxqs", "moto"], default="fauxqs")
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--no-stock", dest="stock", action="store_false")
    parser.add_argument("--quick", action="store_true", help="500 actions")
    parser.add_argument("--store-off", action="store_true",
                        help="also ActionRunner with the idempotency store off")
    parser.add_argument("--latency-sqs-ms", type=float, default=0.0,
                        help="added to every SQS request (a proxy in front of the server)")
    parser.add_argument("--latency-ddb-ms", type=float, default=0.0,
                        help="added to every DynamoDB request (a proxy in front of the server)")
    args = parser.parse_args(argv)
    if args.quick:
        args.count = min(args.count, 500)
    h.quiet_sender()
    sides = [*(h.SIDES if args.stock else h.SIDES[:1]), *([STORE_OFF] if args.store_off else [])]

    results: dict[str, dict[str, Any]] = {}
    latency = args.latency_sqs_ms or args.latency_ddb_ms
    with h.local_stack(args.sqs, **h.BENCH_ENV) as (aws, settings):
        h.stock_queue(settings)
        with (Proxies(aws.sqs_url, aws.moto.url, sqs_latency_ms=args.latency_sqs_ms,
                      dynamodb_latency_ms=args.latency_ddb_ms) if latency
              else contextlib.nullcontext()):
            settings = get_settings()
            console.print(f"SQS from {args.sqs}: {args.count:,} no-op actions in {args.groups} "
                          f"groups, worker -c {args.concurrency}"
                          + (f"; +{args.latency_sqs_ms:g} ms per SQS request, "
                             f"+{args.latency_ddb_ms:g} ms per DynamoDB request" if latency
                             else ""))
            for side in sides:
                results[side] = run_side(side, args, settings)
                console.print(f"  {side}: drained in {h.fmt(results[side]['drain_s'])} s")
            results["bound: bare boto3 loop"] = run_bound(args, settings)

    bound = results["bound: bare boto3 loop"]

    def rate(seconds: float | None) -> float | None:
        return args.count / seconds if seconds else None

    def share(ours: float | None, theirs: float | None) -> str:
        return h.fmt(ours / theirs * 100 if ours and theirs else None, ".0f") + " %"

    table = Table(title=f"throughput: {args.count:,} no-op actions, {args.groups} groups, "
                        f"-c {args.concurrency} ({args.sqs})")
    for col in ("", "send (s)", "send/s", "% of bound", "drain (s)", "drain/s", "% of bound",
                "steady/s", "send + drain (s)", "worker CPU ms/action"):
        table.add_column(col, justify="right")
    for name, r in results.items():
        send_rate, drain_rate = rate(r["send_s"]), rate(r["drain_s"])
        table.add_row(
            name, h.fmt(r["send_s"]), h.fmt(send_rate, ",.0f"),
            share(send_rate, rate(bound["send_s"])), h.fmt(r["drain_s"], ".1f", "timeout"),
            h.fmt(drain_rate, ",.0f"), share(drain_rate, rate(bound["drain_s"])),
            h.fmt(rate(r["steady_s"]), ",.0f"),
            h.fmt(r["send_s"] + r["drain_s"] if r["drain_s"] else None),
            h.fmt(r.get("cpu_ms"), ".2f"),
        )
    console.print(table)
    ours, stock, off = (rate(results.get(k, {}).get("drain_s"))
                        for k in ("ActionRunner", "stock Celery", STORE_OFF))
    if ours and stock:
        cpu = (results["ActionRunner"].get("cpu_ms"), results["stock Celery"].get("cpu_ms"))
        console.print(f"defaults / stock Celery: drain {ours / stock:.2f}x"
                      + (f", worker CPU {cpu[0] / cpu[1]:.2f}x" if all(cpu) else ""))
    if ours and off:
        console.print(f"defaults / store off: drain {ours / off:.2f}x")
    path = plot(results, str(h.OUT / f"throughput-{args.sqs}.png"))
    console.print(f"plot: {path}" if path else "(matplotlib not installed: no plot)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
