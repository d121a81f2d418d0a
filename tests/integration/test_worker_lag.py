"""What the demo waits on: the worker group's lag on its input topics, not totals of records written."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import OffsetAndMetadata

from app.cli.demo import worker_inputs, worker_lag
from app.contracts import topics
from app.contracts.settings import Settings

pytestmark = pytest.mark.integration


async def _publish(settings: Settings, base: str, n: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers)
    await producer.start()
    try:
        for k in range(n):
            await producer.send_and_wait(settings.topic(base), b"x", key=str(k).encode())
    finally:
        await producer.stop()


async def _commit_to_end(settings: Settings, base: str) -> None:
    """Commit the group's offsets of one topic at its end, as a worker does once it has processed it."""
    name = settings.topic(base)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers, group_id=settings.app_id, enable_auto_commit=False
    )
    await consumer.start()
    try:
        tps = [TopicPartition(name, p) for p in consumer.partitions_for_topic(name) or ()]
        if not tps:
            await consumer._client.force_metadata_update()
            tps = [TopicPartition(name, p) for p in consumer.partitions_for_topic(name)]
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        await consumer.commit({tp: OffsetAndMetadata(end, "") for tp, end in ends.items()})
    finally:
        await consumer.stop()


def test_lag_counts_what_the_group_has_not_committed_on_its_inputs_only(kafka_settings: Settings) -> None:
    keyed = replace(kafka_settings, clicks_keyed_by_ip=True)
    assert worker_inputs(keyed) == [keyed.topic(topics.CLICKS), keyed.topic(topics.CLICKS_BY_ENTITY)]
    assert keyed.topic(topics.CLICKS_BY_IP) in worker_inputs(replace(keyed, clicks_keyed_by_ip=False))

    asyncio.run(_publish(keyed, topics.CLICKS, 5))
    asyncio.run(_publish(keyed, topics.CLICKS_BY_ENTITY, 3))
    asyncio.run(_publish(keyed, topics.VERDICTS, 20))  # old verdicts: "verdicts >= clicks" already
    asyncio.run(_publish(keyed, topics.CLICKS_BY_IP, 4))  # not read by a worker fed keyed clicks
    assert asyncio.run(worker_lag(keyed)) == 8  # a group that never committed starts at the beginning

    asyncio.run(_commit_to_end(keyed, topics.CLICKS))
    assert asyncio.run(worker_lag(keyed)) == 3
    asyncio.run(_commit_to_end(keyed, topics.CLICKS_BY_ENTITY))
    assert asyncio.run(worker_lag(keyed)) == 0
