"""Stage 1: validate raw clicks, route bad bytes to the DLQ, repartition good clicks by IP.

Bad input never stops the stream: each event that breaks the contract goes to ``clicks-dlq`` with its
original key and bytes untouched, and headers saying why and where it came from
(:mod:`app.validation`). Good clicks are re-serialised in canonical form (normalised IP, UTC time) and
keyed by IP, on the partition Kafka's default partitioner picks for the IP, which is the
partitioning the IP-counter stage needs (appended per partition, :mod:`agents.record_batches`). Headers from the producer (e.g. the
simulator's intended send time) are carried along so latency can be measured end to end.

When producers already key ``clicks`` by IP (``IVT_CLICKS_KEYED_BY_IP=true``) this agent is not
registered: the IP-counter stage consumes ``clicks`` and validates itself, which saves a whole hop
through Kafka per click.
"""

from __future__ import annotations

import faust

from agents.delivery import acking
from agents.event_batches import take_batches
from agents.faust_compat import current_events
from agents.headers import forward_headers
from agents.record_batches import RecordBatches, fetch_metadata, kafka_producer
from app.exceptions import InvalidEvent
from app.faust_app import (
    app,
    clicks_by_ip_topic,
    clicks_dlq_topic,
    clicks_topic,
    drop_monitor_sensor,
    settings,
)
from app.topics import key_partitions
from app.validation import dlq_record, route

__all__ = ["validate_clicks"]


async def validate_clicks(stream: faust.StreamT[bytes]) -> None:
    """Every event ends up in exactly one place: ``clicks-by-ip`` or ``clicks-dlq``."""
    drop_monitor_sensor()
    producer, kafka = app.producer, kafka_producer(app)
    async with acking(stream, "validate-clicks") as acker:
        max_bytes, out, dlq = (
            settings.max_event_bytes,
            clicks_by_ip_topic.get_topic_name(),
            clicks_dlq_topic.get_topic_name(),
        )
        await fetch_metadata(kafka, out)
        async for events in take_batches(stream, 1000, settings.batch_max_wait_ms / 1000):
            events = current_events(app, events)
            deliveries, batches = [], RecordBatches(kafka)
            valid: list[tuple[bytes, bytes, list[tuple[str, bytes]]]] = []  # key, value, headers
            for event in events:
                message = event.message
                outcome = route(event.value, max_bytes)
                if isinstance(outcome, InvalidEvent):  # rare: one send each
                    key, value, headers = dlq_record(message, outcome.reason)
                    deliveries.append(await producer.send(dlq, key, value, None, None, headers))
                    continue
                valid.append((outcome.ip.encode(), outcome.to_json(), forward_headers(message.headers)))
            partitions = key_partitions([key for key, _, _ in valid], await batches.partitions(out))
            for partition, (key, value, headers) in zip(partitions, valid, strict=True):
                batches.add(out, partition, key, value, headers)
            deliveries += [batch.future for batch in await batches.send()]
            await acker.submit(events, deliveries)


if not settings.clicks_keyed_by_ip:
    validate_clicks = app.agent(clicks_topic, name="validate-clicks")(validate_clicks)  # type: ignore[assignment]
