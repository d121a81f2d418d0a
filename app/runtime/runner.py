"""The one loop every stream stage runs in a worker: take a batch, drop what a rebalance made
stale, hand plain records to the stage's logic, send its outputs, flush its state, ack in order.

The at-least-once invariant this keeps is written once, in :mod:`app.runtime`.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

from app.runtime.acks import acking
from app.runtime.app import Runtime
from app.runtime.batches import current_events, take_batches
from app.runtime.producer import RecordBatches, fetch_metadata
from app.runtime.stage import InputRecord, OutputRecord, Stage

__all__ = ["bind_stage", "run_stage", "send_records"]


def bind_stage(runtime: Runtime, stage: Stage) -> None:
    """Register ``stage`` as an agent of ``runtime``'s app, over its source topic."""

    async def body(stream: Any) -> None:
        await run_stage(runtime, stream, stage)

    runtime.agent(stage.source, stage.name, body)


async def send_records(producer: Any, kafka: Any, records: list[OutputRecord]) -> list[asyncio.Future[Any]]:
    """Append ``records`` to the producer's batches; their delivery futures.

    Records with a partition go straight into aiokafka's open batch of that partition
    (:class:`RecordBatches`); the rare ones without (DLQ entries) go through Faust's producer, whose
    partitioner picks one.
    """
    deliveries: list[asyncio.Future[Any]] = []
    batches = RecordBatches(kafka)
    for topic, partition, key, value, headers in records:
        if partition is None:
            deliveries.append(await producer.send(topic, key, value, None, None, headers))
        else:
            batches.add(topic, partition, key, value, headers)
    deliveries += [batch.future for batch in await batches.send()]
    return deliveries


async def run_stage(runtime: Runtime, stream: Any, stage: Stage) -> None:
    """Run ``stage`` over ``stream`` until the worker stops (the body of its agent)."""
    runtime.drop_monitor_sensor()
    producer, kafka = runtime.app.producer, runtime.kafka_producer()
    outputs = list(stage.outputs) + [table.changelog for table in stage.tables]
    await fetch_metadata(kafka, *outputs)
    stage.open({topic: len(await kafka.partitions_for(topic)) for topic in stage.outputs})
    perf_counter, thread_time = time.perf_counter, time.thread_time
    waiting: deque[Sequence[Any]] = deque()  # batches processed, not yet settled by the stage
    submitted = 0
    deliveries: list[asyncio.Future[Any]] = []
    async with acking(stream, stage.name, runtime.ackers) as acker:
        async for events in take_batches(stream, stage.max_events, stage.max_wait_s, idle_s=stage.idle_s):
            events = current_events(runtime.app, events)
            batch = [
                InputRecord(m.topic, m.partition, m.offset, m.key, e.value, m.headers)
                for e in events
                for m in (e.message,)
            ]
            if events or stage.holding():
                waiting.append(events)
                chunks = stage.process(batch)
                first = True
                while True:
                    if not first:
                        await asyncio.sleep(0)  # let the producer send the last chunk while this one is made
                    first = False
                    started, started_cpu = perf_counter(), thread_time()
                    chunk = next(chunks, None)
                    if chunk is None:
                        break
                    deliveries += await send_records(producer, kafka, chunk)
                    stage.chunk_sent((perf_counter() - started) * 1e6, (thread_time() - started_cpu) * 1e6)
                started, started_cpu = perf_counter(), thread_time()
                for table in stage.tables:
                    deliveries += await table.flush(kafka)
                stage.flushed((perf_counter() - started) * 1e6, (thread_time() - started_cpu) * 1e6)
            # A batch is acked once every record of it was processed (a stage may hold some back) and
            # every output sent so far is delivered: the outputs go with the first batch settled now.
            settled = stage.settled(submitted + len(waiting))
            while submitted < settled:
                await acker.submit(waiting.popleft(), deliveries)
                deliveries, submitted = [], submitted + 1
