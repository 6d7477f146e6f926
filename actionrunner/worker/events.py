"""Celery task events, built only when someone listens.

A worker sends ``task-received``, ``task-started``, ``task-succeeded``... for Flower and
``celery events``. On SQS they go only to live listeners' queues (:mod:`actionrunner.sqs.monitor`
routes them; with none, no request is made), but Celery builds and publishes each one first: an
Event dict, a buffer, a kombu message, JSON — in the worker's main process, for every action.
This dispatcher asks the monitor first (its cached listing of listener queues, the lookup
publishing makes anyway) and drops a task event nobody would receive before it is built. Worker
events (heartbeats, online/offline) and every other transport are untouched.
"""

from __future__ import annotations

from typing import Any

from celery.app.events import Events as CeleryEvents
from celery.events.dispatcher import EventDispatcher


class ActionEventDispatcher(EventDispatcher):
    """Celery's dispatcher; a task event with no listener to route it to is not built."""

    _monitor: Any = None

    def send(self, type: str, blind: bool = False, **fields: Any) -> Any:  # noqa: A002 (Celery's name)
        if self.enabled and type.startswith("task-") and not self._listened(type):
            return None
        return super().send(type, blind=blind, **fields)

    def _listened(self, type: str) -> bool:  # noqa: A002
        """Whether the monitor would route this event anywhere (True off SQS: no monitor)."""
        monitor = self._monitor
        if monitor is None:
            producer = getattr(self, "producer", None)
            monitor = getattr(getattr(producer, "channel", None), "monitor", None)
            if monitor is None or not hasattr(monitor, "route"):
                return True
            self._monitor = monitor
        name = self.exchange.name
        return bool(monitor.route(name, type.replace("-", "."), name))


class Events(CeleryEvents):
    """The app's events (``Celery(events=...)``) with :class:`ActionEventDispatcher`."""

    dispatcher_cls = "actionrunner.worker.events:ActionEventDispatcher"
