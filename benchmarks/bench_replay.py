"""Replay throughput against the live worker's, and live latency while a replay runs (a script).

Phases, all in one run on one local broker, so the ratio is measured under the same conditions:

1. a backlog of simulated clicks is published;
2. **live sustained rate**: one ``ivt worker`` drains the backlog (verdicts / time from first to last);
3. **replay throughput**: one ``ivt replay-worker`` runs jobs over the whole backlog: rescore (changed
   only, against a model with other thresholds), rescore (publish all) and recompute (publish all,
   the worst case: features recomputed and every click published); clicks/s = clicks in the range /
   (submit -> done), indexing included;
4. **live latency, idle vs during a replay**: a fresh live worker under open-loop simulated load at
   ``--latency-rate``; event-to-verdict latency (from the intended send time, HDR histogram) first
   with nothing else running, then while the replay worker runs recompute jobs back to back.

The throughput phase runs the replay worker at the live worker's priority (nice 0) for a fair
ratio; the latency phase at its default ``IVT_REPLAY_NICE``. The latency load comes from pre-built
click bytes sent open loop (the full simulator is too heavy to share two cores with the worker).

Usage: ``python benchmarks/bench_replay.py [--backlog 60000] [--latency-rate 300] [--latency-seconds 20]``
(``make bench-short`` runs ``--backlog 5000 --latency-rate 100 --latency-seconds 5``).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from aiokafka import AIOKafkaProducer  # noqa: E402
from bench_live import VerdictLatency, _count_until, _worker  # noqa: E402
from hdrh.histogram import HdrHistogram  # noqa: E402

from agents.replay.client import submit_async, wait_done  # noqa: E402
from agents.replay.job import ReplayJob  # noqa: E402
from agents.replay.progress import Progress  # noqa: E402
from agents.replay.reader import new_consumer, partitions_of  # noqa: E402
from app.cli.processes import ReplayWorkerProcess  # noqa: E402
from app.contracts import topics  # noqa: E402
from app.contracts.events import SLICES, Click  # noqa: E402
from app.contracts.settings import Settings  # noqa: E402
from app.kafka.admin import ensure_topics  # noqa: E402
from app.kafka.local import LocalBroker  # noqa: E402
from app.simulator.live import INTENDED_HEADER, LiveOptions, publish_live  # noqa: E402
from models.registry import Registry  # noqa: E402
from models.tiny import REFERENCE_VERSION, ensure_reference_model  # noqa: E402

console = Console()
OTHER = "bench-strict"


async def _offsets(settings: Settings) -> dict[int, tuple[int, int]]:
    consumer = new_consumer(settings)
    await consumer.start()
    try:
        tps = await partitions_of(consumer, settings.topic(topics.CLICKS))
        begin, end = await consumer.beginning_offsets(tps), await consumer.end_offsets(tps)
        return {tp.partition: (begin[tp], end[tp]) for tp in tps if end[tp] > begin[tp]}
    finally:
        await consumer.stop()


async def light_load(settings: Settings, rate: float, seconds: float) -> tuple[HdrHistogram, int]:
    """Open-loop clicks at ``rate`` from pre-built bytes (a load generator light enough not to skew
    the measure on two cores); latency = verdict read time - intended send time, in us."""
    n = int(rate * seconds)
    t0_ms = time.time_ns() // 1_000_000
    values = []
    for k in range(n):
        u = (k * 7919) % 2000
        c = Click(
            f"lat-{t0_ms}-{k}",
            t0_ms + int(k * 1000 / rate),
            f"10.2.{u % 250}.{u % 5}",
            f"s-{u}",
            f"u-{u}",
            True,
            ("desktop", "mobile", "app")[u % 3],
            "Mozilla/5.0",
            "ad",
            "cmp",
            "adv",
        )
        values.append((c.ip.encode(), c.to_json()))
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, linger_ms=0, acks=1)
    await producer.start()
    try:
        async with VerdictLatency(settings) as latency:
            start_ns = time.time_ns()
            topic = settings.topic(topics.CLICKS)
            for k, (key, value) in enumerate(values):
                intended = start_ns + int(k * 1e9 / rate)
                delay = (intended - time.time_ns()) / 1e9
                if delay > 0:
                    await asyncio.sleep(delay)
                await producer.send(
                    topic, value, key=key, headers=[(INTENDED_HEADER, str(intended).encode())]
                )
            await latency.wait_for(n)
    finally:
        await producer.stop()
    return latency.hist, n


def _job(job_id: str, mode: str, publish: str, offsets: dict[int, tuple[int, int]]) -> ReplayJob:
    return ReplayJob(
        job_id=job_id,
        model_version=REFERENCE_VERSION,
        mode=mode,
        publish=publish,
        submitted_at_ms=time.time_ns() // 1_000_000,
        offsets=offsets,
        lookback_s=0,
    )


async def _run_job(settings: Settings, job: ReplayJob) -> tuple[Progress, float]:
    started = time.perf_counter()
    await submit_async(settings, job)
    progress = await wait_done(settings, job.job_id, timeout_s=1800)
    return progress, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backlog", type=int, default=60_000, help="clicks in the backlog")
    parser.add_argument("--latency-rate", type=float, default=300.0, help="live load in the latency phase")
    parser.add_argument("--latency-seconds", type=float, default=20.0, help="length of each latency run")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="ivt-bench-replay-"))
    base = Settings.from_env(cache_dir=ROOT / ".cache")
    broker = LocalBroker(base, state_dir=work / "broker", free_ports=True)
    state = broker.start()
    rows: list[tuple[str, str]] = []
    replay: ReplayWorkerProcess | None = None
    try:
        common = dict(bootstrap_servers=state.bootstrap, model_dir=work / "models")
        settings = Settings.from_env(topic_prefix="r1-", app_id="bench-r1", data_dir=work / "w1", **common)
        ensure_topics(settings)
        registry = Registry(settings.registry_dir)
        ensure_reference_model(registry)
        # "live" ran a bad model (every desktop click invalid): a rescore with the reference model
        # then corrects part of the traffic
        bad = {s: 0.0 for s in SLICES if s.startswith("desktop")}
        registry.with_thresholds(REFERENCE_VERSION, OTHER, bad)
        console.print(f"broker {state.bootstrap}; publishing a backlog of {args.backlog:,} simulated clicks")
        backlog = asyncio.run(
            publish_live(
                settings,
                LiveOptions(rate=40_000, duration_s=args.backlog / 40_000, progress=False, seed=3),
                console=Console(quiet=True),
            )
        )
        n = backlog.acked

        from dataclasses import replace

        worker = _worker(replace(settings, model_version=OTHER), "live-throughput", work)
        try:
            got, first, last = asyncio.run(
                _count_until(settings, settings.topic(topics.VERDICTS), n, timeout=max(120, n / 400))
            )
        finally:
            worker.stop()
        live_rate = got / max(last - first, 1e-9)
        console.print(f"live worker drained {got:,} of {n:,} clicks at {live_rate:,.0f} clicks/s")

        # Same priority as the live worker had, for a fair rate; the latency phase uses the default.
        replay = ReplayWorkerProcess(settings, work / "replay-nice0.log", {"IVT_REPLAY_NICE": "0"})
        replay.wait_ready(timeout=120)
        offsets = asyncio.run(_offsets(settings))
        results = []
        for job_id, mode, publish in (
            ("bench-rescore-changed", "rescore", "changed"),
            ("bench-rescore-all", "rescore", "all"),
            ("bench-recompute-all", "recompute", "all"),
        ):
            progress, wall = asyncio.run(_run_job(settings, _job(job_id, mode, publish, offsets)))
            assert progress.state == "done", progress.error
            rate = progress.total / wall
            results.append((mode, publish, progress, wall, rate))
            console.print(
                f"{job_id}: {progress.total:,} clicks in {wall:.1f} s = {rate:,.0f} clicks/s "
                f"({rate / live_rate:.1f}x live); published {progress.counters['published']:,}"
            )

        replay.stop()
        replay = ReplayWorkerProcess(settings, work / "replay.log")
        replay.wait_ready(timeout=120)

        # Latency: a fresh live worker, idle first, then with the replay worker busy.
        settings2 = Settings.from_env(topic_prefix="r2-", app_id="bench-r2", data_dir=work / "w2", **common)
        ensure_topics(settings2)
        live2 = _worker(settings2, "latency", work)
        try:
            asyncio.run(light_load(settings2, 100, 3.0))  # warm the worker up
            idle, sent = asyncio.run(light_load(settings2, args.latency_rate, args.latency_seconds))

            async def busy() -> tuple[object, int, int]:
                # queue enough recompute jobs to outlast the latency run
                per_job = results[-1][3]
                k = max(2, int(args.latency_seconds / max(per_job, 0.1)) + 2)
                for i in range(k):
                    await submit_async(settings, _job(f"bench-busy-{i}", "recompute", "all", offsets))
                await asyncio.sleep(2)  # the first job is past its indexing phase
                hist, sent = await light_load(settings2, args.latency_rate, args.latency_seconds)
                return hist, sent, k

            during, sent2, k = asyncio.run(busy())
            busy_state = asyncio.run(wait_done(settings, "bench-busy-0", timeout_s=600)).state
        finally:
            live2.stop()

        def ms(h: object, q: float) -> str:
            return f"{h.get_value_at_percentile(q) / 1000:,.1f} ms"  # type: ignore[attr-defined]

        rows = [
            ("clicks in the backlog", f"{n:,}"),
            ("live worker, sustained (backlog drain)", f"{live_rate:,.0f} clicks/s"),
        ]
        for mode, publish, progress, wall, rate in results:
            rows.append(
                (
                    f"replay {mode}, publish {publish}",
                    f"{rate:,.0f} clicks/s = {rate / live_rate:.1f}x live ({wall:.1f} s, "
                    f"{progress.counters['published']:,} published)",
                )
            )
        rows += [
            (
                f"live latency idle at {args.latency_rate:,.0f} clicks/s p50 / p99 / p99.9",
                f"{ms(idle, 50)} / {ms(idle, 99)} / {ms(idle, 99.9)}",
            ),
            (
                f"live latency during replay ({k} recompute jobs queued) p50 / p99 / p99.9",
                f"{ms(during, 50)} / {ms(during, 99)} / {ms(during, 99.9)}",
            ),
            (
                "latency ratio during / idle, p50 / p99",
                f"{during.get_value_at_percentile(50) / max(idle.get_value_at_percentile(50), 1):.2f} / "  # type: ignore[attr-defined]
                f"{during.get_value_at_percentile(99) / max(idle.get_value_at_percentile(99), 1):.2f}",
            ),  # type: ignore[attr-defined]
            (
                "verdicts measured idle / during",
                f"{idle.get_total_count():,} of {sent:,} / {during.get_total_count():,} of {sent2:,}",
            ),  # type: ignore[attr-defined]
            ("first busy replay job", busy_state),
        ]
    finally:
        if replay is not None:
            replay.stop()
        broker.stop()
    table = Table(title="replay vs live, one broker, same run (2 shared cores)")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for key, value in rows:
        table.add_row(key, value)
    console.print(table)


if __name__ == "__main__":
    main()
