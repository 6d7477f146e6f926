"""``actionrunner bench redrive``: redrive N always-failing dead letters while a worker fails them back.

The worker dead-letters N calls of an action that always fails; then, with that worker still
running (so every redriven message fails straight back into the DLQ), the DLQ is redriven once.
A redrive must move what the DLQ held when it began, each message once, and end. Prints how long
the redrive took, how many it moved, how many dead letters arrived while it ran (left for the
next), and, once the worker failed them all back, how many distinct calls are in the DLQ and
with which redrive count (each exactly once, count 1).

    actionrunner bench redrive --count 300 --sqs fauxqs
"""

from __future__ import annotations

import argparse
import time
import uuid
from collections import Counter
from typing import Any

from . import harness


def _wait_depth(settings: Any, count: int, timeout: float) -> float | None:
    from actionrunner.dlq import DeadLetterQueue

    dlq = DeadLetterQueue(settings)
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if dlq.depth() >= count:
            return time.monotonic() - start
        time.sleep(0.5)
    return None


def _drain(settings: Any) -> list[Any]:
    from actionrunner.dlq import _decode

    sqs = settings.client("sqs")
    url = sqs.get_queue_url(QueueName=settings.dlq_name)["QueueUrl"]
    got: list[Any] = []
    empty = 0
    while empty < 3:
        messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10,
                                       MessageSystemAttributeNames=["All"],
                                       MessageAttributeNames=["All"]).get("Messages", [])
        empty = 0 if messages else empty + 1
        for m in messages:
            got.append(_decode(m, settings.dlq_name, settings.queue_name))
        if messages:
            sqs.delete_message_batch(QueueUrl=url, Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)])
    return got


def run_bench(sqs_server: str, count: int, groups: int, concurrency: int) -> dict[str, Any]:
    with harness.local_stack(sqs_server, **harness.BENCH_ENV) as (_, settings):
        from actionrunner.dlq import dead_letter_queues, redrive_all
        from bench.actions import always_fails

        harness.quiet_sender()
        run = uuid.uuid4().hex[:8]
        with harness.worker("actionrunner", concurrency, f"redrive-{sqs_server}-worker"):
            ids = [r.id for r in always_fails.delay_many(
                [{"group": i % groups, "n": i, "run": run} for i in range(count)])]
            filled = _wait_depth(settings, count, timeout=600)
            started = time.monotonic()
            result = redrive_all(dead_letter_queues(settings))
            took = time.monotonic() - started
            back = _wait_depth(settings, count, timeout=600)
            time.sleep(2)
        letters = _drain(settings)
    by_call = Counter(d.run_id for d in letters)
    return {"server": sqs_server, "count": count, "filled_s": filled, "redrive_s": took,
            "moved": result["moved"], "newer": result["newer"], "left": len(result["left"]),
            "failed_back_s": back, "in_dlq": len(letters), "distinct_calls": len(by_call),
            "copies": sum(n - 1 for n in by_call.values()),
            "missing": len(set(ids) - set(by_call)),
            "redrive_counts": dict(Counter(d.redrives for d in letters))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="actionrunner bench redrive", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--groups", type=int, default=30)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--sqs", choices=("fauxqs", "moto"), action="append")
    args = parser.parse_args(argv)
    ok = True
    for server in args.sqs or ["fauxqs"]:
        row = run_bench(server, args.count, args.groups, args.concurrency)
        print(f"{server}: {row['count']} always-failing dead letters, a worker (-c "
              f"{args.concurrency}) failing them back")
        print(f"  redrive: {row['redrive_s']:.1f} s, moved {row['moved']}, "
              f"{row['newer']} arrived while it ran (left for the next), {row['left']} left with "
              "a reason")
        print(f"  then in the DLQ: {row['in_dlq']} messages, {row['distinct_calls']} distinct calls,"
              f" {row['copies']} copies, {row['missing']} missing; redrive counts "
              f"{row['redrive_counts']}")
        ok = ok and row["moved"] == row["count"] and row["copies"] == 0 and row["missing"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
