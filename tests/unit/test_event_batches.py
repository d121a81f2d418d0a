"""take_batches: Faust's take semantics without a loop turn per event, and its rebalance checks."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from mode.utils.queues import FlowControlEvent, ThrowableQueue

from app.runtime.batches import take_batches

TOPIC = "clicks"


class _Message:  # hashable by identity, as Faust's messages are
    def __init__(self, topic: str, offset: int, generation: int) -> None:
        self.topic, self.tp, self.offset = topic, (topic, 0), offset
        self.generation_id, self.tracked = generation, False


class _Stream:
    """What take_batches uses of a Faust stream, its app and consumer."""

    def __init__(self) -> None:
        flow = FlowControlEvent(initially_suspended=False)
        self.queue: ThrowableQueue = ThrowableQueue(flow_control=flow, clear_on_resume=True)  # as Faust's
        self.channel = SimpleNamespace(queue=self.queue, on_stop_iteration=lambda: None)
        self.seen_in: list[int] = []
        self.app = SimpleNamespace(
            consumer=SimpleNamespace(_unacked_messages=set()),
            flow_control=flow,
            topics=SimpleNamespace(acking_topics={TOPIC}),
            sensors=SimpleNamespace(on_message_in=lambda tp, offset, message: self.seen_in.append(offset)),
            consumer_generation_id=1,
        )
        self.should_stop = False
        self.events_total = 0
        self.enable_acks = True
        self.stopped = False

    async def maybe_start(self) -> bool:
        return True

    def _channel_stop_iteration(self, channel: Any) -> None:
        channel.on_stop_iteration()

    async def stop(self) -> None:
        self.stopped = True

    def service_reset(self) -> None:
        pass

    def put(self, offset: int, generation: int = 1, topic: str = TOPIC) -> SimpleNamespace:
        message = _Message(topic, offset, generation)
        event = SimpleNamespace(message=message, value=offset)
        self.queue.put_nowait(event)
        return event


def _offsets(batch: list) -> list[int]:
    return [event.message.offset for event in batch]


def test_queued_events_come_in_batches_of_at_most_max_and_are_tracked_not_acked() -> None:
    async def run() -> None:
        stream = _Stream()
        for offset in range(7):
            stream.put(offset)
        batches = take_batches(stream, 3, within_s=0.05)
        assert _offsets(await anext(batches)) == [0, 1, 2]
        assert _offsets(await anext(batches)) == [3, 4, 5]
        assert _offsets(await anext(batches)) == [6]  # closed by `within`, not by size
        assert stream.enable_acks is False and stream.events_total == 7
        unacked = stream.app.consumer._unacked_messages
        assert sorted(m.offset for m in unacked) == list(range(7))  # in flight until the agent acks
        assert stream.seen_in == list(range(7))
        await batches.aclose()
        assert stream.stopped  # started by take_batches, so stopped by it

    asyncio.run(run())


def test_a_batch_waits_up_to_within_for_more_events_then_closes() -> None:
    async def run() -> None:
        stream = _Stream()
        loop = asyncio.get_running_loop()
        stream.put(0)
        loop.call_later(0.02, stream.put, 1)  # arrives within the window: same batch
        loop.call_later(0.3, stream.put, 2)  # after it: next batch
        batches = take_batches(stream, 10, within_s=0.1)
        started = loop.time()
        assert _offsets(await anext(batches)) == [0, 1]
        assert 0.09 <= loop.time() - started < 0.25
        assert _offsets(await anext(batches)) == [2]
        await batches.aclose()

    asyncio.run(run())


def test_events_during_a_rebalance_or_from_an_old_generation_are_skipped_untracked_and_unacked() -> None:
    async def run() -> None:
        stream = _Stream()
        stale = stream.put(0, generation=0)  # fetched before the last rebalance
        stream.put(1)
        batches = take_batches(stream, 10, within_s=0.05)
        assert _offsets(await anext(batches)) == [1]
        assert stale.message.tracked is False
        stream.app.flow_control.suspend()  # a rebalance under way: nothing is taken
        suspended = stream.put(2)

        def resume() -> None:
            stream.app.flow_control.resume()
            stream.put(3, topic="not-acked")
            stream.put(4)

        asyncio.get_running_loop().call_later(0.01, resume)
        batch = await anext(batches)
        assert _offsets(batch) == [3, 4]
        assert suspended.message.tracked is False
        assert batch[0].message.tracked is False and batch[1].message.tracked is True  # only acking topics
        assert sorted(m.offset for m in stream.app.consumer._unacked_messages) == [1, 4]
        await batches.aclose()

    asyncio.run(run())


def test_an_error_thrown_into_the_channel_reaches_the_agent() -> None:
    async def run() -> None:
        stream = _Stream()
        stream.queue._throw(RuntimeError("decode failed"))
        batches = take_batches(stream, 10, within_s=0.01)
        with pytest.raises(RuntimeError, match="decode failed"):
            await anext(batches)

    asyncio.run(run())


def test_a_stopping_channel_ends_the_batches_instead_of_crashing_the_agent() -> None:
    async def run() -> None:
        stream = _Stream()
        stream.queue._throw(StopAsyncIteration())  # what a stream that stops sends its channel
        batches = take_batches(stream, 10, within_s=0.01)
        with pytest.raises(StopAsyncIteration):  # the agent's `async for` just ends
            await anext(batches)
        assert stream.stopped

    asyncio.run(run())


def test_a_batch_cut_short_by_a_stop_is_not_processed_nor_left_in_flight() -> None:
    async def run() -> None:
        stream = _Stream()
        stream.put(1)
        stream.put(2)
        batches = take_batches(stream, 10, within_s=5.0)
        waiting = asyncio.ensure_future(anext(batches))
        await asyncio.sleep(0.05)  # it holds events 1 and 2 and waits for more
        assert len(stream.app.consumer._unacked_messages) == 2
        stream.queue._throw(StopAsyncIteration())
        with pytest.raises(StopAsyncIteration):
            await waiting
        assert stream.app.consumer._unacked_messages == set()  # read again after the restart

    asyncio.run(run())
