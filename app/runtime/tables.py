"""Batched writes to a Faust table: its RocksDB partition databases and its changelog, directly.

``table[key] = value`` in Faust costs several sends' worth of machinery per write: the changelog
record goes through ``Topic.send_soon`` (a ``FutureMessage``, the producer buffer task, sensors),
and its delivery callback writes the changelog offset into RocksDB once per record. The live stages
write three tables per click, so that machinery was a large share of the worker's time.

:class:`TableWriter` keeps Faust's layout and protocol exactly, and only batches it:

* values go into the same per-partition RocksDB database Faust's store would use (so Faust's
  recovery, standbys and rebalances work as before), one ``WriteBatch`` per partition per batch
  (one write-ahead-log write instead of one per value); until then reads see the buffered values;
* changelog records go to the table's changelog topic, to the partition of the input event, with
  the same raw key and value bytes (a tombstone for a delete), as one record batch per partition
  (:mod:`app.runtime.producer`). Several
  writes of one key in a batch send only the last value: the changelog is compacted anyway;
* their delivery futures join the batch's outputs, so a batch is acked only once its state changes
  are on the broker as well (Faust's own ``send_soon`` does not wait for them);
* the changelog offset Faust keeps in each database (``Store.set_persisted_offset``, read at
  recovery to know where to resume) is written once per partition per batch, for deliveries that
  completed, instead of once per record.

Reads take the partition explicitly, so no Faust "current event" is needed.
"""

from __future__ import annotations

import asyncio
from typing import Any

from faust.types import TP
from rocksdict import WriteBatch

from app.runtime.producer import RecordBatches, SentBatch

__all__ = ["TableWriter"]

_MISSING = object()


class TableWriter:
    def __init__(self, table: Any) -> None:
        self.table = table
        self._pending: dict[tuple[int, bytes], bytes | None] = {}  # not yet in the changelog
        self._unwritten: dict[tuple[int, bytes], bytes | None] = {}  # not yet in RocksDB
        self._in_flight: list[SentBatch] = []

    @property
    def name(self) -> str:
        return str(self.table.name)

    @property
    def changelog(self) -> str:
        """The table's changelog topic."""
        return str(self.table.changelog_topic.get_topic_name())

    @property
    def offset_key(self) -> bytes:
        """The key under which Faust's store keeps its changelog offset in each database."""
        return bytes(self._store.offset_key)

    @property
    def _store(self) -> Any:
        return self.table.data  # Faust creates the store lazily, when the app starts

    def _db(self, partition: int) -> Any:
        return self._store._db_for_partition(partition)

    def get(self, partition: int, key: bytes) -> bytes | None:
        value = self._unwritten.get((partition, key), _MISSING)
        if value is not _MISSING:
            return value  # type: ignore[return-value]
        return self._db(partition).get(key)

    def items(self, partition: int) -> Any:
        self.write()
        return self._db(partition).items()

    def put(self, partition: int, key: bytes, value: bytes) -> None:
        self._unwritten[(partition, key)] = self._pending[(partition, key)] = value

    def delete(self, partition: int, key: bytes) -> None:
        self._unwritten[(partition, key)] = self._pending[(partition, key)] = None

    def write(self) -> None:
        """Apply the buffered values to RocksDB: one write batch per partition database."""
        if not self._unwritten:
            return
        batches: dict[int, Any] = {}
        for (partition, key), value in self._unwritten.items():
            batch = batches.get(partition)
            if batch is None:
                batch = batches[partition] = WriteBatch(raw_mode=True)  # Faust opens its DBs raw
            if value is None:
                batch.delete(key)
            else:
                batch.put(key, value)
        for partition, batch in batches.items():
            self._db(partition).write(batch)
        self._unwritten.clear()

    async def flush(self, producer: Any) -> list[asyncio.Future[Any]]:
        """Write this batch's values and send its changelog records; their delivery futures.

        ``producer`` is the aiokafka producer: the records go as one batch per changelog partition
        (:mod:`app.runtime.producer`).
        """
        self.write()
        self.persist_offsets()
        if not self._pending:
            return []
        topic = self.changelog
        pending, self._pending = self._pending, {}
        batches = RecordBatches(producer)
        for (partition, key), value in pending.items():
            batches.add(topic, partition, key, value)
        sent = await batches.send()
        self._in_flight.extend(sent)
        return [batch.future for batch in sent]

    def persist_offsets(self) -> None:
        """Record in each partition's database the highest changelog offset delivered so far.

        Only deliveries completed in send order are counted, so the offset never passes a record
        still on its way. A failed delivery stops counting here; the acker stops the worker.
        """
        done = 0
        highest: dict[TP, int] = {}
        for batch in self._in_flight:
            future = batch.future
            if not future.done() or future.cancelled() or future.exception() is not None:
                break
            highest[TP(batch.topic, batch.partition)] = batch.last_offset
            done += 1
        if done:
            del self._in_flight[:done]
        store = self._store
        for tp, offset in highest.items():
            store.set_persisted_offset(tp, offset)
