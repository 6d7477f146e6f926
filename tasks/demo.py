"""Small actions to try the stack with, and the no-op the benchmarks use."""

from __future__ import annotations

from actionrunner import action
from actionrunner.logging import get_logger

log = get_logger(__name__)


@action(group="greeting:{name}")
def hello(name: str, times: int = 1) -> str:
    """Greet ``name``; shows up in the worker's log."""
    greeting = " ".join([f"hello, {name}!"] * times)
    log.info("greeted", name=name, greeting=greeting)
    return greeting


@action(group="demo:fail", max_attempts=1)
def fail(reason: str = "on purpose") -> None:
    """Always raises: one attempt, then the dead-letter queue (a FAILURE in Flower, a DLQ entry)."""
    raise RuntimeError(f"demo failure: {reason}")


@action(group="bench:{shard}")
def noop(shard: int, n: int) -> None:
    """Does nothing: measures the machinery around an action."""
