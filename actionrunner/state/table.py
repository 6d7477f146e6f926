"""This process's DynamoDB client for the state table (the table's schema: :mod:`.schema`)."""

from __future__ import annotations

from typing import Any

from .. import runtime


def client() -> Any:
    """This process's DynamoDB client for the state table: its runtime's
    (:attr:`actionrunner.runtime.Runtime.dynamodb`; a forked pool process has its own)."""
    return runtime.current().dynamodb
