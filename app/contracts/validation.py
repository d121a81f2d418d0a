"""The click contract's check and the DLQ record of a rejected event: pure, no Faust in it.

Used by the validation stage (agents.validate) and, when producers key ``clicks`` by IP, by the
IP-counter stage that validates in its place (agents.ip_counters). Kept out of the agent modules
because importing an agent module registers its agent on the app.

A rejected event goes to ``clicks-dlq`` with its original key and bytes untouched, and headers that
say why and where the original lives.
"""

from __future__ import annotations

import logging
from typing import Any

from app.contracts.events import Click, parse_click
from app.contracts.exceptions import InvalidEvent

__all__ = [
    "DLQ_REASON",
    "DLQ_TOPIC",
    "DLQ_PARTITION",
    "DLQ_OFFSET",
    "dlq_headers",
    "dlq_record",
    "route",
    "route_keyed",
]

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


def dlq_record(message: Any, reason: str) -> tuple[bytes | None, bytes, list[tuple[str, bytes]]]:
    """Key, value and headers of the DLQ record for a rejected Kafka message."""
    value = message.value if isinstance(message.value, bytes) else b""
    log.debug("dlq %s/%s@%s: %s", message.topic, message.partition, message.offset, reason)
    return message.key, value, dlq_headers(reason, message.topic, message.partition, message.offset)


def route(raw: object, max_bytes: int) -> Click | InvalidEvent:
    """The parsed click, or the reason it is rejected."""
    if not isinstance(raw, bytes | bytearray):
        return InvalidEvent(f"expected bytes, got {type(raw).__name__}")
    try:
        return parse_click(bytes(raw), max_bytes)
    except InvalidEvent as exc:
        return exc


def route_keyed(raw: object, key: bytes | None, max_bytes: int) -> Click | InvalidEvent:
    """:func:`route` for a stage that relies on the producer's key being the click's IP."""
    outcome = route(raw, max_bytes)
    if isinstance(outcome, Click) and key != outcome.ip.encode():
        return InvalidEvent(
            f"record key {key!r} is not the click's IP {outcome.ip!r}; with IVT_CLICKS_KEYED_BY_IP=true "
            "every producer must key clicks by IP"
        )
    return outcome
