"""``celery beat`` that cannot double-fire: every firing's dedup id comes from its schedule slot.

Two beat processes (a deploy overlap, a second replica) fire the same entries. With
:class:`Scheduler` each firing is sent with ``MessageDeduplicationId = sha256(action, entry,
slot)``, where the slot is the scheduled time the firing belongs to — the same in both beats — so
SQS keeps one message per slot (within its 5-minute deduplication window).

* crontab entries: the slot is the latest time at or before now that matches the crontab;
* interval entries (seconds / timedelta): the slot is now rounded down to a multiple of the
  interval since the epoch.

Each slot also gets its own idempotency key (header ``actionrunner_idempotency_key``): the
inputs of every firing are the same, and each slot must run once, not once per key's TTL.

Entries may name a group with ``"options": {"MessageGroupId": "..."}``; otherwise the action's
own group applies.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from celery.beat import PersistentScheduler, ScheduleEntry
from celery.schedules import crontab, schedule

from . import constants as C
from . import keys


def _matches(cron: crontab, moment: dt.datetime) -> bool:
    return (
        moment.minute in cron.minute
        and moment.hour in cron.hour
        and moment.isoweekday() % 7 in cron.day_of_week
        and moment.day in cron.day_of_month
        and moment.month in cron.month_of_year
    )


def slot_of(entry_schedule: Any, now: dt.datetime) -> dt.datetime:
    """The scheduled time that a firing at ``now`` belongs to (UTC, aware)."""
    now = now.astimezone(dt.UTC)
    if isinstance(entry_schedule, crontab):
        moment = now.replace(second=0, microsecond=0)
        for _ in range(366 * 24 * 60):  # a matching minute exists within a year
            if _matches(entry_schedule, moment.astimezone(entry_schedule.tz or dt.UTC)):
                return moment
            moment -= dt.timedelta(minutes=1)
        return now.replace(second=0, microsecond=0)
    if isinstance(entry_schedule, schedule):
        every = entry_schedule.run_every.total_seconds()
        if every > 0:
            return dt.datetime.fromtimestamp(int(now.timestamp() // every * every), dt.UTC)
    return now.replace(microsecond=0)


def firing_dedup_id(action: str, entry_name: str, slot: dt.datetime) -> str:
    """The MessageDeduplicationId of ``entry_name``'s firing in ``slot``."""
    return keys.dedup_id(action, f"beat:{entry_name}:{slot.isoformat()}")


class Scheduler(PersistentScheduler):
    """Celery's persistent scheduler, with a deterministic dedup id per schedule slot."""

    def apply_async(self, entry: ScheduleEntry, producer: Any = None, advance: bool = True,
                    **kwargs: Any) -> Any:
        slot = slot_of(entry.schedule, self.app.now())
        base = {k: v for k, v in (entry.options or {}).items() if k != "MessageDeduplicationId"}
        # each slot is a call of its own: its own idempotency key (the inputs are the same)
        headers = {**(base.get("headers") or {}),
                   C.IDEMPOTENCY_KEY_HEADER: f"beat:{entry.name}:{slot.isoformat()}"}
        entry.options = {**base, "MessageDeduplicationId": firing_dedup_id(entry.task, entry.name, slot),
                         "headers": headers}
        try:
            return super().apply_async(entry, producer=producer, advance=advance, **kwargs)
        finally:
            entry.options = base
