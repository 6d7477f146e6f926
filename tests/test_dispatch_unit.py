"""Group-ordered dispatch and backoff: pure logic, no server."""

from __future__ import annotations

from actionrunner.sqs.dispatch import GroupDispatcher
from tests.actions import boom, probe


def test_one_message_per_group_runs_the_rest_wait_in_order() -> None:
    d: GroupDispatcher[str] = GroupDispatcher()
    assert [d.offer("a", "a1"), d.offer("a", "a2"), d.offer("b", "b1"), d.offer("a", "a3")] == [
        True, False, True, False]
    assert d.waiting_count == 2
    assert d.done("a") == "a2"
    assert d.done("b") is None and not d.is_busy("b")
    assert d.done("a") == "a3"
    assert d.done("a") is None
    assert d.offer("a", "a4") is True


def test_close_hands_back_every_waiting_message_and_stops_dispatch() -> None:
    d: GroupDispatcher[str] = GroupDispatcher()
    d.offer("a", "a1")
    d.offer("a", "a2")
    d.offer("b", "b1")
    assert d.close() == ["a2"]
    assert d.done("a") is None
    assert d.offer("c", "c1") is False  # nothing new runs once closed


def test_take_group_removes_only_that_group() -> None:
    d: GroupDispatcher[str] = GroupDispatcher()
    for item in ("a1", "a2", "a3"):
        d.offer("a", item)
    d.offer("b", "b1")
    d.offer("b", "b2")
    assert d.take_group("a") == ["a2", "a3"]
    assert d.waiting() == ["b2"]


def test_backoff_is_exponential_capped_and_jittered() -> None:
    delays = [boom.backoff(n) for n in range(1, 6)]
    assert all(0 < x <= 0.5 for x in delays)
    probe.retry_jitter = False
    try:
        assert [probe.backoff(n) for n in (1, 2, 3, 10)] == [1.0, 2.0, 4.0, 60.0]
    finally:
        probe.retry_jitter = True
    assert 0.5 <= probe.backoff(1) <= 1.0
