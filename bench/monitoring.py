"""Monitoring: what Flower / ``celery events`` / remote control over SQS cost in SQS requests.

    actionrunner bench monitoring [--count 500] [--groups 50] [-c 2] [--idle 30]
                                  [--sqs fauxqs|moto] [--quick]

Four scenarios, each with a fresh worker ``-c 2`` (1 s long poll, as in the other benches):

1. *monitoring off* (the baseline): ``ACTIONRUNNER_TASK_EVENTS=off
   ACTIONRUNNER_REMOTE_CONTROL=false``;
2. *defaults, nobody listening*: remote control and task events on, no Flower;
3. *defaults + Flower*: ``celery -A actionrunner flower`` running (on 127.0.0.1, basic auth);
   COUNT actions are sent only once Flower's ``/api/workers?refresh=1`` lists the worker, and
   afterwards Flower's ``/api/tasks`` must list them all as SUCCESS (the events arrived);
4. *failures + Flower*: ``ACTIONRUNNER_TASK_EVENTS=failures``, Flower running.

The worker talks to SQS through a counting proxy (bench/proxy.py), Flower through a second one,
so each side's requests are counted apart, by API and by queue: ``→ work`` is the FIFO action
queue, ``→ events`` the listeners' event queues (``<prefix>ev-*``), ``→ mailbox`` the workers'
remote-control queues (``<prefix>box-*``), ``→ replies`` the reply queues of ``celery inspect`` /
Flower (``<prefix>rep-*``). The bench sends its COUNT no-op probe actions directly to the server
(not counted). Windows: *start-up* (worker start until it polls, + Flower start until it lists
the worker, + 2 s), *actions* (first send until every action ran and the queue is empty, + 1 s
for the last deletes and the monitoring sender), then *idle* (IDLE seconds on the empty queue).

Read the first table as requests per action (0.10 = one request per ten actions); the actions
window also holds the worker's heartbeats (one every 2 s) and Flower's ``enable_events`` broadcast
(every 5 s) for as long as the drain lasts. The second table is requests per minute while idle.
"of which monitoring queues" counts the requests about events, mailbox and reply queues: the
work-queue part (receives, batched deletes) varies by a few hundredths per action from run to run
with how full the batches get, so the "added" row is noisier than that one. After each scenario
the bench lists the monitoring queues still there (reported) and deletes them.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import secrets
import subprocess
import sys
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from rich.table import Table

from actionrunner.local import free_port, stop_process
from actionrunner.settings import Settings, get_settings
from bench import harness as h
from bench.proxy import EMPTY_RECEIVE, CountingProxy

console = h.make_console()
ROOT = Path(__file__).resolve().parents[1]

#: (key, title, extra worker environment, Flower running)
SCENARIOS: list[tuple[str, str, dict[str, str], bool]] = [
    ("off", "monitoring off\n(baseline)",
     {"ACTIONRUNNER_TASK_EVENTS": "off", "ACTIONRUNNER_REMOTE_CONTROL": "false"}, False),
    ("defaults", "defaults,\nnobody listening", {}, False),
    ("flower", "defaults\n+ Flower", {}, True),
    ("failures", "events=failures\n+ Flower", {"ACTIONRUNNER_TASK_EVENTS": "failures"}, True),
]
KINDS = {"ev": "events", "box": "mailbox", "rep": "replies"}


def labeller(settings: Settings) -> Callable[[str, bytes], str]:
    """``api`` and the queue a request is about: ``SendMessageBatch → events``."""
    prefix = settings.monitor_queue_prefix

    def label(api: str, body: bytes) -> str:
        try:
            data = json.loads(body or b"{}")
        except ValueError:
            return api
        queue = str(data.get("QueueUrl") or data.get("QueueName") or data.get("QueueNamePrefix")
                    or "").rsplit("/", 1)[-1]
        if not queue:
            return api
        if queue.startswith(prefix):
            kind = queue[len(prefix):].split("-", 1)[0]
            return f"{api} → {KINDS.get(kind, kind)}"
        if queue == settings.queue_name:
            return f"{api} → work"
        if queue == settings.dlq_name:
            return f"{api} → DLQ"
        return f"{api} → {queue}"

    return label


def total(counts: Counter[str]) -> int:
    """Requests (the ``(empty)`` receives are a part of ReceiveMessage, not more requests)."""
    return sum(n for api, n in counts.items() if not api.startswith(EMPTY_RECEIVE))


def monitoring(counts: Counter[str]) -> int:
    """Requests about monitoring queues (events, mailboxes, replies)."""
    kinds = tuple(f" → {kind}" for kind in KINDS.values())
    return sum(n for api, n in counts.items()
               if api.endswith(kinds) and not api.startswith(EMPTY_RECEIVE))


def wait_polling(proxy: CountingProxy, timeout: float, proc: subprocess.Popen[bytes]) -> bool:
    """Until the proxy has seen a ReceiveMessage (the worker is up and polling)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if any(api.startswith("ReceiveMessage") for api in proxy.counts()):
            return True
        time.sleep(0.1)
    return False


class Flower:
    """``celery -A actionrunner flower`` on 127.0.0.1 behind basic auth; stopped by PID."""

    def __init__(self, log_name: str) -> None:
        self.port, password = free_port(), secrets.token_urlsafe(12)
        self.url = f"http://127.0.0.1:{self.port}"
        token = base64.b64encode(f"admin:{password}".encode()).decode()
        self.headers = {"Authorization": f"Basic {token}"}
        self.args = [sys.executable, "-m", "celery", "-A", "actionrunner", "flower",
                     "--address=127.0.0.1", f"--port={self.port}", f"--basic-auth=admin:{password}"]
        self.log_path = h.OUT / f"{log_name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def get(self, path: str) -> tuple[int, Any]:
        """(status, JSON body or None); (0, None) while Flower does not answer."""
        request = urllib.request.Request(self.url + path, headers=self.headers)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                body = response.read()
                status = response.status
        except OSError:
            return 0, None
        try:
            return status, json.loads(body)
        except ValueError:
            return status, None

    @contextlib.contextmanager
    def running(self) -> Iterator[Flower]:
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(self.args, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                         env=dict(os.environ))
            try:
                yield self
            finally:
                stop_process(self.proc, 15)

    def wait(self, predicate: Callable[[], Any], timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"Flower exited ({self.proc.returncode}); see {self.log_path}")
            value = predicate()
            if value:
                return value
            time.sleep(0.5)
        return None


def run_scenario(key: str, env: dict[str, str], with_flower: bool, args: argparse.Namespace,
                 proxies: tuple[CountingProxy, CountingProxy], direct: Any, url: str
                 ) -> dict[str, Any]:
    proxy, flower_proxy = proxies
    calls = [(f"g{i % args.groups}", i) for i in range(args.count)]
    run = uuid.uuid4().hex
    tag = f"monitoring-{key}"
    record = h.record_file(tag)
    node = f"mon-{key}-{run[:6]}"
    out: dict[str, Any] = {"worker": {}, "flower": {}, "seconds": {}}
    time.sleep(1.5)  # the previous worker's last long poll returns
    proxy.reset(), flower_proxy.reset()
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        stack.enter_context(h.environ(AWS_ENDPOINT_URL_SQS=proxy.url,
                                      ACTIONRUNNER_BENCH_RECORD=str(record), **env))
        proc = stack.enter_context(h.worker("actionrunner", args.concurrency, f"{tag}-worker",
                                            "-n", f"{node}@%h"))
        if not wait_polling(proxy, 60, proc):
            raise RuntimeError(f"{key}: the worker did not start polling; see bench/out/{tag}-worker.log")
        flower = None
        if with_flower:
            with h.environ(AWS_ENDPOINT_URL_SQS=flower_proxy.url):
                flower = stack.enter_context(Flower(f"{tag}-flower").running())
            if not flower.wait(lambda: flower.get("/healthcheck")[0] == 200, 60):
                raise RuntimeError(f"{key}: Flower did not answer; see {flower.log_path}")

            def listed() -> bool:
                workers = flower.get("/api/workers?refresh=1")[1] or {}
                return any(name.startswith(f"{node}@") for name in workers)

            if not flower.wait(listed, 90):
                raise RuntimeError(f"{key}: Flower did not list the worker; see {flower.log_path}")
        time.sleep(2)
        out["seconds"]["start-up"] = time.monotonic() - started
        out["worker"]["start-up"], out["flower"]["start-up"] = proxy.reset(), flower_proxy.reset()

        started = time.monotonic()
        h.send_probes("ActionRunner", calls, run)
        if h.wait_records(record, args.count, args.timeout, proc) is None:
            console.print(f"[red]{key}: not all {args.count} actions ran in {args.timeout} s[/]")
        h.wait_drained(direct, url, 60)
        time.sleep(1)  # the last deletes; the monitoring sender's last batch
        out["seconds"]["actions"] = time.monotonic() - started
        out["worker"]["actions"], out["flower"]["actions"] = proxy.reset(), flower_proxy.reset()

        if flower is not None:
            def final() -> dict[str, Any] | None:
                tasks = flower.get("/api/tasks")[1] or {}
                succeeded = sum(1 for t in tasks.values() if t.get("state") == "SUCCESS")
                return tasks if succeeded >= args.count else None

            # task-succeeded events are expected in scenario 3 only: wait for them there
            flower.wait(final, 30 if env.get("ACTIONRUNNER_TASK_EVENTS") != "failures" else 0.1)
            tasks = flower.get("/api/tasks")[1] or {}
            out["flower tasks"] = dict(Counter(str(t.get("state")) for t in tasks.values()))
        time.sleep(0.5)
        proxy.reset(), flower_proxy.reset()
        started = time.monotonic()
        time.sleep(args.idle)
        out["seconds"]["idle"] = time.monotonic() - started
        out["worker"]["idle"], out["flower"]["idle"] = proxy.reset(), flower_proxy.reset()
    # what the stopped worker and Flower left behind; deleted, so the next scenario starts clean
    time.sleep(1.5)
    prefix = get_settings().monitor_queue_prefix
    left = direct.list_queues(QueueNamePrefix=prefix).get("QueueUrls") or []
    out["left over"] = [u.rsplit("/", 1)[-1] for u in left]
    for queue_url in left:
        with contextlib.suppress(Exception):
            direct.delete_queue(QueueUrl=queue_url)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="actionrunner bench monitoring", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--groups", type=int, default=50)
    parser.add_argument("--concurrency", "-c", type=int, default=2)
    parser.add_argument("--idle", type=float, default=30, help="seconds of each idle window")
    parser.add_argument("--sqs", choices=["fauxqs", "moto"], default="fauxqs")
    parser.add_argument("--timeout", type=float, default=300)
    parser.add_argument("--quick", action="store_true", help="100 actions, idle windows of 10 s")
    args = parser.parse_args(argv)
    if args.quick:
        args.count, args.idle = min(args.count, 100), min(args.idle, 10)
    try:
        import flower  # noqa: F401
    except ImportError:
        console.print('[red]Flower is not installed: .venv/bin/pip install -e ".[flower]"[/]')
        return 1
    h.quiet_sender()

    results: dict[str, dict[str, Any]] = {}
    with h.local_stack(args.sqs, **h.BENCH_ENV) as (aws, settings):
        direct = settings.client("sqs")  # the bench's sends and checks bypass the proxies
        url = h.probe_queue("ActionRunner", settings)
        label = labeller(settings)
        with CountingProxy(aws.sqs_url, label=label) as proxy, \
                CountingProxy(aws.sqs_url, label=label) as flower_proxy:
            console.print(f"SQS from {args.sqs}; the worker through a counting proxy at "
                          f"{proxy.url}, Flower through {flower_proxy.url}: {args.count} actions "
                          f"in {args.groups} groups, worker -c {args.concurrency}, 1 s long poll, "
                          f"idle windows of {args.idle:.0f} s")
            for key, title, env, with_flower in SCENARIOS:
                results[key] = run_scenario(key, env, with_flower, args, (proxy, flower_proxy),
                                            direct, url)
                seconds = results[key]["seconds"]
                console.print(f"  {title.replace(chr(10), ' ')}: done (start-up "
                              f"{seconds['start-up']:.1f} s, actions {seconds['actions']:.1f} s)")

    report(results, args)
    h.OUT.mkdir(exist_ok=True)
    path = h.OUT / "monitoring.json"
    path.write_text(json.dumps({"args": vars(args), "scenarios": results}, indent=2, default=dict))
    console.print(f"figures: {path}")
    return 0


def report(results: dict[str, dict[str, Any]], args: argparse.Namespace) -> None:
    titles = {key: title for key, title, _, _ in SCENARIOS}
    flowers = {key for key, _, _, with_flower in SCENARIOS if with_flower}
    columns = [(key, side) for key in results for side in ("worker", "flower")
               if side == "worker" or key in flowers]
    baseline = results["off"]

    def heading(key: str, side: str, extra: str = "") -> str:
        return f"{titles[key]}{extra}" if side == "worker" else f"Flower itself\n({key}){extra}"

    def table(window: str, scale: Callable[[str], float], title: str, spec: str) -> None:
        grid = Table(title=title)
        grid.add_column("API → queue")
        for key, side in columns:
            grid.add_column(heading(key, side), justify="right")
        apis = sorted({api for key, side in columns for api in results[key][side][window]},
                      key=lambda a: (a.split(" → ")[-1], a))
        for api in apis:
            grid.add_row(api, *(format(results[k][s][window][api] * scale(k), spec)
                                if results[k][s][window][api] else "" for k, s in columns))
        totals = {(k, s): total(results[k][s][window]) * scale(k) for k, s in columns}
        grid.add_row("[b]total[/]", *(f"[b]{totals[c]:{spec}}[/]" for c in columns))
        grid.add_row("[b]of which monitoring queues[/]",
                     *(f"[b]{monitoring(results[k][s][window]) * scale(k):{spec}}[/]"
                       for k, s in columns))
        base = totals[("off", "worker")]
        grid.add_row("[b]added vs monitoring off[/]",
                     *(f"[b]{totals[(k, s)] - base:+{spec}}[/]" if s == "worker" else ""
                       for k, s in columns))
        console.print(grid)

    per_action = {key: 1 / args.count for key in results}
    table("actions", per_action.__getitem__,
          f"SQS requests per action: {args.count} no-op actions, {args.groups} groups, worker -c "
          f"{args.concurrency} ({args.sqs}); actions windows "
          + ", ".join(f"{k} {r['seconds']['actions']:.1f} s" for k, r in results.items()), ".3f")
    per_minute = {key: 60 / results[key]["seconds"]["idle"] for key in results}
    table("idle", per_minute.__getitem__,
          f"SQS requests per minute while idle (1 s long poll; windows of {args.idle:.0f} s)", ".1f")

    for key in results:
        startup = results[key]["worker"]["start-up"]
        console.print(f"{titles[key].replace(chr(10), ' ')}, worker start-up "
                      f"({results[key]['seconds']['start-up']:.1f} s): "
                      + ", ".join(f"{api} {n}" for api, n in sorted(startup.items())))
        if key in flowers:
            fl = results[key]["flower"]["start-up"]
            console.print("  Flower start-up: " + ", ".join(f"{api} {n}" for api, n in sorted(fl.items())))
            states = results[key].get("flower tasks", {})
            seen = ", ".join(f"{s} {n}" for s, n in sorted(states.items())) or "none"
            console.print(f"  Flower's /api/tasks: {states.get('SUCCESS', 0)} of {args.count} "
                          f"tasks SUCCESS ({seen})")
        if results[key]["left over"]:
            console.print(f"  monitoring queues left after the worker (and Flower) stopped, "
                          f"deleted by the bench: {', '.join(results[key]['left over'])}")
    added = {key: (total(results[key]["worker"]["actions"]) - total(baseline["worker"]["actions"]))
             / args.count for key in results}
    console.print("Added per action vs monitoring off: "
                  + ", ".join(f"{titles[k].replace(chr(10), ' ')} {v:+.3f}" for k, v in added.items()))


if __name__ == "__main__":
    raise SystemExit(main())
