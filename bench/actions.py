"""ActionRunner's side of the benchmarks: the probe action (and bench chaos's action).

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


@action(group="chaos:{run}:{group}")
def chaos(run: str, group: int, seq: int, table: str) -> None:
    """``actionrunner bench chaos``'s action: appends ``seq`` to its group's item
    ``chaos#{run}#{group}`` in ``table`` — a write staged with the effects API, so committed
    exactly once, with the completion — and records each execution (at least once) like the probe.
    """
    import time

    from actionrunner.state import effects

    effects.update(table, {"pk": f"chaos#{run}#{group}"},
                   "SET seqs = list_append(if_not_exists(seqs, :empty), :seq), expires_at = :exp",
                   values={":empty": [], ":seq": [seq], ":exp": int(time.time()) + 86_400})
    run_probe("actionrunner", str(group), seq, 0, run)


@action(group="bench:{shard}", key="{run}:{n}")
def keyed_noop(shard: int, n: int, run: str) -> None:
    """``actionrunner bench idempotency``'s explicitly keyed no-op (``key=``: claim + complete)."""


@action(group="bench:{shard}")
def staged_noop(shard: int, n: int, table: str) -> None:
    """``actionrunner bench idempotency``'s no-op with one staged write (committed with its
    completion)."""
    from actionrunner.state import effects

    effects.update(table, {"pk": f"n#{n}"}, "ADD c :one", values={":one": 1})


@action(group="failing:{group}", max_attempts=2, retry_backoff=0.1, retry_backoff_max=0.2)
def always_fails(group: int, n: int, run: str = "") -> None:
    """Fail every time (bench redrive: a redriven message goes straight back to the DLQ)."""
    raise RuntimeError(f"always fails ({run}:{group}:{n})")
