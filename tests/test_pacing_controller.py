"""The adaptive pace's controller: a pure unit (signals in, rate out), checked by properties.

Whatever the signals — throttling, a consumer that is fast, slow, stale or gone, any backlog —
the rate stays within [floor, ceiling]; silence means the floor; a predicted lag over the bound
cuts before the lag is there; a downstream that keeps up gets more.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actionrunner.errors import PacingMisconfigured
from actionrunner.pacing import PaceController, PaceLimits, Signals, Watermark


def limits(**kw: float) -> PaceLimits:
    return PaceLimits(**{"floor": 10.0, "ceiling": 1000.0, "lag_bound": 5.0, **kw})  # type: ignore[arg-type]


@st.composite
def pace_limits(draw: st.DrawFn) -> PaceLimits:
    floor = draw(st.floats(0.01, 1e4))
    ceiling = floor * draw(st.floats(1.0, 1e3))
    return PaceLimits(floor=floor, ceiling=ceiling, lag_bound=draw(st.floats(0.05, 600)),
                      initial=draw(st.none() | st.floats(1e-3, 1e7)),
                      increase=draw(st.none() | st.floats(1e-3, 1e6)),
                      cut=draw(st.floats(0.05, 0.95)))


@st.composite
def signal_steps(draw: st.DrawFn) -> list[tuple[Any, ...]]:
    """(dt, count step, watermark age or None, newest lag, backlog, limited, shared rate)."""
    return draw(st.lists(st.tuples(
        st.floats(0.0, 30.0), st.integers(-5, 5000), st.none() | st.integers(0, 60),
        st.none() | st.floats(0, 100), st.integers(0, 100_000), st.booleans(),
        st.none() | st.floats(-1e6, 1e9, allow_nan=False)), max_size=60))


def run(lim: PaceLimits, steps: list, throttles: list[int]) -> list[tuple[Signals, float]]:
    controller = PaceController(lim)
    now, count, seen = 1_900_000_000.0, 0, []
    for i, (dt, step, age, newest_lag, backlog, limited, shared) in enumerate(steps):
        now += dt
        count = max(0, count + step)
        wm = None if age is None else Watermark(
            newest=None if newest_lag is None else now - age - newest_lag, count=count,
            published_at=now - age)
        s = Signals(now=now, throttled=throttles[i % len(throttles)] if throttles else 0,
                    watermark=wm, backlog=backlog,
                    oldest_pending=now - (newest_lag or 0) if backlog else None,
                    rate=shared, limited=limited)
        seen.append((s, controller.update(s).rate))
    return seen


@settings(max_examples=300, deadline=None)
@given(pace_limits(), signal_steps(), st.lists(st.integers(0, 50), max_size=5))
def test_the_rate_never_leaves_floor_and_ceiling(lim: PaceLimits, steps: list, throttles: list[int]) -> None:
    for _, rate in run(lim, steps, throttles):
        assert lim.floor <= rate <= lim.ceiling


@settings(max_examples=300, deadline=None)
@given(pace_limits(), signal_steps(), st.lists(st.integers(0, 50), max_size=5))
def test_silence_is_the_floor(lim: PaceLimits, steps: list, throttles: list[int]) -> None:
    for signals, rate in run(lim, steps, throttles):
        wm = signals.watermark
        if wm is None or signals.now - wm.published_at > lim.stale_after:
            assert rate == lim.floor


@settings(max_examples=300, deadline=None)
@given(pace_limits(), signal_steps(), st.lists(st.integers(0, 50), max_size=5))
def test_throttling_is_a_multiplicative_cut(lim: PaceLimits, steps: list, throttles: list[int]) -> None:
    controller = PaceController(lim)
    now, count = 1_900_000_000.0, 0
    for i, (dt, step, age, newest_lag, backlog, limited, shared) in enumerate(steps):
        now += dt
        count = max(0, count + step)
        wm = None if age is None else Watermark(newest=None, count=count, published_at=now - age)
        s = Signals(now=now, throttled=throttles[i % len(throttles)] if throttles else 0,
                    watermark=wm, backlog=backlog,
                    oldest_pending=now - (newest_lag or 0) if backlog else None,
                    rate=shared, limited=limited)
        decision = controller.update(s)
        if decision.reason == "throttle":
            assert s.throttled > 0
            assert decision.rate == max(lim.floor, min(lim.ceiling, decision.previous * lim.cut))


@settings(max_examples=200, deadline=None)
@given(pace_limits(), signal_steps())
def test_a_consumer_that_keeps_up_never_has_its_capacity_measured(lim: PaceLimits, steps: list) -> None:
    # Whatever it drains while no write of ours waits for it, that is what it was given, not
    # what it can do: no capacity is measured from it, and no lag cut comes of it
    controller = PaceController(lim)
    now, count = 1_900_000_000.0, 0
    for dt, step, age, _, _, limited, shared in steps:
        now += dt
        count = max(0, count + step)
        wm = None if age is None else Watermark(newest=now, count=count, published_at=now - age)
        decision = controller.update(Signals(now=now, watermark=wm, rate=shared, limited=limited))
        assert controller.capacity is None and decision.reason != "lag"


def consumer(now: float, count: int, newest: float | None = None) -> Watermark:
    return Watermark(newest=now - 0.1 if newest is None else newest, count=count, published_at=now)


def test_a_consumer_that_keeps_up_gets_more_until_the_ceiling() -> None:
    # Given a consumer that finishes everything at once (no backlog)
    controller, rates, count = PaceController(limits(increase=100, slow_start=True)), [], 0.0
    for i in range(50):
        now = 100.0 + i * 0.5
        count += controller.rate * 0.5
        rates.append(controller.update(Signals(now=now, watermark=consumer(now, int(count)))).rate)
    # Then the rate doubles (slow start; at first the additive step, which is more) once every
    # 1.5 s (busy_after + step_every, so a saturated consumer would show first) and holds in
    # between, up to the ceiling
    assert rates[:14] == [60, 60, 60, 120, 120, 120, 240, 240, 240, 480, 480, 480, 960, 960]
    assert rates[-1] == 1000


def simulate(controller: PaceController, capacity: float, writes: int, *, burst: int = 25,
             batch: int = 20, latency: float = 0.1, tick: float = 0.05,
             control_every: float = 0.2) -> tuple[list[float], list[float]]:
    """A writer paced by ``controller`` in BatchWriteItem bursts of ``burst``, and a stream
    consumer that reads batches of up to ``batch`` records, each no sooner than ``latency`` after
    its write, at ``capacity`` records a second, publishing its watermark after each batch.
    Returns each record's lag (from its write to the end of its batch) and the rates used."""
    now, written, done = 1000.0, [], 0
    lags, rates = [], []
    published = [Watermark(newest=None, count=0, published_at=now)]
    allowance, busy_until, last_control = 0.0, now, -math.inf
    while done < writes and now < 1000.0 + 600:
        now += tick
        allowance = min(allowance + controller.rate * tick, max(burst, controller.rate))
        while allowance >= burst and len(written) < writes:
            written += [now] * min(burst, writes - len(written))
            allowance -= burst
        if now >= busy_until:  # the consumer's next batch
            ready = [t for t in written[done:done + batch] if t <= now - latency]
            if ready:
                busy_until = now + len(ready) / capacity
                lags += [busy_until - t for t in ready]
                done += len(ready)
                published.append(Watermark(newest=ready[-1], count=done, published_at=busy_until))
        if now - last_control >= control_every:
            last_control = now
            wm = [w for w in published if w.published_at <= now][-1]  # what it has said so far
            count = wm.count
            backlog = len(written) - count
            rates.append(controller.update(Signals(
                now=now, watermark=wm, backlog=backlog,
                oldest_pending=written[count] if backlog > 0 else None,
                limited=len(written) < writes)).rate)
    return lags, rates


@pytest.mark.parametrize("capacity", [60, 150, 400])
def test_the_slow_start_does_not_bury_a_slow_consumer(capacity: float) -> None:
    # Given a consumer of 60, 150 or 400 records/s and a ceiling (1000/s) far over it, a 4 s bound
    # (the case that failed in CI: 130/s over a 60/s consumer was doubled before its lag showed)
    controller = PaceController(PaceLimits(floor=5, ceiling=1000, lag_bound=4, increase=60))
    lags, rates = simulate(controller, capacity, writes=int(capacity * 12))
    # Then no record is later than the bound, and the rate did pass the consumer's capacity
    assert len(lags) == int(capacity * 12)
    assert max(lags) <= 4.0, f"worst lag {max(lags):.2f} s"
    assert max(rates) > capacity


def test_after_a_cut_the_rate_climbs_additively() -> None:
    controller = PaceController(limits(increase=100, initial=400, slow_start=True))
    rates, count = [], 0.0
    controller.update(Signals(now=99.0, watermark=consumer(99.0, 0), throttled=1))  # 400 → 200
    for i in range(1, 20):
        now = 100.0 + i * 0.5
        count += controller.rate * 0.5
        rates.append(controller.update(Signals(now=now, watermark=consumer(now, int(count)))).rate)
    assert rates[0] == 250  # + 50, not doubled: the slow start ended with the cut
    assert all(b - a <= 50 + 1e-9 for a, b in zip(rates, rates[1:], strict=False))
    assert rates[-1] > 600


def test_writes_that_only_travel_are_no_sign_of_a_slow_consumer() -> None:
    # Given a consumer that keeps up: the writer's oldest un-drained write is 0.6 s old (on its
    # way through the stream), while the drain measured is below the rate (it was ramping up)
    controller = PaceController(limits(initial=300, increase=100, slow_start=True))
    controller.update(Signals(now=100.0, watermark=consumer(100.0, 0), limited=False))
    decision = controller.update(Signals(now=101.0, watermark=consumer(101.0, 100), backlog=180,
                                         oldest_pending=100.4))
    # Then that is no lag to cut for: the rate goes on up
    # (additively, not doubled: 0.6 s is more than half of busy_after, writes do not pass at once)
    assert decision.reason == "keeping-up" and decision.rate == 350


def test_a_writer_that_does_not_use_its_rate_is_not_given_more() -> None:
    controller = PaceController(limits())
    for i in range(10):
        now = 100.0 + i
        decision = controller.update(Signals(now=now, watermark=consumer(now, 0), limited=False))
    assert decision.rate == 10 and decision.reason == "steady"


def test_the_predicted_lag_cuts_before_the_lag_is_there() -> None:
    # Given a consumer draining 400/s, and a writer at 1000/s with 1,200 writes not yet drained
    controller = PaceController(limits(initial=1000))
    controller.update(Signals(now=100.0, watermark=consumer(100.0, 0), limited=False))
    decision = controller.update(Signals(now=101.0, watermark=consumer(101.0, 400), backlog=1200,
                                         oldest_pending=99.8))
    # Then: the oldest waiting write is only 1.2 s old, but the newest will wait
    # (1200 + 600 more in the next second) / 400 = 4.5 s > 0.55 × 5 s: cut below the drain rate
    assert decision.lag == pytest.approx(1.2)
    assert decision.predicted_lag == pytest.approx(4.5)
    # The consumer's capacity is not measured yet (it has been saturated for no window yet): the
    # cut goes to the drain, a lower bound of it, less the excess backlog over recover
    assert decision.reason == "lag" and decision.rate == pytest.approx(400 - (1200 - 800) / 3)
    # And the next second does not cut again on the same news (hold)
    again = controller.update(Signals(now=101.5, watermark=consumer(101.5, 600), backlog=1100,
                                      oldest_pending=100.0))
    assert again.reason != "lag"


def test_throttling_cuts_multiplicatively_once_per_hold() -> None:
    controller = PaceController(limits(initial=800))
    controller.update(Signals(now=100.0, watermark=consumer(100.0, 0), limited=False))
    first = controller.update(Signals(now=100.2, watermark=consumer(100.2, 10), throttled=3))
    second = controller.update(Signals(now=100.4, watermark=consumer(100.4, 20), throttled=5))
    third = controller.update(Signals(now=101.3, watermark=consumer(101.3, 30), throttled=1))
    assert (first.rate, first.reason) == (400, "throttle")
    assert second.rate == 400  # the first cut's effect cannot show yet
    assert (third.rate, third.reason) == (200, "throttle")


def test_a_consumer_whose_count_stops_with_writes_waiting_means_the_floor() -> None:
    # Given a consumer that still publishes (alive) but finishes nothing, with writes waiting
    controller = PaceController(limits(initial=500))
    controller.update(Signals(now=100.0, watermark=consumer(100.0, 1000), limited=False))
    decision = None
    for i in range(1, 10):
        now = 100.0 + i
        decision = controller.update(Signals(now=now, watermark=consumer(now, 1000, newest=99.9),
                                             backlog=500, oldest_pending=100.0))
    assert decision is not None and (decision.rate, decision.reason) == (10, "stalled")


def saturated_run(controller: PaceController, start: float, seconds: float, capacity: float,
                  backlog: int, rate_writes: bool = True) -> list:
    """A consumer draining ``capacity``/s with a backlog all the time (it is the limit): the
    writer's oldest un-drained write is 2 s old, ``backlog`` writes wait."""
    decisions, now = [], start
    count = float(controller._samples[-1][1]) if controller._samples else 0.0  # goes on counting
    while now < start + seconds:
        now += 0.25
        count += capacity * 0.25
        decisions.append(controller.update(Signals(now=now, watermark=consumer(now, int(count)),
                                                   backlog=backlog, oldest_pending=now - 2.0)))
    return decisions


def test_the_capacity_is_measured_only_while_the_consumer_has_a_backlog() -> None:
    # Given a consumer that kept up at 100/s (its drain then is only what it was given)
    controller, count = PaceController(limits(initial=100)), 0.0
    for i in range(16):
        now = 100.0 + i * 0.25
        count += 25
        controller.update(Signals(now=now, watermark=consumer(now, int(count)), limited=False))
    assert controller.drain() == pytest.approx(100, rel=0.05)
    assert controller.capacity is None  # a lower bound, not its capacity
    # When it has a backlog for a while and drains 400/s
    saturated_run(controller, 104.0, 3.0, 400, backlog=600)
    # Then its capacity is 400/s, though the drain over the longer window is less
    assert controller.capacity == pytest.approx(400, rel=0.02)
    assert controller.drain() < 360


def test_a_lag_cut_goes_to_the_capacity_not_under_a_drain_measured_while_keeping_up() -> None:
    # Given a consumer that kept up at 100/s (the drain window still remembers it), then was
    # saturated at 400/s by a writer at 250/s with 100 writes waiting (no cut)
    controller = PaceController(limits(initial=250))
    for i in range(16):
        now = 100.0 + i * 0.25
        controller.update(Signals(now=now, watermark=consumer(now, 25 * i), limited=False))
    decisions = saturated_run(controller, 104.0, 2.0, 400, backlog=100)
    assert all(d.reason != "lag" for d in decisions)
    assert controller.capacity == pytest.approx(400, rel=0.02)
    # When the backlog grows to 1,400
    decision = saturated_run(controller, 106.0, 0.25, 400, backlog=1400)[-1]
    # Then the lag is predicted from the capacity, not from the lower drain, and the cut goes to
    # the capacity less the excess backlog (1400 - 0.4 × 5 × 400) over recover (3 s)
    assert decision.drain is not None and decision.drain < 300
    assert decision.predicted_lag == pytest.approx(1400 / 400, rel=0.02)
    assert decision.reason == "lag"
    assert decision.rate == pytest.approx(400 - (1400 - 800) / 3, rel=0.02)


def test_after_a_lag_cut_the_rate_goes_straight_back_to_the_capacity() -> None:
    controller = PaceController(limits(initial=800, increase=100))
    saturated_run(controller, 100.0, 4.0, 400, backlog=1400)
    assert controller.rate < 400 and controller.capacity == pytest.approx(400, rel=0.02)
    # When the backlog is down (the consumer keeps up again)
    now, count, rates = 104.0, float(controller._samples[-1][1]), []
    for _ in range(8):
        now += 0.25
        count += 400 * 0.25
        rates.append(controller.update(Signals(now=now, watermark=consumer(now, int(count)),
                                               backlog=50, oldest_pending=now - 0.3)).rate)
    # Then it is back at the consumer's capacity at once, and probes above it additively
    assert rates[0] == pytest.approx(400, rel=0.02)
    assert all(0 <= b - a <= 50 + 1e-9 for a, b in zip(rates, rates[1:], strict=False))
    assert rates[-1] > rates[0]


def test_a_consumer_that_slows_down_is_followed() -> None:
    controller = PaceController(limits(initial=400))
    saturated_run(controller, 100.0, 4.0, 400, backlog=700)
    assert controller.capacity == pytest.approx(400, rel=0.02)
    decisions = saturated_run(controller, 104.0, 5.0, 200, backlog=1200)
    assert controller.capacity == pytest.approx(200, rel=0.05)
    assert decisions[-1].rate <= 200


@pytest.mark.parametrize(("kw", "message"), [
    ({"lag_bound": 0}, "lag_bound must be more than 0"),
    ({"lag_bound": -1}, "lag_bound must be more than 0"),
    ({"floor": 500, "ceiling": 100}, "floor 500 is above ceiling 100"),
    ({"floor": 0}, "floor must be more than 0"),
    ({"floor": float("nan")}, "floor must be a finite number"),
    ({"cut": 1.5}, "cut must be between 0 and 1"),
    ({"target": 0.8, "cut_at": 0.5}, "target"),
    ({"increase": -3}, "increase must be more than 0"),
])
def test_bad_limits_are_refused_naming_the_problem(kw: dict, message: str) -> None:
    with pytest.raises(PacingMisconfigured, match=message):
        limits(**kw)
