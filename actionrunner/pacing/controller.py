"""The adaptive pace as a pure function of what the downstream says: signals in, rate out.

No I/O and no clock: :class:`PaceController` is given :class:`Signals` (the time, throttled
answers, the stream consumer's :class:`Watermark`, this writer's own un-drained backlog) and
returns a :class:`Decision`. :mod:`.pacer` reads the signals and stores the rate; tests drive the
controller directly.

The rule, in order (the first that applies decides)::

    no watermark, or none fresher than stale_after    → floor              ("silence")
    backlog, and the consumer's count still for stale_after → floor        ("stalled")
    throttled (at most one cut per hold)              → rate × cut         ("throttle")
    predicted lag > cut_at × lag_bound (once per 2 hold)
                                                      → capacity − excess backlog / recover ("lag")
                                                        (the drain while the capacity is not measured)
    predicted lag < target × lag_bound, and the writer
      was held back by the pace (once per step_every) → rate + increase × step_every   ("keeping-up")
          slow_start (the default), until the first cut or a lag of busy_after / 2: × 2,
                                          once per busy_after + step_every, holding between
          after a lag cut, below the capacity: straight back up to the capacity
    otherwise                                          → unchanged          ("steady")

The consumer's *capacity* is measured only while it is saturated: it has a backlog of this
writer's writes whose oldest is older than ``busy_after``. Then the records it finishes per second
(over the last ``capacity_window`` seconds of such samples, at least ``capacity_min_span``) are
what it can do. While it keeps up, what it finishes is only what it was given, a lower bound: it
raises a known capacity but never measures one. A consumer that slows down is followed within the
window, since the writer keeps it saturated.

The *predicted lag* is the lag the writer's newest write will have when the consumer reaches it:
its own backlog (writes not yet processed downstream) plus what the present rate adds over the
next ``horizon`` seconds, over the consumer's capacity (or the drain rate while the capacity is
not measured) — and never less than the lag already seen (the oldest un-drained write's age, or
CloudWatch ``IteratorAge``). While the consumer keeps up, the predicted lag is that age itself.
It cuts before the bound is passed because the prediction is about the future. A cut on lag goes
to the capacity less the backlog over the target's share (``target × lag_bound × capacity``)
spread over ``recover`` seconds: the consumer works on the backlog left, and once the predicted
lag is under the target the rate goes straight back to the capacity, then probes above it
additively. Whatever happens, ``floor <= rate <= ceiling``.

    >>> c = PaceController(PaceLimits(floor=10, ceiling=1000, lag_bound=5))
    >>> c.update(Signals(now=0.0)).reason           # nothing heard from the consumer yet
    'silence'
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

from ..errors import PacingMisconfigured


@dataclass(frozen=True, kw_only=True)
class PaceLimits:
    """What a pacer may do. Rates in writes per second, times in seconds.

    ``floor``/``ceiling`` bound the rate; ``lag_bound`` is the downstream lag not to pass;
    ``initial`` the first rate (default ``floor``); ``increase`` the writes/s added per second
    while the downstream keeps up (default a tenth of ``ceiling``); ``cut`` the factor of a
    throttling cut; ``target``/``cut_at`` shares of the bound (increase below the first, cut above
    the second); ``stale_after`` seconds of silence that mean the floor; ``horizon`` how far ahead
    the prediction looks; ``recover`` the seconds a lag cut gives the backlog to come back to the
    target; ``hold`` the least time between two cuts (the signal of a cut needs that
    long to show).
    """

    floor: float
    ceiling: float
    lag_bound: float
    initial: float | None = None
    increase: float | None = None
    cut: float = 0.5
    target: float = 0.4
    cut_at: float = 0.6
    stale_after: float = 3.0
    horizon: float = 1.0
    hold: float = 1.0
    step_every: float = 0.5
    busy_after: float = 1.0
    recover: float = 3.0
    slow_start: bool = True

    def __post_init__(self) -> None:
        def finite(name: str) -> float:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise PacingMisconfigured(f"pacing: {name} must be a finite number, not {value!r}")
            return float(value)

        for name in ("floor", "ceiling", "lag_bound", "cut", "target", "cut_at", "stale_after",
                     "horizon", "hold", "step_every", "busy_after", "recover"):
            finite(name)
        if self.lag_bound <= 0:
            raise PacingMisconfigured(f"pacing: lag_bound must be more than 0 s, not {self.lag_bound!r}")
        if self.floor <= 0:
            raise PacingMisconfigured(f"pacing: floor must be more than 0 writes/s, not {self.floor!r}")
        if self.floor > self.ceiling:
            raise PacingMisconfigured(f"pacing: floor {self.floor!r} is above ceiling {self.ceiling!r}")
        if not 0 < self.cut < 1:
            raise PacingMisconfigured(f"pacing: cut must be between 0 and 1, not {self.cut!r}")
        if not 0 < self.target < self.cut_at <= 1:
            raise PacingMisconfigured(f"pacing: need 0 < target ({self.target!r}) < cut_at "
                                      f"({self.cut_at!r}) <= 1")
        for name in ("stale_after", "horizon", "hold", "step_every", "busy_after", "recover"):
            if getattr(self, name) <= 0:
                raise PacingMisconfigured(f"pacing: {name} must be more than 0 s")
        for name in ("initial", "increase"):
            if getattr(self, name) is not None:
                value = finite(name)
                if value <= 0:
                    raise PacingMisconfigured(f"pacing: {name} must be more than 0 writes/s")

    @property
    def start(self) -> float:
        return clamp(self.initial if self.initial is not None else self.floor, self)

    @property
    def step(self) -> float:
        return self.increase if self.increase is not None else self.ceiling / 10


@dataclass(frozen=True)
class Watermark:
    """What a stream consumer published: the creation time of the newest record it finished
    (epoch seconds, or None before its first record), how many records it finished in all, and
    when it said so."""

    newest: float | None
    count: int
    published_at: float


@dataclass(frozen=True)
class Signals:
    """One look at the downstream.

    ``now``: epoch seconds; ``throttled``: throttled answers since the last update;
    ``watermark``: the consumer's latest (None: none read); ``backlog``: this writer's writes the
    consumer has not processed yet; ``oldest_pending``: the time of the oldest of them;
    ``rate``: the shared rate as stored now (another pacer may have moved it; None: keep own);
    ``limited``: the writer waited for the pace since the last update (it wants more);
    ``iterator_age``: CloudWatch ``IteratorAge`` in seconds, if known.
    """

    now: float
    throttled: int = 0
    watermark: Watermark | None = None
    backlog: int = 0
    oldest_pending: float | None = None
    rate: float | None = None
    limited: bool = True
    iterator_age: float | None = None


@dataclass(frozen=True)
class Decision:
    """The rate to pace at, why (``reason``), and what it was decided from."""

    rate: float
    previous: float
    reason: str
    predicted_lag: float | None = None
    lag: float | None = None
    drain: float | None = None
    backlog: int = 0

    @property
    def changed(self) -> bool:
        return self.rate != self.previous

    @property
    def is_cut(self) -> bool:
        return self.rate < self.previous


def clamp(rate: float, limits: PaceLimits) -> float:
    if not math.isfinite(rate):
        return limits.floor
    return min(limits.ceiling, max(limits.floor, rate))


@dataclass
class PaceController:
    """AIMD with a predictive lag check (see the module docstring). Deterministic: the same
    signals in the same order give the same rates."""

    limits: PaceLimits
    #: Seconds of (published_at, count) samples the drain rate is measured over.
    drain_window: float = 4.0
    #: Seconds of saturated samples the consumer's capacity is measured over, and the least
    #: span of them that counts as a measurement.
    capacity_window: float = 2.5
    capacity_min_span: float = 1.0
    rate: float = field(init=False)
    _samples: deque[tuple[float, int]] = field(init=False, default_factory=deque)
    _last_cut: float = field(init=False, default=-math.inf)
    _last_step: float = field(init=False, default=-math.inf)
    _count_moved_at: float | None = field(init=False, default=None)
    _cut_once: bool = field(init=False, default=False)
    _last_cut_reason: str | None = field(init=False, default=None)
    _last_double: float = field(init=False, default=-math.inf)
    _slow_start_over: bool = field(init=False, default=False)
    #: (published_at, count) samples taken while the consumer was saturated (had a backlog).
    _busy: deque[tuple[float, int]] = field(init=False, default_factory=deque)
    #: The consumer's estimated capacity, records/s (None: not measured yet).
    capacity: float | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.rate = self.limits.start

    # -- measurements --------------------------------------------------------------------------
    def _observe(self, wm: Watermark, now: float) -> None:
        samples = self._samples
        if samples and wm.count < samples[-1][1]:  # the consumer's count started again
            samples.clear()
        if not samples or wm.published_at > samples[-1][0]:
            if not samples or wm.count != samples[-1][1]:
                self._count_moved_at = wm.published_at
            samples.append((wm.published_at, wm.count))
        while len(samples) > 2 and samples[1][0] <= now - self.drain_window:
            samples.popleft()

    def drain(self) -> float | None:
        """Records per second the consumer finished over the window (None: not measured)."""
        return _slope(self._samples, 0.5)

    def _estimate(self, wm: Watermark | None, saturated: bool, drain: float | None,
                  now: float) -> None:
        """Update :attr:`capacity`. The drain is the consumer's capacity only while it has a
        backlog the whole time (saturated); while it keeps up, the drain is just what it was
        given, a lower bound. So: samples are kept from the moment it is seen saturated (and
        dropped when it is not), their slope over the last ``capacity_window`` seconds is the
        capacity (so a consumer that slows down is followed); a drain above the estimate raises
        it."""
        busy = self._busy
        if not saturated:
            busy.clear()
        elif wm is not None and (not busy or wm.published_at > busy[-1][0]):
            if busy and wm.count < busy[-1][1]:
                busy.clear()
            busy.append((wm.published_at, wm.count))
            while len(busy) > 2 and busy[1][0] <= now - self.capacity_window:
                busy.popleft()
        measured = _slope(busy, self.capacity_min_span)
        if measured is not None and measured > 0:
            self.capacity = measured
        elif not saturated and drain is not None and self.capacity is not None \
                and drain > self.capacity:
            self.capacity = drain  # it did more than the estimate: the estimate was low

    # -- the rule ------------------------------------------------------------------------------
    def update(self, s: Signals) -> Decision:
        """The rate after ``s`` (also kept in :attr:`rate`)."""
        limits, bound = self.limits, self.limits.lag_bound
        if s.rate is not None:
            self.rate = clamp(s.rate, limits)
        previous = self.rate
        wm = s.watermark
        if wm is not None:
            self._observe(wm, s.now)
        drain = self.drain()
        lag = max(0.0, s.now - s.oldest_pending) if s.backlog > 0 and s.oldest_pending is not None \
            else 0.0
        if s.iterator_age is not None and s.iterator_age > lag:
            lag = s.iterator_age

        def decide(rate: float, reason: str, predicted: float | None = None) -> Decision:
            self.rate = clamp(rate, limits)
            return Decision(self.rate, previous, reason, predicted, lag, drain, s.backlog)

        if wm is None or s.now - wm.published_at > limits.stale_after:
            return decide(limits.floor, "silence")
        if s.backlog > 0 and self._count_moved_at is not None \
                and s.now - self._count_moved_at > limits.stale_after \
                and (s.oldest_pending is None or s.now - s.oldest_pending > limits.stale_after):
            return decide(limits.floor, "stalled")
        saturated = s.backlog > 0 and lag > limits.busy_after  # the consumer is the limit
        self._estimate(wm, saturated, drain, s.now)
        capacity = self.capacity
        # what the consumer does now: its measured capacity, else the drain (a lower bound)
        speed = capacity if capacity is not None else drain
        predicted = lag
        if saturated:
            if speed is not None and speed > 0:
                ahead = max(0.0, self.rate - speed) * limits.horizon
                predicted = max(lag, (s.backlog + ahead) / speed)
            else:  # records waiting, drain not measured yet: their age is all we know
                predicted = max(lag, s.backlog / self.rate)
        elif s.backlog > 0 and lag >= limits.busy_after / 2 and drain is not None and drain > 0:
            # writes no longer pass at once, and the consumer may be saturated before its oldest
            # record shows it: the backlog over what it has been finishing (140/s over a 60/s
            # consumer: 0.94 s of lag, but 3 s of backlog)
            predicted = max(lag, s.backlog / drain)
        can_cut = s.now - self._last_cut >= limits.hold
        if s.throttled > 0 and can_cut:
            self._last_cut, self._cut_once, self._last_cut_reason = s.now, True, "throttle"
            return decide(self.rate * limits.cut, "throttle", predicted)
        if predicted > limits.cut_at * bound and s.now - self._last_cut >= 2 * limits.hold:
            self._last_cut, self._cut_once, self._last_cut_reason = s.now, True, "lag"
            if speed is None or speed <= 0:
                return decide(self.rate * limits.cut, "lag", predicted)
            # to the capacity (while it is not measured yet: the drain, a lower bound of it), less
            # what brings the backlog down to the target's share (target × lag_bound × capacity)
            # within ``recover`` seconds. The consumer stays busy on the backlog left, meanwhile
            # its capacity is measured, and the rate goes back up to it once the lag is down.
            excess = max(0.0, s.backlog - limits.target * bound * speed)
            return decide(min(self.rate, speed - excess / limits.recover), "lag", predicted)
        if predicted < limits.target * bound and s.limited and s.throttled == 0 \
                and s.now - self._last_step >= limits.step_every \
                and s.now - self._last_cut >= limits.hold:
            step = limits.step * limits.step_every
            if lag >= limits.busy_after / 2:
                self._slow_start_over = True  # writes no longer pass at once: probe additively
            if limits.slow_start and not self._cut_once and not self._slow_start_over:
                # slow start (as TCP's) until the first cut: doubles (or the additive step, if
                # more) while writes pass at once, and holds in between: one increase per
                # busy_after + step_every, so that a consumer saturated at the new rate shows it
                # before the next one (an additive step in between hid it: 130/s over a 60/s
                # consumer was doubled after 0.7 s, before its lag had grown)
                if s.now - self._last_double < limits.busy_after + limits.step_every:
                    return decide(self.rate, "steady", predicted)
                self._last_step = self._last_double = s.now
                return decide(self.rate + max(step, self.rate), "keeping-up", predicted)
            self._last_step = s.now
            if self._last_cut_reason == "lag" and capacity is not None and self.rate < capacity:
                # back up to the consumer's measured capacity at once: below it, it idles
                step = max(step, capacity - self.rate)
            return decide(self.rate + step, "keeping-up", predicted)
        return decide(self.rate, "steady", predicted)


def _slope(samples: deque[tuple[float, int]], min_span: float) -> float | None:
    """Records per second between the first and last (time, count) sample (None: too short)."""
    if len(samples) < 2:
        return None
    (t0, c0), (t1, c1) = samples[0], samples[-1]
    return (c1 - c0) / (t1 - t0) if t1 - t0 >= min_span else None
