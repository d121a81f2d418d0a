"""The live TTL sweeper and the batched table writer on a real rocksdict database, laid out as
Faust's RocksDB store lays it out."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace

import pytest
from aiokafka.structs import RecordMetadata, TopicPartition
from faust.types import TP
from rocksdict import Options, Rdict

from agents.sweeper import SWEEP_MARGIN_MS, PartitionSweeper
from app.features.state import IDLE_TTL_MS, UserState
from app.runtime import tables as table_writes
from app.runtime.producer import SentBatch
from app.runtime.tables import TableWriter

HOUR = 3_600_000
OFFSET_KEY = b"__faust\0offset__"  # faust.stores.rocksdb.Store.offset_key
CHANGELOG = "ivt-user-state-changelog"


class _Store:
    """What the writer uses of faust.stores.rocksdb.Store: one database per partition, the offset."""

    offset_key = OFFSET_KEY

    def __init__(self, dbs: dict[int, Rdict]) -> None:
        self.dbs = dbs

    def _db_for_partition(self, partition: int) -> Rdict:
        return self.dbs[partition]

    def set_persisted_offset(self, tp: TP, offset: int) -> None:  # as Faust's store does it
        self.dbs[tp.partition].put(OFFSET_KEY, str(offset).encode())


def _open(path: Path) -> Rdict:
    return Rdict(str(path), options=Options(raw_mode=True))  # as Faust's rocksdict driver opens it


def _table(dbs: dict[int, Rdict]) -> SimpleNamespace:
    topic = SimpleNamespace(get_topic_name=lambda: CHANGELOG)
    return SimpleNamespace(name="user-state", data=_Store(dbs), changelog_topic=topic)


class _Batches:
    """Stands in for app.runtime.producer.RecordBatches (tested against the broker): one batch per
    partition per send, in the order added, delivered when the test says, at the offset it gives."""

    log: list[tuple[str, bytes, bytes | None, int]] = []
    batches: list[SentBatch] = []

    def __init__(self, producer: object) -> None:
        self.records: dict[int, list[tuple[bytes, bytes | None]]] = {}
        self.topic = ""

    def add(self, topic: str, partition: int, key: bytes, value: bytes | None) -> None:
        self.topic = topic
        self.records.setdefault(partition, []).append((key, value))
        _Batches.log.append((topic, key, value, partition))

    async def send(self) -> list[SentBatch]:
        loop = asyncio.get_running_loop()
        sent = [SentBatch(self.topic, p, len(r) - 1, loop.create_future()) for p, r in self.records.items()]
        _Batches.batches += sent
        return sent

    @staticmethod
    def deliver(index: int, base_offset: int) -> None:
        batch = _Batches.batches[index]
        tp = TopicPartition(batch.topic, batch.partition)
        batch.future.set_result(RecordMetadata(batch.topic, batch.partition, tp, base_offset, -1, -1, -1))


def _state(last_ms: int) -> bytes:
    state = UserState()
    state.clicks.add(last_ms)
    return state.to_bytes()


def test_sweeper_removes_idle_keys_and_keeps_fausts_offset_record(tmp_path: Path) -> None:
    db = _open(tmp_path / "db")
    try:
        now = 400 * HOUR
        # idle past the TTL for the oldest click the sweeper saw (now - HOUR), by a millisecond
        db[b"idle"] = _state(now - HOUR - IDLE_TTL_MS - SWEEP_MARGIN_MS - 1)
        db[b"recent"] = _state(now - HOUR)
        # A standby or a recovery that read the changelog leaves this record; it is not a state.
        db[OFFSET_KEY] = b"27"
        writer = TableWriter(_table({0: db}))
        wall = [0.0]
        sweeper = PartitionSweeper(writer, UserState, every_ms=HOUR, wall_clock_s=lambda: wall[0])
        assert sweeper.maybe_sweep(0, now - HOUR) == 0  # first call only starts the clocks
        wall[0] = 3600.0
        assert sweeper.maybe_sweep(0, now) == 1
        assert writer.get(0, b"idle") is None  # gone for readers at once ...
        writer.write()
        assert set(db.keys()) == {b"recent", OFFSET_KEY}  # ... and from RocksDB at the batch's end
        assert sweeper.maybe_sweep(0, now + 1) == 0  # not again within every_ms
        assert writer._pending == {(0, b"idle"): None}  # a tombstone for the changelog
    finally:
        db.close()


def test_writer_batches_changelog_records_and_persists_offsets_after_delivery(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(table_writes, "RecordBatches", _Batches)
    monkeypatch.setattr(_Batches, "log", [])
    monkeypatch.setattr(_Batches, "batches", [])
    dbs = {p: _open(tmp_path / f"db{p}") for p in (0, 1)}
    try:

        async def scenario() -> None:
            writer, producer = TableWriter(_table(dbs)), object()
            dbs[1][b"bob"] = b"b0"
            writer.put(0, b"alice", b"v1")
            assert writer.get(0, b"alice") == b"v1" and writer.get(1, b"alice") is None
            assert dbs[0].get(b"alice") is None  # buffered until the batch ends
            writer.put(1, b"bob", b"b1")
            writer.put(0, b"alice", b"v2")  # the same key twice in a batch: one record, the last value
            writer.delete(1, b"bob")
            assert writer.get(1, b"bob") is None and dbs[1][b"bob"] == b"b0"
            futures = await writer.flush(producer)
            assert _Batches.log == [(CHANGELOG, b"alice", b"v2", 0), (CHANGELOG, b"bob", None, 1)]
            assert futures == [b.future for b in _Batches.batches] and await writer.flush(producer) == []
            assert dbs[0][b"alice"] == b"v2" and dbs[1].get(b"bob") is None

            _Batches.deliver(1, base_offset=41)  # bob's record arrives before alice's: not counted yet
            writer.persist_offsets()
            assert dbs[1].get(OFFSET_KEY) is None
            _Batches.deliver(0, base_offset=7)
            writer.persist_offsets()
            assert dbs[0][OFFSET_KEY] == b"7" and dbs[1][OFFSET_KEY] == b"41"

            writer.put(0, b"carol", b"c1")
            writer.put(0, b"dave", b"d1")
            await writer.flush(producer)
            assert _Batches.batches[-1].last_relative == 1  # two records in one partition batch
            _Batches.batches[-1].future.set_exception(RuntimeError("broker gone"))
            writer.persist_offsets()  # a failed delivery is never counted (the acker stops the worker)
            assert dbs[0][OFFSET_KEY] == b"7"

        asyncio.run(scenario())
    finally:
        for db in dbs.values():
            db.close()


def test_a_drain_sweeps_once_per_wall_interval_however_fast_event_time_runs(tmp_path: Path) -> None:
    from app.runtime.testing import MemoryTable

    table, wall = MemoryTable("user-state"), [0.0]
    scans = []
    table_items = table.items
    table.items = lambda p: scans.append(p) or table_items(p)  # type: ignore[method-assign]
    sweeper = PartitionSweeper(table, UserState, every_ms=300_000, wall_clock_s=lambda: wall[0])
    t = 400 * HOUR
    for k in range(10_000):  # a day of event time in a tenth of a wall second
        sweeper.maybe_sweep(0, t + k * 9_000)
        wall[0] += 0.00001
    assert scans == []  # event time passed every_ms thousands of times, the wall not once
    wall[0] += 300.0
    sweeper.maybe_sweep(0, t + 10_000 * 9_000)
    assert scans == [0]


def test_state_a_lagging_source_still_needs_is_not_swept(tmp_path: Path) -> None:
    from app.runtime.testing import MemoryTable

    table, wall = MemoryTable("user-state"), [0.0]
    now = 400 * HOUR
    table.put(0, b"lagging-user", _state(now - 2 * HOUR))
    sweeper = PartitionSweeper(table, UserState, every_ms=HOUR, wall_clock_s=lambda: wall[0])
    sweeper.maybe_sweep(0, now - HOUR)  # a click from a source that is behind
    wall[0] = 7200.0
    # a click from a source a day and a half ahead: the newest click alone would put the lagging
    # user past the TTL, but the oldest click since the last sweep does not
    assert sweeper.maybe_sweep(0, now + 36 * HOUR) == 0
    assert table.get(0, b"lagging-user") is not None
    wall[0] = 14400.0
    assert sweeper.maybe_sweep(0, now + 38 * HOUR) == 1  # every source is past it now
