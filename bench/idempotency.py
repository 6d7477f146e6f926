"""Idempotency: what the store adds to each action, in DynamoDB requests and milliseconds.

    actionrunner bench idempotency [--count 300] [--drain 1000] [--paths 500] [--concurrency 2]
                                   [--no-drain]

Runs on a private local stack (moto for DynamoDB over HTTP, fauxqs for SQS, free loopback ports).

1. **Per action, in process**: ``count`` runs of each scenario through the real path of a run
   (``Action.apply()``: validation, the guard, the store, lifecycle signals), with and without
   the idempotency store. DynamoDB requests are counted on the state client (botocore events);
   each scenario gets fresh tables (moto copies a whole table on every transaction, so a large
   table would inflate its transaction times; real DynamoDB does not).
2. **Drain, end to end**: ``drain`` no-op actions (``tasks.demo.noop``) sent in bulk and drained by
   one worker, with ``ACTIONRUNNER_IDEMPOTENCY`` on and off (run status off in both).
3. **Writes per action by path, end to end**: ``paths`` actions of each kind drained by a worker
   with the store on and run status at its default (``api``: ``.delay()`` runs write none), every
   DynamoDB request of the worker counted by a proxy in front of moto (bench/proxy.py), from its
   start to the drained queue: *first delivery* (a ``.delay()`` of an unkeyed action, received for
   the first time: no claim, the completion is one conditional write), the same *with one staged
   write* (one TransactWriteItems), *redelivery* (each message received once before, by the bench,
   and left to come back: ApproximateReceiveCount 2 → claim, then complete) and *keyed*
   (``key=``: claim, then complete).

Capacity units are AWS's published rates for items up to 1 KB: PutItem, UpdateItem and DeleteItem
1 WCU each (a write refused by its condition too), a transaction 2 WCU per item.
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid
from collections import Counter
from typing import Any

from actionrunner import constants as C
from bench.harness import environ, local_stack, make_console, queue_depth, quiet_sender, worker

console = make_console()

#: Write capacity units of one call, items up to 1 KB (transactions: per item, x2).
WCU = {"PutItem": 1, "UpdateItem": 1, "DeleteItem": 1}


class Requests:
    """Counts DynamoDB calls made with one client (and the WCU they cost on AWS)."""

    def __init__(self, client: Any) -> None:
        self.calls: Counter[str] = Counter()
        self.wcu = 0.0
        client.meta.events.register("before-parameter-build.dynamodb", self._count)

    def _count(self, model: Any = None, params: Any = None, **_: Any) -> None:
        name = model.name
        self.calls[name] += 1
        if name == "TransactWriteItems":
            self.wcu += 2 * len(params.get("TransactItems", []))
        else:
            self.wcu += WCU.get(name, 0)

    def reset(self) -> None:
        self.calls.clear()
        self.wcu = 0.0


def _table(client: Any, prefix: str) -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    client.create_table(TableName=name, BillingMode="PAY_PER_REQUEST",
                        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}])
    return name


def _declare() -> dict[str, Any]:
    """The benchmark's actions (declared once the stack is up: declaring builds the Celery app)."""
    from actionrunner import action
    from actionrunner.state import effects
    from actionrunner.state.table import client

    @action(name="bench.idempotency.noop")
    def noop(n: int, run: str) -> int:
        return n

    @action(name="bench.idempotency.noop_plain", idempotent=False)
    def noop_plain(n: int, run: str) -> int:
        return n

    @action(name="bench.idempotency.write_plain", idempotent=False)
    def write_plain(table: str, n: int, run: str) -> int:
        client().update_item(TableName=table, Key={"pk": {"S": f"{run}:{n}"}},
                             UpdateExpression="ADD c :one",
                             ExpressionAttributeValues={":one": {"N": "1"}})
        return n

    @action(name="bench.idempotency.write_staged")
    def write_staged(table: str, n: int, run: str) -> int:
        effects.update(table, {"pk": f"{run}:{n}"}, "ADD c :one", values={":one": 1})
        return n

    @action(name="bench.idempotency.paced", idempotent=False, rate_limit_shared="100000/s",
            bucket="bench-idempotency")
    def paced(n: int, run: str) -> int:
        return n

    return {"noop": noop, "noop_plain": noop_plain, "write_plain": write_plain,
            "write_staged": write_staged, "paced": paced}


def per_action(count: int) -> list[dict[str, Any]]:
    """Scenario rows: requests, WCU and milliseconds per action."""
    from actionrunner.settings import get_settings
    from actionrunner.state import DynamoDBStore, guard
    from actionrunner.state.table import client

    actions = _declare()
    dynamodb = client()
    requests = Requests(dynamodb)
    settings = get_settings()

    def fresh_store() -> None:
        guard.use_store(DynamoDBStore.from_settings(settings.model_copy(
            update={"state_table": _fresh_state_table(settings)}), dynamodb))

    def measure(label: str, task: Any, calls: list[dict[str, Any]]) -> dict[str, Any]:
        for call in calls[:5]:  # warm up (connections, first-use imports) on throwaway inputs
            task.apply(kwargs={**call, "run": "warm-" + call["run"]}).get()
        requests.reset()
        times = []
        for call in calls:
            # the same inputs, the same call (a replay runs a call again: its message redelivered)
            call_id = f"{task.name}:{call.get('table', '')}:{call['run']}:{call['n']}"
            began = time.perf_counter()
            task.apply(kwargs=call, headers={C.CALL_ID_HEADER: call_id}).get()
            times.append((time.perf_counter() - began) * 1000)
        return {"scenario": label, "requests": sum(requests.calls.values()) / len(calls),
                "calls": dict(requests.calls), "wcu": requests.wcu / len(calls),
                "ms": statistics.median(times), "p90": sorted(times)[int(len(times) * 0.9)]}

    rows = []
    run = uuid.uuid4().hex[:8]
    noops = [{"n": i, "run": run} for i in range(count)]
    fresh_store()
    rows.append(measure("no-op, without the store", actions["noop_plain"], noops))
    rows.append(measure("no-op, with the store: first run", actions["noop"], noops))
    rows.append(measure("no-op, with the store: replay", actions["noop"], noops))
    fresh_store()
    target = _table(dynamodb, "bench-writes")
    writes = [{"table": target, "n": i, "run": run} for i in range(count)]
    rows.append(measure("one UpdateItem, without the store (at least once)",
                        actions["write_plain"], writes))
    fresh_store()
    target = _table(dynamodb, "bench-staged")
    staged = [{"table": target, "n": i, "run": run} for i in range(count)]
    rows.append(measure("one UpdateItem staged, with the store (exactly once)",
                        actions["write_staged"], staged))
    rows.append(measure("one UpdateItem staged, with the store: replay",
                        actions["write_staged"], staged))
    rows.append(measure("no-op, shared rate limit (no wait), without the store",
                        actions["paced"], noops))
    guard.use_store(None)
    return rows


def _fresh_state_table(settings: Any) -> str:
    from actionrunner import provision

    name = f"bench-state-{uuid.uuid4().hex[:8]}"
    provision.apply_table(settings.model_copy(update={"state_table": name}))
    return name


def drain(count: int, concurrency: int, settings: Any, timeout: float = 300) -> list[dict[str, Any]]:
    """Send ``count`` no-op actions and drain them with one worker, store on and off."""
    import json

    from bench.harness import OUT
    from tasks.demo import noop

    sqs = settings.client("sqs")
    url = sqs.get_queue_url(QueueName=settings.queue_name)["QueueUrl"]
    rows = []
    for label, flag in (("without the store", "false"), ("with the store", "true")):
        calls = [{"shard": i % 100, "n": i + (0 if flag == "false" else count)} for i in range(count)]
        for first in range(0, count, 1000):
            noop.delay_many(calls[first : first + 1000])
        log_name = f"idempotency-drain-{flag}"
        with environ(ACTIONRUNNER_IDEMPOTENCY=flag, ACTIONRUNNER_RUN_STATUS="off"), \
                worker("actionrunner", concurrency, log_name) as proc:
            seconds = _drained(sqs, url, timeout, proc)
        if seconds is None:
            console.print(f"[red]the worker did not drain the queue; see bench/out/{log_name}.log[/]")
        durations = []
        for line in (OUT / f"{log_name}.log").read_text(errors="replace").splitlines():
            if line.startswith("{") and '"succeeded"' in line:
                event = json.loads(line)
                if event.get("event") == "succeeded" and event.get("duration_ms") is not None:
                    durations.append(float(event["duration_ms"]))
        rows.append({"label": f"{count:,} no-op actions, {label}", "seconds": seconds,
                     "ms": statistics.median(durations) if durations else float("nan")})
    return rows


def _drained(sqs: Any, url: str, timeout: float, proc: Any) -> float | None:
    """Seconds until the queue is empty; None after ``timeout`` or if the worker exited."""
    began = time.monotonic()
    while time.monotonic() - began < timeout and proc.poll() is None:
        if queue_depth(sqs, url) == 0:
            return time.monotonic() - began
        time.sleep(0.25)
    return None


#: DynamoDB APIs that write (each request is one write, whatever its WCU).
WRITE_APIS = ("PutItem", "UpdateItem", "DeleteItem", "TransactWriteItems", "BatchWriteItem")


def by_path(aws: Any, settings: Any, count: int, concurrency: int,
            timeout: float = 300) -> list[dict[str, Any]]:
    """Rows of DynamoDB requests per action for each path (see the module docstring)."""
    from bench.actions import keyed_noop, staged_noop
    from bench.proxy import CountingProxy
    from tasks.demo import noop

    sqs = settings.client("sqs")
    url = sqs.get_queue_url(QueueName=settings.queue_name)["QueueUrl"]
    table = _table(settings.client("dynamodb"), "bench-paths")
    run = uuid.uuid4().hex[:8]
    rows = []
    with CountingProxy(aws.moto.url) as proxy:
        for label in ("first delivery", "first delivery, one staged write", "redelivery",
                      "keyed (key=)"):
            base = 100_000 * (len(rows) + 1)
            calls = [{"shard": base + i, "n": base + i} for i in range(count)]  # a group each
            for first in range(0, count, 1000):
                chunk = calls[first : first + 1000]
                if label.startswith("keyed"):
                    keyed_noop.delay_many([{**c, "run": run} for c in chunk])
                elif "staged" in label:
                    staged_noop.delay_many([{**c, "table": table} for c in chunk])
                else:
                    noop.delay_many(chunk)
            if label == "redelivery":
                _receive_once(sqs, url, count, hide=4)
            proxy.reset()
            log_name = f"idempotency-path-{len(rows)}"
            with environ(ACTIONRUNNER_IDEMPOTENCY="true", AWS_ENDPOINT_URL_DYNAMODB=proxy.url,
                         ACTIONRUNNER_IMPORTS="bench.actions"), \
                    worker("actionrunner", concurrency, log_name) as proc:
                seconds = _drained(sqs, url, timeout, proc)
                time.sleep(0.5)  # the last completions
                calls_seen = proxy.reset()
            if seconds is None:
                console.print(f"[red]{label}: the worker did not drain the queue; see "
                              f"bench/out/{log_name}.log[/]")
            writes = sum(n for api, n in calls_seen.items() if api in WRITE_APIS)
            # WCU at AWS's rates, items up to 1 KB: a transaction here holds the record and one
            # staged write, 2 WCU each
            wcu = sum(n * (4 if api == "TransactWriteItems" else 1)
                      for api, n in calls_seen.items() if api in WRITE_APIS)
            rows.append({"path": label, "writes": writes / count, "calls": dict(calls_seen),
                         "requests": sum(calls_seen.values()) / count, "wcu": wcu / count})
    return rows


def _receive_once(sqs: Any, url: str, count: int, hide: int) -> None:
    """Receive every message once (each is in a group of its own) and let it come back after
    ``hide`` seconds: its next receive is its second (ApproximateReceiveCount 2)."""
    seen: set[str] = set()
    deadline = time.monotonic() + 60
    while len(seen) < count and time.monotonic() < deadline:
        got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=hide,
                                  WaitTimeSeconds=1).get("Messages", [])
        seen.update(m["MessageId"] for m in got)
    time.sleep(hide + 0.5)


def _ops(calls: dict[str, int], count: float) -> str:
    return ", ".join(f"{name} {n / count:g}" for name, n in sorted(calls.items())) or "-"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="actionrunner bench idempotency", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=300, help="runs per in-process scenario")
    parser.add_argument("--drain", type=int, default=1000, help="actions per end-to-end drain")
    parser.add_argument("--paths", type=int, default=500,
                        help="actions per path in the writes-per-action table (0: skip it)")
    parser.add_argument("--concurrency", "-c", type=int, default=2)
    parser.add_argument("--no-drain", dest="with_drain", action="store_false")
    args = parser.parse_args(argv)
    quiet_sender()
    from rich.table import Table

    env = {"ACTIONRUNNER_POLLING_INTERVAL": "0.1", "ACTIONRUNNER_WAIT_TIME_SECONDS": "1"}
    with local_stack("fauxqs", **env) as (aws, settings):
        console.print(f"local stack: DynamoDB from moto, SQS from fauxqs; {args.count} runs per "
                      "scenario, in process")
        rows = per_action(args.count)
        drained = drain(args.drain, args.concurrency, settings) if args.with_drain else []
        paths = by_path(aws, settings, args.paths, args.concurrency) if args.paths else []

    base = {"no-op": rows[0], "write": rows[3]}
    table = Table(title="what the idempotency store adds per action (DynamoDB on moto, loopback)")
    for column in ("scenario", "DynamoDB calls / action", "WCU / action (AWS)",
                   "ms / action (median)", "p90 ms", "added ms vs without the store"):
        table.add_column(column, justify="left" if column == "scenario" else "right")
    for row in rows:
        ref = base["write"] if "UpdateItem" in row["scenario"] else base["no-op"]
        added = "" if row is ref else f"{row['ms'] - ref['ms']:+.2f}"
        table.add_row(row["scenario"], f"{row['requests']:g} ({_ops(row['calls'], args.count)})",
                      f"{row['wcu']:g}", f"{row['ms']:.2f}", f"{row['p90']:.2f}", added)
    console.print(table)
    if drained:
        table = Table(title=f"drain, end to end (one worker -c {args.concurrency}, SQS from fauxqs)")
        for column in ("", "drain (s)", "actions/s", "duration_ms (median, in the worker)"):
            table.add_column(column, justify="right")
        for row in drained:
            secs = row["seconds"]
            table.add_row(row["label"], "timeout" if secs is None else f"{secs:.1f}",
                          "-" if secs is None else f"{args.drain / secs:,.0f}", f"{row['ms']:.2f}")
        console.print(table)
    if paths:
        table = Table(title=f"DynamoDB writes per action by path (end to end: one worker "
                            f"-c {args.concurrency}, {args.paths} actions per path, store on, "
                            "run status at its default)")
        for column in ("path", "writes / action", "WCU / action (AWS)",
                       "DynamoDB requests / action (by API)"):
            table.add_column(column, justify="left" if column == "path" else "right")
        for row in paths:
            table.add_row(row["path"], f"{row['writes']:.3f}", f"{row['wcu']:.3f}",
                          f"{row['requests']:.3f} ({_ops(row['calls'], args.paths)})")
        console.print(table)
    return 0 if all(r["seconds"] is not None for r in drained) else 1


if __name__ == "__main__":
    raise SystemExit(main())
