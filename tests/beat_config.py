"""Celery settings for the two-beat test: this deployment's, plus one fast schedule entry."""

import os

from celeryconfig import *  # noqa: F403

beat_schedule = {
    "tick": {
        "task": "tests.actions.record",
        "schedule": 2.0,
        "kwargs": {"bucket": os.environ.get("BEAT_BUCKET", "beat"), "token": "tick"},
    },
}
