"""Shared machinery of the generators: column batches, the chunk context, sessions -> clicks.

A generator (one per family, in :mod:`.humans` and :mod:`.bots`) decides *sessions*: who starts one
when, how many clicks it has and how far apart they are; :func:`expand` turns them into click times,
vectorised. Clicks are plain numpy columns (:class:`Columns`) until the very end, where
:mod:`.generator` turns them into Arrow strings.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Final

import numpy as np

from app.simulator.params import SimParams
from app.simulator.population import Population

__all__ = ["Columns", "ChunkContext", "expand", "clicks", "CLICK_DTYPES", "SESSION_KEY_CHUNK"]

#: Raw click columns every generator returns (see :func:`clicks`).
CLICK_DTYPES: Final[dict[str, type]] = {
    "t_ms": np.int64,  # event time
    "family": np.uint8,  # truth.FAMILIES code
    "actor": np.int64,  # population index (humans) or bot index within the family
    "session": np.uint64,  # session key, unique within the family
    "user": np.int64,  # logged-in user's population index, -1 when anonymous
    "device": np.uint8,  # population.DESKTOP / MOBILE / APP
    "ua": np.int32,  # index into population.USER_AGENTS
    "ip_hi": np.uint64,
    "ip_lo": np.uint64,
    "ip_v6": np.bool_,
    "ad": np.int32,  # ad index; campaign = ad // 10, advertiser = campaign // 10
    "p_buy": np.float64,  # chance this click leads to a purchase
    "buyer": np.int64,  # account that would pay (population index), -1 = guest checkout
}
#: Session keys of chunked sessions are ``chunk * SESSION_KEY_CHUNK + index within the chunk``.
SESSION_KEY_CHUNK: Final = 10**7


class Columns(Mapping[str, np.ndarray]):
    """Equal-length named numpy columns."""

    __slots__ = ("_cols",)

    def __init__(self, cols: Mapping[str, np.ndarray]) -> None:
        self._cols = dict(cols)
        lengths = {len(v) for v in self._cols.values()}
        if len(lengths) > 1:
            raise ValueError(f"columns of different lengths: { {k: len(v) for k, v in self._cols.items()} }")

    def __getitem__(self, name: str) -> np.ndarray:
        return self._cols[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._cols)

    def __len__(self) -> int:
        return len(self._cols)

    @property
    def rows(self) -> int:
        return len(next(iter(self._cols.values()))) if self._cols else 0

    def take(self, idx: np.ndarray | slice) -> Columns:
        return Columns({k: v[idx] for k, v in self._cols.items()})

    @staticmethod
    def concat(parts: Iterable[Columns], dtypes: Mapping[str, type]) -> Columns:
        parts = [p for p in parts if p.rows]
        if not parts:
            return Columns.empty(dtypes)
        return Columns(
            {k: np.concatenate([p[k] for p in parts]).astype(t, copy=False) for k, t in dtypes.items()}
        )

    @staticmethod
    def empty(dtypes: Mapping[str, type]) -> Columns:
        return Columns({k: np.empty(0, dtype=t) for k, t in dtypes.items()})

    def sorted_by(self, *keys: str) -> Columns:
        """Rows ordered by the keys (the first key is the primary one); stable."""
        order = np.lexsort(tuple(self._cols[k] for k in reversed(keys)))
        return self.take(order)


@dataclass(frozen=True)
class ChunkContext:
    """What a generator sees: one chunk ``[t0_ms, t1_ms)`` and a random stream of its own."""

    params: SimParams
    pop: Population
    chunk: int
    t0_ms: int
    t1_ms: int
    rng: np.random.Generator

    @property
    def seconds(self) -> float:
        return (self.t1_ms - self.t0_ms) / 1000.0

    def poisson_times(self, rate_per_s: float) -> np.ndarray:
        """Start times of a homogeneous Poisson process of this rate over the chunk."""
        k = self.rng.poisson(rate_per_s * self.seconds)
        return self.t0_ms + self.rng.integers(0, self.t1_ms - self.t0_ms, k)

    def session_keys(self, n: int) -> np.ndarray:
        return (np.uint64(self.chunk) * np.uint64(SESSION_KEY_CHUNK) + np.arange(n, dtype=np.uint64)).astype(
            np.uint64
        )


def expand(
    rng: np.random.Generator,
    start_ms: np.ndarray,
    n_clicks: np.ndarray,
    gap_median_s: float | np.ndarray,
    gap_sigma: float | np.ndarray,
    gap_min_s: float | np.ndarray = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Sessions -> clicks. Gaps between a session's clicks are ``min + lognormal(median, sigma)``.

    Returns, per click, the index of its session and its time (epoch ms).
    """
    n_clicks = np.asarray(n_clicks, dtype=np.int64)
    s = n_clicks.shape[0]
    total = int(n_clicks.sum())
    sess = np.repeat(np.arange(s), n_clicks)
    first = np.zeros(s, dtype=np.int64)
    if s > 1:
        np.cumsum(n_clicks[:-1], out=first[1:])
    med = np.broadcast_to(np.asarray(gap_median_s, dtype=np.float64), (s,))[sess]
    sig = np.broadcast_to(np.asarray(gap_sigma, dtype=np.float64), (s,))[sess]
    low = np.broadcast_to(np.asarray(gap_min_s, dtype=np.float64), (s,))[sess]
    gaps = low + med * np.exp(sig * rng.standard_normal(total))
    gaps[first[n_clicks > 0]] = 0.0
    cum = np.cumsum(gaps)
    offset = cum - cum[first[sess]]
    t = np.asarray(start_ms, dtype=np.int64)[sess] + np.rint(offset * 1000.0).astype(np.int64)
    return sess, t


def clicks(n: int, **cols: np.ndarray | int | float | bool) -> Columns:
    """A click batch of ``n`` rows; scalars are broadcast, missing columns get their neutral value."""
    neutral = {"user": -1, "buyer": -1, "p_buy": 0.0, "ip_hi": 0, "ip_v6": False}
    out = {}
    for name, dtype in CLICK_DTYPES.items():
        value = cols.pop(name, neutral.get(name))
        if value is None:
            raise TypeError(f"click column {name!r} missing")
        arr = np.asarray(value).astype(dtype, copy=False)
        out[name] = np.broadcast_to(arr, (n,)).copy() if arr.ndim == 0 else arr
    if cols:
        raise TypeError(f"unknown click columns: {', '.join(cols)}")
    return Columns(out)
