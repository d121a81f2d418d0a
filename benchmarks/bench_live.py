"""End-to-end benchmark of the live path with the real broker (a script, not a test).

Phases, all in one run on one local broker:

1. **Raw ceiling**: an aiokafka consume -> produce pass-through of the same clicks (no parsing),
   the most any Python consumer-producer pair could do here; and the same with each click produced
   as many times as the worker produces records per click (``WORKER_SENDS_PER_CLICK``), the Kafka
   client work alone, with no parsing, state or scoring.
2. **Sustained throughput**: a backlog of simulated clicks is published first, then one worker
   (``ivt worker``, every stage; with ``--split-stages`` a process per stage) drains it; clicks/s = verdicts / time from the first stage's first
   output to the last verdict (:func:`drain_rate`).
   The simulator keys clicks by IP, so the worker runs with ``IVT_CLICKS_KEYED_BY_IP=true`` (validation
   inside the IP stage, two hops) unless ``--repartition`` asks for the general three-stage path.
3. **Latency**: a fresh worker under open-loop simulated load at half the sustained rate (or
   ``--latency-rate``); latency of
   each verdict = time it is read - the click's intended send time (``ivt-intended-ns`` header, so a
   slow producer cannot hide queueing), in an HDR histogram; and the verdicts that were out while
   the load ran, per second, against the offered rate: whether the worker kept up with live arrival
   (a drain rate does not say; figures in docs/performance.md).
   With ``--live-rate R`` a fresh worker then takes open-loop load at ``R`` for ``--live-seconds``,
   generated before the first send and with nothing reading the verdicts until it is over (both
   would take CPU from the worker on this 2-core machine): the verdicts out per second while it ran
   (:func:`keeping_up`, from their record timestamps) and how long after its end the last one came.
4. **In-process cost**: the worker's own histograms of "batch formed -> verdicts handed to the
   producer", in wall time and in CPU time of its event-loop thread (the difference is time the
   process waited for a core), and its peak RSS, from its stats file.

Usage: ``python benchmarks/bench_live.py [--backlog 100000] [--latency-seconds 30] [--latency-rate R]
[--repartition] [--split-stages] [--live-rate 10000 --live-seconds 30]``
(``make bench-short`` runs a short form: ``--backlog 5000 --latency-seconds 5 --scale-out 2``).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import resource
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from hdrh.histogram import HdrHistogram
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.cli.worker import WorkerProcess  # noqa: E402
from app.contracts import topics  # noqa: E402
from app.contracts.settings import Settings  # noqa: E402
from app.kafka.admin import ensure_topics  # noqa: E402
from app.kafka.local import LocalBroker  # noqa: E402
from app.runtime.producer import RecordBatches  # noqa: E402
from app.runtime.stats import read_snapshots, stats_dir  # noqa: E402
from app.simulator.live import INTENDED_HEADER, LiveOptions, publish_live  # noqa: E402

console = Console()

#: Records the worker produces per click: the verdict and one changelog record each for the IP, user
#: and session tables (fewer when a key repeats within a batch); the bundles of IP-enriched clicks
#: (one per partition per IP-stage batch) come on top, at a fraction of a record per click.
WORKER_SENDS_PER_CLICK = 4


def _reader(settings: Settings, *topics_: str, **options: Any) -> AIOKafkaConsumer:
    """A consumer from the start of the log that commits nothing by itself (``options`` add to it)."""
    return AIOKafkaConsumer(
        *topics_,
        bootstrap_servers=settings.bootstrap_servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        **options,
    )


async def _count_until(
    settings: Settings, topic: str, n: int, timeout: float, stamps_ms: list[int] | None = None
) -> tuple[int, float, float]:
    """Read ``topic`` from the start until ``n`` records: (count, first, last record timestamp in s);
    every record's timestamp (ms) is appended to ``stamps_ms`` when it is given.

    The records' own timestamps (CreateTime, set by the producing worker) rather than when this
    reader saw them: a short run can arrive in a single fetch."""
    consumer = _reader(settings, topic)
    await consumer.start()
    got, first, last = 0, float("inf"), 0.0
    try:
        deadline = time.monotonic() + timeout
        while got < n and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500, max_records=50_000)
            for msgs in batch.values():
                for m in msgs:
                    first, last = min(first, m.timestamp / 1000), max(last, m.timestamp / 1000)
                if stamps_ms is not None:
                    stamps_ms.extend(m.timestamp for m in msgs)
                got += len(msgs)
    finally:
        await consumer.stop()
    return got, first, last


async def _first_timestamp(settings: Settings, topic: str) -> float:
    """The earliest record timestamp on ``topic`` (s): the first record of each partition read, until
    every partition has given one or three assigned polls in a row bring nothing (empty topic: inf)."""
    consumer = _reader(settings, topic)
    await consumer.start()
    first: dict[int, float] = {}
    try:
        empty_polls, deadline = 0, time.monotonic() + 30
        while len(first) < settings.click_partitions and empty_polls < 3 and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500, max_records=1000)
            if consumer.assignment():  # polls before the group join say nothing about the topic
                empty_polls = 0 if batch else empty_polls + 1
            for tp, msgs in batch.items():
                if msgs:
                    first.setdefault(tp.partition, msgs[0].timestamp / 1000)
    finally:
        await consumer.stop()
    return min(first.values(), default=float("inf"))


def drain_rate(settings: Settings, n: int) -> tuple[int, float]:
    """(verdicts, clicks/s) of a worker draining ``n`` clicks: verdicts / (last verdict - first
    record the first stage wrote), by the records' own timestamps.

    Timed from the first stage's first output, not the first verdict: the first stages start on the
    backlog before the score stage has its model, and a window that opened at the first verdict would
    leave that head start out (and could show up to twice what the worker sustains under live load).
    """
    got, first, last = asyncio.run(
        _count_until(settings, settings.topic(topics.VERDICTS), n, timeout=max(120, n / 500))
    )
    for stage_output in (topics.CLICKS_BY_IP, topics.CLICKS_BY_ENTITY):  # the first stage's, either way
        first = min(first, asyncio.run(_first_timestamp(settings, settings.topic(stage_output))))
    return got, got / max(last - first, 1e-3)


async def send_lateness(settings: Settings, n: int) -> list[tuple[int, int]]:
    """(intended ns, record timestamp - intended in us) of the first ``n`` clicks on ``clicks``: how
    late the load generator itself sent them (that lateness is part of the measured latency)."""
    consumer = _reader(settings, settings.topic(topics.CLICKS))
    await consumer.start()
    rows: list[tuple[int, int]] = []
    try:
        while len(rows) < n:
            batch = await consumer.getmany(timeout_ms=2000, max_records=50_000)
            if not batch:
                break
            for msgs in batch.values():
                for m in msgs:
                    intended = dict(m.headers).get(INTENDED_HEADER)
                    if intended is not None:
                        rows.append((int(intended), m.timestamp * 1000 - int(intended) // 1000))
    finally:
        await consumer.stop()
    return rows


async def raw_passthrough(settings: Settings, n: int, fanout: int = 1, batched: bool = False) -> float:
    """Consume ``clicks`` and produce each record ``fanout`` times, unchanged, to a scratch topic.

    Clicks consumed per second. ``fanout=1`` is the ceiling of any consume -> produce stage;
    ``fanout=WORKER_SENDS_PER_CLICK`` is the Kafka client work the worker cannot avoid per click with
    no work of its own (a floor of its cost, so a ceiling of its rate: the worker also consumes and
    sends the bundles between its stages). ``batched`` appends the records per partition as the
    worker does (:mod:`app.runtime.producer`) instead of one ``producer.send`` each.
    """
    from app.contracts.topics import TopicSpec
    from app.kafka.admin import ensure_topics_async

    out = settings.topic("bench-passthrough")
    await ensure_topics_async(settings, [TopicSpec(out, settings.click_partitions, "same as clicks")])
    consumer = _reader(
        settings,
        settings.topic(topics.CLICKS),
        group_id=f"raw-{uuid.uuid4().hex[:6]}",
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, linger_ms=5, acks=1)
    await consumer.start()
    await producer.start()
    done, t0 = 0, 0.0
    try:
        while done < n:
            batch = await consumer.getmany(timeout_ms=1000, max_records=5000)
            futures, records, batches = [], 0, RecordBatches(producer)
            for msgs in batch.values():
                t0 = t0 or time.perf_counter()
                records += len(msgs)
                for m in msgs:
                    headers = list(m.headers)
                    for _ in range(fanout):
                        if batched:
                            batches.add(out, m.partition, m.key, m.value, headers)
                        else:
                            futures.append(await producer.send(out, m.value, key=m.key, headers=headers))
            futures += [sent.future for sent in await batches.send()]
            await asyncio.gather(*futures)
            await consumer.commit()
            done += records
        return done / (time.perf_counter() - t0)
    finally:
        await consumer.stop()
        await producer.stop()


def _read_latencies(
    bootstrap: str, topic: str, out: str, ready: Any, stop: Any, count: Any
) -> None:  # pragma: no cover - runs in the reader process
    """Reader process: (intended ns, read time - intended in us) of each verdict, saved to ``out``."""

    async def read() -> list[tuple[int, int]]:
        consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="latest")
        await consumer.start()
        samples: list[tuple[int, int]] = []
        try:
            await consumer.getmany(timeout_ms=1000)  # join at the end of the topic before load starts
            ready.set()
            while not stop.is_set():
                batch = await consumer.getmany(timeout_ms=100, max_records=20_000)
                now_ns = time.time_ns()
                for msgs in batch.values():
                    for m in msgs:
                        intended = dict(m.headers).get(INTENDED_HEADER)
                        if intended is not None:
                            sent_ns = int(intended)
                            samples.append((sent_ns, max(1, (now_ns - sent_ns) // 1000)))
                count.value = len(samples)
        finally:
            await consumer.stop()
        return samples

    Path(out).write_bytes(orjson.dumps(asyncio.run(read())))


class VerdictLatency:
    """Reads ``verdicts`` from its end while load runs; records read time - intended send time
    (``ivt-intended-ns`` header) of each verdict, in us, in an HDR histogram.

    The reader is a process of its own: on the load generator's event loop, the generator's
    synchronous stretches would leave verdicts that are already on the broker unread for seconds (a
    tail of the harness, not of the worker), and a thread would share the generator's GIL.
    """

    def __init__(self, settings: Settings) -> None:
        self.hist = HdrHistogram(1, 600_000_000, 3)
        #: (intended send time in ns, latency in us) of every verdict, for the per-second view
        self.samples: list[tuple[int, int]] = []
        ctx = multiprocessing.get_context("spawn")
        self._ready, self._stop, self._count = ctx.Event(), ctx.Event(), ctx.Value("q", 0)
        self._out = Path(tempfile.mkstemp(prefix="ivt-latency-", suffix=".json")[1])
        self._process = ctx.Process(
            target=_read_latencies,
            args=(
                settings.bootstrap_servers,
                settings.topic(topics.VERDICTS),
                str(self._out),
                self._ready,
                self._stop,
                self._count,
            ),
            name="verdict-latency",
        )

    async def __aenter__(self) -> VerdictLatency:
        self._process.start()
        if not await asyncio.to_thread(self._ready.wait, 60):
            self._process.kill()
            raise RuntimeError("the verdict reader did not start within 60 s")
        return self

    async def wait_for(self, n: int, timeout: float = 60) -> None:
        """Until ``n`` verdicts are recorded or ``timeout`` seconds pass."""
        deadline = time.monotonic() + timeout
        while self._count.value < n and time.monotonic() < deadline:
            await asyncio.sleep(0.2)

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        await asyncio.to_thread(self._process.join, 60)
        try:
            self.samples = [tuple(pair) for pair in orjson.loads(self._out.read_bytes() or b"[]")]
        finally:
            self._out.unlink(missing_ok=True)
        for _, latency_us in self.samples:
            self.hist.record_value(latency_us)


async def latency_run(settings: Settings, rate: float, seconds: float) -> tuple[VerdictLatency, int]:
    """Open-loop load at ``rate``; event-to-verdict latency from the intended send time, in us."""
    async with VerdictLatency(settings) as latency:
        report = await publish_live(
            settings,
            LiveOptions(rate=rate, duration_s=seconds, progress=False, seed=7),
            console=Console(quiet=True),
        )
        await latency.wait_for(report.acked)
    return latency, int(rate * seconds)


def settled(samples: list[tuple[int, int]], skip_s: float) -> HdrHistogram:
    """The latencies of clicks intended after the first ``skip_s`` seconds of load."""
    hist = HdrHistogram(1, 600_000_000, 3)
    if samples:
        cutoff = min(sent for sent, _ in samples) + int(skip_s * 1e9)
        for sent, latency in samples:
            if sent >= cutoff:
                hist.record_value(latency)
    return hist


def verdict_rate_during_load(samples: list[tuple[int, int]], seconds: float) -> float:
    """Verdicts per second that were out while the load ran (from the first intended send time for
    ``seconds``): equal to the offered rate when the worker keeps up, lower when its lag grows.

    A drain rate says what a worker does with a backlog; this says whether it keeps up with live
    arrival, which is what an open-loop load at a given rate asks."""
    if not samples:
        return 0.0
    start = min(sent for sent, _ in samples)
    end = start + int(seconds * 1e9)
    return sum(1 for sent, latency in samples if sent + latency * 1000 <= end) / seconds


def keeping_up(start_ns: int, seconds: float, verdict_ms: list[int]) -> tuple[float, float]:
    """(verdicts out per second while a load that began at ``start_ns`` ran for ``seconds``, seconds
    from the end of the load to the last verdict), from the verdicts' record timestamps.

    The same question as :func:`verdict_rate_during_load`, answered without a reader consuming the
    verdicts while the load runs (on this machine such a reader takes CPU from the worker)."""
    if not verdict_ms:
        return 0.0, float("inf")
    end_ms = start_ns / 1e6 + seconds * 1000
    during = sum(1 for at in verdict_ms if at <= end_ms) / seconds
    return during, (max(verdict_ms) - end_ms) / 1000


def by_second(samples: list[tuple[int, int]], start_ns: int) -> dict[int, tuple[int, float, float]]:
    """second of the load -> (samples, p50 ms, max ms), by intended send time: where the tail happens."""
    buckets: dict[int, list[int]] = {}
    for sent, value in samples:
        buckets.setdefault((sent - start_ns) // 1_000_000_000, []).append(value)
    rows = {}
    for second, values in sorted(buckets.items()):
        values.sort()
        rows[second] = (len(values), values[len(values) // 2] / 1000, values[-1] / 1000)
    return rows


def _worker(settings: Settings, tag: str, logs: Path, split_stages: bool = False) -> WorkerProcess:
    """A started ``ivt worker`` (with ``split_stages`` a process per stage); its log is
    ``logs/worker-{tag}.log``."""
    worker = WorkerProcess(settings, logs / f"worker-{tag}.log", split_stages=split_stages)
    worker.wait_ready(timeout=180)
    return worker


def worker_snapshots(data_dir: Path) -> list[dict[str, Any]]:
    """The stats snapshots of a worker's processes: its own folder's and, for a group
    (``--processes``, ``--split-stages``), each process's folder's."""
    folders = [data_dir, *sorted(p for p in data_dir.iterdir() if p.is_dir())] if data_dir.exists() else []
    return [snap for folder in folders for snap in read_snapshots(stats_dir(folder))]


def scoring_snapshot(snapshots: list[dict[str, Any]]) -> dict[str, Any]:
    """The snapshot of the process that scored the most clicks (the score stage's, when split)."""
    return max(snapshots, key=lambda snap: snap.get("verdicts", 0), default={})


def peak_rss(snapshots: list[dict[str, Any]], split: bool) -> float:
    """The worker's peak RSS: of its one process, or the sum over its stage processes."""
    values = [snap["peak_rss_mib"] for snap in snapshots]
    return sum(values) if split else max(values, default=0.0)


def phase_settings(bootstrap: str, phase: int, work: Path, keyed: bool) -> Settings:
    """Settings of one benchmark phase: its own topics, consumer group and state folder, created."""
    settings = Settings.from_env(
        bootstrap_servers=bootstrap,
        topic_prefix=f"b{phase}-",
        app_id=f"bench-{phase}",
        data_dir=work / f"w{phase}",
        clicks_keyed_by_ip=keyed,
    )
    ensure_topics(settings)
    return settings


async def copy_clicks(source: Settings, target: Settings, n: int) -> None:
    """Copy ``n`` clicks from ``source``'s clicks topic to ``target``'s, partition for partition.

    A plain consume-and-produce is light next to generating the clicks again, so a worker group
    that is already running is not starved of input by the generator while it drains."""
    consumer = _reader(source, source.topic(topics.CLICKS), max_partition_fetch_bytes=4 * 1024 * 1024)
    producer = AIOKafkaProducer(
        bootstrap_servers=target.bootstrap_servers, linger_ms=5, max_batch_size=512 * 1024, acks=1
    )
    await consumer.start()
    await producer.start()
    out, done = target.topic(topics.CLICKS), 0
    try:
        while done < n:
            batch = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            futures = [
                await producer.send(out, m.value, key=m.key, partition=m.partition, headers=list(m.headers))
                for msgs in batch.values()
                for m in msgs
            ]
            await asyncio.gather(*futures)
            done += len(futures)
    finally:
        await consumer.stop()
        await producer.stop()


def scale_out(
    source: Settings, keyed: bool, workers: int, n: int, work: Path, split: bool = False, phase: int = 3
) -> tuple[float, list[dict[str, Any]]]:
    """(clicks/s, stats snapshots) of ``ivt worker --processes N`` (one group, settled; with ``split``
    N per stage) draining the ``n`` clicks of ``source``, copied to its input once it runs."""
    settings = phase_settings(source.bootstrap_servers, phase, work, keyed)
    group = WorkerProcess(settings, work / f"worker-group-{phase}.log", processes=workers, split_stages=split)
    group.wait_ready(timeout=180)
    flags = f"--processes {workers}" + (" --split-stages" if split else "")
    return drained(settings, group, n, f"ivt worker {flags}", work, copy_from=source)


def drained(
    settings: Settings,
    worker: WorkerProcess,
    n: int,
    what: str,
    work: Path,
    copy_from: Settings | None = None,
) -> tuple[float, list[dict[str, Any]]]:
    """(clicks/s, stats snapshots) of a ready ``worker`` draining ``n`` clicks, stopped afterwards.
    With ``copy_from`` the group settles first and the clicks are copied in from there."""
    try:
        if copy_from is not None:
            time.sleep(10)  # the group settles: nothing is published during its rebalances
            asyncio.run(copy_clicks(copy_from, settings, n))
        got, rate = drain_rate(settings, n)
    finally:
        snapshots = worker_snapshots(settings.data_dir)
        worker.stop()
    if got < n:
        raise SystemExit(f"{what} produced {got:,} of {n:,} verdicts: see {work}")
    console.print(f"{what} drained {got:,} of {n:,} clicks at {rate:,.0f} clicks/s")
    return rate, snapshots


def live_phase(
    bootstrap: str, keyed: bool, rate: float, seconds: float, work: Path, split: bool
) -> tuple[float, float, int, int]:
    """A fresh worker under open-loop load at ``rate`` for ``seconds``, generated before the first
    send (:attr:`LiveOptions.pregenerate`) and with nothing reading the verdicts meanwhile:
    (verdicts out per second while it ran, seconds from its end to the last verdict, verdicts,
    clicks sent)."""
    settings = phase_settings(bootstrap, 4, work, keyed)
    worker = _worker(settings, "live", work, split)
    stamps: list[int] = []
    try:
        options = LiveOptions(rate=rate, duration_s=seconds, progress=False, seed=11, pregenerate=True)
        report = asyncio.run(publish_live(settings, options, console=Console(quiet=True)))
        got, _, _ = asyncio.run(
            _count_until(
                settings, settings.topic(topics.VERDICTS), report.acked, max(120, seconds * 4), stamps
            )
        )
    finally:
        worker.stop()
    during, tail = keeping_up(report.start_ns, seconds, stamps)
    console.print(
        f"live load {rate:,.0f}/s: {during:,.0f} verdicts/s while it ran, last {tail:+.2f} s after it"
    )
    return during, tail, got, report.acked


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backlog", type=int, default=100_000, help="clicks for the throughput phase")
    parser.add_argument("--latency-seconds", type=float, default=30.0, help="length of the latency phase")
    parser.add_argument(
        "--latency-rate",
        type=float,
        default=0.0,
        help="clicks/s of the latency phase (default: half the sustained rate)",
    )
    parser.add_argument(
        "--repartition",
        action="store_true",
        help="run the validation stage and its repartition hop (IVT_CLICKS_KEYED_BY_IP=false)",
    )
    parser.add_argument(
        "--settle-seconds",
        type=float,
        default=10.0,
        help="latency is also reported without the first seconds of load (start-up of the load generator)",
    )
    parser.add_argument(
        "--scale-out",
        type=int,
        default=0,
        metavar="N",
        help="also drain the backlog with `ivt worker --processes N`, started before it is published",
    )
    parser.add_argument(
        "--live-rate",
        type=float,
        default=0.0,
        help="also run a fresh worker under open-loop load at this rate (clicks/s; 0: skip), generated "
        "before the first send, and report whether it kept up",
    )
    parser.add_argument("--live-seconds", type=float, default=30.0, help="length of that live load")
    parser.add_argument(
        "--split-stages",
        action="store_true",
        help="run every worker as `ivt worker --split-stages` (a process per stage)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp folder (broker and worker logs)")
    args = parser.parse_args()
    keyed = not args.repartition
    split = args.split_stages
    mode = "validation in the IP stage" if keyed else "validation stage + repartition hop"
    if split:
        mode += "; --split-stages: a process per stage"

    work = Path(tempfile.mkdtemp(prefix="ivt-bench-"))
    base = Settings.from_env(cache_dir=ROOT / ".cache")
    broker = LocalBroker(base, state_dir=work / "broker", free_ports=True)
    state = broker.start()
    rows: list[tuple[str, str]] = []
    finished = False
    try:
        settings = phase_settings(state.bootstrap, 1, work, keyed)
        console.print(f"broker {state.bootstrap}; publishing a backlog of {args.backlog:,} simulated clicks")
        backlog = asyncio.run(
            publish_live(
                settings,
                LiveOptions(rate=40_000, duration_s=args.backlog / 40_000, progress=False, seed=3),
                console=Console(quiet=True),
            )
        )
        n = backlog.acked
        raw = asyncio.run(raw_passthrough(settings, n))
        console.print(f"raw aiokafka pass-through: {raw:,.0f} records/s")
        floor = asyncio.run(raw_passthrough(settings, n, WORKER_SENDS_PER_CLICK))
        console.print(f"raw aiokafka, {WORKER_SENDS_PER_CLICK} sends per click: {floor:,.0f} clicks/s")
        floor_batched = asyncio.run(raw_passthrough(settings, n, WORKER_SENDS_PER_CLICK, batched=True))
        console.print(
            f"raw aiokafka, {WORKER_SENDS_PER_CLICK} records per click appended per partition:"
            f" {floor_batched:,.0f} clicks/s"
        )

        if split:  # its processes join one by one: settle the group, then copy the backlog in
            sustained, snapshots = scale_out(settings, keyed, 1, n, work, split=True, phase=5)
        else:
            sustained, snapshots = drained(
                settings, _worker(settings, "throughput", work, split), n, "one worker", work
            )
        throughput_rss = peak_rss(snapshots, split)
        scaled = scale_out(settings, keyed, args.scale_out, n, work, split)[0] if args.scale_out > 1 else None

        settings2 = phase_settings(state.bootstrap, 2, work, keyed)
        worker = _worker(settings2, "latency", work, split)
        half = args.latency_rate or max(1.0, round(sustained / 2))
        try:
            latency, expected = asyncio.run(latency_run(settings2, half, args.latency_seconds))
            hist = latency.hist
            lateness = asyncio.run(send_lateness(settings2, expected))
            time.sleep(6)  # one more stats snapshot
        finally:
            snapshots2 = worker_snapshots(settings2.data_dir)
            worker.stop()
        scoring = scoring_snapshot(snapshots2)
        cost = scoring.get("batch_cost_us", {})
        cpu = scoring.get("batch_cpu_us", {})
        flush = scoring.get("flush_cost_us", {})
        flush_cpu = scoring.get("flush_cpu_us", {})
        rss = max(peak_rss(snapshots2, split), throughput_rss)
        provider = scoring.get("provider", "?")

        def ms(q: float, h: HdrHistogram = hist) -> str:
            return f"{h.get_value_at_percentile(q) / 1000:,.1f} ms"

        live = (
            live_phase(state.bootstrap, keyed, args.live_rate, args.live_seconds, work, split)
            if args.live_rate > 0
            else None
        )
        calm = settled(latency.samples, args.settle_seconds)
        during = verdict_rate_during_load(latency.samples, args.latency_seconds)

        rows = [
            ("raw aiokafka consume->produce (ceiling)", f"{raw:,.0f} records/s"),
            (
                f"raw aiokafka consume->produce x{WORKER_SENDS_PER_CLICK} (the worker's sends, no work)",
                f"{floor:,.0f} clicks/s",
            ),
            (
                f"the same, x{WORKER_SENDS_PER_CLICK} appended per partition as the worker does",
                f"{floor_batched:,.0f} clicks/s",
            ),
            (
                "one worker, sustained (backlog drain)",
                f"{sustained:,.0f} clicks/s ({sustained / raw:.1%} of raw)",
            ),
            *(
                [
                    (
                        f"ivt worker --processes {args.scale_out}{' --split-stages' if split else ''} (backlog drain)",
                        f"{scaled:,.0f} clicks/s",
                    )
                ]
                if scaled is not None
                else []
            ),
            (f"latency at {half:,.0f} clicks/s, p50", ms(50)),
            ("latency p99", ms(99)),
            ("latency p99.9", ms(99.9)),
            (
                f"the same without the first {args.settle_seconds:g} s of load, p50 / p99 / p99.9",
                f"{ms(50, calm)} / {ms(99, calm)} / {ms(99.9, calm)}"
                if calm.get_total_count()
                else "no load after them (--latency-seconds is not longer)",
            ),
            ("verdicts measured / clicks sent", f"{hist.get_total_count():,} / {expected:,}"),
            (
                f"verdicts out per second while the load ran (offered {half:,.0f})",
                f"{during:,.0f} ({'kept up' if during >= 0.95 * half else 'fell behind: lag grew'})",
            ),
            *(
                [
                    (
                        f"live load at {args.live_rate:,.0f} clicks/s for {args.live_seconds:g} s (generated "
                        "beforehand, verdicts read afterwards): verdicts out per second while it ran",
                        f"{live[0]:,.0f} ({'kept up' if live[0] >= 0.95 * args.live_rate else 'fell behind'})",
                    ),
                    ("the same: last verdict after the load ended", f"{live[1]:+.2f} s"),
                    ("the same: verdicts / clicks sent", f"{live[2]:,} / {live[3]:,}"),
                ]
                if live is not None
                else []
            ),
            (
                "in-process batch cost p50 / p99 / p99.9",
                f"{cost.get('p50', 0):,} / {cost.get('p99', 0):,} / {cost.get('p99.9', 0):,} us",
            ),
            (
                "the same in CPU time of the worker thread",
                f"{cpu.get('p50', 0):,} / {cpu.get('p99', 0):,} / {cpu.get('p99.9', 0):,} us",
            ),
            (
                "state flush per take (RocksDB + changelog records), wall / CPU p99.9",
                f"{flush.get('p99.9', 0):,} / {flush_cpu.get('p99.9', 0):,} us",
            ),
            (
                "mean scoring batch in the latency phase",
                f"{scoring.get('batch_size_mean', 0)}",
            ),
            ("worker peak RSS" + (" (sum of its processes)" if split else ""), f"{rss:,.0f} MiB"),
            ("scoring provider", provider),
        ]
        finished = True
    finally:
        broker.stop()
        if args.keep or not finished:  # a failed run keeps its logs
            console.print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    seconds = Table(title="latency by second of the load (intended send time)")
    for name in ("second", "verdicts", "p50 ms", "max ms", "generator late p50 ms", "max ms"):
        seconds.add_column(name, justify="right")
    start_ns = min((sent for sent, _ in latency.samples), default=0)
    late = by_second(lateness, start_ns)
    for second, (count, p50, worst) in by_second(latency.samples, start_ns).items():
        _, late_p50, late_max = late.get(second, (0, float("nan"), float("nan")))
        seconds.add_row(
            f"{second}", f"{count:,}", f"{p50:,.1f}", f"{worst:,.1f}", f"{late_p50:,.1f}", f"{late_max:,.1f}"
        )
    console.print(seconds)
    table = Table(title=f"live path, one worker ({mode}), real broker")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for k, v in rows:
        table.add_row(k, v)
    console.print(table)
    console.print(
        f"(bench process peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MiB)"
    )


if __name__ == "__main__":
    main()
