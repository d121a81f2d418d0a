"""A compact multi-resolution click counter on event time, one small value per key.

Why not Faust's windowed tables: each hopping window is its own table entry and changelog record, and
their expiry has open bugs (see DESIGN.md). One value per key holding a few resolutions of buckets
costs one read and one write per click, and expiry is ours and on event time only.

Definitions (exact; the property tests check them against a brute-force count):

* A *level* has a resolution ``res_ms`` and buckets aligned to the epoch (bucket ``j`` holds events
  with ``t // res_ms == j``). The level's *head* is the bucket of the newest event time seen so far
  (``max_ms``). A level *keeps* the buckets ``j > head - keep``; older ones are dropped when the head
  moves, and an event that falls in a dropped bucket is not added to that level (it still counts in
  coarser levels that keep it). Nothing ever looks at the wall clock.
* A *window* ``(level, span)`` queried at time ``t`` adds up the kept buckets ``j`` with
  ``t // res_ms - span <= j <= t // res_ms``: the current, partial bucket plus ``span`` whole ones.
  It covers between ``span * res_ms`` and ``(span + 1) * res_ms`` of history, so it never misses an
  event of the last ``span * res_ms`` and may include up to one bucket more. We chose "never less"
  over the "never more" rule (``span - 1`` whole buckets) because that one shrinks a 1-minute window
  to a few seconds right after a bucket boundary, which hides bursts.
* Buckets after ``t`` are not counted, so a late event is scored against the state as it was at its
  own time (minus what already expired). ``keep`` is larger than the widest window on a level by a
  slack; that slack is the lateness a level absorbs exactly (see :data:`DEFAULT_LAYOUT`).

:meth:`BucketCounter.window` also returns the start of the oldest non-empty bucket in the window,
from which the engine takes a window's *active span* for its velocity features.

Bounded: at most ``sum(keep)`` buckets whatever the traffic; counts saturate at 2**25 - 1 per bucket.

In memory and in bytes a bucket is one int, ``count << 7 | (head - j)`` (its age in buckets in the low
7 bits), and a level is a list of them, newest first. Most keys hold one to three buckets per level:
on lists that short plain CPython beats any numpy call, and the list *is* the byte form, so decoding
is one ``struct.unpack`` and a slice per level, with no per-bucket work. When the head moves on, the
ages are shifted once (and the expired dropped) in the same pass.

Bytes (little endian): ``int64 max_ms``, one ``uint8`` bucket count per level, then one ``uint32`` per
bucket, levels in order. A key with one click is 8 + L + 4 L bytes (23 for 3 levels).
"""

from __future__ import annotations

import struct
from itertools import chain
from typing import Final, NamedTuple

from app.features.spec import StateDecodeError

__all__ = [
    "SECOND_MS",
    "MINUTE_MS",
    "HOUR_MS",
    "Level",
    "Layout",
    "check_layout",
    "DEFAULT_LAYOUT",
    "BucketCounter",
    "MAX_COUNT",
]

SECOND_MS: Final = 1_000
MINUTE_MS: Final = 60 * SECOND_MS
HOUR_MS: Final = 60 * MINUTE_MS

_AGE_BITS: Final = 7
_AGE_MASK: Final = (1 << _AGE_BITS) - 1
MAX_COUNT: Final = (1 << (32 - _AGE_BITS)) - 1
_OVERFLOW: Final = 1 << 32  # a code at or above this no longer fits a uint32
_SATURATED: Final = MAX_COUNT << _AGE_BITS


class Level(NamedTuple):
    """One resolution: buckets of ``res_ms``; the newest ``keep`` of them are kept.

    A plain tuple on purpose: the hot path unpacks and hashes layouts, and a tuple does both in C.
    """

    res_ms: int
    keep: int


def check_layout(layout: Layout) -> Layout:
    """Return ``layout`` if every level fits the byte form (``res_ms > 0``, ``1 <= keep <= 128``)."""
    for lv in layout:
        if lv.res_ms <= 0 or not 1 <= lv.keep <= _AGE_MASK + 1:
            raise ValueError(f"bad level {lv}: res_ms > 0 and 1 <= keep <= {_AGE_MASK + 1}")
    return layout


Layout = tuple[Level, ...]

#: 10 s buckets for the 1-minute window (span 6) with 2 min of lateness slack; minute buckets for the
#: 10-minute and 1-hour windows (spans 10 and 60) with 10 min of slack; hour buckets for the 24-hour
#: window (span 24) with 1 h of slack. At most 116 buckets, 475 bytes, per key.
DEFAULT_LAYOUT: Final[Layout] = check_layout(
    (
        Level(10 * SECOND_MS, 19),
        Level(MINUTE_MS, 71),
        Level(HOUR_MS, 26),
    )
)

_STRUCTS: dict[tuple[int, int], struct.Struct] = {}


def _struct(levels: int, buckets: int) -> struct.Struct:
    """The (cached) layout of a value with ``levels`` levels and ``buckets`` buckets in all."""
    s = _STRUCTS.get((levels, buckets))
    if s is None:
        s = _STRUCTS[(levels, buckets)] = struct.Struct(f"<q{levels}B{buckets}I")
    return s


class BucketCounter:
    """Click counts per bucket at several resolutions for one key. See the module doc."""

    __slots__ = ("layout", "max_ms", "levels")

    def __init__(
        self, layout: Layout = DEFAULT_LAYOUT, max_ms: int = -1, levels: list[list[int]] | None = None
    ) -> None:
        self.layout = layout
        #: newest event time added, -1 when nothing was ever added
        self.max_ms = max_ms
        #: per level, the buckets newest first, each ``count << 7 | age`` (see the module doc)
        self.levels: list[list[int]] = levels if levels is not None else [[] for _ in layout]

    def copy(self) -> BucketCounter:
        return BucketCounter(self.layout, self.max_ms, [codes[:] for codes in self.levels])

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, BucketCounter)
            and self.layout == other.layout
            and self.max_ms == other.max_ms
            and self.levels == other.levels
        )

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"BucketCounter(max_ms={self.max_ms}, buckets={self.buckets()})"

    def buckets(self) -> list[dict[int, int]]:
        """Per level, bucket index -> count (for tests and debugging; not used on the hot path)."""
        out = []
        for (res, _), codes in zip(self.layout, self.levels, strict=True):
            head = self.max_ms // res
            out.append({head - (v & _AGE_MASK): v >> _AGE_BITS for v in codes})
        return out

    def add(self, t_ms: int, n: int = 1) -> None:
        """Count ``n`` events at ``t_ms``; moves the heads forward and drops expired buckets."""
        old = self.max_ms
        inc = n << _AGE_BITS
        if t_ms > old:
            self.max_ms = t_ms
            for (res, keep), codes in zip(self.layout, self.levels):  # noqa: B905  # same length
                shift = t_ms // res - old // res
                if shift:
                    if codes:
                        codes[:] = [v + shift for v in codes if (v & _AGE_MASK) + shift < keep]
                    codes.insert(0, inc if inc < _OVERFLOW else _SATURATED)
                elif codes and not codes[0] & _AGE_MASK:
                    v = codes[0] + inc
                    codes[0] = v if v < _OVERFLOW else _SATURATED
                else:
                    codes.insert(0, inc if inc < _OVERFLOW else _SATURATED)
            return
        for (res, keep), codes in zip(self.layout, self.levels):  # noqa: B905
            age = old // res - t_ms // res
            if age >= keep:
                continue
            for k, v in enumerate(codes):
                a = v & _AGE_MASK
                if a == age:
                    v += inc
                    codes[k] = v if v < _OVERFLOW else _SATURATED | age
                    break
                if a > age:
                    codes.insert(k, (inc if inc < _OVERFLOW else _SATURATED) | age)
                    break
            else:
                codes.append((inc if inc < _OVERFLOW else _SATURATED) | age)

    def window(self, level: int, span: int, t_ms: int) -> tuple[int, int]:
        """(count, start of the oldest non-empty bucket in ms) of window ``(level, span)`` at ``t_ms``.

        The start is ``t_ms``'s own bucket start when the window is empty.
        """
        res = self.layout[level][0]
        head = self.max_ms // res
        lo = head - t_ms // res  # age of t's bucket; the window holds ages lo .. lo + span
        hi = lo + span
        n = 0
        oldest = lo
        for v in self.levels[level]:
            a = v & _AGE_MASK
            if a > hi:
                break
            if a >= lo:
                n += v >> _AGE_BITS
                oldest = a
        return n, (head - oldest) * res

    def windows(self, t_ms: int, spec: tuple[tuple[int, int], ...]) -> list[int]:
        """``[count, start, count, start, ...]`` of :meth:`window` for each ``(level, span)`` in spec.

        One call for all of a key's windows: on the hot path the calls cost more than the loops.
        """
        out: list[int] = []
        m = self.max_ms
        layout, levels = self.layout, self.levels
        for level, span in spec:
            res = layout[level][0]
            head = m // res
            lo = head - t_ms // res
            hi = lo + span
            n = 0
            oldest = lo
            for v in levels[level]:
                a = v & _AGE_MASK
                if a > hi:
                    break
                if a >= lo:
                    n += v >> _AGE_BITS
                    oldest = a
            out += (n, (head - oldest) * res)
        return out

    def count(self, level: int, span: int, t_ms: int) -> int:
        """Events in window ``(level, span)`` at ``t_ms``."""
        return self.window(level, span, t_ms)[0]

    # ---------------------------------------------------------------------------------- bytes

    def to_bytes(self) -> bytes:
        levels = self.levels
        lens = [len(codes) for codes in levels]
        return _struct(len(lens), sum(lens)).pack(self.max_ms, *lens, *chain.from_iterable(levels))

    @classmethod
    def from_bytes(cls, data: bytes, layout: Layout = DEFAULT_LAYOUT, offset: int = 0) -> BucketCounter:
        counter, end = cls.unpack_from(data, layout, offset)
        if end != len(data):
            raise StateDecodeError(f"bucket counter: {len(data) - end} bytes left over")
        return counter

    @classmethod
    def unpack_from(
        cls, data: bytes, layout: Layout = DEFAULT_LAYOUT, offset: int = 0
    ) -> tuple[BucketCounter, int]:
        """Decode a counter starting at ``offset``; returns it and the offset just after it."""
        n_levels = len(layout)
        try:
            m, *lens = _struct(n_levels, 0).unpack_from(data, offset)
            body = _struct(n_levels, sum(lens))
            vals = body.unpack_from(data, offset)
        except struct.error as exc:
            raise StateDecodeError(f"bucket counter: truncated value ({exc})") from exc
        levels = []
        p = 1 + n_levels
        for k in lens:
            levels.append(list(vals[p : p + k]))
            p += k
        return cls(layout, m, levels), offset + body.size
