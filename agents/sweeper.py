"""Expiry of table keys, so state stays bounded.

The feature engine treats a state idle for more than ``IDLE_TTL_MS`` (25 h of event time) as absent;
this removes such keys from the stage's state table (a tombstone goes to the changelog and is
compacted away later). Faust's RocksDB store keeps the changelog offset it has applied in the same
database (``offset_key``); that record is not state and is skipped.

Two rules keep the sweep both cheap and harmless:

* **Cheap.** A partition is swept (one scan of its keys) at most once per ``every_ms`` of event time
  *and* once per ``every_ms`` of wall time. Live, the two clocks run together; while a backlog or a
  history is drained, event time runs thousands of times faster than the wall, and an event-time
  rule alone scanned each partition many times a second.
* **Harmless.** The cutoff is taken from the *oldest* click the partition saw since its last sweep,
  not the newest: a partition's clicks come from every partition of the stage before it, which a
  drain reads at different speeds, so the newest click can be a day ahead of clicks still on their
  way. A key is removed only when it is idle past the TTL (plus ``SWEEP_MARGIN_MS``) even for that
  oldest click.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
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
    def __init__(
        self,
        writer: StateTable,
        state_cls: type[_PeeksTime],
        every_ms: int,
        wall_clock_s: Callable[[], float] = time.monotonic,
    ) -> None:
        self.writer = writer
        self.state_cls = state_cls
        self.every_ms = every_ms
        self.clock = wall_clock_s
        self._last: dict[int, tuple[int, float]] = {}  # partition -> (event ms, wall s) of its last sweep
        self._oldest: dict[int, int] = {}  # partition -> oldest event time seen since its last sweep

    def maybe_sweep(self, partition: int, event_time_ms: int) -> int:
        """Note a click of ``partition``; sweep the partition when both clocks say it is time; keys removed."""
        oldest = self._oldest.get(partition)
        if oldest is None or event_time_ms < oldest:
            self._oldest[partition] = oldest = event_time_ms
        last = self._last.get(partition)
        if last is None:
            self._last[partition] = (event_time_ms, self.clock())
            return 0
        if event_time_ms - last[0] < self.every_ms:
            return 0
        now = self.clock()
        if (now - last[1]) * 1000 < self.every_ms:
            return 0
        self._last[partition] = (event_time_ms, now)
        del self._oldest[partition]
        cutoff = oldest - IDLE_TTL_MS - SWEEP_MARGIN_MS
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
