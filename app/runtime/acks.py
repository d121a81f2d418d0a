"""At-least-once batches for Faust agents: outputs on the broker before their inputs are acked.

Every stage takes micro-batches (:func:`app.runtime.batches.take_batches`, which acks nothing), appends its
outputs to the producer's batches (:mod:`app.runtime.producer`, without Faust's ``Topic.send``
layer or a future per record) and hands the batch with its delivery futures to an
:class:`InOrderAcker`. Batches are acked strictly in the order they were taken and only once all
their outputs are acknowledged by the broker, so a committed offset never passes an event whose
output is not stored. After a failed delivery nothing more is acked and the worker shuts itself down
(SIGTERM to its own process: Faust commits what was acked and stops), rather than letting the agent
be restarted over an unacked gap (faust-streaming #606). A restart re-reads from the last committed
offset: duplicates are possible, loss is not.

An agent that raises is treated the same way (:func:`acking`). Faust's supervisor would restart the
agent with a fresh stream, but the batches the dead agent held stay unacked for ever: commits stop at
the first of them and the next rebalance waits on them, a silent stall. A worker that stops loudly
and resumes from its last commit is the honest alternative.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections import deque
from collections.abc import AsyncIterator, Sequence
from typing import Any

from faust.types.tuples import ack_lock

from app.runtime.rebalance import processed_acks

__all__ = ["InOrderAcker", "MAX_BATCHES_IN_FLIGHT", "acking", "stop_worker"]

log = logging.getLogger(__name__)

#: Batches whose outputs may still be on their way to the broker before the agent waits.
MAX_BATCHES_IN_FLIGHT = 2


class InOrderAcker:
    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.pending: deque[tuple[Sequence[Any], asyncio.Future[Any]]] = deque()
        self.failed = False

    async def submit(self, events: Sequence[Any], deliveries: list[asyncio.Future[Any]]) -> None:
        """Queue a processed batch; wait for the oldest when too many are in flight; ack what is done."""
        self.pending.append((events, asyncio.gather(*deliveries)))
        if len(self.pending) > MAX_BATCHES_IN_FLIGHT:
            await asyncio.wait([self.pending[0][1]])
        await self.ack_done()

    async def ack_done(self) -> None:
        """Ack finished batches from the oldest on; stop at the first one still in flight."""
        while not self.failed and self.pending and self.pending[0][1].done():
            events, future = self.pending[0]
            error = future.exception()
            if error is not None:  # this batch and every later one stay unacked
                stop_worker(self, f"delivery failed ({error!r})")
                return
            self.pending.popleft()
            ack_processed(self.stream, events)


def ack_processed(stream: Any, events: Sequence[Any]) -> None:
    """What ``await stream.ack(event)`` does for each event (faust-streaming 0.15.3), as one call.

    The message's ack (the last stream's ack marks its offset committable) and the ``on_message_out``
    sensor hook that pairs with the ``on_message_in`` of :func:`app.runtime.batches.take_batches`.
    Not the per-stream ``on_stream_event_out`` hook, whose ``in`` twin the stages do not call either.
    One lock and no coroutine for the whole batch instead of a coroutine and four calls per event
    (each click is an event in the IP stage). Marked as processed (:func:`app.runtime.rebalance.processed_acks`)
    so the consumer records them; nothing in here may suspend.
    """
    consumer = stream.app.consumer
    on_message_out = stream._on_message_out
    with processed_acks(consumer), ack_lock:
        for event in events:
            message = event.message
            if message.ack(consumer):
                on_message_out(message.tp, message.offset, message)


def stop_worker(acker: InOrderAcker, why: str) -> None:
    """Ack nothing more and ask this worker to stop: Faust commits what was acked, then exits."""
    acker.failed = True
    log.critical("%s: stopping the worker; it resumes from the last commit", why)
    os.kill(os.getpid(), signal.SIGTERM)


@contextlib.asynccontextmanager
async def acking(stream: Any, agent_name: str, registry: list[InOrderAcker]) -> AsyncIterator[InOrderAcker]:
    """The agent's acker, kept in ``registry`` (the app's idle-ack timer acks the tail of each)
    while the agent runs; an exception stops the worker.

    After a crash the agent does not return (Faust's supervisor would restart it over the unacked
    batches): it waits for the shutdown it asked for, which cancels it.
    """
    acker = InOrderAcker(stream)
    registry.append(acker)
    try:
        yield acker
    except Exception:
        log.exception("agent %s crashed", agent_name)
        stop_worker(acker, f"agent {agent_name} crashed")
        await asyncio.Event().wait()
    finally:
        registry.remove(acker)
