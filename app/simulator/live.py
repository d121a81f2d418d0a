"""Live traffic: the simulator's clicks published to Kafka at a steady rate, open loop.

Open loop means the schedule is fixed before the first message: click ``i`` is due at
``start + i / rate``, whatever happened to click ``i - 1``. The publisher sends every click whose time
has come, never waits for an acknowledgement before the next send (futures are counted by
callbacks), and stamps each click with two headers, so consumers can measure their own latency
from the moment a click *should* have entered the system, not from when a struggling producer
managed to send it (no coordinated omission):

* ``ivt-intended-ns``: the scheduled send time, epoch nanoseconds as ASCII digits;
* ``ivt-sent-ns``: when the click was handed to the producer (appended to its batch), same form.

*Schedule lag* is ``sent - intended``; the report gives its maximum and 99th percentile.

Event times are the simulated times of the traffic, with the simulation starting at the schedule's
start, so they track the wall clock: the population is sized (unless ``users`` is given) so that its
natural click rate at the start time equals the target rate. The report prints how far the last
click's event time ended up from its send slot.

*Continuing a world* (``LiveOptions.start_ms``): the population is the one a history was made of
(same seed, users and bots), the simulation starts where the history ends, and the schedule keeps
the event-time rhythm: a click with event time ``t`` is due at ``wall_start + (t - start_ms) / speed``.
``speed`` (event-time seconds per wall second) is what makes a small realistic population publish
``rate`` clicks/s: the population's natural rate (:func:`natural_rate`) over the event time the run
covers (at least the first hour from ``start_ms``, at most a day: :func:`plan_speed`) times ``speed``
is ``rate``, so the day/night rhythm and the bursts are compressed, not flattened (the wall rate
follows them around ``rate``), and every window and TTL downstream stays on event time. Purchase and RFM delays are those of the history (no
``purchase_delay_scale``): compressed in wall time by the same factor as everything else.

Clicks are keyed by IP (the partition is computed here with Kafka's murmur2, as the Java client and
aiokafka would); purchases (keyed by click id) and RFM updates (keyed by user id) go to their own
topics when their simulated time comes, with delays shrunk by ``purchase_delay_scale``.

Generation (numpy) and JSON encoding run in a separate process, a few chunks ahead of the sender,
so the event loop only sends. With ``LiveOptions.pregenerate`` every click is generated and encoded
before the first send, and the encoder process has exited when the load starts: a benchmark on the
same cores as the system it measures then loses no CPU to generation while it measures (the sender
alone costs about a quarter of a core at 10,000 clicks/s plus their purchase and RFM messages).

Two ways to hand messages to aiokafka (``LiveOptions.producer``), measured with 200k clicks of about
460 bytes against the local single-node broker (closed loop, one producer process, 2 shared cores):

* ``send``: ``await producer.send()`` per message, about 12 us of CPU per message (futures, per-message
  accumulator work), at most ~50k messages/s;
* ``batch`` (default): our own ``BatchBuilder`` per topic-partition, filled with ``append`` (C code) and
  handed over with ``send_batch`` when full or ``linger_ms`` old: about 1.8 us per message, ~270k/s
  (~165k/s with idempotence).

In the open-loop run at 20,000 clicks/s (plus ~6,000 purchase/RFM messages/s) both keep up; ``batch``
had a p99 schedule lag of 3 ms against 14 ms for ``send``, with 29 % against 39 % of a core. The
idempotent producer (acks=all) showed no cost at that rate, so it is the default. Compression is
off: lz4 and zstd need packages the project does not have, and gzip costs more CPU than the local
network saves. See ``app/simulator/README.md`` for the figures and commands.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import multiprocessing as mp
import queue
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import Any, Final

import numpy as np
import orjson
import pyarrow as pa
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn

from app.contracts.events import format_time
from app.contracts.exceptions import ConfigError
from app.contracts.settings import Settings
from app.contracts.topics import ACCOUNT_RFM, CLICKS, PURCHASES
from app.kafka import clients
from app.simulator import encode
from app.simulator.generator import (
    CLICK_SCHEMA,
    RFM_SCHEMA,
    ChunkOutput,
    Simulator,
    click_table,
    purchase_table,
    rfm_table,
)
from app.simulator.params import BOT_ACTORS_PER_REFERENCE, SimParams
from app.simulator.population import Population
from app.simulator.truth import FAMILIES

__all__ = [
    "LiveOptions",
    "LiveReport",
    "publish_live",
    "encode_chunk",
    "TopicLayout",
    "users_for_rate",
    "natural_rate",
    "chunk_for_speed",
    "plan_speed",
    "world_params",
    "SpeedPlan",
    "click_messages",
    "purchase_messages",
    "rfm_messages",
    "INTENDED_HEADER",
    "SENT_HEADER",
]

INTENDED_HEADER: Final = "ivt-intended-ns"
SENT_HEADER: Final = "ivt-sent-ns"
#: Clicks per piece handed from the encoder process to the sender: small pieces keep each hand-over
#: (a pipe read and an unpickle in the event loop) to a few milliseconds.
PIECE_CLICKS: Final = 1000
#: What the encoder process puts on its queue when the simulation reached its end (continue mode).
_END: Final = "end"
#: Continue mode: wall seconds of traffic per generation chunk (at most), and clicks per chunk (at most).
CHUNK_WALL_S: Final = 1.0
CHUNK_MAX_CLICKS: Final = 20_000
#: Continue mode: the speed is sized on the natural rate over the event time the run covers, within
#: these bounds (seconds): an hour at least (the rate at the start), a day at most (a day's average).
SPEED_WINDOW_S: Final = (3600, 86_400)
#: Users of the population :func:`natural_rate` simulates at most (larger ones are scaled from it).
PROBE_USERS: Final = 50_000
#: Chunk lengths the simulator accepts below an hour (divisors of 3600).
_CHUNK_DIVISORS: Final = tuple(d for d in range(1, 3601) if 3600 % d == 0)


@dataclass(frozen=True)
class LiveOptions:
    rate: float = 20_000.0
    #: Wall seconds to publish (in continue mode they cover ``duration_s * speed`` s of event time).
    duration_s: float = 60.0
    seed: int = 42
    #: Human users; None = sized so the natural click rate at the start equals ``rate`` (required
    #: when ``start_ms`` is given: the history's population).
    users: int | None = None
    #: Ignored in continue mode, where delays are the history's (1.0), compressed by ``speed``.
    purchase_delay_scale: float = 0.01
    bot_scale: float = 1.0
    #: Continue a world: event time of the first live click (a history's ``end_ms``); None = the
    #: wall clock (event time = send time, the population sized to the rate).
    start_ms: int | None = None
    #: Continue mode: event-time seconds per wall second; None = ``rate / natural_rate``.
    speed: float | None = None
    #: Continue mode: the rest of the history's population parameters (``SimParams`` fields).
    tz_offset_h: float = 0.0
    bot_actors: dict[str, int] | None = None
    acks: str = "1"
    idempotence: bool = True
    #: "batch" (own BatchBuilders + send_batch) or "send" (producer.send per message).
    producer: str = "batch"
    linger_ms: int = 5
    max_batch_size: int = 512 * 1024
    #: Simulated seconds generated before the start so sessions in progress exist from the first click.
    warmup_s: int = 600
    #: Pieces (of PIECE_CLICKS clicks) generated and encoded ahead of the sender.
    ahead: int = 40
    #: Generate and encode the whole run before the first send (memory: about 1 KB per click).
    pregenerate: bool = False
    progress: bool = True

    @classmethod
    def continuing(cls, manifest: dict[str, Any], **options: Any) -> LiveOptions:
        """Options that continue the world of a history (its ``manifest.json``, as a dict): same
        seed, users and bots, starting at its end. ``options`` sets the rest (rate, duration_s...)."""
        params = manifest["params"]
        world = {
            "seed": int(params["seed"]),
            "users": int(params["users"]),
            "bot_scale": float(params["bot_scale"]),
            "tz_offset_h": float(params.get("tz_offset_h", 0.0)),
            "bot_actors": dict(params["bot_actors"]) if params.get("bot_actors") else None,
            "start_ms": int(manifest["end_ms"]),
        }
        return cls(**{**world, **options})


@dataclass
class LiveReport:
    target_rate: float
    duration_s: float
    users: int
    sent: int = 0
    acked: int = 0
    errors: int = 0
    first_error: str = ""
    elapsed_s: float = 0.0
    send_elapsed_s: float = 0.0
    max_lag_ms: float = 0.0
    p99_lag_ms: float = 0.0
    purchases: int = 0
    rfm_updates: int = 0
    event_time_drift_ms: float = 0.0
    #: CPU seconds of the sending process while it published (the encoder process not counted)
    sender_cpu_s: float = 0.0
    #: The schedule's start: click 0's intended send time (continue mode: event time ``start_ms``'s
    #: wall slot), epoch ns
    start_ns: int = 0
    clicks_by_family: dict[str, int] = field(default_factory=dict)
    #: Continue mode: event-time seconds per wall second (None: event time = wall clock)
    speed: float | None = None
    #: Continue mode: the population's natural clicks/s of event time the speed is sized on (over the
    #: event time the run covers, within SPEED_WINDOW_S; bursts left out)
    natural_rate: float = 0.0
    #: Event time of the first slot (the history's end in continue mode) and of the last click sent
    event_start_ms: int = 0
    event_end_ms: int = 0

    @property
    def achieved_rate(self) -> float:
        """Acknowledged clicks per second, from the schedule's start to the last acknowledgement."""
        return self.acked / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "target_rate": self.target_rate,
            "achieved_rate": round(self.achieved_rate, 1),
            "sent": self.sent,
            "acked": self.acked,
            "errors": self.errors,
            "elapsed_s": round(self.elapsed_s, 3),
            "max_lag_ms": round(self.max_lag_ms, 3),
            "p99_lag_ms": round(self.p99_lag_ms, 3),
            "purchases": self.purchases,
            "rfm_updates": self.rfm_updates,
            "event_time_drift_ms": round(self.event_time_drift_ms, 1),
            "sender_cpu_s": round(self.sender_cpu_s, 2),
            "users": self.users,
            "clicks_by_family": self.clicks_by_family,
            "speed": self.speed,
            "natural_rate": round(self.natural_rate, 4),
            "event_start_ms": self.event_start_ms,
            "event_end_ms": self.event_end_ms,
        }

    def print(self, console: Console) -> None:
        console.print(
            f"target rate {self.target_rate:,.0f} clicks/s, achieved {self.achieved_rate:,.0f} clicks/s "
            f"({self.acked:,} acked of {self.sent:,} sent in {self.elapsed_s:.2f} s)"
        )
        console.print(f"schedule lag: max {self.max_lag_ms:,.1f} ms, p99 {self.p99_lag_ms:,.1f} ms")
        console.print(
            f"errors {self.errors}{' (' + self.first_error + ')' if self.first_error else ''}; "
            f"purchases {self.purchases:,}, RFM updates {self.rfm_updates:,}; users {self.users:,}; "
            + (
                f"event time - send slot at the end {self.event_time_drift_ms:+,.0f} ms"
                if self.speed is None
                else f"event time behind the event clock at the last send {-self.event_time_drift_ms:,.0f} ms"
            )
        )
        console.print(
            f"sender CPU {self.sender_cpu_s:.1f} s ({100 * self.sender_cpu_s / max(self.elapsed_s, 1e-9):.0f} % "
            "of a core; generation and encoding run in a process of their own)"
        )
        if self.speed is not None:
            span_s = (self.event_end_ms - self.event_start_ms) / 1000
            console.print(
                f"event time {format_time(self.event_start_ms)} .. {format_time(self.event_end_ms)} "
                f"({span_s / 3600:,.2f} h at x{self.speed:,.4g}; the speed sized on a natural rate of "
                f"{self.natural_rate:,.3g} clicks/s of event time, bursts left out)"
            )
        console.print(
            "clicks by family: " + ", ".join(f"{k} {v:,}" for k, v in self.clicks_by_family.items())
        )


# --------------------------------------------------------------------------------------------------
# Sizing and encoding
# --------------------------------------------------------------------------------------------------


def users_for_rate(
    rate: float, start_ms: int, seed: int = 42, bot_scale: float = 1.0, warmup_s: int = 600
) -> int:
    """Users whose simulated traffic makes ``rate`` clicks/s in the first ten minutes from ``start_ms``.

    Measured on a probe population run exactly as live runs (same warm-up), so the ramp of sessions
    older than the warm-up is accounted for. Bursts are left out: they are rare, and one in the probe
    would make the estimate jump.
    """
    probe_users = 400_000
    params = SimParams(
        seed=seed,
        users=probe_users,
        chunk_s=60,
        warmup_s=warmup_s,
        bot_scale=bot_scale,
        start_ms=start_ms // 60_000 * 60_000,
        bot_actors={**BOT_ACTORS_PER_REFERENCE, "burst": 0},
    )
    window_ms = 600_000
    clicks = sum(out.clicks.rows for out in Simulator(params).run(params.start_ms + window_ms))
    per_user = clicks / (window_ms / 1000) / probe_users
    return max(1, math.ceil(rate / per_user))


def natural_rate(params: SimParams, window_s: int = 3600, bursts: bool = False) -> float:
    """Clicks per second of simulated time that ``params``'s population makes from ``params.start_ms``.

    Measured by simulating ``window_s`` seconds (with ``params.warmup_s`` of warm-up, as a live run
    starts) in 10-minute chunks. Bursts are left out unless ``bursts``: an attack in the probe
    window would make the estimate jump, and a speed sized on it would be far too slow. Populations
    over :data:`PROBE_USERS` are probed with that many users and the rate scaled (every family's
    traffic is proportional to the users), so that a day's probe stays a few seconds.
    """
    if window_s < 1:
        raise ConfigError("window_s must be >= 1")
    users = min(params.users, PROBE_USERS)
    probe = replace(
        params,
        users=users,
        chunk_s=600,
        bot_actors={**params.bot_actors, **({} if bursts else {"burst": 0})},
    )
    end_ms = probe.start_ms + window_s * 1000
    clicks = sum(out.clicks.rows for out in Simulator(probe).run(end_ms))
    return clicks / window_s * params.users / users


def chunk_for_speed(speed: float, rate: float) -> int:
    """Event-time seconds per generation chunk at ``speed`` when the population makes ``rate``
    clicks/s of event time: a chunk covers at most :data:`CHUNK_WALL_S` of wall time and
    :data:`CHUNK_MAX_CLICKS` clicks (so the encoder hands over small pieces early), and is a divisor of
    an hour (or whole hours) as the simulator requires. At speed 1: 1 s; at x500: 450 s."""
    limit = max(1.0, min(speed * CHUNK_WALL_S, CHUNK_MAX_CLICKS / max(rate, 1e-9)))
    if limit >= 7200:
        return int(limit // 3600) * 3600
    return max(d for d in _CHUNK_DIVISORS if d <= limit)


@dataclass
class Block:
    """One chunk, encoded: clicks in send order and the purchases/RFM messages due in it."""

    chunk: int
    partitions: list[int]
    keys: list[bytes]
    values: list[bytes]
    event_ms: np.ndarray
    families: np.ndarray
    side: list[tuple[str, int, bytes, bytes]]  # (topic, partition, key, value)
    #: event time of each side message, ascending
    side_ms: np.ndarray

    @property
    def family_counts(self) -> np.ndarray:
        return np.bincount(self.families, minlength=len(FAMILIES))

    def split(self, clicks: int) -> list[Block]:
        """Pieces of at most ``clicks`` clicks, each with the side messages of its time span (those
        before the first click go with the first piece, those after the last with the last)."""
        n = len(self.values)
        if n <= clicks:
            return [self]
        cuts = list(range(0, n, clicks)) + [n]
        inner = np.searchsorted(self.side_ms, self.event_ms[cuts[1:-1]], side="left").tolist()
        side_cuts = [0, *inner, len(self.side)]
        return [
            Block(
                chunk=self.chunk,
                partitions=self.partitions[a:b],
                keys=self.keys[a:b],
                values=self.values[a:b],
                event_ms=self.event_ms[a:b],
                families=self.families[a:b],
                side=self.side[sa:sb],
                side_ms=self.side_ms[sa:sb],
            )
            for a, b, sa, sb in zip(cuts, cuts[1:], side_cuts, side_cuts[1:], strict=False)
        ]


@dataclass(frozen=True)
class TopicLayout:
    """Real topic names and partition counts (partitions are picked here, with Kafka's murmur2)."""

    clicks: str
    click_partitions: int
    purchases: str
    purchase_partitions: int
    rfm: str
    rfm_partitions: int

    @classmethod
    def default(cls, settings: Settings) -> TopicLayout:
        """The layout ``app.contracts.topics`` creates (for tests; live asks the broker)."""
        p = settings.click_partitions
        return cls(settings.topic(CLICKS), p, settings.topic(PURCHASES), p, settings.topic(ACCOUNT_RFM), p)


#: Wire names of a click's fields: CLICK_SCHEMA's first eleven columns, ``event_time`` as RFC 3339.
_CLICK_WIRE: Final = ("click_id", "event_time", *CLICK_SCHEMA.names[2:11])


def click_messages(table: pa.Table, partitions: int) -> tuple[list[int], list[bytes], list[bytes]]:
    """Partitions, keys (the IP) and wire JSON (with ``_truth``) of clicks in ``CLICK_SCHEMA`` form
    (a generated chunk's :func:`click_table` or a history file's rows)."""
    ip = table.column("ip").combine_chunks()
    cols = [
        encode.rfc3339_ms(table.column(name).to_numpy())
        if name == "event_time_ms"
        else table.column(name).to_pylist()
        for name in CLICK_SCHEMA.names
    ]
    values = []
    for row in zip(*cols, strict=True):
        doc = dict(zip(_CLICK_WIRE, row[:11], strict=True))
        doc["_truth"] = {"actor": row[11], "family": row[12], "actor_id": row[13]}
        values.append(orjson.dumps(doc))
    return encode.kafka_partition(ip, partitions).tolist(), [s.encode() for s in cols[2]], values


def purchase_messages(table: pa.Table, partitions: int) -> tuple[list[int], list[bytes], list[bytes]]:
    """Partitions, keys (the click id) and wire JSON of purchases in ``PURCHASE_SCHEMA`` form."""
    click_ids = table.column("click_id").combine_chunks()
    times = encode.rfc3339_ms(table.column("event_time_ms").to_numpy())
    keys, values = [], []
    for pid, cid, uid, when, amount in zip(
        table.column("purchase_id").to_pylist(),
        click_ids.to_pylist(),
        table.column("user_id").to_pylist(),
        times,
        table.column("amount").to_pylist(),
        strict=True,
    ):
        doc = {"purchase_id": pid, "click_id": cid, "user_id": uid, "event_time": when, "amount": amount}
        keys.append(cid.encode())
        values.append(orjson.dumps(doc))
    return encode.kafka_partition(click_ids, partitions).tolist(), keys, values


def rfm_messages(table: pa.Table, partitions: int) -> tuple[list[int], list[bytes], list[bytes]]:
    """Partitions, keys (the user id) and wire JSON of account RFM updates in ``RFM_SCHEMA`` form."""
    user_ids = table.column("user_id").combine_chunks()
    times = encode.rfc3339_ms(table.column("updated_at_ms").to_numpy())
    rows = zip(*(table.column(n).to_pylist() for n in RFM_SCHEMA.names[:5]), times, strict=True)
    keys, values = [], []
    for uid, score, recency, freq, monetary, when in rows:
        doc = {
            "user_id": uid,
            "rfm_score": score,
            "recency_days": recency,
            "frequency": freq,
            "monetary": monetary,
            "updated_at": when,
        }
        keys.append(uid.encode())
        values.append(orjson.dumps(doc))
    return encode.kafka_partition(user_ids, partitions).tolist(), keys, values


def encode_chunk(params: SimParams, sim: Simulator, out: ChunkOutput, topics: TopicLayout) -> Block:
    """Wire JSON (with ``_truth``) of a chunk's clicks, keys, partitions; purchases and RFM updates
    (merged in event-time order, purchases first on a tie)."""
    c = out.clicks
    partitions, keys, values = click_messages(click_table(params, sim.pop, c), topics.click_partitions)
    side: list[tuple[str, int, bytes, bytes]] = []
    side_ms: list[np.ndarray] = []
    if out.purchases.rows:
        ptab = purchase_table(params, sim.pop, out.purchases)
        parts, pkeys, pvalues = purchase_messages(ptab, topics.purchase_partitions)
        side += [(topics.purchases, p, k, v) for p, k, v in zip(parts, pkeys, pvalues, strict=True)]
        side_ms.append(out.purchases["t_ms"])
    if out.rfm.rows:
        parts, rkeys, rvalues = rfm_messages(rfm_table(sim.pop, out.rfm), topics.rfm_partitions)
        side += [(topics.rfm, p, k, v) for p, k, v in zip(parts, rkeys, rvalues, strict=True)]
        side_ms.append(out.rfm["t_ms"])
    times = np.concatenate(side_ms) if side_ms else np.empty(0, dtype=np.int64)
    order = np.argsort(times, kind="stable")
    return Block(
        chunk=out.chunk,
        partitions=partitions,
        keys=keys,
        values=values,
        event_ms=c["t_ms"],
        families=c["family"],
        side=[side[j] for j in order.tolist()],
        side_ms=times[order],
    )


def _encode_forever(
    params: SimParams,
    population: Population,
    topics: TopicLayout,
    blocks: Any,
    stopping: Any,
    limit: int,
    end_ms: int | None = None,
) -> None:
    """The encoder process: run the simulator, put encoded chunks on the bounded queue until
    ``limit`` clicks are encoded, or (``end_ms``) until the simulation's end, then :data:`_END`."""
    try:
        sim, encoded = Simulator(params, population), 0
        for out in sim.run(end_ms):
            for block in encode_chunk(params, sim, out, topics).split(PIECE_CLICKS):
                if not _put(blocks, stopping, block):
                    return
                encoded += len(block.values)
                if encoded >= limit:
                    return
        _put(blocks, stopping, _END)
    except BaseException:  # handed to the sender, which raises it
        blocks.put(RuntimeError("simulator process failed:\n" + traceback.format_exc()))


def _put(blocks: Any, stopping: Any, item: Any) -> bool:
    """Put ``item`` on the bounded queue, waiting while it is full; False once told to stop."""
    while not stopping.is_set():
        try:
            blocks.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


class _Encoder:
    """Generation and JSON encoding in a process of its own, a few chunks ahead of the sender.

    A thread would share the GIL with the event loop: every chunk's encoding then stalls the
    sender for tens of milliseconds (measured: p99 schedule lag 42 ms with a thread at 20k/s).
    """

    def __init__(
        self,
        params: SimParams,
        population: Population,
        topics: TopicLayout,
        ahead: int,
        limit: int,
        end_ms: int | None = None,
    ) -> None:
        # fork: the child starts at once with the population (and its memo) already built, and the
        # caller's __main__ is not imported again; it never touches the parent's event loop or sockets
        ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        self.blocks: Any = ctx.Queue(maxsize=ahead)
        self.stopping = ctx.Event()
        self.process = ctx.Process(
            target=_encode_forever,
            args=(params, population, topics, self.blocks, self.stopping, limit, end_ms),
            name="ivt-sim-encoder",
            daemon=True,
        )

    def start(self) -> None:
        self.process.start()

    async def pregenerate(self, clicks: int | None) -> None:
        """Take blocks off the process's queue until ``clicks`` clicks (None: the end) are here;
        afterwards :attr:`blocks` is a local queue of all of them and the process has exited."""
        local: queue.SimpleQueue[Any] = queue.SimpleQueue()
        have = 0
        while clicks is None or have < clicks:
            item = await asyncio.to_thread(self.blocks.get)
            if isinstance(item, BaseException):
                raise item
            local.put(item)
            if isinstance(item, str):  # _END
                break
            have += len(item.values)
        await asyncio.to_thread(self.process.join, 30)
        self.blocks = local

    def stop(self) -> None:
        if self.process.pid is None:
            return
        self.stopping.set()
        # drain, so the child's queue feeder can finish and the process exit
        with contextlib.suppress(Exception):
            while True:
                self.blocks.get_nowait()
        self.process.join(timeout=5)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(timeout=5)


class _LagHistogram:
    """Schedule lags in log-spaced bins (1 % wide, 1 us .. ~3 h): bounded memory, p99 within 1 %."""

    _BASE = math.log(1.01)

    def __init__(self) -> None:
        self.bins = np.zeros(2400, dtype=np.int64)
        self.max_ns = 0

    def add(self, lags_ns: list[int]) -> None:
        if not lags_ns:
            return
        arr = np.maximum(np.asarray(lags_ns, dtype=np.float64) / 1000.0, 1.0)
        self.max_ns = max(self.max_ns, int(max(lags_ns)))
        idx = np.minimum((np.log(arr) / self._BASE).astype(np.int64), self.bins.shape[0] - 1)
        self.bins += np.bincount(idx, minlength=self.bins.shape[0])

    def quantile_ms(self, q: float) -> float:
        total = int(self.bins.sum())
        if total == 0:
            return 0.0
        k = int(np.searchsorted(np.cumsum(self.bins), q * total, side="left"))
        return math.exp((k + 1) * self._BASE) / 1000.0  # upper edge of the bin, in ms


# --------------------------------------------------------------------------------------------------
# The publisher
# --------------------------------------------------------------------------------------------------


async def publish_live(
    settings: Settings, options: LiveOptions, console: Console | None = None
) -> LiveReport:
    """Publish ``options.duration_s`` seconds of clicks at ``options.rate``; returns the report.

    With ``options.start_ms`` the traffic continues a world (see the module's docstring): the
    schedule follows event time, compressed by ``options.speed``.
    """

    if options.producer not in ("batch", "send"):
        raise ConfigError(f"producer must be 'batch' or 'send', got {options.producer!r}")
    console = console or Console(stderr=True)
    if options.start_ms is not None:
        return await _publish_continued(settings, options, console)
    total = max(1, round(options.rate * options.duration_s))
    now_ms = time.time_ns() // 1_000_000
    users = options.users or users_for_rate(
        options.rate, now_ms, options.seed, options.bot_scale, options.warmup_s
    )
    producer = _producer(settings, options)
    await producer.start()
    encoder: _Encoder | None = None
    report = LiveReport(target_rate=options.rate, duration_s=options.duration_s, users=users)
    try:
        topics = await _topic_layout(settings, producer)
        # the simulation (and the schedule) start once the warm-up is generated
        params = SimParams(
            seed=options.seed,
            users=users,
            chunk_s=1,
            warmup_s=options.warmup_s,
            bot_scale=options.bot_scale,
            purchase_delay_scale=options.purchase_delay_scale,
        )
        population = Population(params)
        start_ms = _plan_start(params, population, options.duration_s if options.pregenerate else 0.0)
        params = replace(params, start_ms=start_ms, id_prefix=f"{options.seed}.L{start_ms // 1000}.")
        console.print(
            f"{users:,} users; generating {options.warmup_s} s of warm-up traffic, "
            f"publishing from {format_time(start_ms)}"
        )
        ahead = total // PIECE_CLICKS + 4 if options.pregenerate else options.ahead
        encoder = _Encoder(params, population, topics, ahead, limit=total)  # nothing past the run
        encoder.start()
        if options.pregenerate:
            await encoder.pregenerate(total)
        await _send_all(
            _sender(producer, options), encoder, topics, start_ms, total, options, report, console
        )
        report.event_start_ms = start_ms
    finally:
        if encoder is not None:
            encoder.stop()
        await producer.stop()
    return report


def world_params(options: LiveOptions) -> SimParams:
    """Continue mode: the history's population (seed, users, bots, time zone) from ``options.start_ms``,
    with history delays (``purchase_delay_scale`` 1.0) and ids that no history uses (``L`` prefix)."""
    if options.start_ms is None:
        raise ConfigError("world_params needs options.start_ms (the event time to continue from)")
    if options.users is None:
        raise ConfigError("continuing a world needs its users (the history's population size)")
    return SimParams(
        seed=options.seed,
        users=options.users,
        start_ms=options.start_ms,
        warmup_s=options.warmup_s,
        tz_offset_h=options.tz_offset_h,
        bot_scale=options.bot_scale,
        purchase_delay_scale=1.0,
        id_prefix=f"{options.seed}.L{options.start_ms // 1000}.",
        bot_actors=dict(options.bot_actors or BOT_ACTORS_PER_REFERENCE),
    )


@dataclass(frozen=True)
class SpeedPlan:
    """Continue mode: how the world's event time maps to the wall clock."""

    #: the run's simulation parameters (the history's population, chunk length fit for the speed)
    params: SimParams
    #: event-time seconds per wall second
    speed: float
    #: the population's clicks/s of event time over the event time the run covers (bursts left out)
    natural_rate: float
    #: ... in the first hour from the start
    natural_rate_start: float
    #: seconds of event time the natural rate was measured over
    window_s: int


def plan_speed(options: LiveOptions) -> SpeedPlan:
    """Continue mode: the speed is ``options.speed``, or the one that turns the population's natural
    rate into ``options.rate`` on average over the event time the run covers (``duration_s * speed``,
    within :data:`SPEED_WINDOW_S`: the rate at the start for a run of an hour of event time or less,
    a day's average for a run of a day or more; found in a few rounds, as the span depends on
    the speed; the span is taken within 5 %). The day/night rhythm and the bursts are kept: the wall rate follows them around the
    average. The chunk length follows the speed (:func:`chunk_for_speed`)."""
    params = world_params(options)
    lo, hi = SPEED_WINDOW_S
    start_rate = natural = natural_rate(params, lo)
    window = lo
    if options.speed is not None:
        if options.speed <= 0:
            raise ConfigError("speed must be > 0")
        speed = float(options.speed)
    else:
        speed = 0.0
        for _ in range(8):
            if natural <= 0:
                raise ConfigError(
                    f"{params.users:,} users make no clicks from {format_time(params.start_ms)} "
                    f"for {window / 3600:,.1f} h"
                )
            speed = options.rate / natural
            span = int(min(max(options.duration_s * speed, lo), hi)) // 600 * 600
            if abs(span - window) <= max(600, window // 20):
                break
            window = span
            natural = natural_rate(params, window)
        else:
            speed = options.rate / max(natural, 1e-9)
    return SpeedPlan(
        replace(params, chunk_s=chunk_for_speed(speed, natural)), speed, natural, start_rate, window
    )


async def _publish_continued(settings: Settings, options: LiveOptions, console: Console) -> LiveReport:
    """Continue mode: the world's traffic from ``options.start_ms``, event time compressed by the speed."""
    plan = plan_speed(options)
    params, speed, natural = plan.params, plan.speed, plan.natural_rate
    start_ms = params.start_ms
    end_ms = start_ms + round(options.duration_s * speed * 1000)
    over = (
        ""
        if plan.window_s == SPEED_WINDOW_S[0]
        else f" in the first hour, {natural:,.3g} over the {plan.window_s / 3600:,.3g} h it is sized on"
    )
    console.print(
        f"{params.users:,} users make {plan.natural_rate_start:,.3g} clicks/s of event time{over}; "
        f"speed x{speed:,.4g} to publish {natural * speed:,.0f} clicks/s (on average: the day/night "
        f"rhythm and bursts are kept, compressed); event time {format_time(start_ms)} .. "
        f"{format_time(end_ms)} ({options.duration_s * speed / 3600:,.2f} h in {options.duration_s:,.0f} s; "
        f"chunks of {params.chunk_s} s)"
    )
    expected = max(1, round(natural * speed * options.duration_s))
    report = LiveReport(
        # with a speed given, the rate follows from it
        target_rate=options.rate if options.speed is None else natural * speed,
        duration_s=options.duration_s,
        users=params.users,
        speed=speed,
        natural_rate=natural,
        event_start_ms=start_ms,
        event_end_ms=start_ms,
    )
    producer = _producer(settings, options)
    await producer.start()
    encoder: _Encoder | None = None
    try:
        topics = await _topic_layout(settings, producer)
        population = Population(params)
        ahead = expected // PIECE_CLICKS * 2 + 64 if options.pregenerate else options.ahead
        encoder = _Encoder(params, population, topics, ahead, limit=2**62, end_ms=end_ms)
        encoder.start()
        if options.pregenerate:
            await encoder.pregenerate(None)
        await _send_by_event_time(
            _sender(producer, options), encoder, topics, start_ms, speed, expected, options, report, console
        )
    finally:
        if encoder is not None:
            encoder.stop()
        await producer.stop()
    return report


def _producer(settings: Settings, options: LiveOptions) -> Any:
    return clients.producer(
        settings,
        acks="all" if options.idempotence or options.acks == "all" else int(options.acks),
        enable_idempotence=options.idempotence,
        linger_ms=options.linger_ms,
        max_batch_size=options.max_batch_size,
        max_request_size=max(1_048_576, options.max_batch_size * 2),
        request_timeout_ms=30_000,
    )


async def _topic_layout(settings: Settings, producer: Any) -> TopicLayout:
    """The real partition counts, asked of the broker."""
    names = (settings.topic(CLICKS), settings.topic(PURCHASES), settings.topic(ACCOUNT_RFM))
    counts = [len(await producer.partitions_for(name)) for name in names]
    return TopicLayout(names[0], counts[0], names[1], counts[1], names[2], counts[2])


def _sender(producer: Any, options: LiveOptions) -> _MessageSender | _BatchSender:
    if options.producer == "batch":
        return _BatchSender(producer, options.linger_ms)
    return _MessageSender(producer)


def _plan_start(params: SimParams, population: Population, pregenerate_s: float = 0.0) -> int:
    """A start time far enough ahead for the encoder process to generate the warm-up (and the
    ``pregenerate_s`` seconds of traffic generated before the first send).

    Timed here on two chunks (the first also fills the population's memo, which the encoder
    process inherits), with a margin.
    """
    now_s = time.time_ns() // 1_000_000_000
    sim = Simulator(params, population)
    sim.generate(now_s)
    began = time.perf_counter()
    sim.generate(now_s + 1)
    per_chunk = time.perf_counter() - began
    lead_s = 1.5 + 2.0 * per_chunk * (params.warmup_s + pregenerate_s) / params.chunk_s
    return (time.time_ns() // 1_000_000_000 + math.ceil(lead_s) + 1) * 1000


Headers = list[tuple[str, bytes]]
#: called with (future, messages it stands for, topic) once the broker answered
DoneCallback = Callable[[asyncio.Future[Any], int, str], None]


class _MessageSender:
    """``producer.send`` per message."""

    def __init__(self, producer: Any) -> None:
        self.producer = producer
        self.on_done: DoneCallback = lambda fut, n, topic: None

    async def append(
        self, topic: str, partition: int, key: bytes, value: bytes, headers: Headers, now: int
    ) -> None:
        fut = await self.producer.send(topic, value, key=key, partition=partition, headers=headers)
        fut.add_done_callback(lambda f: self.on_done(f, 1, topic))

    async def tick(self, now: int) -> None:
        return None

    async def close(self) -> None:
        await self.producer.flush()


class _BatchSender:
    """Our own batch per topic-partition, handed to the producer when full or ``linger_ms`` old.

    aiokafka drains one batch per partition per request, so batches must not be tiny: lingering
    a few milliseconds here gives them tens to hundreds of messages at the rates we care about.
    """

    def __init__(self, producer: Any, linger_ms: int) -> None:
        self.producer = producer
        self.linger_ns = linger_ms * 1_000_000
        self.on_done: DoneCallback = lambda fut, n, topic: None
        # (topic, partition) -> [builder, first append ns, messages]
        self._open: dict[tuple[str, int], list[Any]] = {}

    async def append(
        self, topic: str, partition: int, key: bytes, value: bytes, headers: Headers, now: int
    ) -> None:
        tp = (topic, partition)
        entry = self._open.get(tp)
        if entry is None:
            entry = self._open[tp] = [self.producer.create_batch(), now, 0]
        if entry[0].append(key=key, value=value, timestamp=None, headers=headers) is None:
            await self._submit(tp)  # full
            entry = self._open[tp] = [self.producer.create_batch(), now, 0]
            if entry[0].append(key=key, value=value, timestamp=None, headers=headers) is None:
                raise ValueError(f"message of {len(value)} bytes does not fit an empty batch")
        entry[2] += 1

    async def tick(self, now: int) -> None:
        for tp in [tp for tp, entry in self._open.items() if now - entry[1] >= self.linger_ns]:
            await self._submit(tp)

    async def close(self) -> None:
        for tp in list(self._open):
            await self._submit(tp)
        await self.producer.flush()

    async def _submit(self, tp: tuple[str, int]) -> None:
        builder, _, n = self._open.pop(tp)
        builder.close()
        fut = await self.producer.send_batch(builder, tp[0], partition=tp[1])
        fut.add_done_callback(lambda f: self.on_done(f, n, tp[0]))


async def _send_all(
    sender: _MessageSender | _BatchSender,
    encoder: _Encoder,
    topics: TopicLayout,
    start_ms: int,
    total: int,
    options: LiveOptions,
    report: LiveReport,
    console: Console,
) -> None:
    # click i is due at start + i * den / num seconds (exact integer arithmetic)
    frac = Fraction(options.rate).limit_denominator(1000)
    num, den = frac.numerator, frac.denominator
    start_ns = report.start_ns = start_ms * 1_000_000
    # one clock: the wall clock at one instant, advanced by the monotonic clock (no NTP jumps)
    wall0, mono0 = time.time_ns(), time.perf_counter_ns()

    def now_ns() -> int:
        return wall0 + (time.perf_counter_ns() - mono0)

    def intended_ns(i: int) -> int:
        return start_ns + i * den * 1_000_000_000 // num

    lags = _LagHistogram()
    family_counts = np.zeros(len(FAMILIES), dtype=np.int64)
    last_ack_ns = 0

    def on_done(fut: asyncio.Future[Any], n: int, topic: str) -> None:
        nonlocal last_ack_ns
        if fut.cancelled() or fut.exception() is not None:
            report.errors += n
            if not report.first_error:
                report.first_error = "cancelled" if fut.cancelled() else repr(fut.exception())
        elif topic == topics.clicks:
            report.acked += n
            last_ack_ns = now_ns()

    sender.on_done = on_done
    side_sent = 0

    async def send_side(block: Block, upto: int) -> None:
        """Purchases and RFM updates of a block, spread over its clicks (no burst at its start)."""
        nonlocal side_sent
        while side_sent < upto:
            t, part, k, v = block.side[side_sent]
            now = now_ns()
            await sender.append(t, part, k, v, [(SENT_HEADER, str(now).encode())], now)
            if t == topics.purchases:
                report.purchases += 1
            else:
                report.rfm_updates += 1
            side_sent += 1

    progress = Progress(
        TextColumn("[bold]live"),
        BarColumn(),
        TextColumn(
            "sent {task.completed:,.0f}/{task.total:,.0f}  rate {task.fields[rate]:,.0f}/s  "
            "lag {task.fields[lag]:,.1f} ms  acked {task.fields[acked]:,}  errors {task.fields[errors]}"
        ),
        console=console,
        disable=not options.progress,
    )
    task = progress.add_task("live", total=total, rate=0.0, lag=0.0, acked=0, errors=0)
    with progress:
        # wait for the warm-up to be generated, then for the schedule's start
        block: Any = None
        while block is None:
            block = await _next_block(encoder)
        while (wait := start_ns - now_ns()) > 0:
            await asyncio.sleep(min(wait / 1e9, 0.5))
        pos = i = 0
        window_sent, window_start = 0, start_ns
        cpu0 = time.process_time()
        pending_lags: list[int] = []
        while i < total:
            now = now_ns()
            due = min(total, (now - start_ns) * num // (den * 1_000_000_000) + 1)
            if due <= i:
                await sender.tick(now)
                # ahead of schedule: sleep at least a millisecond (sends then go out in small bursts)
                await asyncio.sleep(max(0.001, (intended_ns(i) - now) / 1e9))
                continue
            while i < due:
                if pos >= len(block.values):
                    nxt = await _next_block(encoder)
                    if nxt is None:
                        continue  # the encoder is behind: the lag grows, and is measured
                    await send_side(block, len(block.side))
                    family_counts += block.family_counts
                    block, pos, side_sent = nxt, 0, 0
                    continue
                intended = intended_ns(i)
                sent = now_ns()
                headers = [(INTENDED_HEADER, str(intended).encode()), (SENT_HEADER, str(sent).encode())]
                await sender.append(
                    topics.clicks, block.partitions[pos], block.keys[pos], block.values[pos], headers, sent
                )
                pending_lags.append(sent - intended)
                pos += 1
                i += 1
                await send_side(block, pos * len(block.side) // len(block.values))
            await sender.tick(now_ns())
            if now - window_start >= 250_000_000 or i >= total:
                lags.add(pending_lags)
                progress.update(
                    task,
                    completed=i,
                    rate=(i - window_sent) / max((now - window_start) / 1e9, 1e-9),
                    lag=pending_lags[-1] / 1e6 if pending_lags else 0.0,
                    acked=report.acked,
                    errors=report.errors,
                )
                pending_lags = []
                window_sent, window_start = i, now
        report.sent = i
        report.send_elapsed_s = (now_ns() - start_ns) / 1e9
        # how far the simulated event time of the last click is from its send slot
        report.event_time_drift_ms = (int(block.event_ms[pos - 1]) * 1_000_000 - intended_ns(total - 1)) / 1e6
        report.event_end_ms = int(block.event_ms[pos - 1])
        family_counts += np.bincount(block.families[:pos], minlength=len(FAMILIES))
        await sender.close()
        report.sender_cpu_s = time.process_time() - cpu0
        progress.update(task, completed=i, acked=report.acked, errors=report.errors)
    report.elapsed_s = (max(last_ack_ns, start_ns) - start_ns) / 1e9
    report.max_lag_ms = lags.max_ns / 1e6
    report.p99_lag_ms = min(lags.quantile_ms(0.99), report.max_lag_ms)
    report.clicks_by_family = dict(zip(FAMILIES, family_counts.tolist(), strict=True))


async def _send_by_event_time(
    sender: _MessageSender | _BatchSender,
    encoder: _Encoder,
    topics: TopicLayout,
    event_start_ms: int,
    speed: float,
    expected: int,
    options: LiveOptions,
    report: LiveReport,
    console: Console,
) -> None:
    """Continue mode: every message (click, purchase, RFM update) is due at the wall slot of its event
    time, ``start + (t - event_start_ms) / speed``; the encoder's end (:data:`_END`) ends the run."""
    ns_per_event_ms = 1e6 / speed
    wall0, mono0 = time.time_ns(), time.perf_counter_ns()

    def now_ns() -> int:
        return wall0 + (time.perf_counter_ns() - mono0)

    lags = _LagHistogram()
    family_counts = np.zeros(len(FAMILIES), dtype=np.int64)
    last_ack_ns = 0

    def on_done(fut: asyncio.Future[Any], n: int, topic: str) -> None:
        nonlocal last_ack_ns
        if fut.cancelled() or fut.exception() is not None:
            report.errors += n
            if not report.first_error:
                report.first_error = "cancelled" if fut.cancelled() else repr(fut.exception())
        elif topic == topics.clicks:
            report.acked += n
            last_ack_ns = now_ns()

    sender.on_done = on_done
    progress = Progress(
        TextColumn("[bold]live"),
        BarColumn(),
        TextColumn(
            "sent {task.completed:,.0f}/~{task.total:,.0f}  rate {task.fields[rate]:,.0f}/s  "
            "lag {task.fields[lag]:,.1f} ms  acked {task.fields[acked]:,}  errors {task.fields[errors]}  "
            "event time {task.fields[event]}"
        ),
        console=console,
        disable=not options.progress,
    )
    task = progress.add_task("live", total=expected, rate=0.0, lag=0.0, acked=0, errors=0, event="")
    sent_clicks = 0
    last_sent_ns = last_lag_ns = 0
    with progress:
        # wait for the warm-up to be generated; the schedule starts right after
        block: Any = None
        while block is None:
            block = await _next_block(encoder)
        start_ns = report.start_ns = now_ns() + 100_000_000
        window_sent, window_start = 0, start_ns
        last_tick = start_ns
        cpu0 = time.process_time()
        pending_lags: list[int] = []
        while not isinstance(block, str):
            # offsets in int64 before adding the epoch (a float64 epoch in ns is only good to 256 ns)
            click_due = start_ns + np.rint((block.event_ms - event_start_ms) * ns_per_event_ms).astype(
                np.int64
            )
            side_due = start_ns + np.rint((block.side_ms - event_start_ms) * ns_per_event_ms).astype(np.int64)
            c_due, s_due = click_due.tolist(), side_due.tolist()
            pos = spos = 0
            n_clicks, n_side = len(c_due), len(s_due)
            while pos < n_clicks or spos < n_side:
                # side messages first on a tie (an RFM score may be stamped at its account's first click)
                side_next = spos < n_side and (pos >= n_clicks or s_due[spos] <= c_due[pos])
                intended = s_due[spos] if side_next else c_due[pos]
                now = now_ns()
                if intended > now:
                    await sender.tick(now)
                    last_tick = now
                    if now - window_start >= 250_000_000:
                        lags.add(pending_lags)
                        progress.update(
                            task,
                            completed=sent_clicks,
                            rate=(sent_clicks - window_sent) / max((now - window_start) / 1e9, 1e-9),
                            lag=pending_lags[-1] / 1e6 if pending_lags else 0.0,
                            acked=report.acked,
                            errors=report.errors,
                            event=format_time(event_start_ms + int((now - start_ns) / ns_per_event_ms)),
                        )
                        pending_lags = []
                        window_sent, window_start = sent_clicks, now
                    await asyncio.sleep(max(0.001, (intended - now) / 1e9))
                    continue
                if side_next:
                    t, part, k, v = block.side[spos]
                    await sender.append(t, part, k, v, [(SENT_HEADER, str(now).encode())], now)
                    if t == topics.purchases:
                        report.purchases += 1
                    else:
                        report.rfm_updates += 1
                    spos += 1
                else:
                    headers = [(INTENDED_HEADER, str(intended).encode()), (SENT_HEADER, str(now).encode())]
                    await sender.append(
                        topics.clicks, block.partitions[pos], block.keys[pos], block.values[pos], headers, now
                    )
                    pending_lags.append(now - intended)
                    report.event_end_ms = int(block.event_ms[pos])
                    last_sent_ns, last_lag_ns = now, now - intended
                    pos += 1
                    sent_clicks += 1
                if now - last_tick >= 1_000_000:  # behind schedule: still hand over lingering batches
                    await sender.tick(now)
                    last_tick = now
            family_counts += block.family_counts
            block = None
            while block is None:
                block = await _next_block(encoder)
        lags.add(pending_lags)
        report.sent = sent_clicks
        report.send_elapsed_s = (now_ns() - start_ns) / 1e9
        # how far the last click's event time was behind the event clock when it was sent
        report.event_time_drift_ms = -last_lag_ns / ns_per_event_ms if last_sent_ns else 0.0
        await sender.close()
        report.sender_cpu_s = time.process_time() - cpu0
        progress.update(
            task, total=sent_clicks, completed=sent_clicks, acked=report.acked, errors=report.errors
        )
    report.elapsed_s = (max(last_ack_ns, start_ns) - start_ns) / 1e9
    report.max_lag_ms = lags.max_ns / 1e6
    report.p99_lag_ms = min(lags.quantile_ms(0.99), report.max_lag_ms)
    report.clicks_by_family = dict(zip(FAMILIES, family_counts.tolist(), strict=True))


async def _next_block(encoder: _Encoder) -> Block | str | None:
    """The next encoded chunk (or :data:`_END`); None (after a short sleep) while the encoder is behind."""
    try:
        item = encoder.blocks.get_nowait()
    except queue.Empty:
        await asyncio.sleep(0.0005)
        return None
    if isinstance(item, BaseException):
        raise item
    return item
