"""ActionRunner's extension of kombu's SQS transport (batching, queue resolution, size limits)."""

from __future__ import annotations

from .transport import Channel, Transport, register

__all__ = ["Channel", "Transport", "register"]
