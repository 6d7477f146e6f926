"""The admin HTTP API (FastAPI): submit actions, read run status, watch queues, work the DLQ.

``actionrunner api --host 127.0.0.1 --port 8000`` serves it; the OpenAPI docs are at ``/docs``.
The API process only validates and sends: no action code runs in it.
"""

from __future__ import annotations

from .app import create_app

__all__ = ["create_app"]
