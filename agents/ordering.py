"""Event-time order for the user and session stage, whatever order the IP stage's partitions
deliver in.

A user's clicks come through several IPs, so through several partitions of the IP stage, which run
at their own pace: a backlog drain reads one partition hours of event time ahead of another, and
even a paced stream interleaves them differently from event time. The offline feature engine sees
every click in event-time order; the live stage must too, or the user and session features differ.

Each IP-stage partition (a *source*) announces, with its bundles, its **watermark**: the newest
event time it has processed (its clicks are in event-time order, as producers publish them). A
click is released to the user and session state once every source has passed its event time, in
event-time order (ties in arrival order). A click older than what was already released (a late
click, or one read again after a crash) is released at once. So a click waits only for the slowest
source to reach its time: one IP-stage take live, longer only when a source lags. **Lateness
bound**: no click waits more than ``max_wait_s`` of wall time; a source that stays silent that
long (an idle partition, a crashed worker) no longer holds the others back, and order is then
arrival order, as without this stage.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections import deque
from collections.abc import Callable
from typing import Any

__all__ = ["EventTimeOrder"]


class EventTimeOrder:
    """Clicks held per destination partition until the watermarks of all ``sources`` pass them.

    Tracks which input batch each held click came from, so the runner acks a batch only once all of
    its clicks were released (:meth:`settled`).
    """

    def __init__(self, sources: int, max_wait_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.sources, self.max_wait_s, self.clock = sources, max_wait_s, clock
        self._marks: dict[int, dict[int, int]] = {}  # partition -> source -> watermark
        self._released_up_to: dict[int, int] = {}  # partition -> newest event time released
        self._heaps: dict[int, list[tuple[int, int, int, Any]]] = {}  # (t, seq, batch, item)
        self._arrivals: deque[tuple[float, int, int, int]] = deque()  # (deadline, partition, seq, t)
        self._held_seqs: set[int] = set()
        self._held_per_batch: dict[int, int] = {}
        self._seq = itertools.count()
        self._batches = 0
        self._settled = 0

    def new_batch(self) -> int:
        """Open the next input batch; its number."""
        self._batches += 1
        return self._batches - 1

    def hold(self, batch: int, partition: int, event_time_ms: int, item: Any) -> None:
        seq = next(self._seq)
        heapq.heappush(self._heaps.setdefault(partition, []), (event_time_ms, seq, batch, item))
        self._arrivals.append((self.clock() + self.max_wait_s, partition, seq, event_time_ms))
        self._held_seqs.add(seq)
        self._held_per_batch[batch] = self._held_per_batch.get(batch, 0) + 1

    def mark(self, partition: int, source: int, watermark_ms: int) -> None:
        """Source ``source`` has processed every click up to ``watermark_ms`` bound for ``partition``."""
        marks = self._marks.setdefault(partition, {})
        if watermark_ms > marks.get(source, -1):
            marks[source] = watermark_ms

    def holding(self) -> bool:
        return bool(self._held_seqs)

    def release(self) -> list[tuple[int, Any]]:
        """``(partition, item)`` of every click that may go now, each partition in event-time order."""
        limits: dict[int, int] = {}
        for partition, marks in self._marks.items():
            if len(marks) >= self.sources:
                limits[partition] = min(marks.values())
        now = self.clock()
        arrivals = self._arrivals
        while arrivals and (arrivals[0][0] <= now or arrivals[0][2] not in self._held_seqs):
            _, partition, seq, t = arrivals.popleft()
            if seq in self._held_seqs:  # waited long enough: it and everything older may go
                limits[partition] = max(limits.get(partition, t), t)
        out: list[tuple[int, Any]] = []
        for partition, heap in self._heaps.items():
            limit = max(limits.get(partition, -1), self._released_up_to.get(partition, -1))
            newest = -1
            while heap and heap[0][0] <= limit:
                t, seq, batch, item = heapq.heappop(heap)
                self._held_seqs.discard(seq)
                self._held_per_batch[batch] -= 1
                newest = t
                out.append((partition, item))
            if newest >= 0:
                self._released_up_to[partition] = max(self._released_up_to.get(partition, -1), newest)
        while self._settled < self._batches and not self._held_per_batch.get(self._settled):
            self._held_per_batch.pop(self._settled, None)
            self._settled += 1
        return out

    def settled(self) -> int:
        """How many input batches, from the first, have had every click released."""
        return self._settled
