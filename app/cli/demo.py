"""``ivt demo``: the whole system on this machine with no other step.

Starts (or reuses) the local broker, creates the topics, makes sure a **trained** model is active
(when the registry has none besides the reference model: simulates a small history, builds the
dataset, trains, exports, registers and activates an MLP, see :func:`ensure_trained_model`), starts
one worker process, publishes live simulated traffic with a few malformed events mixed in, and
prints a running summary: rates from the topics' offsets, and IVR and FPR per slice from the
verdicts joined with the purchases the simulator publishes (:class:`LiveRates`). Everything it
started is stopped at the end, or on Ctrl-C.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from rich.console import Console

from app.cli.worker import WorkerProcess
from app.contracts import topics
from app.contracts.settings import Settings
from app.kafka import clients
from app.kafka.admin import consumer_group_lag_async, ensure_topics, list_topics_async
from app.kafka.local import LocalBroker
from app.runtime.stats import read_snapshots, stats_dir
from app.simulator.live import LiveOptions, publish_live
from app.simulator.malformed import malformed_event

__all__ = ["DemoOptions", "LiveRates", "ensure_trained_model", "run_demo"]

_WATCHED = (topics.CLICKS, topics.CLICKS_DLQ, topics.VERDICTS)


@dataclass(frozen=True)
class DemoOptions:
    #: Well below what one worker sustains on a 2-core machine (docs/performance.md).
    rate: float = 400.0
    duration_s: float = 60.0
    #: Share of extra malformed events sent beside the simulated clicks.
    malformed_fraction: float = 0.005
    report_every_s: float = 5.0
    seed: int = 42
    #: History simulated to train the first model when none is registered (days, human users).
    #: Small in users (about 0.65 M clicks) but 10 days long: after a day of counter warm-up the
    #: 7 training days cover every weekday, then one validation and one test day. A model that never
    #: saw a weekday extrapolates its day-of-week features there: one trained on Tuesday-Thursday
    #: invalidated 98.2 % of logged-in clicks live on a Monday night (see docs/training.md).
    history_days: int = 10
    history_users: int = 5000
    #: Print the per-slice table every this many summary lines.
    slice_table_every: int = 6


def _is_reference(manifest: Any) -> bool:
    return str(manifest.metrics.get("kind", "")).startswith("reference")


def ensure_trained_model(settings: Settings, options: DemoOptions, console: Console) -> str:
    """The version the worker will serve; trains and activates one if no trained model is active.

    ``IVT_MODEL_VERSION`` pins a version: it is used as it is. Otherwise the newest active version
    is used unless it is the reference model (or there is none): then a history of
    ``options.history_days`` days is simulated under ``$IVT_DATA_DIR/demo/`` (kept, so a second run
    reuses it), a dataset built, an MLP trained and activated (the reference model is retired).
    """
    from app.simulator.history import write_history
    from app.simulator.params import SimParams
    from models.dataset import INFO_FILE, build_from_history
    from models.registry import Registry
    from models.train import TrainConfig, train_and_register

    registry = Registry(settings.registry_dir)
    if settings.model_version:
        registry.load(settings.model_version)
        console.print(f"model: {settings.model_version} (pinned by IVT_MODEL_VERSION)")
        return settings.model_version
    active = registry.latest(status="active")
    if active is not None and not _is_reference(active):
        console.print(f"model: {active.version} (active, trained {active.created_at[:19]})")
        return active.version
    root = settings.data_dir / "demo"
    history, dataset = root / "history", root / "dataset"
    began = time.monotonic()
    with console.status("no trained model is active: training one") as status:
        if not (history / "manifest.json").is_file():
            status.update(
                f"simulating {options.history_days} days of history ({options.history_users:,} users)"
            )
            params = SimParams(seed=options.seed, users=options.history_users)
            write_history(history, params, options.history_days)
        if not (dataset / INFO_FILE).is_file():

            def on_batch(done: int, total: int) -> None:
                status.update(f"building the dataset: features of {done:,} / {total:,} clicks")

            build_from_history(history, dataset, progress=on_batch)

        def on_epoch(epoch: int, loss: float, vloss: float) -> None:
            status.update(f"training the MLP: epoch {epoch}, validation loss {vloss:.4f}")

        manifest, result = train_and_register(
            dataset, registry, TrainConfig(test_days=1, seed=options.seed), activate=True, on_epoch=on_epoch
        )
    best = result.metrics["at_same_fpr"]
    console.print(
        f"model: trained {manifest.version} in {time.monotonic() - began:.0f} s on {root} and activated it; "
        f"held-out day at FPR <= 1 %: IVR {best['mlp']['ivr']:.1%} (logistic {best['logreg']['ivr']:.1%}, "
        f"velocity {best['velocity']['ivr']:.1%}); `ivt evaluate` writes the full report"
    )
    return manifest.version


@dataclass
class LiveRates:
    """IVR and FPR per slice over this run's verdicts, joined with purchases by click id.

    Bounded by the run: one entry per verdict seen (click id -> slice, decision), and purchases whose
    verdict has not arrived yet. A purchase counts its click once, whenever both are known.
    """

    decided: dict[str, tuple[str, bool]] = field(default_factory=dict)
    waiting: set[str] = field(default_factory=set)
    purchased: set[str] = field(default_factory=set)
    clicks: dict[str, int] = field(default_factory=dict)
    invalid: dict[str, int] = field(default_factory=dict)
    purchasing: dict[str, int] = field(default_factory=dict)
    purchasing_invalid: dict[str, int] = field(default_factory=dict)
    model_versions: set[str] = field(default_factory=set)

    def verdict(self, click_id: str, slice_: str, invalid: bool, model_version: str) -> None:
        if click_id in self.decided:  # a replayed or corrected decision: keep the first (live) one
            return
        self.decided[click_id] = (slice_, invalid)
        self.model_versions.add(model_version)
        self.clicks[slice_] = self.clicks.get(slice_, 0) + 1
        self.invalid[slice_] = self.invalid.get(slice_, 0) + invalid
        if click_id in self.waiting:
            self.waiting.discard(click_id)
            self._count_purchase(slice_, invalid)

    def purchase(self, click_id: str) -> None:
        if click_id in self.purchased:
            return
        self.purchased.add(click_id)
        if click_id in self.decided:
            self._count_purchase(*self.decided[click_id])
        else:
            self.waiting.add(click_id)

    def _count_purchase(self, slice_: str, invalid: bool) -> None:
        self.purchasing[slice_] = self.purchasing.get(slice_, 0) + 1
        self.purchasing_invalid[slice_] = self.purchasing_invalid.get(slice_, 0) + invalid

    def overall(self) -> tuple[int, float, int, float]:
        """(clicks, IVR, purchasing clicks, FPR); rates are nan when there is nothing to divide."""
        n, bad = sum(self.clicks.values()), sum(self.invalid.values())
        p, pbad = sum(self.purchasing.values()), sum(self.purchasing_invalid.values())
        return n, bad / n if n else float("nan"), p, pbad / p if p else float("nan")

    def print_table(self, console: Console) -> None:
        console.print(f"  {'slice':<13} {'verdicts':>9} {'IVR':>7} {'purchasing':>11} {'FPR':>7}")
        for name in sorted(self.clicks):
            n, bad = self.clicks[name], self.invalid.get(name, 0)
            p, pbad = self.purchasing.get(name, 0), self.purchasing_invalid.get(name, 0)
            fpr = f"{pbad / p:7.1%}" if p else "      -"
            console.print(f"  {name:<13} {n:>9,} {bad / n:7.1%} {p:>11,} {fpr}")
        n, ivr, p, fpr = self.overall()
        if n:
            fpr_s = f"{fpr:7.1%}" if p else "      -"
            console.print(f"  {'all':<13} {n:>9,} {ivr:7.1%} {p:>11,} {fpr_s}")


async def _follow_rates(settings: Settings, rates: LiveRates, stop: asyncio.Event) -> None:
    """Read verdicts and purchases published from now on into ``rates`` until told to stop."""
    consumer = clients.consumer(settings, enable_auto_commit=False)
    await consumer.start()
    try:
        counts = await list_topics_async(settings)
        verdicts, purchases = settings.topic(topics.VERDICTS), settings.topic(topics.PURCHASES)
        tps = [TopicPartition(t, p) for t in (verdicts, purchases) for p in range(counts.get(t, 0))]
        consumer.assign(tps)
        await consumer.seek_to_end(*tps)
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=200, max_records=5000)
            for tp, records in batches.items():
                for r in records:
                    try:
                        doc = orjson.loads(r.value)
                        if tp.topic == verdicts:
                            rates.verdict(
                                doc["click_id"],
                                doc["slice"],
                                doc["decision"] == "invalid",
                                doc["model_version"],
                            )
                        else:
                            rates.purchase(doc["click_id"])
                    except (orjson.JSONDecodeError, KeyError, TypeError):
                        continue  # not ours to judge here; the summary counts what it can read
    finally:
        await consumer.stop()


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
    producer = clients.producer(settings, linger_ms=5)
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
    settings: Settings,
    options: DemoOptions,
    worker: WorkerProcess,
    stop: asyncio.Event,
    console: Console,
    rates: LiveRates,
) -> dict[str, int]:
    """Print a summary line every few seconds; return the offsets seen at the start."""
    consumer = clients.consumer(settings)
    await consumer.start()
    try:
        tps = await _partitions(settings)
        base = await _end_offsets(consumer, tps, settings)
        previous, t_prev, t0 = dict(base), time.monotonic(), time.monotonic()
        console.print("   time  published/s  verdicts/s  DLQ total  backlog  worker     IVR     FPR  model")
        lines = 0
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=options.report_every_s)
            now, t_now = await _end_offsets(consumer, tps, settings), time.monotonic()
            dt = max(t_now - t_prev, 1e-9)
            backlog = await worker_lag(settings)
            console.print(
                f"{t_now - t0:6.0f} s {(now[topics.CLICKS] - previous[topics.CLICKS]) / dt:12,.0f} "
                f"{(now[topics.VERDICTS] - previous[topics.VERDICTS]) / dt:11,.0f} "
                f"{now[topics.CLICKS_DLQ] - base[topics.CLICKS_DLQ]:10,} "
                f"{backlog:8,}  {'up' if worker.alive else 'DOWN':<6} "
                f"{_rate(rates.overall()[1])} {_rate(rates.overall()[3])}  {','.join(sorted(rates.model_versions))}"
            )
            previous, t_prev = now, t_now
            lines += 1
            if options.slice_table_every and lines % options.slice_table_every == 0:
                rates.print_table(console)
        return base
    finally:
        await consumer.stop()


def _rate(x: float) -> str:
    return "      -" if x != x else f"{x:7.1%}"


def worker_inputs(settings: Settings) -> list[str]:
    """The topics the worker's stages consume (keyed clicks skip the repartition hop)."""
    bases = [topics.CLICKS, topics.CLICKS_BY_ENTITY]
    if not settings.clicks_keyed_by_ip:
        bases.insert(1, topics.CLICKS_BY_IP)
    return [settings.topic(base) for base in bases]


async def worker_lag(settings: Settings) -> int:
    """Records the worker group has not committed on its input topics: what it still has to do."""
    return await consumer_group_lag_async(settings, settings.app_id, worker_inputs(settings))


async def _drain(settings: Settings, timeout_s: float) -> dict[str, int]:
    """Wait until the worker has committed everything on its input topics, or the timeout passes.

    The group's lag, not totals of records written: on a broker kept from earlier runs the verdicts
    topic also holds old verdicts, duplicates and replay corrections, so "verdicts >= clicks" held
    before this run's clicks were judged. Commits trail processing by up to a commit interval.
    """
    deadline = time.monotonic() + timeout_s
    while await worker_lag(settings) > 0 and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
    consumer = clients.consumer(settings)
    await consumer.start()
    try:
        return await _end_offsets(consumer, await _partitions(settings), settings)
    finally:
        await consumer.stop()


async def _run(settings: Settings, options: DemoOptions, worker: WorkerProcess, console: Console) -> None:
    stop, rates_stop = asyncio.Event(), asyncio.Event()
    rates = LiveRates()
    follower = asyncio.create_task(_follow_rates(settings, rates, rates_stop))
    watcher = asyncio.create_task(_watch(settings, options, worker, stop, console, rates))
    injector = asyncio.create_task(_inject_malformed(settings, options, stop))
    live = LiveOptions(rate=options.rate, duration_s=options.duration_s, seed=options.seed, progress=False)
    try:
        report = await publish_live(settings, live, console=console)
    finally:
        stop.set()
        malformed = await injector
        base = await watcher
    final = await _drain(settings, timeout_s=120)
    await asyncio.sleep(1.0)  # let the rate follower read the last verdicts
    rates_stop.set()
    await follower
    console.rule("summary")
    report.print(console)
    verdicts = final[topics.VERDICTS] - base[topics.VERDICTS]
    dlq = final[topics.CLICKS_DLQ] - base[topics.CLICKS_DLQ]
    console.print(
        f"worker: {verdicts:,} clicks validated and judged, {dlq:,} events in the DLQ "
        f"(of {report.acked:,} simulated + {malformed:,} malformed published); "
        f"backlog {await worker_lag(settings):,} records"
    )
    _print_slices(settings, console)
    console.print(
        f"IVR and FPR per slice over this run (verdicts joined with the {len(rates.purchased):,} purchases "
        f"published during it; a purchase can come after the run ends, so FPR is over those seen):"
    )
    rates.print_table(console)


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
        ensure_trained_model(settings, options, console)
        # The simulator keys clicks by IP, so the worker validates inside its IP stage (one hop less).
        worker_settings = replace(settings, clicks_keyed_by_ip=True)
        worker = WorkerProcess(worker_settings, settings.data_dir / "worker.log")
        try:
            worker.wait_ready(timeout=120)
            console.print(f"worker ready (pid {worker.proc.pid}, log {worker.log_path})")
            asyncio.run(_run(worker_settings, options, worker, console))
        except KeyboardInterrupt:
            console.print("interrupted: stopping")
        finally:
            worker.stop()
            console.print("worker stopped")
