"""Partitions of a topic for a group-less consumer (aiokafka 0.14.0 internals).

``AIOKafkaConsumer.topics()`` fetches the cluster's metadata but does not keep it, and
``partitions_for_topic()`` stays empty for a topic the consumer never subscribed to; tools that
assign partitions by hand (replay, dataset, billing) need the partitions first.
"""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer, TopicPartition

__all__ = ["topic_partitions"]


async def topic_partitions(consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    """The partitions of ``topic`` in partition order; empty when the topic does not exist."""
    cluster = await consumer._client.fetch_all_metadata()
    return [TopicPartition(topic, p) for p in sorted(cluster.partitions_for_topic(topic) or ())]
