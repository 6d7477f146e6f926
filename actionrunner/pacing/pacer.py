"""The adaptive pacer: the controller (:mod:`.controller`) fed from the state table.

    from actionrunner.pacing import AdaptivePacer, PaceLimits

    pacer = AdaptivePacer.from_settings("items-stream", PaceLimits(floor=20, ceiling=1000,
                                        lag_bound=5), watermark="items-stream")
    with BatchWriter("items", pacer=pacer) as writer:   # or: pacer.take(25) before each batch
        ...

Each :meth:`~AdaptivePacer.take` waits for a slot of the shared bucket (:mod:`.shared`), and at
most every ``control_every`` seconds runs one control step: read the consumer's watermark
(cached, :class:`~.watermark.WatermarkReader`), count this writer's own writes the consumer has
not reached (their times are kept, a few bytes each, until the watermark passes them), give the
controller the signals, and store a changed rate in the bucket for every worker. Each change is
one ``pace-changed`` log line with its signal (and CloudWatch metrics in EMF: ``PacedRate``,
``DownstreamLag``, ``PaceCuts``). Throttled writes are reported with :meth:`throttled`
(:class:`~actionrunner.dynamo.BatchWriter` does it).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..logging import get_logger
from ..metrics import pace_fields
from .controller import Decision, PaceController, PaceLimits, Signals
from .shared import SharedPace
from .watermark import WatermarkReader, WatermarkStore

log = get_logger("actionrunner.pacing")


@dataclass
class PaceStats:
    """What a pacer did: writes taken, rate changes, cuts, throttled answers reported, seconds
    waited, and each decision's (time, rate, reason, lag, predicted lag) for benchmarks."""

    taken: int = 0
    changes: int = 0
    cuts: int = 0
    throttled: int = 0
    waited_s: float = 0.0
    history: list[tuple[float, float, str, float | None, float | None]] = field(default_factory=list)


class AdaptivePacer:
    """Paces writes at the rate the downstream can take (see the module docstring).

    ``name``: the shared bucket (one per downstream: every pacer of it shares the rate);
    ``watermark``: the consumer's watermark name (it must have published one:
    :class:`~actionrunner.errors.UnknownWatermark` otherwise); ``iterator_age``: a callable
    returning CloudWatch ``IteratorAge`` seconds (or None), asked at most every 10 s.
    """

    def __init__(self, name: str, limits: PaceLimits, *, watermark: str, table: str, client: Any,
                 clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep, control_every: float = 0.2,
                 reads_per_second: float = 4.0,
                 iterator_age: Callable[[], float | None] | None = None,
                 require_watermark: bool = True) -> None:
        self.name, self.limits, self.clock, self.control_every = name, limits, clock, control_every
        self.controller = PaceController(limits)
        self.store = WatermarkStore(watermark, table=table, client=client, clock=clock)
        if require_watermark:
            self.store.require()
        self.reader = WatermarkReader(self.store, reads_per_second)
        self.bucket = SharedPace(name, limits.start, table=table, client=client, clock=clock,
                                 sleep=sleep)
        stored = self.bucket.read_rate()
        if stored is not None:
            self.bucket.rate = self.controller.rate = min(limits.ceiling, max(limits.floor, stored))
        self.iterator_age = iterator_age
        self._age: float | None = None
        self._age_at = -float("inf")
        self.stats = PaceStats()
        self._writes: deque[tuple[float, int]] = deque()  # (issued at, writes issued up to it)
        self._issued = self._drained = 0
        self._throttled = 0
        self._limited = False
        self._last_control = -float("inf")
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, name: str, limits: PaceLimits, *, watermark: str | None = None,
                      settings: Any = None, **kwargs: Any) -> AdaptivePacer:
        """A pacer on the configured state table (``watermark`` defaults to ``name``)."""
        from ..state.throttling import state_client_config

        if settings is None:
            from ..settings import get_settings

            settings = get_settings()
        client = kwargs.pop("client", None) or settings.client(
            "dynamodb", config=state_client_config(settings))
        return cls(name, limits, watermark=watermark or name, table=settings.state_table,
                   client=client, **kwargs)

    @property
    def rate(self) -> float:
        return self.bucket.rate

    def take(self, units: int = 1) -> float:
        """Wait until ``units`` more writes may start; returns the seconds waited."""
        if self.clock() - self._last_control >= self.control_every:
            self.control()
        waited = self.bucket.acquire(units)
        with self._lock:
            self._limited |= waited > 0
            self._issued += units
            self._writes.append((self.clock(), self._issued))
            self.stats.taken += units
            self.stats.waited_s += waited
        return waited

    def throttled(self, answers: int = 1) -> None:
        """DynamoDB throttled ``answers`` of this pacer's writes (the next control step cuts)."""
        with self._lock:
            self._throttled += answers
            self.stats.throttled += answers
        if self.clock() - self._last_control >= self.control_every / 2:
            self.control()

    def backlog(self, newest: float | None) -> tuple[int, float | None]:
        """This writer's writes issued after ``newest`` (the consumer has not reached them), and
        the time of the oldest of them."""
        with self._lock:
            writes = self._writes
            if newest is not None:
                while writes and writes[0][0] <= newest:
                    self._drained = writes.popleft()[1]
            pending = self._issued - self._drained
            return pending, (writes[0][0] if writes else None)

    def control(self) -> Decision:
        """One control step (see the module docstring)."""
        now = self.clock()
        self._last_control = now
        watermark = self.reader.get()
        backlog, oldest = self.backlog(watermark.newest if watermark else None)
        if self.iterator_age is not None and now - self._age_at >= 10:
            self._age_at = now
            try:
                self._age = self.iterator_age()
            except Exception:
                self._age = None
        with self._lock:
            throttled, self._throttled = self._throttled, 0
            limited, self._limited = self._limited, False
        decision = self.controller.update(Signals(
            now=now, throttled=throttled, watermark=watermark, backlog=backlog,
            oldest_pending=oldest, rate=self.bucket.rate, limited=limited,
            iterator_age=self._age))
        if decision.changed:
            stored = self.bucket.set_rate(decision.rate, decision.previous, decision.reason)
            self.controller.rate = stored
            self.stats.changes += 1
            self.stats.cuts += decision.is_cut
            log.info("pace-changed", pacer=self.name, rate=round(stored, 2),
                     previous=round(decision.previous, 2), signal=decision.reason,
                     predicted_lag_s=_r(decision.predicted_lag), lag_s=_r(decision.lag),
                     drain_per_s=_r(decision.drain), backlog=decision.backlog,
                     **pace_fields(self.name, stored, decision.lag, decision.is_cut))
        self.stats.history.append((now, self.bucket.rate, decision.reason, decision.lag,
                                   decision.predicted_lag))
        return decision


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def iterator_age(function_name: str, client: Any, *, window: float = 180.0) -> Callable[[], float | None]:
    """``iterator_age=`` for :class:`AdaptivePacer` on AWS: the stream processor's CloudWatch
    ``IteratorAge`` (the newest minute's Maximum, in seconds; None while there is none)."""
    import datetime

    def read() -> float | None:
        now = datetime.datetime.now(datetime.UTC)
        points = client.get_metric_statistics(
            Namespace="AWS/Lambda", MetricName="IteratorAge",
            Dimensions=[{"Name": "FunctionName", "Value": function_name}],
            StartTime=now - datetime.timedelta(seconds=window), EndTime=now, Period=60,
            Statistics=["Maximum"]).get("Datapoints", [])
        if not points:
            return None
        newest = max(points, key=lambda p: p["Timestamp"])
        return float(newest["Maximum"]) / 1000.0

    return read
