"""Stage 1: validate raw clicks, route bad bytes to the DLQ, repartition good clicks by IP.

Bad input never stops the stream: each event that breaks the contract goes to ``clicks-dlq`` with its
original key and bytes untouched, and headers saying why and where it came from. Good clicks are
re-serialised in canonical form (normalised IP, UTC time) and keyed by IP, which is the partitioning
the IP-counter stage needs. Headers from the producer (e.g. the simulator's intended send time) are
carried along so latency can be measured end to end.
"""

from __future__ import annotations

import logging

import faust

from agents.delivery import acking
from agents.faust_compat import current_events
from agents.headers import forward_headers
from app.events import Click, parse_click
from app.exceptions import InvalidEvent
from app.faust_app import (
    app,
    clicks_by_ip_topic,
    clicks_dlq_topic,
    clicks_topic,
    drop_monitor_sensor,
    settings,
)

__all__ = ["validate_clicks", "dlq_headers", "route"]

log = logging.getLogger(__name__)

DLQ_REASON = "ivt-dlq-reason"
DLQ_TOPIC = "ivt-dlq-topic"
DLQ_PARTITION = "ivt-dlq-partition"
DLQ_OFFSET = "ivt-dlq-offset"


def dlq_headers(reason: str, topic: str, partition: int, offset: int) -> list[tuple[str, bytes]]:
    """Headers that say why an event was rejected and where the original lives."""
    return [
        (DLQ_REASON, reason.encode("utf-8", "replace")[:512]),
        (DLQ_TOPIC, topic.encode()),
        (DLQ_PARTITION, str(partition).encode()),
        (DLQ_OFFSET, str(offset).encode()),
    ]


def route(raw: object, max_bytes: int) -> Click | InvalidEvent:
    """Pure routing decision: the parsed click, or the reason it is rejected."""
    if not isinstance(raw, bytes | bytearray):
        return InvalidEvent(f"expected bytes, got {type(raw).__name__}")
    try:
        return parse_click(bytes(raw), max_bytes)
    except InvalidEvent as exc:
        return exc


@app.agent(clicks_topic, name="validate-clicks")
async def validate_clicks(stream: faust.StreamT[bytes]) -> None:
    """Every event ends up in exactly one place: ``clicks-by-ip`` or ``clicks-dlq``."""
    drop_monitor_sensor()
    producer = app.producer
    async with acking(stream, "validate-clicks") as acker:
        max_bytes, out, dlq = (
            settings.max_event_bytes,
            clicks_by_ip_topic.get_topic_name(),
            clicks_dlq_topic.get_topic_name(),
        )
        async for events in stream.noack_take(1000, within=settings.batch_max_wait_ms / 1000):
            events = current_events(app, events)
            deliveries = []
            for event in events:
                message = event.message
                outcome = route(event.value, max_bytes)
                if isinstance(outcome, InvalidEvent):
                    headers = dlq_headers(outcome.reason, message.topic, message.partition, message.offset)
                    value = message.value if isinstance(message.value, bytes) else b""
                    deliveries.append(await producer.send(dlq, message.key, value, None, None, headers))
                    log.debug(
                        "dlq %s/%s@%s: %s", message.topic, message.partition, message.offset, outcome.reason
                    )
                    continue
                headers = forward_headers(message.headers)
                deliveries.append(
                    await producer.send(out, outcome.ip.encode(), outcome.to_json(), None, None, headers)
                )
            await acker.submit(events, deliveries)
