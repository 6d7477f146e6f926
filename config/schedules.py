"""Cron schedules of this deployment, read by ``celery -A actionrunner beat``.

Each entry names an action, its inputs and when it fires (a ``crontab`` or a number of seconds)::

    from celery.schedules import crontab

    BEAT_SCHEDULE = {
        "nightly-backfill": {
            "task": "tasks.backfill.backfill_items",
            "schedule": crontab(hour=3, minute=0),
            "kwargs": {"table": "items", "total": 10_000, "start": 0},
        },
    }
"""

from __future__ import annotations

from typing import Any

BEAT_SCHEDULE: dict[str, dict[str, Any]] = {}
