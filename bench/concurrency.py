"""Fleet-wide concurrency (``@action(max_concurrency=N)``): what a cap costs, and how well it holds.

    actionrunner bench concurrency [--runs 200] [--contenders 12] [--no-fleet]

Runs on a private local stack (moto for DynamoDB over HTTP, fauxqs for SQS, free loopback ports).

1. **Requests per run, in process**: DynamoDB requests counted on the client (botocore events)
   for ``runs`` runs through :func:`~actionrunner.state.concurrency.capped_run`: an uncapped
   action; a capped one with room; a capped one whose run outlasts a third of its lease (renewals).
2. **Contended, in process**: ``contenders`` threads, each with its own limiter (as many
   processes would), drain ``runs`` runs of 50 ms against a cap of 3, each retrying after the
   poll delay (0.1 s, jittered ×0.5–1.5) when the cap is full (as a waiting message does): the
   peak of runs at once (exact), requests per completed run, and the slot utilisation.
3. **Fleet** (unless ``--no-fleet``): two ``celery -A actionrunner worker -c 8`` drain 24 runs of
   0.6 s of ``bench.capped.capped`` (``max_concurrency=3``): the peak of sampled concurrent runs,
   the busy share of the 3 slots from first start to last end; then 20 runs of 2 s, the worker
   holding most leases SIGKILLed: seconds until the live worker's runs hold the 3 leases (read
   from the state table) and until 3 run at once again, against the lease time (4 s here).

Capacity units: an UpdateItem (refused by its condition too) 1 WCU for items up to 1 KB; a
consistent GetItem 1 RCU up to 4 KB.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from bench.harness import OUT, environ, local_stack, make_console, quiet_sender, worker

console = make_console()
LEASE = 4.0


class Requests:
    """DynamoDB calls made with one client, by operation."""

    def __init__(self, client: Any) -> None:
        self.calls: Counter[str] = Counter()
        client.meta.events.register("before-parameter-build.dynamodb",
                                    lambda model=None, **_: self.calls.update([model.name]))


def _task(name: str, cap: int | None) -> Any:
    return type("Task", (), {"name": name, "max_concurrency": cap})()


def per_run(settings: Any, runs: int) -> list[tuple[str, Counter[str], int]]:
    from actionrunner import runtime
    from actionrunner.state.concurrency import capped_run

    client = settings.client("dynamodb")
    requests = Requests(client)
    rows = []
    for label, cap, sleep_s, lease, count in (
            ("uncapped action", None, 0.0, 30.0, runs),
            ("capped, room", 3, 0.0, 30.0, runs),
            ("capped, run of 2.2 s, lease 3 s", 3, 2.2, 3.0, 3)):
        rt = runtime.Runtime.from_settings(
            settings.model_copy(update={"concurrency_lease_seconds": lease}), dynamodb=client)
        task = _task(f"bench.cap.{uuid.uuid4().hex[:8]}", cap)
        with runtime.using(rt):
            if cap is not None:
                capped_run(task, lambda: None)  # the item's first lease makes it (not counted)
            requests.calls.clear()
            for _ in range(count):
                capped_run(task, lambda s=sleep_s: time.sleep(s))
        rows.append((label, Counter(requests.calls), count))
    return rows


def contended(settings: Any, runs: int, contenders: int, poll: float = 0.1) -> dict[str, Any]:
    from actionrunner.state.concurrency import FleetLimit

    name = f"bench.cap.{uuid.uuid4().hex[:8]}"
    client = settings.client("dynamodb")
    requests = Requests(client)
    left, lock = [runs], threading.Lock()
    running, peak, busy, full_tries = [0], [0], [0.0], [0]

    def drain() -> None:
        limit = FleetLimit(name, 3, table=settings.state_table, client=client, lease_seconds=30)
        while True:
            with lock:
                if left[0] <= 0:
                    return
                left[0] -= 1
            while (lease := limit.acquire()) is None:
                with lock:
                    full_tries[0] += 1
                time.sleep(poll * random.uniform(0.5, 1.5))  # as a waiting message's delay
            with lock:
                running[0] += 1
                peak[0] = max(peak[0], running[0])
            start = time.monotonic()
            time.sleep(0.05)
            with lock:
                running[0] -= 1
                busy[0] += time.monotonic() - start
            limit.release(lease)

    threads = [threading.Thread(target=drain) for _ in range(contenders)]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - start
    return {"peak": peak[0], "elapsed": elapsed, "utilisation": busy[0] / (3 * elapsed),
            "calls": requests.calls, "full_tries": full_tries[0], "runs": runs}


def _markers(folder: Path, dead: set[int]) -> int:
    try:
        return sum(1 for n in os.listdir(folder) if int(n.rsplit(".", 1)[1]) not in dead)
    except FileNotFoundError:
        return 0


def _ends(record: Path) -> Counter[int]:
    if not record.exists():
        return Counter()
    return Counter(json.loads(line)["n"] for line in record.read_text().splitlines())


def _pool(proc: subprocess.Popen[bytes]) -> set[int]:
    out = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True)
    return {int(p) for p in out.stdout.split()}


def fleet(settings: Any, total: int, sleep_s: float, kill: bool) -> dict[str, Any]:
    from actionrunner.state.concurrency import read
    from bench.capped import capped

    client = settings.client("dynamodb")
    record = OUT / f"concurrency-{uuid.uuid4().hex[:6]}.jsonl"
    folder = Path(f"{record}.running")
    env = {"ACTIONRUNNER_IMPORTS": "bench.capped", "ACTIONRUNNER_BENCH_RECORD": str(record),
           "ACTIONRUNNER_CONCURRENCY_LEASE_SECONDS": str(LEASE),
           "ACTIONRUNNER_CONCURRENCY_POLL_SECONDS": "0.4", "ACTIONRUNNER_VISIBILITY_TIMEOUT": "8",
           "ACTIONRUNNER_WAIT_TIME_SECONDS": "1", "ACTIONRUNNER_LOG_LEVEL": "WARNING"}
    samples: list[tuple[float, int]] = []
    dead: set[int] = set()
    out: dict[str, Any] = {}
    with environ(**env), worker("actionrunner", 8, "concurrency-a") as a, \
            worker("actionrunner", 8, "concurrency-b") as b:
        deadline = time.time() + 90  # both pools forked (a loaded machine starts them slowly)
        while time.time() < deadline and min(len(_pool(a)), len(_pool(b))) < 8:
            time.sleep(0.2)
        time.sleep(2)  # and receiving
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                samples.append((time.time(), _markers(folder, dead)))
                time.sleep(0.02)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        run = uuid.uuid4().hex[:8]
        sent = time.time()
        capped.delay_many([{"run": run, "n": n, "sleep_s": sleep_s} for n in range(total)])
        if kill:
            deadline = time.time() + 90
            victim = None
            while victim is None and time.time() < deadline:
                pools = [_pool(a), _pool(b)]  # (a worker still starting has no pool yet)
                owners = [int(n.rsplit(".", 1)[1]) for n in os.listdir(folder)] if folder.exists() else []
                held = [sum(pid in pool for pid in owners) for pool in pools]
                victim = next((i for i, h in enumerate(held) if h >= 2), None)
                time.sleep(0.02)
            if victim is None:
                raise SystemExit("no worker came to hold 2 leases")
            proc = (a, b)[victim]
            doomed = pools[victim] | {proc.pid}
            killed_at = time.time()
            for pid in doomed:
                os.kill(pid, signal.SIGKILL)
            dead |= doomed
            proc.wait(10)
            # more calls, so that the live worker has runs waiting for the slots (the dead one's
            # messages come back only after the visibility timeout)
            capped.delay_many([{"run": run, "n": n, "sleep_s": sleep_s}
                               for n in range(total, total + 6)])
            total += 6
            out["running_after_kill"] = _markers(folder, dead)
            out["leases_back_s"] = out["recovered_s"] = None
            while time.time() < killed_at + 30 and out["recovered_s"] is None:
                seen = read(settings.state_table, client, capped.name)
                mine = sum(1 for h in seen.running if int(h.split("-")[0]) not in dead)
                if mine >= 3 and out["leases_back_s"] is None:
                    out["leases_back_s"] = time.time() - killed_at
                if _markers(folder, dead) >= 3:
                    out["recovered_s"] = time.time() - killed_at
                time.sleep(0.05)
        deadline = time.time() + 180
        while time.time() < deadline and len(_ends(record)) < total:
            time.sleep(0.1)
        stop.set()
        sampler.join()
        lines = [json.loads(line) for line in record.read_text().splitlines()]
        span = max(r["end"] for r in lines) - min(r["start"] for r in lines)
        out.update(peak=max(n for _, n in samples), drain_s=time.time() - sent,
                   ends=_ends(record), total=total, span_s=span,
                   utilisation=sum(r["end"] - r["start"] for r in lines) / (3 * span))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="actionrunner bench concurrency", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--contenders", type=int, default=12)
    parser.add_argument("--no-fleet", action="store_true")
    args = parser.parse_args(argv)
    with local_stack() as (_, settings):
        quiet_sender()
        console.print("[bold]1. DynamoDB requests per run[/]")
        for label, calls, count in per_run(settings, args.runs):
            per = {k: round(v / count, 2) for k, v in sorted(calls.items())}
            console.print(f"  {label:34} {per or 'none'}  (over {count} runs)")
        console.print(f"[bold]2. {args.contenders} contenders, cap 3, {args.runs} runs of 50 ms[/]")
        c = contended(settings, args.runs, args.contenders)
        console.print(f"  peak at once {c['peak']} (cap 3); drained in {c['elapsed']:.2f} s, "
                      f"slot utilisation {c['utilisation']:.0%}")
        calls = c["calls"]
        console.print(f"  per completed run: UpdateItem {calls['UpdateItem'] / c['runs']:.2f}, "
                      f"GetItem {calls['GetItem'] / c['runs']:.2f} (waits included: "
                      f"{c['full_tries'] / c['runs']:.2f} tries a run found the cap full)")
        if not args.no_fleet:
            console.print("[bold]3. two workers -c 8, max_concurrency=3[/]")
            f = fleet(settings, 24, 0.6, kill=False)
            doubled = sum(1 for v in f["ends"].values() if v > 1)
            console.print(f"  24 runs of 0.6 s: peak sampled {f['peak']} (cap 3); first start to "
                          f"last end {f['span_s']:.1f} s (ideal {24 * 0.6 / 3:.1f} s), slots busy "
                          f"{f['utilisation']:.0%}; ended {len(f['ends'])}/{f['total']}, doubled "
                          f"{doubled}")
            k = fleet(settings, 20, 2.0, kill=True)
            doubled = sum(1 for v in k["ends"].values() if v > 1)
            console.print(f"  {k['total']} runs of 2 s (6 sent after the kill), SIGKILL of the "
                          f"worker holding leases ({3 - k['running_after_kill']} of 3): its "
                          f"leases taken over after "
                          f"{k['leases_back_s']:.1f} s, 3 running again after "
                          f"{k['recovered_s']:.1f} s (lease {LEASE:.0f} s); peak "
                          f"sampled {k['peak']}; ended {len(k['ends'])}/{k['total']}, doubled "
                          f"{doubled}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
