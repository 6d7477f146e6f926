"""Actions used by the tests. The worker loads them through ACTIONRUNNER_IMPORTS=tests.actions."""

from __future__ import annotations

import os
import time
from pathlib import Path

from actionrunner import action


def _record_path() -> Path:
    return Path(os.environ["ACTIONRUNNER_TEST_RECORD_DIR"])


@action(group="rec:{bucket}")
def record(bucket: str, token: str, sleep_s: float = 0.0) -> str:
    """Append ``token`` to the bucket's file, so tests can see what ran, how often, in what order."""
    if sleep_s:
        time.sleep(sleep_s)
    with open(_record_path() / f"{bucket}.txt", "a") as out:
        out.write(token + "\n")
    return token


@action(group="explode:{token}")
def explode(token: str) -> None:
    """Always fails."""
    raise ValueError(f"boom {token}")
