"""Stage 2: per-IP counters. Consumes ``clicks-by-ip``, keeps one compact state value per IP, and
forwards each click with its IP features to ``clicks-by-entity``, on the partition of its user (or
session) for the next stage. The clicks of one batch bound for one partition travel as one record (a
bundle of up to ``IVT_BATCH_MAX_EVENTS``, :func:`app.contracts.events.encode_entity_bundle`).

With ``IVT_CLICKS_KEYED_BY_IP=true`` it consumes ``clicks`` directly and is also the validation stage
(same checks, same DLQ records, :mod:`app.contracts.validation`; a click keyed by anything but its IP
is rejected, since its IP's state may live on another partition).

The state and the features come from :func:`app.features.ip_stage`, the same function offline
dataset building and replay run, so live and offline features are identical for the same clicks in
the same order. One state write per click, whatever the number of windows.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from agents.sweeper import PartitionSweeper
from app.contracts import topics
from app.contracts.events import WATERMARKS_HEADER, encode_entity_bundle, encode_watermarks
from app.contracts.exceptions import InvalidEvent
from app.contracts.headers import forward_headers
from app.contracts.settings import Settings
from app.contracts.topics import key_partitions
from app.contracts.validation import dlq_record, route, route_keyed
from app.features import IpState, ip_stage
from app.runtime.app import Runtime
from app.runtime.runner import bind_stage
from app.runtime.stage import InputRecord, OutputRecord, Stage, StateTable
from app.runtime.stats import STATS
from app.runtime.tables import TableWriter

__all__ = ["IpCounters", "bind"]


class IpCounters(Stage):
    name = "ip-counters"

    def __init__(self, settings: Settings, ip_states: StateTable) -> None:
        self.keyed_by_ip = settings.clicks_keyed_by_ip
        self.source = topics.CLICKS if self.keyed_by_ip else topics.CLICKS_BY_IP
        self.max_bytes, self.bundle_max = settings.max_event_bytes, settings.batch_max_events
        self.max_wait_s = settings.batch_max_wait_ms / 1000
        # bundles go to their entity's partition of the score stage's state tables
        self.entity_partitions = settings.click_partitions
        self.out, self.dlq = settings.topic(topics.CLICKS_BY_ENTITY), settings.topic(topics.CLICKS_DLQ)
        self.outputs = (self.out,)
        self.states = ip_states
        self.tables = (ip_states,)
        self.sweeper = PartitionSweeper(ip_states, IpState, every_ms=int(settings.state_sweep_s * 1000))
        #: Newest event time processed per input partition: the watermark each bundle announces
        #: (agents/ordering.py), so the next stage can restore event-time order.
        self.watermarks: dict[int, int] = {}
        self.ordering = settings.reorder_max_wait_ms > 0

    def process(self, batch: Sequence[InputRecord]) -> Iterator[list[OutputRecord]]:
        outputs: list[OutputRecord] = []
        routed: list[tuple[Any, Any, list[tuple[str, bytes]]]] = []  # (click, IP features, headers)
        entity_keys: list[bytes] = []
        states, sweeper, keyed, max_bytes = self.states, self.sweeper, self.keyed_by_ip, self.max_bytes
        watermarks = self.watermarks
        sources: set[int] = set()
        for record in batch:
            if keyed:
                click = route_keyed(record.value, record.key, max_bytes)
            else:  # only the validation stage writes here: a bad record is a bug, keep it anyway
                click = route(record.value, max_bytes)
            if isinstance(click, InvalidEvent):
                outputs.append(OutputRecord(self.dlq, None, *dlq_record(record, click.reason)))
                continue
            partition, key = record.partition, click.ip.encode()
            sources.add(partition)
            if click.event_time_ms > watermarks.get(partition, -1):
                watermarks[partition] = click.event_time_ms
            state, features = ip_stage(click, states.get(partition, key))
            states.put(partition, key, state.to_bytes())
            sweeper.maybe_sweep(partition, click.event_time_ms)
            routed.append((click, features, forward_headers(record.headers)))
            entity_keys.append(click.entity_key.encode())
        bundles: dict[int, list[Any]] = {}
        for destination, item in zip(
            key_partitions(entity_keys, self.entity_partitions), routed, strict=True
        ):
            bundles.setdefault(destination, []).append(item)
        out, bundle_max = self.out, self.bundle_max
        marks = [(WATERMARKS_HEADER, encode_watermarks({p: watermarks[p] for p in sources}))]
        for destination in range(self.entity_partitions) if self.ordering and sources else bundles:
            bundle = bundles.get(destination, [])
            starts = range(0, len(bundle), bundle_max) or range(1)  # an empty bundle: watermarks only
            for start in starts:
                value = encode_entity_bundle(bundle[start : start + bundle_max])
                headers = marks if self.ordering and start == starts[-1] else []
                outputs.append(OutputRecord(out, destination, None, value, headers))
            STATS.ip_stage_clicks += len(bundle)
        yield outputs


def bind(runtime: Runtime) -> None:
    table = runtime.table("ip-state", "IpState bytes per client IP (app.features.state)")
    bind_stage(runtime, IpCounters(runtime.settings, TableWriter(table)))
