"""The topic registry's partitioning helper agrees with Kafka's default partitioner."""

from __future__ import annotations

from aiokafka.partitioner import DefaultPartitioner
from hypothesis import given
from hypothesis import strategies as st

from app.contracts.topics import key_partition, key_partitions


@given(st.binary(min_size=1, max_size=64), st.integers(1, 64))
def test_key_partition_is_the_partition_a_keyed_send_would_pick(key: bytes, partitions: int) -> None:
    # The IP stage names the partition of a bundle; it must be where a keyed record would have gone,
    # so a user's state stays on one partition across versions of the worker.
    everything = list(range(partitions))
    assert key_partition(key, partitions) == DefaultPartitioner()(key, everything, everything)


def test_known_values_of_the_java_client() -> None:
    # org.apache.kafka.common.utils.Utils.murmur2 ("21" -> -973932308), toPositive, mod
    assert key_partition(b"21", 1_000_003) == (-973932308 & 0x7FFFFFFF) % 1_000_003


@given(st.lists(st.binary(max_size=80), max_size=40), st.integers(1, 1_000_003))
def test_key_partitions_of_a_batch_are_key_partition_of_each_key(keys: list[bytes], partitions: int) -> None:
    # Keys of any length (the tail of 1-3 bytes, none, empty keys) and mixed lengths in one batch.
    assert key_partitions(keys, partitions) == [key_partition(key, partitions) for key in keys]


def test_key_partitions_of_typical_keys_and_the_java_client_value() -> None:
    keys = [b"21", b"3f2b8c1e-9d4a-4c7e-8b1f-2a6d5e9c0b71", b"user-0042", b"s", b""]
    assert key_partitions(keys, 6) == [key_partition(key, 6) for key in keys]
    assert key_partitions([b"21"], 1_000_003) == [(-973932308 & 0x7FFFFFFF) % 1_000_003]


def test_key_partitions_of_a_take_larger_than_numpy_s_gil_threshold() -> None:
    keys = [f"user-{n}".encode() * (n % 5 + 1) for n in range(1_234)]
    assert key_partitions(keys, 6) == [key_partition(key, 6) for key in keys]
