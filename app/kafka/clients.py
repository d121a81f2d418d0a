"""Every plain Kafka client of the project is made here, from :class:`Settings`.

One place decides how a client reaches the cluster (bootstrap servers today; TLS and SASL belong
here too), so a tool, the replay agent, the simulator and the demo cannot drift apart. Callers pass
only what is particular to their use (acks, linger, fetch sizes). The Faust worker's own clients
are configured by :mod:`app.runtime.app` from the same settings.
"""

from __future__ import annotations

from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from app.contracts.settings import Settings

__all__ = ["connection", "consumer", "producer", "admin"]


def connection(settings: Settings) -> dict[str, Any]:
    """The options every client needs to reach the cluster."""
    return {"bootstrap_servers": settings.bootstrap_servers}


def consumer(settings: Settings, *topics: str, **options: Any) -> AIOKafkaConsumer:
    """A consumer (not started); ``topics`` subscribes it, else assign partitions yourself."""
    return AIOKafkaConsumer(*topics, **connection(settings), **options)


def producer(settings: Settings, **options: Any) -> AIOKafkaProducer:
    """A producer (not started)."""
    return AIOKafkaProducer(**connection(settings), **options)


def admin(settings: Settings, **options: Any) -> AIOKafkaAdminClient:
    """An admin client (not started)."""
    return AIOKafkaAdminClient(**connection(settings), **options)
