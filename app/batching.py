"""Micro-batching: hand items on in batches of up to N, or after T ms, whichever comes first.

The scorer wants batches (one ONNX call per batch, not per click) and the latency budget wants no
click to wait long. Rule: a batch is due when it holds ``max_events`` items, or when ``max_wait_ms``
have passed since its FIRST item arrived. A batch never holds more than ``max_events``; items that
arrive while a full batch waits for its consumer start the next batch, whose clock starts at its own
first item. Order is kept.

Two layers:

* :class:`BatchWindow`: the rule alone, pure and synchronous; time is an argument (milliseconds on
  any monotonic clock), so tests drive it with a fake clock;
* :class:`MicroBatcher`: the asyncio wrapper for one consumer. Producers call :meth:`add` (never
  blocks); the consumer iterates (``async for batch in batcher``) or awaits :meth:`get`.
  :meth:`flush` makes what is pending due now; :meth:`close` ends the iteration once everything
  pending has come out. Its clock is injectable too; waiting uses the event loop's timers.

Memory is not bounded here: :attr:`MicroBatcher.pending` lets the caller stop reading input when
the consumer falls behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Generic, TypeVar

__all__ = ["BatchWindow", "MicroBatcher"]

T = TypeVar("T")


class BatchWindow(Generic[T]):
    """The batching rule with explicit time (see the module doc). Times are ms, monotonic."""

    def __init__(self, max_events: int, max_wait_ms: float) -> None:
        if not isinstance(max_events, int) or max_events < 1:
            raise ValueError(f"max_events must be an integer >= 1, got {max_events!r}")
        if not max_wait_ms >= 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {max_wait_ms!r}")
        self.max_events = max_events
        self.max_wait_ms = float(max_wait_ms)
        self._full: deque[list[T]] = deque()  # sealed batches of exactly max_events
        self._open: list[T] = []
        self._open_since = 0.0  # arrival of the open batch's first item
        self._forced = False  # flush(): the open batch is due whatever the clock says

    def __len__(self) -> int:
        return len(self._full) * self.max_events + len(self._open)

    def add(self, item: T, now_ms: float) -> None:
        if not self._open:
            self._open_since = now_ms
        self._open.append(item)
        if len(self._open) >= self.max_events:
            self._full.append(self._open)
            self._open = []
            self._forced = False

    def deadline(self) -> float | None:
        """When the next batch is due (ms; may be in the past), or None when nothing is pending."""
        if self._full:
            return float("-inf")
        if not self._open:
            return None
        if self._forced:
            return float("-inf")
        return self._open_since + self.max_wait_ms

    def take(self, now_ms: float) -> list[T] | None:
        """The next due batch, or None if none is due at ``now_ms``."""
        if self._full:
            return self._full.popleft()
        if self._open and (self._forced or now_ms >= self._open_since + self.max_wait_ms):
            batch, self._open, self._forced = self._open, [], False
            return batch
        return None

    def flush(self) -> None:
        """Make the pending items due now (they still come out in batches of at most max_events)."""
        if self._open:
            self._forced = True


class MicroBatcher(Generic[T]):
    """asyncio micro-batcher for one consumer (see the module doc).

    ``clock`` returns seconds on a monotonic clock (default ``time.monotonic``, the clock asyncio's
    own timers use); tests may pass a fake one and move it forward between calls.
    """

    def __init__(
        self, max_events: int, max_wait_ms: float, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._window: BatchWindow[T] = BatchWindow(max_events, max_wait_ms)
        self._clock = clock
        self._wakeup = asyncio.Event()
        self._closed = False

    @property
    def max_events(self) -> int:
        return self._window.max_events

    @property
    def max_wait_ms(self) -> float:
        return self._window.max_wait_ms

    @property
    def pending(self) -> int:
        """Items added and not yet handed out."""
        return len(self._window)

    @property
    def closed(self) -> bool:
        return self._closed

    def _now_ms(self) -> float:
        return self._clock() * 1000.0

    def add(self, item: T) -> None:
        """Queue one item; never blocks. Raises RuntimeError after :meth:`close`."""
        if self._closed:
            raise RuntimeError("MicroBatcher is closed")
        self._window.add(item, self._now_ms())
        self._wakeup.set()

    def flush(self) -> None:
        """Hand out what is pending without waiting for the size or the time limit."""
        self._window.flush()
        self._wakeup.set()

    def close(self) -> None:
        """No more items; pending ones still come out, then iteration stops."""
        self._closed = True
        self._window.flush()
        self._wakeup.set()

    def take_nowait(self) -> list[T] | None:
        """The next due batch if there is one now, else None."""
        return self._window.take(self._now_ms())

    async def get(self) -> list[T]:
        """Wait for the next due batch. Raises StopAsyncIteration once closed and drained."""
        while True:
            now = self._now_ms()
            batch = self._window.take(now)
            if batch is not None:
                return batch
            if self._closed and not len(self._window):
                raise StopAsyncIteration
            deadline = self._window.deadline()
            self._wakeup.clear()
            if deadline is None:
                await self._wakeup.wait()
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), timeout=max(0.0, (deadline - now) / 1000.0))

    def __aiter__(self) -> AsyncIterator[list[T]]:
        return self

    async def __anext__(self) -> list[T]:
        return await self.get()
