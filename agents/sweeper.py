"""Event-time expiry of table keys, so state stays bounded.

The feature engine treats a state idle for more than ``IDLE_TTL_MS`` (25 h of event time) as absent;
this removes such keys from RocksDB and writes a tombstone to the changelog (compacted away later).
It runs inside the stage, between events, through the stage's state table (a
:class:`app.runtime.tables.TableWriter` in a worker),
so each tombstone goes to the changelog partition of the database it was swept from and in order with
the stage's own writes. Faust's RocksDB store keeps the changelog offset it has applied in the same
database (``offset_key``); that record is not state and is skipped. Each partition is swept at most once per
``every_ms`` of event time, so the cost (one scan of that partition's keys) is amortised.
"""

from __future__ import annotations

import logging
from typing import Protocol

from app.features.state import IDLE_TTL_MS
from app.runtime.stage import StateTable

__all__ = ["PartitionSweeper", "SWEEP_MARGIN_MS"]

log = logging.getLogger(__name__)

#: Keys are kept an hour past the TTL so that moderately late clicks still find their state.
SWEEP_MARGIN_MS = 3_600_000


class _PeeksTime(Protocol):
    @classmethod
    def peek_last_event_ms(cls, data: bytes) -> int: ...


class PartitionSweeper:
    def __init__(self, writer: StateTable, state_cls: type[_PeeksTime], every_ms: int) -> None:
        self.writer = writer
        self.state_cls = state_cls
        self.every_ms = every_ms
        self._last: dict[int, int] = {}

    def maybe_sweep(self, partition: int, event_time_ms: int) -> int:
        """Sweep ``partition`` if ``every_ms`` of event time passed since its last sweep; keys removed."""
        last = self._last.setdefault(partition, event_time_ms)
        if event_time_ms - last < self.every_ms:
            return 0
        self._last[partition] = event_time_ms
        cutoff = event_time_ms - IDLE_TTL_MS - SWEEP_MARGIN_MS
        reserved = self.writer.offset_key  # Faust's own changelog-offset record
        stale = [
            key
            for key, value in self.writer.items(partition)
            if key != reserved and self.state_cls.peek_last_event_ms(value) < cutoff
        ]
        for key in stale:
            self.writer.delete(partition, key)
        if stale:
            log.info("%s[%d]: removed %d keys idle past the TTL", self.writer.name, partition, len(stale))
        return len(stale)
