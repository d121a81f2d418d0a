"""What a stream stage is to the runtime: plain records in, plain records out, state behind a
small interface. No Faust, no Kafka: a stage's logic runs the same under the worker
(:mod:`app.runtime.runner`) and in a unit test (:mod:`app.runtime.testing`)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple, Protocol

__all__ = ["InputRecord", "OutputRecord", "Headers", "StateTable", "Stage"]

Headers = list[tuple[str, bytes]]


class InputRecord(NamedTuple):
    """One record a stage reads, as Kafka delivered it (the attributes of a Kafka message)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: Any  # as the consumer gave them: a list of (str, bytes) pairs, or a mapping


class OutputRecord(NamedTuple):
    """One record a stage writes. ``partition`` None: the producer's partitioner picks (rare records
    such as DLQ entries); otherwise the stage chose it (its key's partition, or its state's)."""

    topic: str
    partition: int | None
    key: bytes | None
    value: bytes
    headers: Headers


class StateTable(Protocol):
    """A stage's key-value state, partitioned like the stage's input (a Faust table in a worker,
    :class:`app.runtime.testing.MemoryTable` in a test). Reads see the writes not yet flushed."""

    @property
    def name(self) -> str: ...

    @property
    def offset_key(self) -> bytes:
        """A key the store keeps for itself in each partition; not state."""
        ...

    def get(self, partition: int, key: bytes) -> bytes | None: ...

    def put(self, partition: int, key: bytes, value: bytes) -> None: ...

    def delete(self, partition: int, key: bytes) -> None: ...

    def items(self, partition: int) -> Iterable[tuple[bytes, bytes]]: ...

    @property
    def changelog(self) -> str:
        """The topic the table's changes are logged to (the runner fetches its metadata)."""
        ...

    async def flush(self, producer: Any) -> list[Any]:
        """Store the buffered changes and send their changelog records; their delivery futures."""
        ...


class Stage:
    """A stream stage's logic. The runner takes a batch of its input, calls :meth:`process`, sends
    each chunk it yields (and lets the producer run between chunks), then flushes :attr:`tables` and
    acks the batch once every record is on the broker."""

    #: Agent name (also the consumer's view of it in logs).
    name: str = "stage"
    #: Input topic: a base name from :mod:`app.contracts.topics`.
    source: str = ""
    #: Most input records per batch, and how long a batch waits to fill.
    max_events: int = 1000
    max_wait_s: float = 0.005
    #: Output topics (full names), whose partition counts :meth:`open` receives.
    outputs: Sequence[str] = ()
    #: The state tables the runner flushes after each batch.
    tables: Sequence[StateTable] = ()
    #: With records held back (:meth:`holding`), how long the runner waits for input before it calls
    #: :meth:`process` with an empty batch, so held records can go; None: wait for input.
    idle_s: float | None = None

    def open(self, partitions: Mapping[str, int]) -> None:
        """Called once before the first batch with each output topic's partition count."""

    def process(self, batch: Sequence[InputRecord]) -> Iterator[list[OutputRecord]]:
        """The outputs of ``batch``, in chunks; state changes go to :attr:`tables`."""
        raise NotImplementedError
        yield []  # pragma: no cover - makes this a generator for type checkers

    def holding(self) -> bool:
        """Whether records of earlier batches are held back (not processed yet)."""
        return False

    def settled(self, batches: int) -> int:
        """How many of the ``batches`` processed so far, from the first, have every record processed;
        the runner acks only those. A stage that holds nothing back settles each batch at once."""
        return batches

    def chunk_sent(self, wall_us: float, cpu_us: float) -> None:
        """Called after each chunk is handed to the producer, with the time from its first step."""

    def flushed(self, wall_us: float, cpu_us: float) -> None:
        """Called after the state of a batch is flushed, with the time it took."""
