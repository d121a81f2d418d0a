"""Micro-batching: the size/time rule on a fake clock, then the asyncio wrapper (fake and real time)."""

from __future__ import annotations

import asyncio
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.batching import BatchWindow, MicroBatcher


class FakeClock:
    """Seconds, moved by hand."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t

    def advance_ms(self, ms: float) -> None:
        self.t += ms / 1000.0


# --------------------------------------------------------------------------------------------------
# BatchWindow: the rule alone
# --------------------------------------------------------------------------------------------------


def test_size_trigger_hands_out_exactly_max_events() -> None:
    w: BatchWindow[int] = BatchWindow(3, 50)
    for i in range(3):
        assert w.take(0) is None
        w.add(i, now_ms=0)
    assert w.take(0) == [0, 1, 2]
    assert w.take(0) is None
    assert len(w) == 0 and w.deadline() is None


def test_time_trigger_counts_from_the_first_item() -> None:
    w: BatchWindow[str] = BatchWindow(100, 20)
    w.add("a", now_ms=10)
    w.add("b", now_ms=25)  # a later item does not move the deadline
    assert w.deadline() == 30
    assert w.take(29.999) is None
    assert w.take(30) == ["a", "b"]  # due exactly at first + max_wait
    assert w.deadline() is None


def test_overflow_starts_a_new_batch_with_its_own_clock() -> None:
    w: BatchWindow[int] = BatchWindow(2, 10)
    w.add(1, 0)
    w.add(2, 1)  # full: sealed
    w.add(3, 5)  # opens the next batch at t=5
    assert len(w) == 3
    assert w.take(5) == [1, 2]
    assert w.take(14) is None
    assert w.deadline() == 15
    assert w.take(15) == [3]


def test_several_full_batches_wait_for_the_consumer_in_order() -> None:
    w: BatchWindow[int] = BatchWindow(2, 1000)
    for i in range(5):
        w.add(i, 0)
    assert [w.take(0), w.take(0), w.take(0)] == [[0, 1], [2, 3], None]
    assert w.take(1000) == [4]


def test_flush_makes_the_open_batch_due_now() -> None:
    w: BatchWindow[int] = BatchWindow(10, 1000)
    w.flush()  # nothing pending: no effect
    w.add(1, 0)
    assert w.take(1) is None
    w.flush()
    assert w.deadline() == float("-inf")
    assert w.take(1) == [1]
    w.add(2, 2)  # the flush does not carry over to the next batch
    assert w.take(3) is None


def test_zero_wait_hands_out_every_item_at_once() -> None:
    w: BatchWindow[int] = BatchWindow(64, 0)
    w.add(7, 3)
    assert w.take(3) == [7]


@pytest.mark.parametrize(("n", "wait"), [(0, 1), (-1, 1), (1.5, 1), (1, -1), (1, float("nan"))])
def test_bad_limits_are_refused(n: object, wait: float) -> None:
    with pytest.raises(ValueError):
        BatchWindow(n, wait)  # type: ignore[arg-type]


@settings(max_examples=200, deadline=None)
@given(
    max_events=st.integers(1, 8),
    max_wait=st.floats(0, 50),
    steps=st.lists(st.tuples(st.booleans(), st.floats(0, 30)), max_size=60),
)
def test_property_order_kept_sizes_bounded_nothing_late(
    max_events: int, max_wait: float, steps: list[tuple[bool, float]]
) -> None:
    """Whatever the arrivals and polls: order kept, batches <= max_events, none handed out early,
    and a consumer polling at the deadline never finds an overdue batch left behind."""
    w: BatchWindow[int] = BatchWindow(max_events, max_wait)
    now, nxt, out = 0.0, 0, []
    arrival: dict[int, float] = {}
    for is_add, dt in steps:
        now += dt
        if is_add:
            arrival[nxt] = now
            w.add(nxt, now)
            nxt += 1
        while (batch := w.take(now)) is not None:
            assert 1 <= len(batch) <= max_events
            if len(batch) < max_events:  # only a time-due batch may be short
                assert now >= arrival[batch[0]] + max_wait
            out.extend(batch)
        d = w.deadline()
        assert d is None or d > now
    w.flush()
    while (batch := w.take(now)) is not None:
        out.extend(batch)
    assert out == list(range(nxt))
    assert len(w) == 0


# --------------------------------------------------------------------------------------------------
# MicroBatcher: asyncio
# --------------------------------------------------------------------------------------------------


def test_fake_clock_time_trigger() -> None:
    async def main() -> None:
        clock = FakeClock()
        b: MicroBatcher[int] = MicroBatcher(10, 5, clock=clock)
        b.add(1)
        b.add(2)
        assert b.take_nowait() is None
        clock.advance_ms(5)
        assert await asyncio.wait_for(b.get(), 1) == [1, 2]
        assert b.pending == 0

    asyncio.run(main())


def test_fake_clock_wakes_on_size_without_time_passing() -> None:
    async def main() -> None:
        clock = FakeClock()
        b: MicroBatcher[int] = MicroBatcher(3, 60_000, clock=clock)
        consumer = asyncio.create_task(b.get())
        await asyncio.sleep(0)
        assert not consumer.done()
        for i in range(3):
            b.add(i)
        assert await asyncio.wait_for(consumer, 1) == [0, 1, 2]

    asyncio.run(main())


def test_real_time_trigger_waits_about_max_wait() -> None:
    async def main() -> None:
        b: MicroBatcher[str] = MicroBatcher(1000, 40)
        t0 = time.monotonic()
        b.add("x")
        batch = await asyncio.wait_for(b.get(), 5)
        waited = (time.monotonic() - t0) * 1000
        assert batch == ["x"]
        assert 38 <= waited < 2000, waited  # upper bound loose: the machine is shared

    asyncio.run(main())


def test_real_size_trigger_does_not_wait_for_the_timer() -> None:
    async def main() -> None:
        b: MicroBatcher[int] = MicroBatcher(4, 10_000)
        t0 = time.monotonic()
        for i in range(6):
            b.add(i)
        assert await asyncio.wait_for(b.get(), 5) == [0, 1, 2, 3]
        assert time.monotonic() - t0 < 2.0
        assert b.pending == 2

    asyncio.run(main())


def test_consumer_waits_when_empty_and_wakes_on_producer() -> None:
    async def main() -> None:
        b: MicroBatcher[int] = MicroBatcher(2, 10_000)

        async def produce() -> None:
            await asyncio.sleep(0.02)
            b.add(1)
            b.add(2)

        producer = asyncio.create_task(produce())
        assert await asyncio.wait_for(b.get(), 5) == [1, 2]
        await producer

    asyncio.run(main())


def test_flush_and_close_drain_then_stop_iteration() -> None:
    async def main() -> None:
        b: MicroBatcher[int] = MicroBatcher(2, 60_000)
        for i in range(5):
            b.add(i)
        b.close()
        with pytest.raises(RuntimeError):
            b.add(99)
        batches = [batch async for batch in b]
        assert batches == [[0, 1], [2, 3], [4]]
        with pytest.raises(StopAsyncIteration):
            await b.get()

    asyncio.run(main())


def test_close_wakes_a_waiting_consumer() -> None:
    async def main() -> None:
        b: MicroBatcher[int] = MicroBatcher(8, 60_000)
        consumer = asyncio.create_task(b.get())
        await asyncio.sleep(0.01)
        b.close()
        with pytest.raises(StopAsyncIteration):
            await asyncio.wait_for(consumer, 1)

    asyncio.run(main())


def test_explicit_flush_hands_out_early() -> None:
    async def main() -> None:
        b: MicroBatcher[int] = MicroBatcher(100, 60_000)
        consumer = asyncio.create_task(b.get())
        b.add(1)
        await asyncio.sleep(0.01)
        assert not consumer.done()
        b.flush()
        assert await asyncio.wait_for(consumer, 1) == [1]

    asyncio.run(main())


def test_streaming_producer_all_items_in_order_bounded_batches() -> None:
    async def main() -> list[list[int]]:
        b: MicroBatcher[int] = MicroBatcher(16, 3)

        async def produce() -> None:
            for i in range(500):
                b.add(i)
                if i % 37 == 0:
                    await asyncio.sleep(0.001)
            b.close()

        producer = asyncio.create_task(produce())
        got = [batch async for batch in b]
        await producer
        return got

    batches = asyncio.run(main())
    assert [x for batch in batches for x in batch] == list(range(500))
    assert all(1 <= len(batch) <= 16 for batch in batches)
