"""Stage 2: per-IP counters. Consumes ``clicks-by-ip``, keeps one compact state value per IP in a
RocksDB table, and forwards each click with its IP features to ``clicks-by-entity``, on the
partition of its user (or session) for the next stage. The clicks of one batch bound for one partition
travel as one record (a bundle of up to ``IVT_BATCH_MAX_EVENTS``, :func:`app.events.encode_entity_bundle`):
a record per click cost a send here and a pass through Faust's consumer in the next stage.

With ``IVT_CLICKS_KEYED_BY_IP=true`` it consumes ``clicks`` directly and is also the validation stage
(same checks, same DLQ records, :mod:`app.validation`; a click keyed by anything but its IP is
rejected, since its IP's state may live on another partition).

The state and the features come from :func:`app.features.ip_stage`, the same function offline
dataset building and replay run, so live and offline features are identical for the same clicks in
the same order. One table write per click (one changelog record), whatever the number of windows.
"""

from __future__ import annotations

import faust

from agents.delivery import acking
from agents.event_batches import take_batches
from agents.faust_compat import current_events
from agents.headers import forward_headers
from agents.record_batches import RecordBatches, fetch_metadata, kafka_producer
from agents.sweeper import PartitionSweeper
from agents.table_writes import TableWriter
from app.events import encode_entity_bundle
from app.exceptions import InvalidEvent
from app.faust_app import (
    app,
    clicks_by_entity_topic,
    clicks_by_ip_topic,
    clicks_dlq_topic,
    clicks_topic,
    drop_monitor_sensor,
    settings,
    state_table,
)
from app.features import IpState, ip_stage
from app.metrics import STATS
from app.topics import key_partitions
from app.validation import dlq_record, route, route_keyed

__all__ = ["ip_counters", "ip_states"]

ip_states = state_table("ip-state", "IpState bytes per client IP (app.features.state)")
ip_writer = TableWriter(ip_states)
sweeper = PartitionSweeper(ip_writer, IpState, every_ms=int(settings.state_sweep_s * 1000))


KEYED_BY_IP = settings.clicks_keyed_by_ip


@app.agent(clicks_topic if KEYED_BY_IP else clicks_by_ip_topic, name="ip-counters")
async def ip_counters(stream: faust.StreamT[bytes]) -> None:
    drop_monitor_sensor()
    producer, kafka, max_bytes = app.producer, kafka_producer(app), settings.max_event_bytes
    partitions, bundle_max = settings.click_partitions, settings.batch_max_events
    async with acking(stream, "ip-counters") as acker:
        out, dlq = clicks_by_entity_topic.get_topic_name(), clicks_dlq_topic.get_topic_name()
        await fetch_metadata(kafka, out, ip_writer.changelog)
        async for events in take_batches(stream, 1000, settings.batch_max_wait_ms / 1000):
            events = current_events(app, events)
            deliveries: list = []
            routed: list[tuple] = []  # (click, IP features, headers) in order, for their bundles
            entity_keys: list[bytes] = []
            for event in events:
                message = event.message
                if KEYED_BY_IP:
                    click = route_keyed(event.value, message.key, max_bytes)
                else:  # only the validation stage writes here: a bad record is a bug, keep it anyway
                    click = route(event.value, max_bytes)
                if isinstance(click, InvalidEvent):
                    key, value, headers = dlq_record(message, click.reason)
                    deliveries.append(await producer.send(dlq, key, value, None, None, headers))
                    continue
                partition, key = message.partition, click.ip.encode()
                state, features = ip_stage(click, ip_writer.get(partition, key))
                ip_writer.put(partition, key, state.to_bytes())
                sweeper.maybe_sweep(partition, click.event_time_ms)
                routed.append((click, features, forward_headers(message.headers)))
                entity_keys.append(click.entity_key.encode())
            bundles: dict[int, list] = {}
            for destination, item in zip(key_partitions(entity_keys, partitions), routed, strict=True):
                bundles.setdefault(destination, []).append(item)
            batches = RecordBatches(kafka)
            for destination, bundle in bundles.items():
                for start in range(0, len(bundle), bundle_max):
                    batches.add(
                        out, destination, None, encode_entity_bundle(bundle[start : start + bundle_max])
                    )
                STATS.ip_stage_clicks += len(bundle)
            deliveries += [batch.future for batch in await batches.send()]
            deliveries += await ip_writer.flush(kafka)
            await acker.submit(events, deliveries)
