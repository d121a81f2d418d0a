"""The live TTL sweeper on a real rocksdict database, as Faust's RocksDB store lays it out."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from rocksdict import Rdict

from agents.sweeper import SWEEP_MARGIN_MS, PartitionSweeper
from app.features.state import IDLE_TTL_MS, UserState

HOUR = 3_600_000
OFFSET_KEY = b"__faust\0offset__"  # faust.stores.rocksdb.Store.offset_key


class _Table:
    """The two things the sweeper touches on a Faust table: its store and ``del table[key]``."""

    def __init__(self, db: Rdict) -> None:
        self.name = "user-state"
        self.db = db
        self.data = SimpleNamespace(offset_key=OFFSET_KEY, _db_for_partition=lambda partition: db)

    def __delitem__(self, key: bytes) -> None:
        del self.db[key]


def _state(last_ms: int) -> bytes:
    state = UserState()
    state.clicks.add(last_ms)
    return state.to_bytes()


def test_sweeper_removes_idle_keys_and_keeps_fausts_offset_record(tmp_path: Path) -> None:
    db = Rdict(str(tmp_path / "db"))
    try:
        now = 400 * HOUR
        db[b"idle"] = _state(now - IDLE_TTL_MS - SWEEP_MARGIN_MS - 1)
        db[b"recent"] = _state(now - HOUR)
        # A standby or a recovery that read the changelog leaves this record; it is not a state.
        db[OFFSET_KEY] = b"27"
        sweeper = PartitionSweeper(_Table(db), UserState, every_ms=HOUR)
        assert sweeper.maybe_sweep(0, now - HOUR) == 0  # first call only starts the clock
        assert sweeper.maybe_sweep(0, now) == 1
        assert set(db.keys()) == {b"recent", OFFSET_KEY}
        assert sweeper.maybe_sweep(0, now + 1) == 0  # not again within every_ms
    finally:
        db.close()
