"""Metrics as CloudWatch Embedded Metric Format: every lifecycle line is also a metric.

CloudWatch Logs turns a JSON log line with an ``_aws`` block into metrics, with no agent and no
PutMetricData calls (ECS's awslogs driver and Lambda send stdout/stderr there). Each lifecycle line
of an action gets that block: namespace ``ActionRunner``, dimension ``Action`` (and none, for
totals), one count metric per event and the durations::

    {"event": "succeeded", "action": "tasks.demo.hello", ..., "Action": "tasks.demo.hello",
     "ActionsSucceeded": 1, "ActionDuration": 0.9,
     "_aws": {"Timestamp": 1795820000000, "CloudWatchMetrics": [{"Namespace": "ActionRunner",
              "Dimensions": [["Action"], []], "Metrics": [{"Name": "ActionsSucceeded", ...}]}]}}

The dimension's value is the action's name only if a task of that name is registered in the
process (:func:`dimension`); a name read from a message that names none is ``(unknown)``.
``ACTIONRUNNER_METRICS=off`` turns it off. The alarms in ``deploy/`` use these names.
"""

from __future__ import annotations

import time
from typing import Any

#: CloudWatch namespace of ActionRunner's metrics.
NAMESPACE = "ActionRunner"
#: The dimension every metric has (plus a dimensionless total).
DIMENSION = "Action"
#: Lifecycle event → count metric.
COUNT_OF_EVENT = {
    "sent": "ActionsSent",
    "started": "ActionsStarted",
    "succeeded": "ActionsSucceeded",
    "failed": "ActionsFailed",
    "retrying": "ActionsRetried",
    "dead-lettered": "ActionsDeadLettered",
    "held": "ActionsHeld",
    "expired": "ActionsExpired",
    # the worker's own troubles (Action "(worker)" or the action's name)
    "dead-letter-failed": "DeadLetterSendFailures",
    "dead-letter-dropped": "DeadLettersDropped",
    "delete-failed": "DeletesFailed",
    "visibility-lost": "VisibilityLost",
}
#: Lifecycle field → timing metric (milliseconds).
TIMING_OF_FIELD = {"duration_ms": "ActionDuration", "queue_wait_ms": "QueueWait"}


#: The dimension value of a name that is not a task registered here (a message can name anything:
#: a sender must not mint CloudWatch metrics).
UNKNOWN = "(unknown)"
#: The worker's own names (its troubles, undecodable messages), kept as they are.
OWN_NAMES = frozenset({"(worker)", "(undecodable)", UNKNOWN})
_known: set[str] = set()  # registered task names seen (tasks are not unregistered)


def dimension(action: str) -> str:
    """The ``Action`` dimension of a line about ``action``: the name if a task of that name is
    registered in this process, else ``(unknown)``."""
    if action in _known or action in OWN_NAMES:
        return action
    try:
        from celery import current_app

        registered = action in current_app.tasks
    except Exception:
        registered = False
    if registered:
        _known.add(action)
        return action
    return UNKNOWN


_NUMBERS = (int, float)
#: The ``CloudWatchMetrics`` directive of each (count metric, timing metrics) (made once).
_directives: dict[tuple[str, tuple[str, ...]], list[dict[str, Any]]] = {}


def emf_fields(event: str, fields: dict[str, Any]) -> dict[str, Any]:
    """The EMF block (and metric values) for one lifecycle line; empty for other events."""
    count = COUNT_OF_EVENT.get(event)
    action = fields.get("action")
    if count is None or not action:
        return {}
    out: dict[str, Any] = {DIMENSION: dimension(str(action)), count: 1}
    timings: tuple[str, ...] = ()
    for field, name in TIMING_OF_FIELD.items():
        value = fields.get(field)
        if isinstance(value, _NUMBERS):
            out[name] = value
            timings += (name,)
    directive = _directives.get((count, timings))
    if directive is None:
        metrics = [{"Name": count, "Unit": "Count"},
                   *({"Name": name, "Unit": "Milliseconds"} for name in timings)]
        directive = _directives[(count, timings)] = [
            {"Namespace": NAMESPACE, "Dimensions": [[DIMENSION], []], "Metrics": metrics}]
    out["_aws"] = {"Timestamp": int(time.time() * 1000), "CloudWatchMetrics": directive}
    return out



#: An adaptive pacer's metrics (dimension ``Pacer``): its rate, the downstream lag it saw, cuts.
PACE_METRICS = {"PacedRate": "Count/Second", "DownstreamLag": "Seconds", "PaceCuts": "Count"}


def pace_fields(pacer: str, rate: float, lag: float | None, cut: bool) -> dict[str, Any]:
    """The EMF block (and values) of one ``pace-changed`` line of :mod:`actionrunner.pacing`."""
    out: dict[str, Any] = {"Pacer": pacer, "PacedRate": round(rate, 3), "PaceCuts": int(cut)}
    names = ["PacedRate", "PaceCuts"]
    if lag is not None:
        out["DownstreamLag"] = round(lag, 3)
        names.append("DownstreamLag")
    out["_aws"] = {"Timestamp": int(time.time() * 1000), "CloudWatchMetrics": [
        {"Namespace": NAMESPACE, "Dimensions": [["Pacer"]],
         "Metrics": [{"Name": n, "Unit": PACE_METRICS[n]} for n in names]}]}
    return out
