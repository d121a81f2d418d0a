"""The topic registry's partitioning helper agrees with Kafka's default partitioner."""

from __future__ import annotations

from aiokafka.partitioner import DefaultPartitioner
from hypothesis import given
from hypothesis import strategies as st

from app.topics import key_partition


@given(st.binary(min_size=1, max_size=64), st.integers(1, 64))
def test_key_partition_is_the_partition_a_keyed_send_would_pick(key: bytes, partitions: int) -> None:
    # The IP stage names the partition of a bundle; it must be where a keyed record would have gone,
    # so a user's state stays on one partition across versions of the worker.
    everything = list(range(partitions))
    assert key_partition(key, partitions) == DefaultPartitioner()(key, everything, everything)


def test_known_values_of_the_java_client() -> None:
    # org.apache.kafka.common.utils.Utils.murmur2 ("21" -> -973932308), toPositive, mod
    assert key_partition(b"21", 1_000_003) == (-973932308 & 0x7FFFFFFF) % 1_000_003
