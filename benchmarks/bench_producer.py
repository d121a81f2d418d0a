"""CPU cost per message of aiokafka's two public ways to hand it records (a script, not a test).

``producer.send`` returns one future per message; ``create_batch`` + ``send_batch`` let the caller
fill one record batch per topic-partition and get one future per batch. This measures both for
verdict-sized records (900 B, one header, keyed, 32 records per stage batch as
``IVT_BATCH_MAX_EVENTS``), in CPU time of the sending thread, up to the records being queued and up
to their delivery (acks=all), on a local broker started here. The worker uses neither per record: it
appends to the open batch of each partition (app/runtime/producer.py), which bench_live.py's raw
pass-through rows measure.

Usage: ``python benchmarks/bench_producer.py [--messages 30000] [--repeat 2]``
(``make bench-short`` runs ``--messages 3000 --repeat 1``).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import murmur2

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.contracts import topics  # noqa: E402
from app.contracts.settings import Settings  # noqa: E402
from app.kafka.admin import ensure_topics  # noqa: E402
from app.kafka.local import LocalBroker  # noqa: E402

VALUE = b"x" * 900
HEADERS = [("ivt-intended-ns", b"1795400000000000000")]
STAGE_BATCH = 32


async def per_message(producer: AIOKafkaProducer, topic: str, n: int) -> tuple[float, float]:
    started = time.thread_time()
    futures = [await producer.send(topic, VALUE, key=f"k{i}".encode(), headers=HEADERS) for i in range(n)]
    queued = time.thread_time() - started
    await asyncio.gather(*futures)
    return queued / n * 1e6, (time.thread_time() - started) / n * 1e6


async def per_batch(producer: AIOKafkaProducer, topic: str, n: int) -> tuple[float, float]:
    partitions = sorted(await producer.partitions_for(topic))
    started = time.thread_time()
    futures = []
    for first in range(0, n, STAGE_BATCH):
        builders = {}
        for i in range(first, min(n, first + STAGE_BATCH)):
            key = f"k{i}".encode()
            partition = partitions[(murmur2(key) & 0x7FFFFFFF) % len(partitions)]  # aiokafka's default
            builder = builders.get(partition)
            if builder is None:
                builder = builders[partition] = producer.create_batch()
            builder.append(key=key, value=VALUE, timestamp=None, headers=HEADERS)
        for partition, builder in builders.items():
            builder.close()
            futures.append(await producer.send_batch(builder, topic, partition=partition))
    queued = time.thread_time() - started
    await asyncio.gather(*futures)
    return queued / n * 1e6, (time.thread_time() - started) / n * 1e6


async def run(settings: Settings, n: int, repeat: int) -> None:
    # The worker's producer settings (app/runtime/app.py): 5 ms linger, 512 KB batches, acks=all.
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap_servers, linger_ms=5, max_batch_size=512 * 1024, acks="all"
    )
    await producer.start()
    try:
        topic = settings.topic(topics.VERDICTS)
        await producer.partitions_for(topic)
        for _ in range(repeat):
            send_q, send_d = await per_message(producer, topic, n)
            batch_q, batch_d = await per_batch(producer, topic, n)
            print(
                f"{n:,} messages: send {send_q:.1f} us/msg queued, {send_d:.1f} delivered; "
                f"create_batch+send_batch ({STAGE_BATCH} per stage batch) {batch_q:.1f} / {batch_d:.1f}"
            )
    finally:
        await producer.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=30_000)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ivt-bench-producer-"))
    base = Settings.from_env(cache_dir=ROOT / ".cache")
    broker = LocalBroker(base, state_dir=work / "broker", free_ports=True)
    state = broker.start()
    try:
        settings = Settings.from_env(bootstrap_servers=state.bootstrap, topic_prefix="bp-")
        ensure_topics(settings)
        asyncio.run(run(settings, args.messages, args.repeat))
    finally:
        broker.stop()


if __name__ == "__main__":
    main()
