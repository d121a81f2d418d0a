"""agents.ordering.EventTimeOrder: clicks released in event-time order once every source passed them."""

from __future__ import annotations

from agents.ordering import EventTimeOrder


def test_clicks_wait_for_every_source_then_go_in_event_time_order() -> None:
    order = EventTimeOrder(sources=2, max_wait_s=1.0, clock=lambda: 0.0)
    b = order.new_batch()
    order.hold(b, 0, 300, "c300")
    order.hold(b, 0, 100, "c100")
    order.mark(0, 0, 300)
    assert order.release() == [] and order.settled() == 0  # source 1 has said nothing
    order.mark(0, 1, 200)
    assert order.release() == [(0, "c100")]  # up to the slowest source's watermark
    order.mark(0, 1, 400)
    assert order.release() == [(0, "c300")] and order.settled() == 1 and not order.holding()


def test_a_late_click_goes_at_once_and_a_silent_source_holds_no_longer_than_the_bound() -> None:
    now = [0.0]
    order = EventTimeOrder(sources=2, max_wait_s=1.0, clock=lambda: now[0])
    b = order.new_batch()
    order.hold(b, 3, 1_000, "a")
    order.hold(b, 3, 2_000, "b")
    order.mark(3, 0, 5_000)
    now[0] = 0.5
    assert order.release() == []
    now[0] = 1.01  # source 1 stays silent: the wait is over for both clicks
    assert order.release() == [(3, "a"), (3, "b")]
    b2 = order.new_batch()
    order.hold(b2, 3, 1_500, "late")  # older than what was released: no reason to wait
    assert order.release() == [(3, "late")] and order.settled() == 2


def test_partitions_are_ordered_independently_and_batches_settle_in_order() -> None:
    order = EventTimeOrder(sources=1, max_wait_s=10.0, clock=lambda: 0.0)
    first, second = order.new_batch(), order.new_batch()
    order.hold(first, 0, 50, "p0-late")
    order.hold(second, 1, 10, "p1")
    order.mark(1, 0, 10)
    assert order.release() == [(1, "p1")]
    assert order.settled() == 0  # the first batch still has a click held
    order.mark(0, 0, 60)
    assert order.release() == [(0, "p0-late")] and order.settled() == 2
