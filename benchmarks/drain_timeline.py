"""Where a worker's drain spends its time, interval by interval (a diagnostic script, not a test).

A drain rate is one number; a slow run and a fast one look the same in it. This script drains a
backlog of simulated clicks with one ``ivt worker`` several times on one local broker and prints, per
interval (default 250 ms) from the IP stage's first output: the bundles the IP stage wrote, the
verdicts, and the CPU of the worker and of the broker (user + kernel, and the kernel part alone) in %
of one core, read from ``/proc``. A gap (no output, both processes idle) is a wait; a process at 100 %
is the limit; kernel time that grows from run to run is the machine (the local broker's JVM
settings in ARCHITECTURE.md, "Performance decisions").

With ``--live-rate R`` it runs the same view under live arrival instead: one worker is started
first, the simulator publishes R clicks/s for ``--live-seconds``, and each row (default 1 s) also
shows the clicks published, the clicks per IP-stage bundle and the load generator's CPU (the
script's own process), with the worker's CPU per verdict at the end. It tells whether a worker that
falls behind is short of CPU or waiting, and which stage is behind (figures in docs/performance.md).

Usage: ``python benchmarks/drain_timeline.py [--runs 4] [--backlog 30000] [--interval 0.25]``
or ``python benchmarks/drain_timeline.py --live-rate 10000 [--live-seconds 20] [--interval 1]``
(Linux only: it reads ``/proc``). ``make bench-short`` runs ``--runs 1 --backlog 3000``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.cli.worker import WorkerProcess  # noqa: E402
from app.contracts import topics  # noqa: E402
from app.contracts.events import decode_entity_bundle  # noqa: E402
from app.contracts.settings import Settings  # noqa: E402
from app.kafka.local import LocalBroker  # noqa: E402
from app.simulator.live import LiveOptions, publish_live  # noqa: E402
from benchmarks.bench_live import _reader, copy_clicks, drain_rate, phase_settings  # noqa: E402

console = Console()
_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(user + kernel, kernel) CPU seconds of process ``pid`` and all its threads so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    user, system = int(fields[11]), int(fields[12])
    return (user + system) / _TICKS, system / _TICKS


class CpuSampler(threading.Thread):
    """Samples the CPU seconds of some processes every ``period`` s, with the wall time."""

    def __init__(self, pids: dict[str, int], period: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.pids, self.period = pids, period
        self.samples: list[tuple[float, dict[str, tuple[float, float]]]] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            try:
                self.samples.append(
                    (time.time(), {name: cpu_seconds(pid) for name, pid in self.pids.items()})
                )
            except OSError:  # a process ended
                return
            self.done.wait(self.period)

    def per_interval(self, start: float, width: float) -> dict[int, Counter[str]]:
        """CPU seconds per interval index from ``start``: keys ``name`` and ``name sys``."""
        out: dict[int, Counter[str]] = {}
        for (_, before), (at, after) in itertools.pairwise(self.samples):
            bucket = out.setdefault(int((at - start) // width), Counter())
            for name in after:
                bucket[name] += after[name][0] - before[name][0]
                bucket[f"{name} sys"] += after[name][1] - before[name][1]
        return out


async def record_times(settings: Settings, topic: str, bundles: bool = False) -> list[tuple[float, int]]:
    """(timestamp in s, clicks) of every record on ``topic``: read until three assigned polls bring
    nothing. A record is one click, or with ``bundles`` the clicks of the bundle it carries."""
    consumer = _reader(settings, settings.topic(topic))
    await consumer.start()
    stamps: list[tuple[float, int]] = []
    try:
        empty = 0
        while empty < 3:
            batch = await consumer.getmany(timeout_ms=500, max_records=50_000)
            if consumer.assignment():
                empty = 0 if batch else empty + 1
            for msgs in batch.values():
                for m in msgs:
                    clicks = len(decode_entity_bundle(m.value, [])) if bundles else 1
                    stamps.append((m.timestamp / 1000, clicks))
    finally:
        await consumer.stop()
    return stamps


def per_interval(start: float, width: float, **stamps: list[tuple[float, int]]) -> dict[int, Counter[str]]:
    """Interval index from ``start`` -> per named list, the weights of the timestamps in it."""
    counts: dict[int, Counter[str]] = {}
    for name, values in stamps.items():
        for at, weight in values:
            counts.setdefault(int((at - start) // width), Counter())[name] += weight
    return counts


def one_drain(source: Settings, run: int, n: int, work: Path, broker_pid: int, width: float) -> None:
    settings = phase_settings(source.bootstrap_servers, 100 + run, work, keyed=True)
    asyncio.run(copy_clicks(source, settings, n))
    worker = WorkerProcess(settings, work / f"worker-{run}.log")
    sampler = CpuSampler({"worker": worker.proc.pid, "broker": broker_pid})
    sampler.start()
    try:
        worker.wait_ready(timeout=180)
        got, rate = drain_rate(settings, n)
    finally:
        sampler.done.set()
        worker.stop()
    bundles = asyncio.run(record_times(settings, topics.CLICKS_BY_ENTITY))
    verdicts = asyncio.run(record_times(settings, topics.VERDICTS))
    start = min(bundles)[0]
    counts = per_interval(start, width, bundles=bundles, verdicts=verdicts)
    cpu = sampler.per_interval(start, width)
    table = Table(title=f"drain {run + 1}: {got:,} verdicts at {rate:,.0f} clicks/s")
    for column in (
        "from s",
        "IP-stage bundles",
        "verdicts",
        "worker CPU %",
        "of it kernel",
        "broker CPU %",
        "of it kernel",
    ):
        table.add_column(column, justify="right")
    for index in range(-1, max(counts) + 2):
        c, u = counts.get(index, Counter()), cpu.get(index, Counter())
        table.add_row(
            f"{index * width:.2f}",
            f"{c['bundles']:,}",
            f"{c['verdicts']:,}",
            *(f"{100 * u[key] / width:.0f}" for key in ("worker", "worker sys", "broker", "broker sys")),
        )
    console.print(table)


def live_load(bootstrap: str, rate: float, seconds: float, work: Path, broker_pid: int, width: float) -> None:
    """One worker under open-loop load at ``rate`` clicks/s for ``seconds``, interval by interval."""
    settings = phase_settings(bootstrap, 200, work, keyed=True)
    worker = WorkerProcess(settings, work / "worker-live.log")
    worker.wait_ready(timeout=180)
    sampler = CpuSampler({"worker": worker.proc.pid, "broker": broker_pid, "generator": os.getpid()})
    sampler.start()
    try:
        options = LiveOptions(rate=rate, duration_s=seconds, progress=False, seed=7)
        report = asyncio.run(publish_live(settings, options, console=Console(quiet=True)))
        got, _ = drain_rate(settings, report.acked)
    finally:
        sampler.done.set()
        worker.stop()
    clicks = asyncio.run(record_times(settings, topics.CLICKS))
    bundled = asyncio.run(record_times(settings, topics.CLICKS_BY_ENTITY, bundles=True))
    verdicts = asyncio.run(record_times(settings, topics.VERDICTS))
    start = min(clicks)[0]
    bundles = [(at, 1) for at, _ in bundled]
    counts = per_interval(start, width, clicks=clicks, bundled=bundled, bundles=bundles, verdicts=verdicts)
    cpu = sampler.per_interval(start, width)
    table = Table(
        title=f"live load: {rate:,.0f} clicks/s for {seconds:g} s, {got:,} verdicts"
        " (clicks per row; CPU in % of one core)"
    )
    for column in (
        "from s",
        "published",
        "IP stage",
        "per bundle",
        "verdicts",
        "worker %",
        "broker %",
        "generator %",
    ):
        table.add_column(column, justify="right")
    for index in range(0, max(counts) + 1):
        c, u = counts.get(index, Counter()), cpu.get(index, Counter())
        table.add_row(
            f"{index * width:.2f}",
            f"{c['clicks']:,}",
            f"{c['bundled']:,}",
            f"{c['bundled'] / c['bundles']:.1f}" if c["bundles"] else "-",
            f"{c['verdicts']:,}",
            *(f"{100 * u[key] / width:.0f}" for key in ("worker", "broker", "generator")),
        )
    console.print(table)
    worker_cpu = sum(u["worker"] for u in cpu.values())
    during = sum(counts.get(index, Counter())["verdicts"] for index in range(int(seconds / width)))
    console.print(
        f"worker CPU {worker_cpu:.1f} s for {got:,} verdicts: {1e6 * worker_cpu / max(got, 1):.0f} us per click;"
        f" verdicts while the load ran: {during / seconds:,.0f}/s of {rate:,.0f}/s offered"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=4, help="drains, one after another on one broker")
    parser.add_argument("--backlog", type=int, default=30_000, help="clicks per drain")
    parser.add_argument("--interval", type=float, default=None, help="seconds per row (0.25; live: 1)")
    parser.add_argument(
        "--live-rate", type=float, default=0.0, help="clicks/s of open-loop load into one worker instead"
    )
    parser.add_argument("--live-seconds", type=float, default=20.0, help="length of the live load")
    args = parser.parse_args()
    width = args.interval or (1.0 if args.live_rate else 0.25)
    if not Path("/proc/self/stat").exists():
        raise SystemExit("drain_timeline reads /proc: it runs on Linux only")
    work = Path(tempfile.mkdtemp(prefix="ivt-timeline-"))
    broker = LocalBroker(
        Settings.from_env(cache_dir=ROOT / ".cache"), state_dir=work / "broker", free_ports=True
    )
    state = broker.start()
    try:
        if args.live_rate:
            live_load(state.bootstrap, args.live_rate, args.live_seconds, work, state.pid, width)
            return
        source = phase_settings(state.bootstrap, 1, work, keyed=True)
        options = LiveOptions(rate=40_000, duration_s=args.backlog / 40_000, progress=False, seed=3)
        asyncio.run(publish_live(source, options, console=Console(quiet=True)))
        for run in range(args.runs):
            one_drain(source, run, args.backlog, work, state.pid, width)
    finally:
        broker.stop()


if __name__ == "__main__":
    main()
