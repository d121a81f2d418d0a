"""Run a stage's logic on plain values, without Kafka (as Quix Streams' ``sdf.test()`` and bytewax's
testing source and sink do): :class:`MemoryTable` for its state, :func:`run` for its batches."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from app.runtime.stage import InputRecord, OutputRecord, Stage

__all__ = ["MemoryTable", "input_records", "run"]


class MemoryTable:
    """A :class:`~app.runtime.stage.StateTable` in a dict per partition, with its changelog kept as a
    list of ``(partition, key, value or None)`` in write order."""

    offset_key = b"__faust\x00offset__"

    def __init__(self, name: str = "state") -> None:
        self.name = name
        self.changelog = f"{name}-changelog"
        self.partitions: dict[int, dict[bytes, bytes]] = {}
        self.log: list[tuple[int, bytes, bytes | None]] = []

    def get(self, partition: int, key: bytes) -> bytes | None:
        return self.partitions.get(partition, {}).get(key)

    def put(self, partition: int, key: bytes, value: bytes) -> None:
        self.partitions.setdefault(partition, {})[key] = value
        self.log.append((partition, key, value))

    def delete(self, partition: int, key: bytes) -> None:
        self.partitions.get(partition, {}).pop(key, None)
        self.log.append((partition, key, None))

    def items(self, partition: int) -> Iterable[tuple[bytes, bytes]]:
        return list(self.partitions.get(partition, {}).items())

    async def flush(self, producer: Any) -> list[Any]:
        return []


def input_records(
    topic: str, values: Sequence[bytes], partition: int = 0, keys: Sequence[bytes | None] | None = None
) -> list[InputRecord]:
    """Records of ``values`` on one partition, at offsets 0, 1, ..., without headers."""
    keys = keys if keys is not None else [None] * len(values)
    return [
        InputRecord(topic, partition, offset, key, value, [])
        for offset, (key, value) in enumerate(zip(keys, values, strict=True))
    ]


def run(
    stage: Stage, batches: Iterable[Sequence[InputRecord]], partitions: Mapping[str, int] | None = None
) -> list[list[OutputRecord]]:
    """Open ``stage`` (each output topic with ``partitions[topic]`` partitions, default 8) and
    process ``batches`` in order; the outputs of each batch."""
    stage.open({topic: (partitions or {}).get(topic, 8) for topic in stage.outputs})
    return [[record for chunk in stage.process(batch) for record in chunk] for batch in batches]
