"""``ivt demo``: the whole system on this machine with no other step.

Starts (or reuses) the local broker, creates the topics, starts one worker process, publishes live
simulated traffic with a few malformed events mixed in, and prints a running summary read from the
topics' offsets. Everything it started is stopped at the end, or on Ctrl-C.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from rich.console import Console

from app import topics
from app.broker.admin import ensure_topics, list_topics_async
from app.broker.local import LocalBroker
from app.metrics import read_snapshots, stats_dir
from app.settings import Settings
from app.simulator.live import LiveOptions, publish_live
from app.simulator.malformed import malformed_event
from app.worker import WorkerProcess

__all__ = ["DemoOptions", "run_demo"]

_WATCHED = (topics.CLICKS, topics.CLICKS_BY_IP, topics.CLICKS_DLQ, topics.VERDICTS)


@dataclass(frozen=True)
class DemoOptions:
    #: Below what one worker sustains on a 2-core machine today (see the README's measured table).
    rate: float = 400.0
    duration_s: float = 60.0
    #: Share of extra malformed events sent beside the simulated clicks.
    malformed_fraction: float = 0.005
    report_every_s: float = 5.0
    seed: int = 42


def _is_local_default(settings: Settings) -> bool:
    return settings.bootstrap_servers in (
        f"127.0.0.1:{settings.broker_port}",
        f"localhost:{settings.broker_port}",
    )


@contextlib.contextmanager
def _broker(settings: Settings, console: Console) -> Iterator[None]:
    """The local broker for the default address (stopped after if we started it); else use as given."""
    if not _is_local_default(settings):
        console.print(f"using the broker at {settings.bootstrap_servers}")
        yield
        return
    broker = LocalBroker(settings)
    already = broker.status().running
    started = time.monotonic()
    state = broker.start()
    console.print(
        f"local Kafka {settings.kafka_version} broker on {state.bootstrap} "
        f"({'reused' if already else f'started in {time.monotonic() - started:.1f} s'}; log {broker.log_path})"
    )
    try:
        yield
    finally:
        if not already:
            broker.stop()
            console.print("local broker stopped")


async def _partitions(settings: Settings) -> list[TopicPartition]:
    counts = await list_topics_async(settings)
    names = [settings.topic(base) for base in _WATCHED]
    return [TopicPartition(name, p) for name in names for p in range(counts.get(name, 0))]


async def _end_offsets(
    consumer: AIOKafkaConsumer, tps: list[TopicPartition], settings: Settings
) -> dict[str, int]:
    """Messages ever written to each watched topic (sum of its partitions' end offsets)."""
    ends = await consumer.end_offsets(tps)
    by_name = {settings.topic(base): base for base in _WATCHED}
    out = dict.fromkeys(_WATCHED, 0)
    for tp, end in ends.items():
        out[by_name[tp.topic]] += end
    return out


async def _inject_malformed(settings: Settings, options: DemoOptions, stop: asyncio.Event) -> int:
    """Send ``rate * fraction`` malformed events a second until told to stop."""
    per_second = options.rate * options.malformed_fraction
    if per_second <= 0:
        return 0
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, linger_ms=5)
    await producer.start()
    sent, started = 0, time.monotonic()
    try:
        while not stop.is_set():
            due = int((time.monotonic() - started) * per_second)
            while sent < due:
                await producer.send(settings.topic(topics.CLICKS), malformed_event(sent))
                sent += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=0.2)
        await producer.flush()
    finally:
        await producer.stop()
    return sent


async def _watch(
    settings: Settings, options: DemoOptions, worker: WorkerProcess, stop: asyncio.Event, console: Console
) -> dict[str, int]:
    """Print a summary line every few seconds; return the offsets seen at the start."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap_servers)
    await consumer.start()
    try:
        tps = await _partitions(settings)
        base = await _end_offsets(consumer, tps, settings)
        previous, t_prev, t0 = dict(base), time.monotonic(), time.monotonic()
        console.print("   time  published/s  validated/s  verdicts/s  DLQ total  backlog  worker")
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=options.report_every_s)
            now, t_now = await _end_offsets(consumer, tps, settings), time.monotonic()
            dt = max(t_now - t_prev, 1e-9)
            done = now[topics.VERDICTS] + now[topics.CLICKS_DLQ]
            console.print(
                f"{t_now - t0:6.0f} s {(now[topics.CLICKS] - previous[topics.CLICKS]) / dt:12,.0f} "
                f"{(now[topics.CLICKS_BY_IP] - previous[topics.CLICKS_BY_IP]) / dt:12,.0f} "
                f"{(now[topics.VERDICTS] - previous[topics.VERDICTS]) / dt:11,.0f} "
                f"{now[topics.CLICKS_DLQ] - base[topics.CLICKS_DLQ]:10,} "
                f"{now[topics.CLICKS] - done:8,}  {'up' if worker.alive else 'DOWN'}"
            )
            previous, t_prev = now, t_now
        return base
    finally:
        await consumer.stop()


async def _drain(settings: Settings, timeout_s: float) -> dict[str, int]:
    """Wait until every click on ``clicks`` has been routed (validated or DLQ) or the timeout passes."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap_servers)
    await consumer.start()
    try:
        tps = await _partitions(settings)
        deadline = time.monotonic() + timeout_s
        while True:
            now = await _end_offsets(consumer, tps, settings)
            if (
                now[topics.CLICKS_BY_IP] + now[topics.CLICKS_DLQ] >= now[topics.CLICKS]
                or time.monotonic() > deadline
            ):
                return now
            await asyncio.sleep(0.5)
    finally:
        await consumer.stop()


async def _run(settings: Settings, options: DemoOptions, worker: WorkerProcess, console: Console) -> None:
    stop = asyncio.Event()
    watcher = asyncio.create_task(_watch(settings, options, worker, stop, console))
    injector = asyncio.create_task(_inject_malformed(settings, options, stop))
    live = LiveOptions(rate=options.rate, duration_s=options.duration_s, seed=options.seed, progress=False)
    try:
        report = await publish_live(settings, live, console=console)
    finally:
        stop.set()
        malformed = await injector
        base = await watcher
    final = await _drain(settings, timeout_s=120)
    console.rule("summary")
    report.print(console)
    validated = final[topics.CLICKS_BY_IP] - base[topics.CLICKS_BY_IP]
    verdicts = final[topics.VERDICTS] - base[topics.VERDICTS]
    dlq = final[topics.CLICKS_DLQ] - base[topics.CLICKS_DLQ]
    console.print(
        f"worker: {validated:,} clicks validated, {verdicts:,} verdicts, {dlq:,} events in the DLQ "
        f"(of {report.acked:,} simulated + {malformed:,} malformed published); "
        f"backlog {final[topics.CLICKS] - final[topics.VERDICTS] - final[topics.CLICKS_DLQ]:,}"
    )
    _print_slices(settings, console)


def _print_slices(settings: Settings, console: Console) -> None:
    """IVR per slice and the model version, from the worker's own stats file."""
    for snap in read_snapshots(stats_dir(settings.data_dir)):
        console.print(f"model {snap['model_version']} on {snap['provider']}; invalidation rate per slice:")
        for name, n in sorted(snap["clicks_by_slice"].items()):
            bad = snap["invalid_by_slice"].get(name, 0)
            console.print(f"  {name:<13} {bad:>8,} / {n:>8,} invalid  IVR {bad / n:6.1%}")


def run_demo(settings: Settings, options: DemoOptions, console: Console | None = None) -> None:
    console = console or Console()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    with _broker(settings, console):
        report = ensure_topics(settings)
        console.print(f"topics: {len(report.created)} created, {len(report.present)} already there")
        worker = WorkerProcess(settings, settings.data_dir / "worker.log")
        try:
            worker.wait_ready(timeout=120)
            console.print(f"worker ready (pid {worker.proc.pid}, log {worker.log_path})")
            asyncio.run(_run(settings, options, worker, console))
        except KeyboardInterrupt:
            console.print("interrupted: stopping")
        finally:
            worker.stop()
            console.print("worker stopped")
