"""ActionRunner: a Celery-style task API over Amazon SQS FIFO that keeps FIFO's promises.

    >>> from actionrunner import action
    >>> @action(group="tenant:{tenant_id}")
    ... def recalc_leaderboard(tenant_id: str, season: int) -> dict: ...
    >>> recalc_leaderboard.delay(tenant_id="t1", season=3)   # doctest: +SKIP

``celery -A actionrunner worker -c 4`` runs them.
"""

from __future__ import annotations

from typing import Any

from .action import Action
from .declare import action
from .settings import Settings, get_settings

__all__ = ["Action", "Settings", "action", "app", "get_settings"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # The Celery app is built on first use (``celery -A actionrunner`` asks for it), so that
    # ``import actionrunner`` works, and the CLI can report bad settings, before it exists.
    if name == "app":
        from .app import app

        return app
    raise AttributeError(f"module 'actionrunner' has no attribute {name!r}")
