"""The engine: chunks of simulated time -> clicks, purchases and RFM updates in event-time order.

How it stays deterministic, bounded and ordered:

* Chunk ``c`` covers ``[c * chunk_ms, (c + 1) * chunk_ms)`` of absolute time (chunk 0 starts at the
  Unix epoch). Each family draws from its own ``numpy.random.Generator`` seeded by
  ``SeedSequence(seed, spawn_key=(chunk_s, c, family))``, so a chunk's sessions depend only on the
  seed and the chunk, never on the chunks before it.
* A session started in one chunk may click in the next ones. Clicks are therefore put into buckets
  by the chunk their event time falls in, and chunk ``c`` is emitted once it has been generated:
  nothing generated later can fall before its end. Purchases (minutes to days later) and RFM updates
  wait in buckets the same way. Memory is what is waiting in buckets: a few session lengths of
  clicks, and the purchases of the purchase-delay horizon.
* Generation starts ``warmup_s`` before ``start_ms``; clicks before the start are dropped (with their
  purchases), so the first hour already has the sessions in progress that real traffic would have.
  Clicks, purchases and RFM updates at or after ``end_ms`` are dropped.

RFM: an account's score is published when the account is first seen in the run (one millisecond
before its first logged-in click, or when its first purchase is scored), and again after every
purchase it makes (minutes later, as a nightly-batch stand-in would be too slow for live). A score is
computed from the account's pre-run history (stationary: the recency it had when first seen) plus
the purchases made in the run. Stolen accounts keep their owner's (high) score.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Final

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from app.simulator import encode
from app.simulator.bots import BOT_GENERATORS
from app.simulator.humans import humans
from app.simulator.params import SimParams
from app.simulator.population import DEVICE_NAMES, Population, rfm_score
from app.simulator.sessions import CLICK_DTYPES, ChunkContext, Columns
from app.simulator.truth import ACTORS, FAMILIES

__all__ = [
    "Simulator",
    "ChunkOutput",
    "GENERATORS",
    "CLICK_SCHEMA",
    "PURCHASE_SCHEMA",
    "RFM_SCHEMA",
    "click_table",
    "purchase_table",
    "rfm_table",
]

#: Every family's generator, in family-code order.
GENERATORS: Final[dict[str, Callable[[ChunkContext], Columns]]] = {"human": humans, **BOT_GENERATORS}
assert tuple(GENERATORS) == FAMILIES

CLICK_KEY_CHUNK: Final = 10**8  # click key = generation chunk * CLICK_KEY_CHUNK + index in the chunk
_DAY_MS: Final = 86_400_000
_PURCHASE_MEDIAN_S: Final = 40 * 60.0
_PURCHASE_SIGMA: Final = 1.8
_PURCHASE_MIN_S: Final = 30.0
_PURCHASE_MAX_S: Final = 14 * 86_400.0
_RFM_DELAY_S: Final = (5 * 60.0, 30 * 60.0)

KEYED_CLICK_DTYPES: Final[dict[str, type]] = {**CLICK_DTYPES, "key": np.uint64}
PURCHASE_DTYPES: Final[dict[str, type]] = {
    "t_ms": np.int64,
    "click_key": np.uint64,
    "user": np.int64,  # paying account, -1 = guest
    "family": np.uint8,
    "actor": np.int64,
    "amount": np.float64,
}
RFM_DTYPES: Final[dict[str, type]] = {
    "t_ms": np.int64,
    "user": np.int64,
    "rfm_score": np.float64,
    "recency_days": np.float64,
    "frequency": np.int64,
    "monetary": np.float64,
}

CLICK_SCHEMA: Final = pa.schema(
    [
        ("click_id", pa.string()),
        ("event_time_ms", pa.int64()),
        ("ip", pa.string()),
        ("session_id", pa.string()),
        ("user_id", pa.string()),
        ("logged_in", pa.bool_()),
        ("device_type", pa.string()),
        ("user_agent", pa.string()),
        ("ad_id", pa.string()),
        ("campaign_id", pa.string()),
        ("advertiser_id", pa.string()),
        ("truth_actor", pa.string()),
        ("truth_family", pa.string()),
        ("truth_actor_id", pa.int64()),
    ]
)
PURCHASE_SCHEMA: Final = pa.schema(
    [
        ("purchase_id", pa.string()),
        ("click_id", pa.string()),
        ("user_id", pa.string()),
        ("event_time_ms", pa.int64()),
        ("amount", pa.float64()),
        ("truth_actor", pa.string()),
        ("truth_family", pa.string()),
    ]
)
RFM_SCHEMA: Final = pa.schema(
    [
        ("user_id", pa.string()),
        ("rfm_score", pa.float64()),
        ("recency_days", pa.float64()),
        ("frequency", pa.int64()),
        ("monetary", pa.float64()),
        ("updated_at_ms", pa.int64()),
    ]
)


class TimeBuckets:
    """Rows waiting for the chunk their event time falls in.

    Rows for the far future wait in groups of ``group`` chunks and are split per chunk only when
    their group comes near, so a generated chunk is cut into a few dozen parts rather than one part
    per future chunk its sessions reach (with one-second chunks that would be hundreds).
    """

    def __init__(
        self, chunk_ms: int, dtypes: dict[str, type], sort_keys: tuple[str, ...], group: int = 16
    ) -> None:
        self.chunk_ms = chunk_ms
        self.dtypes = dtypes
        self.sort_keys = sort_keys
        self.group = group
        self._groups: dict[int, list[Columns]] = defaultdict(list)
        self._chunks: dict[int, list[Columns]] = defaultdict(list)
        self._open = -(2**62)  # groups below this one are split per chunk

    def add(self, cols: Columns, lo_ms: int, hi_ms: int | None) -> None:
        """Keep the rows with ``lo_ms <= t_ms < hi_ms`` (``hi_ms`` None: no end)."""
        t = cols["t_ms"]
        keep = t >= lo_ms if hi_ms is None else (t >= lo_ms) & (t < hi_ms)
        cols = cols.take(keep)
        if not cols.rows:
            return
        chunk = cols["t_ms"] // self.chunk_ms
        group = chunk // self.group
        near = group <= self._open
        far = cols.take(~near)
        self._split(self._groups, far, far["t_ms"] // self.chunk_ms // self.group)
        near_cols = cols.take(near)
        self._split(self._chunks, near_cols, near_cols["t_ms"] // self.chunk_ms)

    @staticmethod
    def _split(into: dict[int, list[Columns]], cols: Columns, key: np.ndarray) -> None:
        if not cols.rows:
            return
        order = np.argsort(key, kind="stable")
        cols, key = cols.take(order), key[order]
        cuts = np.flatnonzero(np.diff(key)) + 1
        for lo, hi in zip(np.r_[0, cuts], np.r_[cuts, key.shape[0]], strict=True):
            into[int(key[lo])].append(cols.take(slice(int(lo), int(hi))))

    def pop(self, chunk: int) -> Columns:
        """The rows of ``chunk``, sorted; call with increasing chunks."""
        group = chunk // self.group
        while self._open < group:
            self._open = max(self._open + 1, group)
            parts = self._groups.pop(self._open, [])
            if parts:
                cols = Columns.concat(parts, self.dtypes)
                self._split(self._chunks, cols, cols["t_ms"] // self.chunk_ms)
        return Columns.concat(self._chunks.pop(chunk, []), self.dtypes).sorted_by(*self.sort_keys)

    @property
    def rows(self) -> int:
        return sum(c.rows for b in (self._groups, self._chunks) for parts in b.values() for c in parts)


@dataclass(frozen=True)
class ChunkOutput:
    """Everything whose event time falls in chunk ``chunk``, each stream sorted by time."""

    chunk: int
    t0_ms: int
    t1_ms: int
    clicks: Columns
    purchases: Columns
    rfm: Columns


class Simulator:
    """Runs the generators chunk after chunk. One instance per run: it holds the waiting buckets."""

    def __init__(self, params: SimParams, population: Population | None = None) -> None:
        """``population`` may be shared between runs of the same seed, users and bots."""
        self.params = params
        self.pop = population if population is not None else Population(params)
        self._clicks = TimeBuckets(params.chunk_ms, KEYED_CLICK_DTYPES, ("t_ms", "key"))
        self._purchases = TimeBuckets(params.chunk_ms, PURCHASE_DTYPES, ("t_ms", "click_key"))
        self._rfm = TimeBuckets(params.chunk_ms, RFM_DTYPES, ("t_ms", "user"))
        self._seen = np.zeros((params.users + 7) // 8, dtype=np.uint8)
        # account -> (purchases in the run, amount spent in the run, last purchase ms)
        self._bought: dict[int, tuple[int, float, int]] = {}

    # ---- randomness ------------------------------------------------------------------------------

    def rng(self, chunk: int, stream: int) -> np.random.Generator:
        """The random stream ``stream`` of chunk ``chunk`` (independent of every other chunk)."""
        ss = np.random.SeedSequence(self.params.seed, spawn_key=(self.params.chunk_s, chunk, stream))
        return np.random.Generator(np.random.PCG64(ss))

    def chunk_of(self, t_ms: int) -> int:
        return t_ms // self.params.chunk_ms

    # ---- generation ------------------------------------------------------------------------------

    def generate(self, chunk: int) -> Columns:
        """Clicks of every session that starts in ``chunk`` (not sorted; keys assigned)."""
        t0 = chunk * self.params.chunk_ms
        parts = []
        for code, gen in enumerate(GENERATORS.values()):
            ctx = ChunkContext(
                self.params, self.pop, chunk, t0, t0 + self.params.chunk_ms, self.rng(chunk, code)
            )
            parts.append(gen(ctx))
        out = Columns.concat(parts, CLICK_DTYPES)
        if out.rows >= CLICK_KEY_CHUNK:
            raise ValueError(f"chunk {chunk} has {out.rows} clicks; use a shorter chunk_s")
        keys = np.uint64(chunk) * np.uint64(CLICK_KEY_CHUNK) + np.arange(out.rows, dtype=np.uint64)
        return Columns({**out, "key": keys})

    def _purchases_of(self, chunk: int, clicks: Columns) -> Columns:
        rng = self.rng(chunk, 100)
        buy = rng.random(clicks.rows) < clicks["p_buy"]
        c = clicks.take(buy)
        delay_s = np.clip(
            _PURCHASE_MEDIAN_S * np.exp(_PURCHASE_SIGMA * rng.standard_normal(c.rows)),
            _PURCHASE_MIN_S,
            _PURCHASE_MAX_S,
        )
        amount = np.round(35.0 * np.exp(1.0 * rng.standard_normal(c.rows)), 2) + 0.99
        t = c["t_ms"] + np.rint(delay_s * 1000.0 * self.params.purchase_delay_scale).astype(np.int64)
        return Columns(
            {
                "t_ms": t,
                "click_key": c["key"],
                "user": c["buyer"],
                "family": c["family"],
                "actor": c["actor"],
                "amount": amount,
            }
        )

    # ---- RFM -------------------------------------------------------------------------------------

    def _mark_seen(self, users: np.ndarray) -> np.ndarray:
        """Mark accounts as seen; returns which of them were new."""
        byte, bit = users >> 3, (np.uint8(1) << (users & 7).astype(np.uint8))
        new = (self._seen[byte] & bit) == 0
        np.bitwise_or.at(self._seen, byte, bit)
        return new

    def _rfm_rows(
        self, t_ms: np.ndarray, users: np.ndarray, bought: list[tuple[int, float, int] | None]
    ) -> Columns:
        """Scores at ``t_ms``: pre-run history plus ``bought`` (purchases in the run so far) per row."""
        recency, freq, monetary = self.pop.rfm_base(users)
        recency = recency.astype(np.float64)
        for i, b in enumerate(bought):
            if b is not None:
                n, spent, last = b
                freq[i] += n
                monetary[i] = round(float(monetary[i]) + spent, 2)
                recency[i] = round(max(0.0, (int(t_ms[i]) - last) / _DAY_MS), 3)
        return Columns(
            {
                "t_ms": t_ms,
                "user": users,
                "rfm_score": np.round(rfm_score(recency, freq, monetary), 4),
                "recency_days": recency,
                "frequency": freq,
                "monetary": monetary,
            }
        )

    def _account_updates(
        self, chunk: int, t0: int, clicks: Columns, purchases: Columns, end_ms: int | None
    ) -> None:
        # first sight of a logged-in account: publish its score just before its first click
        li = clicks["user"] >= 0
        users, first = np.unique(clicks["user"][li], return_index=True)
        if users.shape[0]:
            new = self._mark_seen(users)
            users, t_first = users[new], clicks["t_ms"][li][first][new]
            rows = self._rfm_rows(
                np.maximum(t_first - 1, t0), users, [self._bought.get(u) for u in users.tolist()]
            )
            self._rfm.add(rows, t0, end_ms)
        # each purchase by an account changes its score, published a few minutes later
        paying = purchases.take(purchases["user"] >= 0)
        if paying.rows:
            rng = self.rng(chunk, 101)
            delay = rng.uniform(*_RFM_DELAY_S, paying.rows) * 1000.0 * self.params.purchase_delay_scale
            t_upd = paying["t_ms"] + np.rint(delay).astype(np.int64)
            states: list[tuple[int, float, int] | None] = []
            for u, t, amount in zip(
                paying["user"].tolist(), paying["t_ms"].tolist(), paying["amount"].tolist(), strict=True
            ):
                n, spent, _ = self._bought.get(u, (0, 0.0, 0))
                self._bought[u] = (n + 1, spent + amount, t)
                states.append(self._bought[u])
            self._mark_seen(paying["user"])
            self._rfm.add(self._rfm_rows(t_upd, paying["user"], states), t0, end_ms)

    # ---- the run ---------------------------------------------------------------------------------

    def run(self, end_ms: int | None = None) -> Iterator[ChunkOutput]:
        """Chunks from ``params.start_ms`` until ``end_ms`` (exclusive), or for ever if None."""
        p = self.params
        first_out = self.chunk_of(p.start_ms)
        chunk = self.chunk_of(p.start_ms - p.warmup_s * 1000)
        while end_ms is None or chunk * p.chunk_ms < end_ms:
            t0 = chunk * p.chunk_ms
            generated = self.generate(chunk)
            self._clicks.add(generated, p.start_ms, end_ms)
            bought = self._purchases_of(chunk, generated.take(generated["t_ms"] >= p.start_ms))
            self._purchases.add(bought, p.start_ms, end_ms)
            if chunk >= first_out:
                clicks = self._clicks.pop(chunk)
                purchases = self._purchases.pop(chunk)
                self._account_updates(chunk, max(t0, p.start_ms), clicks, purchases, end_ms)
                rfm = self._rfm.pop(chunk)
                yield ChunkOutput(chunk, t0, t0 + p.chunk_ms, clicks, purchases, rfm)
            chunk += 1

    def waiting(self) -> int:
        """Rows waiting in buckets (the simulator's memory beyond the current chunk)."""
        return self._clicks.rows + self._purchases.rows + self._rfm.rows


# --------------------------------------------------------------------------------------------------
# Arrow tables: the wire fields as strings (history files, live messages)
# --------------------------------------------------------------------------------------------------

_DEVICES = encode.pool(DEVICE_NAMES)
_FAMILY_NAMES = encode.pool(FAMILIES)
_ACTOR_NAMES = encode.pool(ACTORS)


def _user_ids(pop: Population, user: np.ndarray) -> pa.Array:
    ids = encode.ids("u", (pop.user_number(np.maximum(user, 0)), 10))
    anonymous = user < 0
    if not anonymous.any():
        return ids
    return pc.if_else(pa.array(anonymous), pa.scalar(None, pa.string()), ids)


def click_ids(params: SimParams, keys: np.ndarray) -> pa.StringArray:
    return encode.ids("c" + params.prefix, (keys, 19))


def click_table(params: SimParams, pop: Population, c: Columns) -> pa.Table:
    """Clicks as the wire fields (``event_time_ms`` instead of the RFC 3339 string) plus truth."""
    family = c["family"]
    actor_id = np.where(family == 0, pop.user_number(c["actor"]), c["actor"])
    ad = c["ad"]
    cols = [
        click_ids(params, c["key"]),
        pa.array(c["t_ms"]),
        encode.format_ips(c["ip_hi"], c["ip_lo"], c["ip_v6"]),
        encode.ids("s" + params.prefix, (family, 1), (c["session"], 19)),
        _user_ids(pop, c["user"]),
        pa.array(c["user"] >= 0),
        _DEVICES.take(pa.array(c["device"])),
        pop.user_agents.take(pa.array(c["ua"])),
        encode.ids("ad-", (ad, 6)),
        encode.ids("cmp-", (ad // 10, 5)),
        encode.ids("adv-", (ad // 100, 4)),
        _ACTOR_NAMES.take(pa.array(family)),
        _FAMILY_NAMES.take(pa.array(family)),
        pa.array(actor_id),
    ]
    return pa.Table.from_arrays(cols, schema=CLICK_SCHEMA)


def purchase_table(params: SimParams, pop: Population, c: Columns) -> pa.Table:
    family = c["family"]
    cols = [
        encode.ids("p" + params.prefix, (c["click_key"], 19)),
        click_ids(params, c["click_key"]),
        _user_ids(pop, c["user"]),
        pa.array(c["t_ms"]),
        pa.array(c["amount"]),
        _ACTOR_NAMES.take(pa.array(family)),
        _FAMILY_NAMES.take(pa.array(family)),
    ]
    return pa.Table.from_arrays(cols, schema=PURCHASE_SCHEMA)


def rfm_table(pop: Population, c: Columns) -> pa.Table:
    cols = [
        _user_ids(pop, c["user"]),
        pa.array(c["rfm_score"]),
        pa.array(c["recency_days"]),
        pa.array(c["frequency"]),
        pa.array(c["monetary"]),
        pa.array(c["t_ms"]),
    ]
    return pa.Table.from_arrays(cols, schema=RFM_SCHEMA)
