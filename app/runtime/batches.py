"""Micro-batches of a Faust agent's events, taken from its channel without a loop turn per event.

``stream.noack_take(n, within)`` yields the same batches, but Faust's stream iterator awaits
``asyncio.sleep(0)`` before every event (one event-loop iteration and one ``epoll`` call each) and
then hands the event to the ``take`` buffer through a processor coroutine. With clicks arriving one
record each, that was about a tenth of a worker's time. :func:`take_batches` reads the stream's
channel queue itself: it waits for the first event, takes whatever else is already queued without
yielding, and waits for more only while the batch is short and ``within`` has not passed.

Per event it does what Faust's iterator does before yielding (faust-streaming 0.15.3,
``Stream._py_aiter``), except that it acks nothing and runs no stream processors (agents have none):

* an event that arrives while the flow is suspended (a rebalance) or was fetched in an older consumer
  generation is skipped and not tracked, so it is read again after the rebalance. Faust's iterator
  also *acks* such events, which loses them (ARCHITECTURE.md, "Rebalance handover");
  :func:`current_events` drops the ones that go stale while a batch waits for more;
* an event of an acking topic is tracked as in flight (``consumer._unacked_messages``: a rebalance
  waits until it is acked) with the ``on_message_in`` sensor hook that ``Stream.ack``'s
  ``on_message_out`` pairs with. The per-event stream sensor hooks (``on_stream_event_in``/``out``)
  are not called: the worker removes Faust's only default sensor, the Monitor.

The caller acks each event once its outputs are delivered (:class:`app.runtime.acks.InOrderAcker`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

__all__ = ["take_batches", "current_events"]

log = logging.getLogger(__name__)


async def take_batches(
    stream: Any, max_events: int, within_s: float, idle_s: float | None = None
) -> AsyncIterator[list[Any]]:
    """Batches of at most ``max_events`` events, each closed at most ``within_s`` after its first;
    an empty batch after ``idle_s`` without any event (None: wait for the next event)."""
    app, queue = stream.app, stream.channel.queue
    consumer, loop = app.consumer, asyncio.get_running_loop()
    flow, acking_topics = app.flow_control, app.topics.acking_topics
    unacked, on_message_in = consumer._unacked_messages, app.sensors.on_message_in
    stream._finalized = True  # as iterating does: no more processors may be added
    stream.enable_acks = False
    started_here = await stream.maybe_start()

    def accept(event: Any) -> bool:
        message = event.message
        if not flow.is_active() or message.generation_id != app.consumer_generation_id:
            return False
        if message.topic in acking_topics and not message.tracked:
            message.tracked = True
            unacked.add(message)
            on_message_in(message.tp, message.offset, message)
        return True

    try:
        while not stream.should_stop:
            try:
                if idle_s is None:
                    first = await queue.get()
                else:
                    try:
                        first = await asyncio.wait_for(queue.get(), idle_s)
                    except TimeoutError:
                        yield []
                        continue
            except StopAsyncIteration:  # the channel stopped (the worker stops): the end, not a crash
                return
            batch = [first] if accept(first) else []
            deadline = loop.time() + within_s
            while len(batch) < max_events:
                if queue.empty():
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                    try:
                        event = await asyncio.wait_for(queue.get(), remaining)
                    except TimeoutError:
                        break
                    except StopAsyncIteration:  # stopping: the partial batch is read again next time
                        for event in batch:
                            unacked.discard(event.message)
                        return
                else:
                    event = queue.get_nowait()
                if accept(event):
                    batch.append(event)
            if batch:
                stream.events_total += len(batch)
                yield batch
    finally:
        stream._channel_stop_iteration(stream.channel)
        if started_here:
            await stream.stop()
            stream.service_reset()


# Faust drops a message when it enters a stream during a rebalance (flow control suspended) or when
# it was fetched before one (its ``generation_id`` is older than the consumer's), but not once it sits
# in a batch: such an event would be processed after the pre-rebalance commit and again when the
# consumer re-reads from that commit, a duplicate output and a click counted twice downstream.


def current_events(app: Any, events: Sequence[Any]) -> Sequence[Any]:
    """The events of ``events`` that may be processed now; the rest is read again after the rebalance.

    Nothing may be processed while a rebalance is under way (its commit has been made), nor anything
    fetched in an earlier generation. Dropped events are neither processed nor acked: the committed
    offset of their partition is at or before them, so the consumer delivers them again. They are
    taken out of the consumer's set of messages in progress, though (without marking them acked): the
    next rebalance waits until that set is empty, and a dropped message left in it made that wait
    last for ever (the mid-stream scale-out test checks it).
    """
    if not events:
        return events
    if not app.flow_control.is_active():
        fresh: Sequence[Any] = []
    else:
        generation = app.consumer_generation_id
        if all(event.message.generation_id == generation for event in events):
            return events
        fresh = [event for event in events if event.message.generation_id == generation]
    in_progress = getattr(app.consumer, "_unacked_messages", None)  # faust-streaming 0.15.3
    if in_progress is not None:
        kept = {id(event) for event in fresh}
        for event in events:
            if id(event) not in kept:
                in_progress.discard(event.message)
    log.info("dropped %d events fetched before the rebalance; they are read again", len(events) - len(fresh))
    return fresh
