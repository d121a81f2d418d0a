"""Stage 2: per-IP counters. Consumes ``clicks-by-ip``, keeps one compact state value per IP in a
RocksDB table, and forwards each click with its IP features to ``clicks-by-entity``, keyed by user
(or session) for the next stage.

The state and the features come from :func:`app.features.ip_stage`, the same function offline
dataset building and replay run, so live and offline features are identical for the same clicks in
the same order. One table write per click (one changelog record), whatever the number of windows.
"""

from __future__ import annotations

import logging

import faust

from agents.delivery import acking
from agents.faust_compat import current_events, make_current
from agents.headers import forward_headers
from agents.sweeper import PartitionSweeper
from app.events import encode_ip_enriched, parse_click
from app.exceptions import InvalidEvent
from app.faust_app import app, clicks_by_entity_topic, clicks_by_ip_topic, settings, state_table
from app.features import IpState, ip_stage
from app.metrics import STATS

__all__ = ["ip_counters", "ip_states"]

log = logging.getLogger(__name__)

ip_states = state_table("ip-state", "IpState bytes per client IP (app.features.state)")
sweeper = PartitionSweeper(ip_states, IpState, every_ms=int(settings.state_sweep_s * 1000))


@app.agent(clicks_by_ip_topic, name="ip-counters")
async def ip_counters(stream: faust.StreamT[bytes]) -> None:
    producer = app.producer
    async with acking(stream, "ip-counters") as acker:
        out = clicks_by_entity_topic.get_topic_name()
        async for events in stream.noack_take(1000, within=settings.batch_max_wait_ms / 1000):
            events = current_events(app, events)
            deliveries = []
            for event in events:
                message = event.message
                try:
                    click = parse_click(event.value, settings.max_event_bytes)
                except InvalidEvent as exc:  # only our validation stage writes here; say so loudly, go on
                    log.error(
                        "undecodable record on %s@%s: %s", message.partition, message.offset, exc.reason
                    )
                    continue
                make_current(event)  # table partition = this event's partition (see agents.faust_compat)
                key = click.ip.encode()
                state, features = ip_stage(click, ip_states.get(key))
                ip_states[key] = state.to_bytes()
                sweeper.maybe_sweep(message.partition, click.event_time_ms)
                value = encode_ip_enriched(click, features)
                headers = forward_headers(message.headers)
                deliveries.append(
                    await producer.send(out, click.entity_key.encode(), value, None, None, headers)
                )
            STATS.ip_stage_clicks += len(deliveries)
            await acker.submit(events, deliveries)
