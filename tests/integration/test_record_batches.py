"""Records appended to aiokafka's open batches (app/runtime/producer.py) reach the broker whole,
in order, on the partition named, and each batch reports the offset of its last record."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from app.contracts.settings import Settings
from app.contracts.topics import TopicSpec, key_partition
from app.kafka.admin import ensure_topics_async
from app.runtime.producer import RecordBatches

pytestmark = pytest.mark.integration


async def _read_all(settings: Settings, topic: str, partitions: int) -> dict[int, list]:
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap_servers, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        got: dict[int, list] = {p: [] for p in range(partitions)}
        while sum(len(v) for v in got.values()) < sum(ends.values()):
            for tp, messages in (await consumer.getmany(timeout_ms=1000)).items():
                got[tp.partition] += messages
        return got
    finally:
        await consumer.stop()


async def _send(settings: Settings, topic: str, records: list[tuple[int, bytes, bytes]], **options) -> list:
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all", **options)
    await producer.start()
    try:
        batches = RecordBatches(producer)
        for partition, key, value in records:
            batches.add(topic, partition, key, value, [("ivt-n", value)])
        assert len(batches) == len(records)
        sent = await batches.send()
        assert len(batches) == 0
        await asyncio.gather(*(batch.future for batch in sent))
        return sent
    finally:
        await producer.stop()


async def _scratch_topic(settings: Settings, partitions: int) -> str:
    topic = settings.topic("record-batches")
    await ensure_topics_async(settings, [TopicSpec(topic, partitions, "test scratch topic")])
    return topic


def test_records_land_on_their_partition_in_order_with_headers_and_last_offsets(
    kafka_settings: Settings,
) -> None:
    async def run() -> None:
        topic = await _scratch_topic(kafka_settings, 3)
        keys = [f"click-{n}".encode() for n in range(300)]
        records = [(key_partition(k, 3), k, str(n).encode()) for n, k in enumerate(keys)]
        sent = await _send(kafka_settings, topic, records)
        got = await _read_all(kafka_settings, topic, 3)
        for partition in range(3):
            expected = [(k, v) for p, k, v in records if p == partition]
            assert [(m.key, m.value) for m in got[partition]] == expected
            assert all(m.headers == (("ivt-n", m.value),) for m in got[partition])
            last = [b.last_offset for b in sent if b.partition == partition]
            assert last and max(last) == got[partition][-1].offset
        # the partition named is the one Kafka's default partitioner picks for the key
        producer = AIOKafkaProducer(bootstrap_servers=kafka_settings.bootstrap_servers)
        await producer.start()
        try:
            metadata = await producer.send_and_wait(topic, b"probe", key=keys[0])
        finally:
            await producer.stop()
        assert metadata.partition == records[0][0]

    asyncio.run(run())


def test_records_beyond_one_batch_wait_for_the_next_batch_and_keep_their_order(
    kafka_settings: Settings,
) -> None:
    async def run() -> None:
        topic = await _scratch_topic(kafka_settings, 1)
        records = [(0, None, f"{n:04d}".encode() * 50) for n in range(200)]  # 200 x 200 bytes
        sent = await _send(kafka_settings, topic, records, max_batch_size=4096)
        assert len(sent) > 5  # ~20 records per 4 KiB batch
        got = (await _read_all(kafka_settings, topic, 1))[0]
        assert [m.value for m in got] == [v for _, _, v in records]
        assert [b.last_offset for b in sent] == sorted(b.last_offset for b in sent)
        assert sent[-1].last_offset == got[-1].offset

    asyncio.run(run())
