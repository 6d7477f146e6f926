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
