"""Actions on a lane of their own (tests/test_lanes.py); imported only by processes whose
ACTIONRUNNER_LANES names it."""

from __future__ import annotations

from actionrunner import action

LANE = "tests-bulk.fifo"


@action(group="bulk:{run}", queue=LANE)
def bulk_ok(run: str) -> str:
    return f"bulk {run}"


@action(group="bulk-fail:{run}", queue=LANE, max_attempts=1)
def bulk_fail(run: str) -> None:
    raise ValueError(f"bulk failure {run}")


@action(group="bulk-once:{run}", queue=LANE, max_attempts=1)
def bulk_broken_once(run: str) -> str:
    """Fails on its first run only (into the lane's DLQ), succeeds when redriven (into the lane)."""
    from tests.actions import _record_path

    marker = _record_path() / f"{run}-bulk-broken.attempts"
    with open(marker, "a") as out:
        out.write("x")
    if len(marker.read_text()) == 1:
        raise RuntimeError("bulk broken the first time")
    return f"bulk fixed {run}"
