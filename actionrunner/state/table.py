"""This process's DynamoDB client for the state table (the table's schema: :mod:`.schema`)."""

from __future__ import annotations

import os
from typing import Any

_clients: dict[int, Any] = {}


def client() -> Any:
    """This process's DynamoDB client for the state table (pool processes are forked: one each)."""
    pid = os.getpid()
    if pid not in _clients:
        from ..settings import get_settings
        from .throttling import state_client_config

        settings = get_settings()
        _clients.clear()
        _clients[pid] = settings.client("dynamodb", config=state_client_config(settings))
    return _clients[pid]
