"""What the benchmarks share: a private local AWS, queues, worker processes, queue depth."""

from __future__ import annotations

import contextlib
import json
import math
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from actionrunner import provision
from actionrunner.local import LocalAWS, free_port, stop_process
from actionrunner.settings import Settings, get_settings

OUT = Path(__file__).resolve().parent / "out"


@contextlib.contextmanager
def local_stack(sqs: str = "fauxqs", **env: str) -> Iterator[tuple[LocalAWS, Settings]]:
    """A private emulator on free ports, with the queues provisioned; the environment points at it."""
    OUT.mkdir(exist_ok=True)
    saved = dict(os.environ)
    with LocalAWS(sqs=sqs, moto_port=free_port(), sqs_port=free_port(), log_dir=OUT) as aws:  # type: ignore[arg-type]
        os.environ.update(aws.env())
        os.environ.update(env)
        get_settings.cache_clear()
        settings = get_settings()
        provision.apply(settings)
        provision.apply_table(settings)
        try:
            yield aws, settings
        finally:
            os.environ.clear()
            os.environ.update(saved)
            get_settings.cache_clear()


def queue_depth(client: Any, url: str) -> int:
    """Messages visible plus in flight."""
    attrs = client.get_queue_attributes(
        QueueUrl=url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"])


def wait_drained(client: Any, url: str, timeout: float, every: float = 0.25) -> float | None:
    """Seconds until the queue is empty, or None after ``timeout`` (with a progress bar on the
    terminal while it drains)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    start = time.monotonic()
    first = queue_depth(client, url)
    columns = (TextColumn("draining"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=make_console(), transient=True) as progress:
        task = progress.add_task("drain", total=first or None)
        depth = first
        while time.monotonic() - start < timeout:
            if depth == 0:
                return time.monotonic() - start
            time.sleep(every)
            depth = queue_depth(client, url)
            progress.update(task, completed=max(0, first - depth))
    return None


@contextlib.contextmanager
def worker(app: str, concurrency: int, log_name: str, *extra: str) -> Iterator[subprocess.Popen[bytes]]:
    """``celery -A app worker -c N`` in the background; stopped (by PID) when the block ends."""
    log = open(OUT / f"{log_name}.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", app, "worker", "-c", str(concurrency),
         "--without-mingle", "--without-gossip", *extra],
        stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ),
        cwd=Path(__file__).resolve().parents[1],
    )
    try:
        yield proc
    finally:
        stop_process(proc, 30)
        log.close()


# -- shared by the ordering / throughput / requests / fairness benchmarks ----------------------

#: Both sides poll alike: 1 s long poll, 0.1 s between empty receives (stock_app reads these too).
POLL_ENV = {"ACTIONRUNNER_WAIT_TIME_SECONDS": "1", "ACTIONRUNNER_POLLING_INTERVAL": "0.1"}
#: ... and ActionRunner's worker loads the probe action (bench/actions.py).
BENCH_ENV = {**POLL_ENV, "ACTIONRUNNER_IMPORTS": "bench.actions"}
SIDES = ("ActionRunner", "stock Celery")
#: The Celery app each side's worker runs.
WORKER_APP = {"ActionRunner": "actionrunner", "stock Celery": "bench.stock_app"}


def make_console() -> Any:
    """A rich console; 150 columns wide when writing to a file or pipe (rich's default: 80)."""
    from rich.console import Console

    wide = not sys.stdout.isatty() and "COLUMNS" not in os.environ
    return Console(width=150) if wide else Console()


@contextlib.contextmanager
def environ(**env: str) -> Iterator[None]:
    """Set environment variables for the block (worker processes inherit them)."""
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def quiet_sender() -> None:
    """No JSON line per send in the bench process (it sends thousands)."""
    from actionrunner.logging import configure

    configure("WARNING", actions_level="WARNING")


def stock_queue(settings: Settings, name: str = "stock.fifo") -> str:
    """Create stock Celery's FIFO queue on the same server; env STOCK_QUEUE_URL/NAME point at it.

    Set before ``bench.stock_app`` is first imported: it reads them once.
    """
    client = settings.client("sqs")
    url: str = client.create_queue(QueueName=name, Attributes={"FifoQueue": "true"})["QueueUrl"]
    os.environ.update({"STOCK_QUEUE_URL": url, "STOCK_QUEUE_NAME": name})
    return url


def record_file(name: str) -> Path:
    """A fresh (empty) record file bench/out/NAME.jsonl for the probe to append to."""
    OUT.mkdir(exist_ok=True)
    path = OUT / f"{name}.jsonl"
    path.unlink(missing_ok=True)
    path.touch()
    return path


def count_records(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(1 for _ in f)


def read_records(path: Path) -> list[dict[str, Any]]:
    """The probe's records: {side, group, seq, run, start, end, pid} per execution."""
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def wait_records(path: Path, count: int, timeout: float,
                 proc: subprocess.Popen[bytes] | None = None, every: float = 0.05) -> float | None:
    """Seconds until ``path`` holds ``count`` records; None on ``timeout`` or if ``proc`` ends."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if count_records(path) >= count:
            return time.monotonic() - start
        if proc is not None and proc.poll() is not None:
            return None
        time.sleep(every)
    return None


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) used so far by process ``pid`` and every live descendant
    (a worker's main process and its pool), from /proc."""
    ticks = os.sysconf("SC_CLK_TCK")
    parents: dict[int, int] = {}
    used: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry)] = int(fields[1])
        used[int(entry)] = (int(fields[11]) + int(fields[12])) / ticks
    tree, frontier = {pid}, [pid]
    while frontier:
        parent = frontier.pop()
        for child, ppid in parents.items():
            if ppid == parent and child not in tree:
                tree.add(child)
                frontier.append(child)
    return sum(used.get(p, 0.0) for p in tree)


class CpuMeter:
    """CPU ms per action of a worker: from its first recorded action to its last (start-up
    excluded), over the main process and its pool."""

    def __init__(self, proc: subprocess.Popen[bytes], record: Path) -> None:
        self.proc, self.record = proc, record
        self.start_cpu: float | None = None
        self.start_count = 0

    def wait_first(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while count_records(self.record) == 0 and time.monotonic() < deadline:
            time.sleep(0.005)
        self.start_count = count_records(self.record)
        self.start_cpu = tree_cpu_seconds(self.proc.pid)

    def ms_per_action(self) -> float | None:
        done = count_records(self.record) - self.start_count
        if self.start_cpu is None or done <= 0:
            return None
        return (tree_cpu_seconds(self.proc.pid) - self.start_cpu) * 1000 / done


def percentile(values: list[float], p: float) -> float:
    """The p-th percentile (0-100), linear between closest ranks; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def fmt(value: float | None, spec: str = ",.1f", missing: str = "-") -> str:
    """A figure for a table cell; ``missing`` for None/NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return missing
    return format(value, spec)


def pyplot() -> Any:
    """matplotlib.pyplot (headless), or None without matplotlib: plots are optional."""
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt



def probe_queue(side: str, settings: Settings) -> str:
    """URL of the queue ``side`` sends to (stock's: created by :func:`stock_queue` first)."""
    if side == "ActionRunner":
        url: str = settings.client("sqs").get_queue_url(QueueName=settings.queue_name)["QueueUrl"]
        return url
    return os.environ["STOCK_QUEUE_URL"]


def send_probes(side: str, calls: list[tuple[str, int]], run: str, sleep_ms: int = 0) -> float:
    """Send probe(group, seq) calls in this order; the seconds it took.

    ActionRunner sends with ``delay_many`` (SendMessageBatch); stock Celery with ``apply_async``,
    one message per request, group ``bench:{group}`` and a random dedup id.
    """
    start = time.monotonic()
    if side == "ActionRunner":
        from bench.actions import probe

        for first in range(0, len(calls), 1000):
            probe.delay_many([{"group": g, "seq": s, "sleep_ms": sleep_ms, "run": run}
                              for g, s in calls[first : first + 1000]])
    else:
        for group, seq in calls:
            send_probe(side, group, seq, run, sleep_ms)
    return time.monotonic() - start


def send_probe(side: str, group: str, seq: int, run: str, sleep_ms: int = 0) -> None:
    """Send one probe call (``delay`` / ``apply_async``)."""
    kwargs = {"group": group, "seq": seq, "sleep_ms": sleep_ms, "run": run}
    if side == "ActionRunner":
        from bench.actions import probe

        probe.delay(**kwargs)
    else:
        from bench.stock_app import probe as stock_probe

        stock_probe.apply_async(kwargs=kwargs, MessageGroupId=f"bench:{group}",
                                MessageDeduplicationId=uuid.uuid4().hex)


@contextlib.contextmanager
def probe_worker(side: str, concurrency: int, log_name: str, record: Path, pool: str | None = None,
                 **env: str) -> Iterator[subprocess.Popen[bytes]]:
    """``side``'s worker, recording probe executions to ``record``; ``pool``: its ``-P``
    (Celery's default, prefork, when None)."""
    extra = ("-P", pool) if pool else ()
    with environ(ACTIONRUNNER_BENCH_RECORD=str(record), **env), \
            worker(WORKER_APP[side], concurrency, log_name, *extra) as proc:
        yield proc
