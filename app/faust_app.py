"""The Faust application object and its topic handles. Nothing else: agents live in ``agents/``.

Configured once from :class:`app.settings.Settings` at import time, because Faust agents are declared
with decorators on a module-level app. Workers are separate processes (``ivt worker``), each with
its own environment, so one app per process is all we need.

All topics carry raw bytes: producers outside Python share them, so we parse and validate ourselves
(``app.events``) rather than let Faust's codecs or its metadata envelope near the wire.
"""

from __future__ import annotations

import faust

from app import topics
from app.rebalance import install as install_commit_before_revoke
from app.settings import Settings

__all__ = [
    "settings",
    "app",
    "clicks_topic",
    "clicks_by_ip_topic",
    "clicks_by_entity_topic",
    "clicks_dlq_topic",
    "verdicts_topic",
    "state_table",
]

settings = Settings.from_env()


def _broker_url(bootstrap: str) -> str:
    return ";".join(f"kafka://{host.strip()}" for host in bootstrap.split(",") if host.strip())


app = faust.App(
    settings.app_id,
    broker=_broker_url(settings.bootstrap_servers),
    store="rocksdb://",
    datadir=str(settings.data_dir / "worker"),
    autodiscover=False,
    # Topics are created by `ivt topics create` with their partitions and configs; Faust only
    # declares its own internal topics (changelogs, leader topic).
    topic_allow_declare=False,
    topic_partitions=settings.click_partitions,
    consumer_auto_offset_reset="earliest",
    # Keyed sends of one event go out in one produce request; Kafka batches do the rest.
    producer_linger=0.005,
    # aiokafka keeps one open batch per partition and a send into a full one *waits* until it is on
    # the wire. A verdict is about 1 KB (it logs 32 features), so Faust's 16 KB default made the
    # scoring stage wait for the broker every 16 verdicts of a partition, inside the batch.
    producer_max_batch_size=512 * 1024,
    producer_acks=-1,
    broker_session_timeout=settings.session_timeout_s,
    table_standby_replicas=settings.table_standby_replicas,
    broker_heartbeat_interval=min(3.0, settings.session_timeout_s / 3),
    broker_commit_every=10_000,
    broker_commit_interval=1.0,
    # Fetch and buffer sizes measured in benchmarks/FAUST_THROUGHPUT.md (about 31 us/event less).
    # At most 200 records per poll, not 2,000: Faust hands a poll's records to the streams one event-
    # loop round trip each, while the aiokafka thread prefetches the next poll; with 2,000 a stall
    # of a second or two left every later poll that much behind, for good (one live run in two at
    # 2,000 clicks/s sat at 3 s latency with the worker 40 % idle). With 200 the lag drains.
    broker_max_poll_records=200,
    consumer_max_fetch_size=4 * 1024 * 1024,
    stream_buffer_maxsize=16384,
    # An agent that raises, or a failed delivery, stops the whole worker (agents.delivery.acking).
    web_enabled=False,
    key_serializer="raw",
    value_serializer="raw",
)


install_commit_before_revoke(app, fetch_max_wait_ms=settings.fetch_max_wait_ms)


def drop_monitor_sensor() -> None:
    """Nothing reads Faust's Monitor (the web server is off) but it costs 6-8 us per event."""
    if app.monitor in set(app.sensors):
        app.sensors.remove(app.monitor)


@app.timer(interval=0.1, name="ack-idle-batches")
async def _ack_idle_batches() -> None:
    """Ack the last batch of each stage when no further batch comes along to do it."""
    from agents.delivery import ACKERS

    for acker in ACKERS:
        await acker.ack_done()


def _raw_topic(base: str) -> faust.TopicT:
    return app.topic(settings.topic(base), key_type=bytes, value_type=bytes, internal=False)


clicks_topic = _raw_topic(topics.CLICKS)
clicks_by_ip_topic = _raw_topic(topics.CLICKS_BY_IP)
clicks_dlq_topic = _raw_topic(topics.CLICKS_DLQ)
clicks_by_entity_topic = _raw_topic(topics.CLICKS_BY_ENTITY)
verdicts_topic = _raw_topic(topics.VERDICTS)


def rocksdb_options() -> dict[str, int]:
    """Explicit RocksDB memory for every table partition.

    Faust's defaults are a 2 GiB block cache and three 64 MiB write buffers *per partition database*,
    so memory grows with tables x partitions. Our values are small because each key holds one compact
    value (a few hundred bytes) and hot keys live in Faust's own key index in front of RocksDB.
    """
    mib = 1024 * 1024
    return {
        "block_cache_size": settings.rocksdb_block_cache_mb * mib,
        "block_cache_compressed_size": 0,
        "write_buffer_size": settings.rocksdb_write_buffer_mb * mib,
        "max_write_buffer_number": 2,
        "target_file_size_base": 16 * mib,
        "max_open_files": 256,
    }


def state_table(name: str, help_: str) -> faust.Table:
    """A RocksDB table of raw bytes with a changelog, partitioned like the stream that updates it."""
    if name not in topics.TABLES:
        raise ValueError(f"table {name!r} is not in app.topics.TABLES, so its changelog would not be created")
    return app.Table(
        name,
        default=None,
        key_type=bytes,
        value_type=bytes,
        # bytes in, bytes out: the app's key/value serializer is "raw" (see above)
        partitions=settings.click_partitions,
        options=rocksdb_options(),
        help=help_,
    )
