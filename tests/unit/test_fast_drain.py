"""app.runtime.drain: a delivery runs inline until it would block, then as a task, like before."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import faust
import pytest
from aiokafka import TopicPartition
from faust.types import TP
from mode.utils.queues import FlowControlEvent, ThrowableQueue

from app.contracts.settings import Settings
from app.runtime.app import create_app
from app.runtime.drain import FastDrainConsumer, QuickDelivery, run_until_blocked
from app.runtime.rebalance import CommitBeforeRevokeConsumer

TP_CLICKS = TP("clicks", 0)


def test_the_worker_app_drains_with_the_copied_loop() -> None:
    # The override is a copy of the pinned release's loop (app.runtime.versions checks the release).
    app = create_app(Settings.from_env({})).app
    assert "_drain_messages" in vars(FastDrainConsumer)
    assert issubclass(app.transport.Consumer, CommitBeforeRevokeConsumer)


def test_a_delivery_that_does_not_block_finishes_inline_without_a_task() -> None:
    log: list[str] = []

    async def deliver() -> None:
        log.append("delivered")

    async def main() -> None:
        tasks_before = len(asyncio.all_tasks())
        assert run_until_blocked(deliver()) is None
        assert log == ["delivered"] and len(asyncio.all_tasks()) == tasks_before

    asyncio.run(main())


def test_an_error_in_an_inline_delivery_propagates() -> None:
    async def deliver() -> None:
        raise ValueError("bad message")

    async def main() -> None:
        with pytest.raises(ValueError, match="bad message"):
            run_until_blocked(deliver())

    asyncio.run(main())


def test_a_blocked_delivery_resumes_as_a_task_with_its_result() -> None:
    async def main() -> None:
        room = asyncio.Event()
        steps: list[str] = []

        async def deliver() -> str:
            steps.append("before")
            await room.wait()  # a full stream buffer
            steps.append("after")
            await asyncio.sleep(0)
            return "done"

        rest = run_until_blocked(deliver())
        assert rest is not None and steps == ["before"] and not rest.done()
        room.set()
        assert await rest == "done" and steps == ["before", "after"]

    asyncio.run(main())


def test_cancelling_a_blocked_delivery_cancels_the_coroutine_inside() -> None:
    async def main() -> None:
        seen: list[str] = []

        async def deliver() -> None:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                seen.append("cancelled")
                raise

        rest = run_until_blocked(deliver())
        assert rest is not None
        await asyncio.sleep(0)
        rest.cancel()  # what wait_first does when a rebalance suspends the flow
        with pytest.raises(asyncio.CancelledError):
            await rest
        assert seen == ["cancelled"]

    asyncio.run(main())


def test_a_message_fetched_before_a_rebalance_that_ended_meanwhile_is_dropped_and_what_follows_is_read() -> (
    None
):
    """The loop holds offset 13, fetched in generation 1, and commits; during that await the rebalance
    runs to its end (generation 2, seek to the committed offset 11). Faust's loop then delivered 13 and
    marked it read, so 11 and 12, fetched again, were dropped as already read: lost clicks."""
    from faust.types import TP
    from faust.types.tuples import Message

    tp = TP("clicks", 0)
    test_app = faust.App(
        "test-fast-drain", broker="kafka://127.0.0.1:1", autodiscover=False, web_enabled=False
    )
    test_app.transport.Consumer = CommitBeforeRevokeConsumer
    consumer = test_app.consumer
    test_app.consumer_generation_id = 1
    delivered: list[tuple[int, int]] = []

    async def callback(message: Message) -> None:
        delivered.append((message.generation_id, message.offset))

    async def rebalance_while_committing(*_: object, **__: object) -> bool:
        test_app.consumer_generation_id = 2
        consumer._read_offset[tp] = 11  # the seek to the committed offset
        return True

    def message(offset: int, generation: int) -> Message:
        return Message(
            tp.topic, tp.partition, offset, 0.0, 0, None, b"k", b"v", None, generation_id=generation
        )

    class Fetcher:
        _stopped = asyncio.Event()

    async def getmany(timeout: float):  # noqa: ANN202 - an async generator, as Faust's
        yield tp, message(10, generation=1)
        consumer._n_acked = consumer._commit_every  # the next message waits for a commit
        yield tp, message(13, generation=1)
        for offset in (11, 12, 13):
            yield tp, message(offset, generation=2)
        Fetcher._stopped.set()

    consumer.callback = callback
    consumer.getmany = getmany
    consumer.commit = rebalance_while_committing

    async def main() -> None:
        await consumer._drain_messages(Fetcher())

    asyncio.run(main())
    assert delivered == [(1, 10), (2, 11), (2, 12), (2, 13)]


def _consumer_fed_by(polls: list[list[int]]) -> tuple[Any, list[int], list[int]]:
    """A worker consumer (no broker) whose fetches return ``polls`` (offsets of one partition, 0 =
    first poll) and whose seeks are recorded: (consumer, delivered offsets, seeks)."""
    from faust.types import TP
    from faust.types.tuples import Message

    tp = TP("clicks", 0)
    test_app = faust.App("test-rewind", broker="kafka://127.0.0.1:1", autodiscover=False, web_enabled=False)
    test_app.transport.Consumer = CommitBeforeRevokeConsumer
    test_app.topics._acking_topics.add(tp.topic)  # what the conductor records when an agent subscribes
    consumer = test_app.consumer
    delivered: list[int] = []
    seeks: list[int] = []

    async def callback(message: Message) -> None:
        delivered.append(message.offset)

    async def seek_wait(partitions: dict[TP, int]) -> None:
        seeks.extend(partitions.values())

    class Fetcher:
        _stopped = asyncio.Event()

    remaining = list(polls)

    async def getmany(timeout: float):  # noqa: ANN202 - an async generator, as Faust's
        for offset in remaining.pop(0):
            yield tp, Message(tp.topic, 0, offset, 0.0, 0, None, b"k", b"v", None, generation_id=0)
        if not remaining:
            Fetcher._stopped.set()

    consumer.callback, consumer.getmany, consumer.seek_wait = callback, getmany, seek_wait
    consumer.fetcher = Fetcher()
    return consumer, delivered, seeks


def test_records_skipped_after_a_seek_are_read_again_not_committed_past() -> None:
    """After seeking to 68 the client handed over 74 first (68-73 had gone to a poll Faust dropped):
    Faust filled 69..73 as a gap and committed past 68..73. The worker seeks back to 68 instead."""
    consumer, delivered, seeks = _consumer_fed_by([[74, 75], [68, 69, 70, 71, 72, 73, 74, 75]])
    consumer._read_offset[TP_CLICKS] = 68
    consumer.sought.add(TP_CLICKS)  # what a seek to the committed offset 68 leaves
    asyncio.run(consumer._drain_messages(consumer.fetcher))
    assert seeks == [68]
    assert delivered == list(range(68, 76))
    assert not consumer._gap[TP_CLICKS]


def test_in_order_records_are_never_rewound_and_a_hole_that_stays_is_accepted_after_three_tries() -> None:
    consumer, delivered, seeks = _consumer_fed_by([[5, 6, 7]])
    asyncio.run(consumer._drain_messages(consumer.fetcher))
    assert (delivered, seeks) == ([5, 6, 7], [])

    # 11 deleted by retention: each poll after a rewind starts at 12 again
    consumer, delivered, seeks = _consumer_fed_by([[12, 13]] * 4)
    consumer._read_offset[TP_CLICKS] = 10  # 10 was read
    asyncio.run(consumer._drain_messages(consumer.fetcher))
    assert seeks == [11, 11, 11]
    assert delivered == [12, 13]


class _Channel:  # hashable by identity, as Faust's topics are
    def __init__(self, queue: Any) -> None:
        self.queue = queue

    def _create_event(self, key: bytes, value: bytes, headers: Any, message: Any) -> Any:
        return SimpleNamespace(value=value, message=message)


class _QuickApp:
    """What QuickDelivery reads of a Faust app: flow control, producer buffer, conductor, consumer."""

    def __init__(self, channels: int = 1, maxsize: int = 10) -> None:
        self.flow_control = FlowControlEvent(initially_suspended=False)
        self.producer = SimpleNamespace(buffer=SimpleNamespace(size=0, max_messages=100))
        self.full: list[TP] = []
        self.consumer = SimpleNamespace(on_buffer_full=self.full.append, on_buffer_drop=lambda tp: None)
        self.sensors = SimpleNamespace(on_topic_buffer_full=lambda tp: None)
        self.queues = [
            ThrowableQueue(maxsize=maxsize, flow_control=self.flow_control) for _ in range(channels)
        ]
        self.channels = {_Channel(queue) for queue in self.queues}
        self.topics = SimpleNamespace(
            _tp_to_callback_lock=asyncio.Lock(), _tp_index={TP_CLICKS: self.channels}
        )


class _Message:
    def __init__(self, offset: int) -> None:
        # Faust's messages carry aiokafka's TopicPartition, equal to Faust's TP but not one
        self.tp = TopicPartition(TP_CLICKS.topic, TP_CLICKS.partition)
        self.offset, self.key, self.value, self.headers = offset, b"k", b"v", []
        self.refcount = 0

    def incref(self, n: int = 1) -> None:
        self.refcount += n


def test_quick_delivery_queues_the_event_for_the_one_stream_of_the_partition() -> None:
    fake = _QuickApp()
    deliver = QuickDelivery(fake)
    messages = [_Message(offset) for offset in range(3)]
    assert all(deliver(m) for m in messages)
    queued = [fake.queues[0].get_nowait() for _ in range(3)]
    assert [event.message.offset for event in queued] == [0, 1, 2]
    assert all(m.refcount == 1 for m in messages)  # counted in once, as Faust's conductor does


@pytest.mark.parametrize(
    "obstacle", ["rebalance", "producer buffer", "subscription change", "two streams", "queue full"]
)
def test_quick_delivery_leaves_to_faust_whatever_would_make_faust_wait(obstacle: str) -> None:
    async def scenario() -> None:
        fake = _QuickApp(channels=2 if obstacle == "two streams" else 1, maxsize=1)
        if obstacle == "rebalance":
            fake.flow_control.suspend()
        elif obstacle == "producer buffer":
            fake.producer.buffer.size = 101
        elif obstacle == "subscription change":
            await fake.topics._tp_to_callback_lock.acquire()
        elif obstacle == "queue full":
            assert QuickDelivery(fake)(_Message(0))
        message = _Message(1)
        assert not QuickDelivery(fake)(message)
        assert message.refcount == 0 and all(q.qsize() == (obstacle == "queue full") for q in fake.queues)

    asyncio.run(scenario())


def test_quick_delivery_reports_pressure_with_one_callback_pair_per_partition() -> None:
    fake = _QuickApp(maxsize=4)
    deliver = QuickDelivery(fake)
    for offset in range(4):
        assert deliver(_Message(offset))
    assert fake.full == [TP_CLICKS]  # high pressure told once, until it drops
    assert all(type(tp) is TP for tp in fake.full)  # Faust's consumer asserts its own type
    assert len(fake.queues[0]._pending_pressure_drop_callbacks) == 1


def test_the_worker_consumer_asks_the_broker_to_hold_an_empty_fetch_only_as_long_as_the_setting_says() -> (
    None
):
    # Faust fixes 1500 ms: a fetch for drained partitions then held back the next stage's input.
    from app.runtime.rebalance import install

    settings = Settings.from_env({})

    async def fetch_wait_of(fetch_max_wait_ms: int | None) -> int:
        other = faust.App("fetch-wait-test", broker="kafka://127.0.0.1:1", autodiscover=False)
        if fetch_max_wait_ms is None:
            install(other)
        else:
            install(other, fetch_max_wait_ms=fetch_max_wait_ms)
        client = other.consumer._thread._create_worker_consumer(other.transport)
        try:
            return client._fetch_max_wait_ms
        finally:
            await client.stop()

    assert asyncio.run(fetch_wait_of(35)) == 35
    assert asyncio.run(fetch_wait_of(None)) == settings.fetch_max_wait_ms == 20
    assert create_app(settings).app.transport.Consumer.fetch_max_wait_ms == settings.fetch_max_wait_ms


def test_quick_delivery_on_a_real_app_builds_faust_s_own_event_and_reads_its_buffer_size() -> None:
    # The settings Faust looks up per message are read once; what comes out must not change.
    async def scenario() -> None:
        real = faust.App("quick-delivery-test", broker="kafka://127.0.0.1:1", autodiscover=False)
        topic = real.topic("clicks", value_serializer="raw")
        real.topics.add(topic)
        queue = topic.queue
        real.topics._tp_index[TP_CLICKS] = {topic}
        real.flow_control.resume()
        deliver = QuickDelivery(real)
        buffer = real.producer.buffer
        assert deliver._buffer_size() == buffer.size == 0
        buffer.pending.put_nowait(object())
        assert deliver._buffer_size() == buffer.size == 1

        message = _Message(7)
        message.headers = [("h", b"1")]
        assert deliver(message)
        event = queue.get_nowait()
        faust_event = topic._create_event(message.key, message.value, message.headers, message=message)
        assert type(event) is type(faust_event) is real.conf.Event
        assert (event.key, event.value, event.headers, event.message) == (
            faust_event.key,
            faust_event.value,
            faust_event.headers,
            faust_event.message,
        )

    asyncio.run(scenario())
