"""Faust's consumer drain loop without four asyncio tasks per message.

faust-streaming hands every fetched message to the streams with
``await self.wait_first(callback(message), self.suspend_flow.wait())``: four tasks (the delivery,
the flow-control wait, and the service's stopped and crashed waits), an ``asyncio.wait`` and three
cancellations per message, so that a rebalance can interrupt a delivery blocked on a full stream
buffer: about 45-50 us per message per stage, the largest single item in a worker's profile
(``benchmarks/faust_throughput.py``).

:class:`FastDrainConsumer` keeps Faust's loop body but runs each message's delivery inline
until it would suspend (:func:`run_until_blocked`). Only when it does suspend (buffer full, flow
control) does the rest of it go through the same ``wait_first``, so a blocked delivery can still be
interrupted by a rebalance exactly as before. When flow is already suspended the loop does what
Faust does.

It also refuses to lose records across rebalances, where Faust's loop could (ARCHITECTURE.md,
"Rebalance handover"): a message whose generation ended while the loop held it is dropped instead of
marking its offset read after the seek to the committed offsets, and a record past the next one
expected makes the loop seek back (:meth:`FastDrainConsumer.rewound_past_skipped`) instead of
letting Faust fill the hole as a "gap" and commit past it (tests/unit/test_fast_drain.py).

The body is copied from faust-streaming 0.15.3 (``Consumer._drain_messages``); the runtime refuses
to start on any other release (:mod:`app.runtime.versions`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Generator
from typing import Any

from faust.channels import Channel
from faust.transport import consumer as faust_consumer
from faust.transport.drivers.aiokafka import Consumer as AIOKafkaConsumer
from faust.types import TP

from app.contracts.settings import Settings
from app.runtime.consumer_thread import ShortFetchWaitConsumerThread

__all__ = ["FastDrainConsumer", "QuickDelivery", "run_until_blocked"]

log = logging.getLogger(__name__)

#: Times a partition is sought back to the same missing offset before the hole is accepted.
MAX_REWINDS = 3


class _Continue:
    """Awaitable that goes on driving a coroutine which already ran up to its first suspension
    (``first`` is what it yielded then), exactly as a Task would have driven it from the start."""

    __slots__ = ("coro", "first")

    def __init__(self, coro: Coroutine[Any, Any, Any], first: Any) -> None:
        self.coro, self.first = coro, first

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, value = self.coro, self.first
        while True:
            try:
                sent = yield value
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # cancellation included: hand it to the coroutine
                try:
                    value = coro.throw(exc)
                except StopIteration as stop:
                    return stop.value
            else:
                try:
                    value = coro.send(sent)
                except StopIteration as stop:
                    return stop.value


def run_until_blocked(coro: Coroutine[Any, Any, Any]) -> asyncio.Future[Any] | None:
    """Run ``coro`` inline up to its first suspension: None if it finished (its exception, if any,
    propagates), else a Task that carries on from where it stopped."""
    try:
        first = coro.send(None)
    except StopIteration:
        return None
    return asyncio.ensure_future(_Continue(coro, first))


def _buffer_size_reader(app: Any) -> Callable[[], int]:
    """``app.producer.buffer.size`` without its settings lookup: the length of the queue it counts."""
    buffer = app.producer.buffer
    conf = getattr(app, "conf", None)
    if conf is None or conf.producer_threaded or not hasattr(buffer, "pending"):
        return lambda: buffer.size
    pending = buffer.pending._queue  # what ProducerBuffer.size measures when not threaded
    return pending.__len__


class QuickDelivery:
    """What Faust's conductor does to deliver a message to the one stream that reads its partition,
    as one plain call: queue the event, and say False (nothing done) whenever the conductor would
    have to wait or do more.

    Faust's handler (faust-streaming 0.15.3, ``Conductor._compile_message_handler`` and
    ``ConductorCompiler.build``) takes an asyncio lock, awaits the flow control and the producer
    buffer, and awaits the decoding of the event: five coroutines per message, for each click in the
    IP stage. Here, only when none of them could wait (no rebalance, no subscription change, producer
    buffer below its limit, stream queue not full) and the partition goes to exactly one stream, the
    message is counted in, turned into an event by the channel and queued with the same
    pressure callbacks as Faust's (one pair per partition, so the queue's set of pending callbacks
    stays small). Otherwise the caller runs Faust's handler, which does all of it.
    """

    def __init__(self, app: Any) -> None:
        self.app, self.conductor = app, app.topics
        self._pressure: dict[Any, tuple[Any, Any]] = {}  # by the messages' own tp type
        # Two settings Faust reads per message through its settings registry, about 1 us each (2 %
        # of the IP stage): whether the producer buffer is threaded (``ProducerBuffer.size``) and the
        # event class (``App.create_event``). Both are fixed once the app is configured.
        self._buffer_size = _buffer_size_reader(app)
        self._event_class = getattr(getattr(app, "conf", None), "Event", None)

    def __call__(self, message: Any) -> bool:
        app, conductor = self.app, self.conductor
        if (
            app.flow_control._suspend.is_set()
            or self._buffer_size() > app.producer.buffer.max_messages
            or conductor._tp_to_callback_lock.locked()
        ):
            return False
        channels = conductor._tp_index.get(message.tp)
        if channels is None or len(channels) != 1:
            return False
        (channel,) = channels
        queue = channel.queue
        if queue.full():
            return False
        on_high, on_drop = self._pressure.get(message.tp) or self._callbacks(message.tp)
        message.incref(1)
        if self._event_class is not None and type(channel)._create_event is Channel._create_event:
            event = self._event_class(app, message.key, message.value, message.headers, message)
        else:  # a channel with its own events
            event = channel._create_event(message.key, message.value, message.headers, message=message)
        queue.put_nowait_enhanced(event, on_pressure_high=on_high, on_pressure_drop=on_drop)
        return True

    def _callbacks(self, message_tp: Any) -> tuple[Any, Any]:
        # A message's tp is aiokafka's TopicPartition; the consumer keeps (and asserts) Faust's TP.
        consumer, sensors = self.app.consumer, self.app.sensors
        tp = TP(message_tp.topic, message_tp.partition)

        def on_pressure_high() -> None:
            sensors.on_topic_buffer_full(tp)
            consumer.on_buffer_full(tp)

        def on_pressure_drop() -> None:
            consumer.on_buffer_drop(tp)

        self._pressure[message_tp] = (on_pressure_high, on_pressure_drop)
        return on_pressure_high, on_pressure_drop


async def _fast_drain_messages(self: Any, fetcher: Any) -> None:
    callback = self.callback
    deliver_now = QuickDelivery(self.app)
    getmany = self.getmany
    consumer_should_stop = self._stopped.is_set
    fetcher_should_stop = fetcher._stopped.is_set
    get_read_offset = self._read_offset.__getitem__
    set_read_offset = self._read_offset.__setitem__
    flag_consumer_fetching = faust_consumer.CONSUMER_FETCHING
    set_flag = self.diag.set_flag
    unset_flag = self.diag.unset_flag
    commit_every = self._commit_every
    app = self.app
    acks_enabled_for = app.topics.acks_enabled_for
    suspend_flow = self.suspend_flow
    flow_suspended = suspend_flow.is_set
    yield_every = 100
    num_since_yield = 0
    sleep = asyncio.sleep
    try:
        while not (consumer_should_stop() or fetcher_should_stop()):
            set_flag(flag_consumer_fetching)
            self.polls += 1
            ait = getmany(timeout=1.0)
            await self.sleep(0)  # getmany may be called in a loop that never yields otherwise
            if not self.should_stop:
                async for tp, message in ait:
                    num_since_yield += 1
                    if num_since_yield > yield_every:
                        await sleep(0)
                        num_since_yield = 0
                    if commit_every is not None and self._n_acked >= commit_every:
                        self._n_acked = 0
                        await self.commit()
                    if message.generation_id != app.consumer_generation_id:
                        continue  # fetched before a rebalance that ended during an await above
                    offset = message.offset
                    r_offset = get_read_offset(tp)
                    if r_offset is None or offset >= r_offset:
                        acking = acks_enabled_for(message.topic)
                        if acking and await self.rewound_past_skipped(tp, offset, r_offset):
                            continue
                        gap = offset - (r_offset or 0)
                        if gap > 1 and r_offset and acking:
                            await self._add_gap(tp, r_offset + 1, offset)
                        if flow_suspended():
                            await self.wait_first(callback(message), suspend_flow.wait())
                        elif deliver_now(message):
                            pass
                        else:
                            blocked = run_until_blocked(callback(message))
                            if blocked is not None:
                                await self.wait_first(blocked, suspend_flow.wait())
                        if message.generation_id == app.consumer_generation_id:
                            set_read_offset(tp, offset)
                            self.sought.discard(tp)
                    else:
                        self.log.dev("DROPPED MESSAGE ROFF %r: k=%r v=%r", offset, message.key, message.value)
                unset_flag(flag_consumer_fetching)
    except self.consumer_stopped_errors:
        if self.transport.app.should_stop:
            self.log.info("Broker stopped consumer, shutting down...")
            return
        raise
    except asyncio.CancelledError:
        if self.transport.app.should_stop:
            self.log.info("Consumer shutting down for user cancel.")
            return
        raise
    except Exception as exc:
        self.log.exception("Drain messages raised: %r", exc)
        raise
    finally:
        unset_flag(flag_consumer_fetching)


class FastDrainConsumer(AIOKafkaConsumer):
    """Faust's aiokafka consumer with :func:`_fast_drain_messages`, which also refuses to skip."""

    #: Partitions sought to an offset (their read offset is the *next* one expected) and not read since.
    sought: set[TP]
    #: Per partition: the offset it was last rewound to, how often, and in which poll.
    rewinds: dict[TP, tuple[int, int, int]]
    #: Polls taken by the drain loop so far.
    polls: int = 0
    #: Longest the broker holds a fetch that finds nothing new, ms (app.runtime.consumer_thread); the
    #: worker's app sets it from ``IVT_FETCH_MAX_WAIT_MS`` (app.runtime.rebalance.install).
    fetch_max_wait_ms: int = Settings.fetch_max_wait_ms

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sought, self.rewinds = set(), {}

    def _new_consumer_thread(self) -> ShortFetchWaitConsumerThread:
        # What Faust's driver does, with the thread class that sets the fetch wait.
        return ShortFetchWaitConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def seek(self, partition: TP, offset: int) -> None:
        await super().seek(partition, offset)
        self.sought.add(partition)

    async def perform_seek(self) -> None:
        await super().perform_seek()
        self.sought.update(self._read_offset)  # every assigned partition, to its committed offset

    async def rewound_past_skipped(self, tp: TP, offset: int, read_offset: int | None) -> bool:
        """True when ``offset`` is past the next record expected on ``tp``: the records between were
        taken from the client but never delivered (Faust drops a poll's records in several places
        when a rebalance or a seek races it), so the partition is sought back to the first of them
        and this record dropped. Faust would fill the hole as a "gap" and commit past it: the clicks a
        worker joining mid-stream lost (it got offset 74 first after seeking to 68).

        Our stream topics have no holes of their own (not compacted, no transactions); a record
        deleted by retention is a real one, so after :data:`MAX_REWINDS` the hole is accepted."""
        if read_offset is None:
            return False
        expected = read_offset if tp in self.sought else read_offset + 1
        if offset <= expected:
            return False
        last_offset, times, poll = self.rewinds.get(tp, (-1, 0, -1))
        if last_offset == expected and poll == self.polls:
            return True  # the rest of the poll that made us rewind
        times = times + 1 if last_offset == expected else 1
        if times > MAX_REWINDS:
            return False
        self.rewinds[tp] = (expected, times, self.polls)
        log.warning("%s: got offset %d, expected %d: reading again from %d", tp, offset, expected, expected)
        await self.seek_wait({tp: expected})  # in the client's thread (Faust's seek() is not)
        self._read_offset[tp] = expected
        self.sought.add(tp)
        return True

    _drain_messages = _fast_drain_messages
