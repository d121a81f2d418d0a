"""``ivt demo``: the whole system on this machine with no other step, in one simulated world.

1. Starts (or reuses) the local broker and gives the demo a fresh deployment of its own: topics
   under the prefix ``demo-`` (``IVT_TOPIC_PREFIX`` is prepended), consumer group ``<app id>-demo``,
   worker state under ``$IVT_DATA_DIR/demo/``; what an earlier demo left there is deleted first.
2. Simulates a history (``history_days`` days of ``history_users`` users; kept, so a second run
   reuses it) and publishes it through the live path at drain speed: the worker's counters are
   then warm, exactly as those of a worker that has been running for days.
3. When no trained model is active, trains one from what serving saw: the feature vectors the worker
   logged on the history's verdicts (:func:`models.dataset_kafka.build_from_kafka`), with the weak
   labels from the purchases and RFM updates on the topics, and restarts the worker with it.
4. Publishes live traffic that continues the same world (same population, seed and clock: live
   event time starts where the history ends), event time running faster than wall time where the
   population cannot make the requested rate in real time, with a few malformed events mixed in.
5. Prints a running summary and, at the end, the ground-truth scoreboard of the live verdicts
   (:mod:`models.scoreboard`) beside the same figures offline (``ivt evaluate``) for the same
   model; ``--summary-json`` writes it.

Everything it started is stopped at the end, or on Ctrl-C.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from app.cli.worker import WorkerProcess
from app.contracts import topics
from app.contracts.settings import Settings
from app.kafka import clients
from app.kafka.admin import consumer_group_lag_async, delete_topics_async, ensure_topics, list_topics_async
from app.kafka.local import LocalBroker
from app.simulator.live import LiveOptions, publish_live
from app.simulator.malformed import malformed_event
from models.scoreboard import Scoreboard, format_table

__all__ = ["DemoOptions", "demo_world", "run_demo", "worker_lag"]

_WATCHED = (topics.CLICKS, topics.CLICKS_DLQ, topics.VERDICTS)
_DAY_MS = 86_400_000


@dataclass(frozen=True)
class DemoOptions:
    #: Live clicks a second (wall time), open loop; well below what one worker sustains on 2 cores.
    rate: float = 400.0
    duration_s: float = 60.0
    #: Share of extra malformed events sent beside the simulated clicks.
    malformed_fraction: float = 0.005
    report_every_s: float = 5.0
    seed: int = 42
    #: The world's history (days, human users). 10 days: after a day of counter warm-up the
    #: training days cover every weekday, then one validation and one test day.
    history_days: int = 10
    history_users: int = 5000
    #: Print the scoreboard every this many summary lines.
    slice_table_every: int = 6
    #: Where to write the final summary as JSON (None: not written).
    summary_json: Path | None = None


def demo_world(settings: Settings) -> Settings:
    """The demo's own deployment on the same broker: its topics, consumer group and state folder.

    The model registry stays the shared one, so ``ivt models list`` shows what the demo trained.
    """
    return replace(
        settings,
        topic_prefix=f"{settings.topic_prefix}demo-",
        app_id=f"{settings.app_id}-demo",
        data_dir=settings.data_dir / "demo",
        model_dir=settings.registry_dir,
        # The simulator keys clicks by IP, so the worker validates inside its IP stage (one hop less).
        clicks_keyed_by_ip=True,
    )


def _is_reference(manifest: Any) -> bool:
    return str(manifest.metrics.get("kind", "")).startswith("reference")


def _trained_model(settings: Settings, console: Console) -> str | None:
    """The version to serve when one is pinned or a trained model is active; None: train one."""
    from models.registry import Registry

    registry = Registry(settings.registry_dir)
    if settings.model_version:
        registry.load(settings.model_version)
        console.print(f"model: {settings.model_version} (pinned by IVT_MODEL_VERSION)")
        return settings.model_version
    active = registry.latest(status="active")
    if active is not None and not _is_reference(active):
        console.print(f"model: {active.version} (active, trained {active.created_at[:19]})")
        return active.version
    return None


def _history(settings: Settings, options: DemoOptions, console: Console) -> dict[str, Any]:
    """The world's history (simulated once per seed, size and length, then reused); its manifest."""
    from app.simulator.history import read_manifest, write_history
    from app.simulator.params import SimParams

    folder = history_folder(settings, options)
    if (folder / "manifest.json").is_file():
        manifest = read_manifest(folder)
        console.print(
            f"history: {manifest['counts']['clicks']:,} clicks over {options.history_days} days in {folder}"
        )
        return manifest
    chunks = options.history_days * 24
    with _progress(console) as progress:
        task = progress.add_task(
            f"simulating {options.history_days} days of {options.history_users:,} users", total=chunks
        )
        manifest = write_history(
            folder,
            SimParams(seed=options.seed, users=options.history_users),
            options.history_days,
            on_chunk=lambda done, _n: progress.update(task, completed=done),
        )
    console.print(f"history: {manifest['counts']['clicks']:,} clicks simulated into {folder}")
    return manifest


def history_folder(settings: Settings, options: DemoOptions) -> Path:
    return (
        settings.data_dir
        / "history"
        / f"seed-{options.seed}-users-{options.history_users}-days-{options.history_days}"
    )


@contextlib.contextmanager
def _progress(console: Console) -> Iterator[Progress]:
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:,.0f} / {task.total:,.0f}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        yield progress


def _reset_world(world: Settings, console: Console) -> None:
    """Delete what an earlier demo left in its deployment: topics, changelogs, worker state."""
    deleted = asyncio.run(delete_topics_async(world, [world.topic_prefix, f"{world.app_id}-"]))
    for folder in ("worker", "stats"):
        shutil.rmtree(world.data_dir / folder, ignore_errors=True)
    report = ensure_topics(world)
    console.print(
        f"demo deployment: {len(deleted)} old topics deleted, {len(report.created)} created "
        f"(prefix {world.topic_prefix!r}, group {world.app_id!r}, state in {world.data_dir})"
    )


def _publish_history(world: Settings, manifest: dict[str, Any], folder: Path, console: Console) -> None:
    """The whole history through the live path, then wait until the worker has judged all of it."""
    from app.simulator.publish_history import publish_history

    total = int(manifest["counts"]["clicks"])
    began = time.monotonic()
    with _progress(console) as progress:
        task = progress.add_task("publishing the history", total=total)
        report = asyncio.run(
            publish_history(world, folder, progress=lambda done: progress.update(task, completed=done))
        )
    published_s = time.monotonic() - began
    with _progress(console) as progress:
        task = progress.add_task("the worker judges the history (warm state)", total=total)
        lag = asyncio.run(_wait_for_worker(world, lambda left: progress.update(task, completed=total - left)))
    console.print(
        f"history published in {published_s:.0f} s ({report.clicks:,} clicks, {report.purchases:,} purchases, "
        f"{report.rfm_updates:,} RFM updates) and judged by the worker {time.monotonic() - began:.0f} s after "
        f"the first click ({total / max(time.monotonic() - began, 1e-9):,.0f} clicks/s); backlog {lag:,}"
    )


async def _wait_for_worker(world: Settings, on_lag: Any, timeout_s: float = 900.0) -> int:
    """Poll the worker group's lag until it is 0 (or the timeout); the last lag seen."""
    deadline = time.monotonic() + timeout_s
    while True:
        lag = await worker_lag(world)
        on_lag(lag)
        if lag == 0 or time.monotonic() > deadline:
            return lag
        await asyncio.sleep(0.5)


def _train_from_serving(
    world: Settings, options: DemoOptions, manifest: dict[str, Any], console: Console
) -> str:
    """Train the first model on the feature vectors the worker logged for the history's clicks."""
    from models.dataset_kafka import build_from_kafka
    from models.registry import Registry
    from models.train import TrainConfig, train_and_register

    began = time.monotonic()
    dataset = world.data_dir / "dataset"
    start_ms, end_ms = int(manifest["start_ms"]), int(manifest["end_ms"])
    with console.status("building the dataset from the verdicts' feature log") as status:
        info = build_from_kafka(
            world,
            dataset,
            # the first day only warms the counters up, as in an offline dataset
            start_ms=start_ms + _DAY_MS,
            end_ms=end_ms,
            horizon_ms=end_ms,  # purchases after the history's end are not published yet
            progress=lambda done, note: status.update(f"building the dataset: {done:,} records of {note}"),
        )

        def on_epoch(epoch: int, loss: float, vloss: float) -> None:
            status.update(f"training the MLP: epoch {epoch}, validation loss {vloss:.4f}")

        status.update("training the MLP")
        trained, result = train_and_register(
            dataset,
            Registry(world.registry_dir),
            TrainConfig(test_days=1, seed=options.seed),
            activate=True,
            on_epoch=on_epoch,
        )
    best = result.metrics["at_same_fpr"]
    console.print(
        f"model: trained {trained.version} in {time.monotonic() - began:.0f} s on {info.rows:,} vectors the "
        f"worker logged, and activated it; held-out day at purchase FPR <= 1 %: IVR {best['mlp']['ivr']:.1%} "
        f"(logistic {best['logreg']['ivr']:.1%}, velocity {best['velocity']['ivr']:.1%})"
    )
    return trained.version


def _offline_scoreboard(world: Settings, version: str, console: Console) -> dict[str, Any] | None:
    """``ivt evaluate`` of ``version`` on its held-out day, when it was trained on simulated traffic."""
    from models.dataset import DatasetError
    from models.evaluate import evaluate
    from models.exceptions import ModelError
    from models.registry import Registry

    try:
        with console.status(f"evaluating {version} offline on its held-out day"):
            report = evaluate(Registry(world.registry_dir), version, world.data_dir / "reports" / version)
    except (DatasetError, ModelError, FileNotFoundError, KeyError) as exc:
        console.print(f"offline evaluation of {version} not available: {exc}")
        return None
    truth = report.doc["truth"]
    if not truth.get("available"):
        return None
    return {"days": report.doc["days"], **truth["scoreboard"]}


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


async def _follow(settings: Settings, board: Scoreboard, stop: asyncio.Event) -> None:
    """From now on: the truth of each published click, each verdict and each purchase into ``board``."""
    consumer = clients.consumer(settings, enable_auto_commit=False)
    await consumer.start()
    try:
        counts = await list_topics_async(settings)
        clicks, verdicts = settings.topic(topics.CLICKS), settings.topic(topics.VERDICTS)
        purchases = settings.topic(topics.PURCHASES)
        tps = [TopicPartition(t, p) for t in (clicks, verdicts, purchases) for p in range(counts.get(t, 0))]
        consumer.assign(tps)
        await consumer.seek_to_end(*tps)
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=200, max_records=5000)
            for tp, records in batches.items():
                for r in records:
                    try:
                        doc = orjson.loads(r.value)
                        if tp.topic == verdicts:
                            board.verdict(
                                doc["click_id"],
                                doc["slice"],
                                doc["decision"] == "invalid",
                                doc["model_version"],
                            )
                        elif tp.topic == clicks:
                            board.click(doc["click_id"], doc["_truth"]["family"])
                        else:
                            board.purchase(doc["click_id"])
                    except (orjson.JSONDecodeError, KeyError, TypeError):
                        continue  # malformed events (they are in the DLQ) and clicks without truth
    finally:
        await consumer.stop()


async def _watch(
    settings: Settings,
    options: DemoOptions,
    worker: WorkerProcess,
    stop: asyncio.Event,
    console: Console,
    board: Scoreboard,
) -> dict[str, int]:
    """Print a summary line every few seconds; return the offsets seen at the start."""
    consumer = clients.consumer(settings)
    await consumer.start()
    try:
        tps = await _partitions(settings)
        base = await _end_offsets(consumer, tps, settings)
        previous, t_prev, t0 = dict(base), time.monotonic(), time.monotonic()
        console.print(
            "   time  published/s  verdicts/s  DLQ total  backlog  worker     IVR  purch FPR  human FPR  bot recall"
        )
        lines = 0
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=options.report_every_s)
            now, t_now = await _end_offsets(consumer, tps, settings), time.monotonic()
            dt = max(t_now - t_prev, 1e-9)
            backlog = await worker_lag(settings)
            overall = board.summary()["overall"]
            console.print(
                f"{t_now - t0:6.0f} s {(now[topics.CLICKS] - previous[topics.CLICKS]) / dt:12,.0f} "
                f"{(now[topics.VERDICTS] - previous[topics.VERDICTS]) / dt:11,.0f} "
                f"{now[topics.CLICKS_DLQ] - base[topics.CLICKS_DLQ]:10,} "
                f"{backlog:8,}  {'up' if worker.alive else 'DOWN':<6} "
                f"{_pct(overall['ivr'])} {_pct(overall['purchase_fpr']):>10} {_pct(overall['human_fpr']):>10} "
                f"{_pct(overall['bot_recall']):>11}",
                highlight=False,
            )
            previous, t_prev = now, t_now
            lines += 1
            if options.slice_table_every and lines % options.slice_table_every == 0:
                _print_board(board.summary(), console)
        return base
    finally:
        await consumer.stop()


def _pct(x: float | None) -> str:
    return "      -" if x is None else f"{x:7.1%}"


def _print_board(summary: dict[str, Any], console: Console) -> None:
    for line in format_table(summary):
        console.print(line, highlight=False)


async def _live(
    world: Settings, options: DemoOptions, worker: WorkerProcess, history: dict[str, Any], console: Console
) -> tuple[Scoreboard, dict[str, Any]]:
    """Live traffic continuing the history's world; the scoreboard of its verdicts and the run's figures."""
    stop, follow_stop = asyncio.Event(), asyncio.Event()
    board = Scoreboard()
    follower = asyncio.create_task(_follow(world, board, follow_stop))
    await asyncio.sleep(1.0)  # the follower has taken the topics' ends before the first live click
    watcher = asyncio.create_task(_watch(world, options, worker, stop, console, board))
    injector = asyncio.create_task(_inject_malformed(world, options, stop))
    live = LiveOptions.continuing(history, rate=options.rate, duration_s=options.duration_s, progress=False)
    try:
        report = await publish_live(world, live, console=console)
    finally:
        stop.set()
        malformed = await injector
        base = await watcher
    final = await _drain(world, timeout_s=120)
    await asyncio.sleep(1.0)  # let the follower read the last verdicts
    follow_stop.set()
    await follower
    console.rule("live run")
    report.print(console)
    verdicts = final[topics.VERDICTS] - base[topics.VERDICTS]
    dlq = final[topics.CLICKS_DLQ] - base[topics.CLICKS_DLQ]
    console.print(
        f"worker: {verdicts:,} clicks validated and judged, {dlq:,} events in the DLQ "
        f"(of {report.acked:,} simulated + {malformed:,} malformed published); "
        f"backlog {await worker_lag(world):,} records"
    )
    run = {
        "clicks_published": report.acked,
        "malformed_published": malformed,
        "verdicts": verdicts,
        "dlq": dlq,
        "rate": options.rate,
        "duration_s": options.duration_s,
        "model_versions": sorted(board.model_versions),
        "live": report.as_dict(),
    }
    return board, run


def run_demo(settings: Settings, options: DemoOptions, console: Console | None = None) -> dict[str, Any]:
    """Run the demo (module docstring); the final summary (also written to ``options.summary_json``)."""
    console = console or Console()
    world = demo_world(settings)
    world.data_dir.mkdir(parents=True, exist_ok=True)
    with _broker(settings, console):
        _reset_world(world, console)
        history = _history(world, options, console)
        version = _trained_model(world, console)
        worker = WorkerProcess(world, world.data_dir / "worker.log")
        try:
            worker.wait_ready(timeout=120)
            console.print(f"worker ready (pid {worker.proc.pid}, log {worker.log_path})")
            _publish_history(world, history, history_folder(world, options), console)
            if version is None:
                version = _train_from_serving(world, options, history, console)
                worker.stop()
                worker = WorkerProcess(world, world.data_dir / "worker.log")
                worker.wait_ready(timeout=120)
                console.print(f"worker restarted with {version} (pid {worker.proc.pid}); its state is kept")
            board, run = asyncio.run(_live(world, options, worker, history, console))
        except KeyboardInterrupt:
            console.print("interrupted: stopping")
            return {}
        finally:
            worker.stop()
            console.print("worker stopped")
    live = board.summary()
    offline = _offline_scoreboard(world, version, console)
    console.rule("scoreboard: live verdicts against the simulator's truth")
    console.print(
        f"{len(board.purchased):,} purchases of this run's clicks were published during it; the purchase "
        "FPR is over those (a purchase can come after the run ends)"
    )
    _print_board(live, console)
    if offline is not None:
        console.print(f"the same model offline (`ivt evaluate`, held-out day {offline['days'][0]}):")
        _print_board(offline, console)
    summary = {**live, "model_version": version, "run": run, "offline": offline}
    if options.summary_json is not None:
        options.summary_json.parent.mkdir(parents=True, exist_ok=True)
        options.summary_json.write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2) + b"\n")
        console.print(f"summary written to {options.summary_json}")
    return summary
