"""ActionRunner's side of the benchmarks: the probe action.

The worker loads it with ``ACTIONRUNNER_IMPORTS=bench.actions``; each execution is appended to
the file named by ``ACTIONRUNNER_BENCH_RECORD`` (see bench/probe.py). ``run`` (a uuid per
benchmark run) keeps calls of different runs distinct: identical inputs within SQS's 5-minute
window would be deduplicated.
"""

from __future__ import annotations

from actionrunner import action
from bench.probe import run_probe


@action(group="bench:{group}")
def probe(group: str, seq: int, sleep_ms: int = 0, run: str = "") -> None:
    """Sleep ``sleep_ms`` and record (group, seq, start, end, pid)."""
    run_probe("actionrunner", group, seq, sleep_ms, run)
