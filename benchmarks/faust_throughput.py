"""How fast can one Faust worker process move clicks through a validate-like stage? (a script, not a test)

Starts its own single-node broker (LocalBroker on free ports, in a temp dir), pre-produces ``--messages``
realistic click JSON messages (``app.contracts.events.Click(...).to_json()``, keyed by IP, with the simulator's
``ivt-intended-ns``/``ivt-sent-ns`` headers) to a 6-partition input topic, then runs each variant as a
worker subprocess with its own consumer group and its own 6-partition output topic. Every variant does
the validation stage's work per event (``parse_click``, canonical ``to_json``, ``ivt-*`` header
pass-through, DLQ branch) and differs only in how it consumes, produces and acks.

Throughput = messages / (CreateTime of the last output record - CreateTime of the first one), i.e.
from first output to all outputs; worker start-up and group join are excluded. After the last output
the script also checks the variant's committed offsets reach the input's end (at-least-once bookkeeping
finished) and that the output holds exactly ``--messages`` records (no duplicates on a clean run).

    .venv/bin/python benchmarks/faust_throughput.py --messages 200000 --variant all
    .venv/bin/python benchmarks/faust_throughput.py --messages 50000 --variant baseline,take_noack
    .venv/bin/python benchmarks/faust_throughput.py --variant 'take_noack:cython,nomonitor,poll=2000'
    .venv/bin/python benchmarks/faust_throughput.py --variant 'baseline;baseline:fastdrain' --repeat 2
    .venv/bin/python benchmarks/faust_throughput.py --variant baseline --profile   # py-spy, see below
    .venv/bin/python benchmarks/faust_throughput.py --list

``make bench-short`` runs one variant of each pattern family on 3,000 messages (see the Makefile).

A variant is ``pattern[:option,option=value,...]``; several are separated by ``;``. Patterns:

* ``raw``            aiokafka consumer -> parse -> aiokafka producer, gather the delivery futures of
                     each ``getmany`` batch, then commit (the ceiling, same work, same semantics);
* ``baseline``       ``async for event in stream.events()`` + ``await topic.send(...)`` per event
                     (Faust's documented agent pattern);
* ``take_topic``     ``stream.take_events(batch, within)`` + ``await topic.send(...)`` per event +
                     gather of the delivery futures per batch;
* ``take_producer``  same, but ``await app.producer.send(...)`` (skips Topic.send's codec layer);
* ``take_send_soon`` same, but ``topic.send_soon(...)`` (Faust's producer buffer) + gather;
* ``manual``         ``stream.noack().events()`` + ``await app.producer.send(...)``; each event is
                     acked (in arrival order) only once its output's delivery future has succeeded;
* ``take_noack``     ``stream.noack_take(batch, within)`` + ``await app.producer.send(...)``; each
                     batch is acked (in order) once all its outputs are acked, up to ``depth`` batches
                     in flight; a 0.1 s timer acks the tail when input stops (the recommendation).

Options: ``cython`` (cython_optimizations=True), ``nomonitor`` (remove the Monitor sensor),
``acks1`` (producer_acks=1), ``nowaitempty`` (stream_wait_empty=False), ``debug`` (worker log level
debug), ``poll=N`` (broker_max_poll_records), ``fetch=BYTES`` (consumer_max_fetch_size), ``buf=N``
(stream_buffer_maxsize), ``linger=S`` (producer_linger), ``pbatch=BYTES`` (producer_max_batch_size),
``commit=N`` (broker_commit_every), ``compress=gzip`` (producer_compression_type), ``batch=N`` /
``within=S`` (take_events/noack_take; defaults 1000 / 0.05), ``inflight=N`` (manual: most unacked events before waiting),
``passthrough`` (no stage work: forward key, value and headers unchanged, i.e. the cost of one
hop by itself), ``memopart`` (cache the producer's pure-Python murmur2 partition per key),
``depth=N`` (take_noack/raw: batches in flight before waiting), ``uvloop`` (uvloop event loop
policy; uvloop is not a project dependency, make it importable e.g. with PYTHONPATH),
``fastdrain`` (app.runtime.drain.FastDrainConsumer, which the worker uses: run each message's
delivery callback inline until it would block, instead of ``wait_first`` with four tasks per
message; ARCHITECTURE.md, "Performance decisions").

``--profile`` runs py-spy (``--pyspy``, default /tmp/pyspy/bin/py-spy) on the worker for
``--profile-seconds`` from its first output and prints the top frames by self and inclusive time
(raw profiles are kept under ``--out``). Profiled runs are slower; their rate is marked ``(profiled)``.
Run on an otherwise idle machine: on a shared one, figures are lower bounds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
PARTITIONS = 6
MAX_EVENT_BYTES = 8192
DEFAULT_PYSPY = "/tmp/pyspy/bin/py-spy"

# --------------------------------------------------------------------------------------------------
# Variants
# --------------------------------------------------------------------------------------------------

PATTERNS = ("raw", "baseline", "take_topic", "take_producer", "take_send_soon", "manual", "take_noack")

#: Options that are plain Faust settings.
FLAG_SETTINGS: dict[str, dict[str, Any]] = {
    "cython": {"cython_optimizations": True},
    "acks1": {"producer_acks": 1},
    "nowaitempty": {"stream_wait_empty": False},
}
VALUE_SETTINGS: dict[str, tuple[str, type]] = {
    "poll": ("broker_max_poll_records", int),
    "fetch": ("consumer_max_fetch_size", int),
    "buf": ("stream_buffer_maxsize", int),
    "linger": ("producer_linger", float),
    "pbatch": ("producer_max_batch_size", int),
    "commit": ("broker_commit_every", int),
    "compress": ("producer_compression_type", str),
}
OTHER_FLAGS = ("nomonitor", "debug", "fastdrain", "memopart", "passthrough", "uvloop")
OTHER_VALUES: dict[str, type] = {"batch": int, "within": float, "inflight": int, "depth": int}

#: Settings tuned for throughput (the recommendation; figures in docs/performance.md).
TUNED = "cython,nomonitor,poll=2000,buf=16384,fetch=4194304"

#: What ``--variant all`` runs, in order.
ALL_VARIANTS: tuple[str, ...] = (
    "raw:depth=4",
    "raw:depth=4,passthrough",
    "baseline",
    "baseline:passthrough",
    "take_topic",
    "take_send_soon",
    "take_producer",
    "manual",
    "take_noack",
    f"take_noack:{TUNED}",
    f"take_noack:{TUNED},fastdrain",
    f"take_noack:{TUNED},fastdrain,passthrough",
)


@dataclass(frozen=True)
class Spec:
    text: str
    pattern: str
    settings: dict[str, Any] = field(default_factory=dict)
    flags: frozenset[str] = frozenset()
    batch: int = 1000
    within: float = 0.05
    inflight: int = 2000
    depth: int = 2

    @property
    def debug(self) -> bool:
        return "debug" in self.flags


def parse_spec(text: str) -> Spec:
    pattern, _, rest = text.partition(":")
    if pattern not in PATTERNS:
        raise SystemExit(f"unknown pattern {pattern!r} in {text!r}; one of {', '.join(PATTERNS)}")
    settings: dict[str, Any] = {}
    flags: set[str] = set()
    other: dict[str, Any] = {}
    for item in filter(None, (s.strip() for s in rest.split(","))):
        name, eq, value = item.partition("=")
        if not eq and name in FLAG_SETTINGS:
            settings.update(FLAG_SETTINGS[name])
        elif not eq and name in OTHER_FLAGS:
            flags.add(name)
        elif eq and name in VALUE_SETTINGS:
            key, kind = VALUE_SETTINGS[name]
            settings[key] = kind(value)
        elif eq and name in OTHER_VALUES:
            other[name] = OTHER_VALUES[name](value)
        else:
            raise SystemExit(f"unknown option {item!r} in {text!r} (see --help)")
    return Spec(text=text, pattern=pattern, settings=settings, flags=frozenset(flags), **other)


# --------------------------------------------------------------------------------------------------
# The validation stage's per-event work (app.contracts.validation, as agents/validate.py uses it)
# --------------------------------------------------------------------------------------------------


def stage_output(
    key: bytes | None,
    value: object,
    headers: object,
    topic: str,
    partition: int,
    offset: int,
    out: str,
    dlq: str,
) -> tuple[str, bytes | None, bytes, list[tuple[str, bytes]]]:
    """(topic, key, value, headers) of the one record an input event becomes."""
    from app.contracts.exceptions import InvalidEvent
    from app.contracts.headers import forward_headers
    from app.contracts.validation import dlq_headers, route

    outcome = route(value, MAX_EVENT_BYTES)
    if isinstance(outcome, InvalidEvent):
        raw = value if isinstance(value, bytes) else b""
        return dlq, key, raw, dlq_headers(outcome.reason, topic, partition, offset)
    return out, outcome.ip.encode(), outcome.to_json(), forward_headers(headers)


# --------------------------------------------------------------------------------------------------
# Worker side (runs in the subprocess)
# --------------------------------------------------------------------------------------------------

#: The worker's Faust settings (app/runtime/app.py) without its poll, fetch and buffer tuning;
#: variant options override these.
BASE_SETTINGS: dict[str, Any] = {
    "autodiscover": False,
    "topic_allow_declare": False,
    "topic_partitions": PARTITIONS,
    "consumer_auto_offset_reset": "earliest",
    "producer_linger": 0.005,
    "producer_acks": -1,
    "broker_commit_every": 10_000,
    "broker_commit_interval": 1.0,
    "stream_buffer_maxsize": 8192,
    "web_enabled": False,
    "key_serializer": "raw",
    "value_serializer": "raw",
}


class InOrderAcker:
    """Acks events strictly in the order they were handed over, each group only once its delivery
    future has succeeded. One stream (agent concurrency 1) yields each partition's events in offset
    order, so acks never leave a gap and Faust's commit (which follows the acks) never passes an
    event whose output is not on the broker."""

    def __init__(self) -> None:
        self.pending: deque[tuple[Sequence[Any], asyncio.Future[Any]]] = deque()
        self.stream: Any = None

    def add(self, events: Sequence[Any], future: asyncio.Future[Any]) -> None:
        self.pending.append((events, future))

    async def ack_done(self) -> None:
        # No suspension point inside (Stream.ack awaits nothing), so this runs atomically with
        # respect to the agent and the idle timer.
        pending, stream = self.pending, self.stream
        while pending and pending[0][1].done():
            events, future = pending[0]
            future.result()  # a failed delivery raises here: it and everything after stay unacked
            pending.popleft()
            for event in events:
                await stream.ack(event)


class MemoPartitioner:
    """aiokafka's DefaultPartitioner (pure-Python murmur2) with a per-key cache; same partitions."""

    def __init__(self, max_keys: int = 1_000_000) -> None:
        from aiokafka.partitioner import DefaultPartitioner

        self._inner = DefaultPartitioner()
        self._cache: dict[tuple[bytes, int], int] = {}
        self._max_keys = max_keys

    def __call__(self, key: bytes | None, all_partitions: list[int], available: list[int]) -> int:
        if key is None:
            return self._inner(key, all_partitions, available)
        cache_key = (key, len(all_partitions))
        partition = self._cache.get(cache_key)
        if partition is None:
            if len(self._cache) >= self._max_keys:
                self._cache.clear()
            partition = self._cache[cache_key] = self._inner(key, all_partitions, available)
        return partition


def build_app(spec: Spec, args: argparse.Namespace) -> Any:
    """A fresh faust.App (own id = own consumer group) with the variant's one agent."""
    import faust

    settings = {**BASE_SETTINGS, **spec.settings}
    if "memopart" in spec.flags:
        settings["producer_partitioner"] = MemoPartitioner()
    app = faust.App(
        args.app_id,
        broker=f"kafka://{args.bootstrap}",
        store="rocksdb://",
        datadir=str(Path(args.data_dir) / args.app_id),
        **settings,
    )
    if "fastdrain" in spec.flags:
        from app.runtime.drain import FastDrainConsumer

        app.transport.Consumer = FastDrainConsumer
    src = app.topic(args.input, key_type=bytes, value_type=bytes, internal=False)
    dst = app.topic(args.output, key_type=bytes, value_type=bytes, internal=False)
    dlq = app.topic(args.dlq, key_type=bytes, value_type=bytes, internal=False)
    out_name, dlq_name = args.output, args.dlq
    by_name = {out_name: dst, dlq_name: dlq}

    def prepare() -> None:
        if "nomonitor" in spec.flags and app.monitor in set(app.sensors):
            app.sensors.remove(app.monitor)

    def output_of(event: Any) -> tuple[str, bytes | None, bytes, list[tuple[str, bytes]]]:
        m = event.message
        return stage_output(m.key, event.value, m.headers, m.topic, m.partition, m.offset, out_name, dlq_name)

    if "passthrough" in spec.flags:  # no stage work: what one hop costs by itself

        def output_of(event: Any) -> tuple[str, bytes | None, bytes, list[tuple[str, bytes]]]:  # noqa: F811
            m = event.message
            return out_name, m.key, m.value, list(m.headers or ())

    if spec.pattern == "baseline":

        @app.agent(src, name="bench")
        async def baseline(stream: Any) -> None:
            prepare()
            async for event in stream.events():
                topic, key, value, headers = output_of(event)
                await by_name[topic].send(key=key, value=value, headers=headers)

    elif spec.pattern in ("take_topic", "take_producer", "take_send_soon"):
        mode = spec.pattern

        @app.agent(src, name="bench")
        async def take(stream: Any) -> None:
            prepare()
            producer = app.producer
            async for events in stream.take_events(spec.batch, within=spec.within):
                futures = []
                for event in events:
                    topic, key, value, headers = output_of(event)
                    if mode == "take_producer":
                        futures.append(await producer.send(topic, key, value, None, None, headers))
                    elif mode == "take_topic":
                        futures.append(await by_name[topic].send(key=key, value=value, headers=headers))
                    else:
                        futures.append(by_name[topic].send_soon(key=key, value=value, headers=headers))
                # Every output of the batch is on the broker before take_events acks the batch.
                await asyncio.gather(*futures)

    elif spec.pattern in ("manual", "take_noack"):
        acker = InOrderAcker()

        if spec.pattern == "manual":

            @app.agent(src, name="bench")
            async def manual(stream: Any) -> None:
                prepare()
                producer = app.producer
                noack = acker.stream = stream.noack()
                inflight = spec.inflight
                async for event in noack.events():
                    topic, key, value, headers = output_of(event)
                    acker.add((event,), await producer.send(topic, key, value, None, None, headers))
                    if len(acker.pending) >= inflight:
                        await acker.pending[0][1]
                    await acker.ack_done()

        else:

            @app.agent(src, name="bench")
            async def take_noack(stream: Any) -> None:
                prepare()
                producer = app.producer
                acker.stream = stream
                depth = spec.depth
                async for events in stream.noack_take(spec.batch, within=spec.within):
                    futures = []
                    for event in events:
                        topic, key, value, headers = output_of(event)
                        futures.append(await producer.send(topic, key, value, None, None, headers))
                    acker.add(events, asyncio.gather(*futures))
                    if len(acker.pending) > depth:  # more than `depth` batches in flight: wait for the oldest
                        await acker.pending[0][1]
                    await acker.ack_done()

        @app.timer(0.1)
        async def ack_idle() -> None:
            # Acks the tail once its outputs are delivered when no further event comes to do it.
            if acker.stream is not None:
                await acker.ack_done()

    else:
        raise SystemExit(f"pattern {spec.pattern!r} is not a Faust pattern")
    return app


async def raw_worker(spec: Spec, args: argparse.Namespace) -> None:
    """aiokafka consume -> stage work -> produce; commit each batch's offsets once its outputs are acked."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    poll = int(spec.settings.get("broker_max_poll_records", 2000))
    consumer = AIOKafkaConsumer(
        args.input,
        bootstrap_servers=args.bootstrap,
        group_id=args.app_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=int(spec.settings.get("consumer_max_fetch_size", 1024**2)),
    )
    producer = AIOKafkaProducer(
        bootstrap_servers=args.bootstrap,
        **({"partitioner": MemoPartitioner()} if "memopart" in spec.flags else {}),
        linger_ms=int(float(spec.settings.get("producer_linger", 0.005)) * 1000),
        acks="all" if spec.settings.get("producer_acks", -1) == -1 else 1,
        max_batch_size=int(spec.settings.get("producer_max_batch_size", 16384)),
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    await consumer.start()
    await producer.start()
    print("[raw] Ready", flush=True)
    out_name, dlq_name = args.output, args.dlq
    passthrough = "passthrough" in spec.flags
    # Pipelined like a Faust worker: batch k+1 is fetched and produced while batch k's produce requests
    # are in flight; offsets of a batch are committed (at most once a second, like
    # broker_commit_interval) only once every output of it and of all earlier batches is acked.
    in_flight: deque[tuple[asyncio.Future[Any], dict[Any, int]]] = deque()
    done_offsets: dict[Any, int] = {}
    last_commit = time.monotonic()

    async def settle(block: bool) -> None:
        nonlocal last_commit
        while in_flight and (block or in_flight[0][0].done()):
            fut, offsets = in_flight.popleft()
            await fut  # raises on a failed delivery: nothing of this batch or after it is committed
            done_offsets.update(offsets)
        if done_offsets and (block or time.monotonic() - last_commit >= 1.0):
            await consumer.commit(dict(done_offsets))
            done_offsets.clear()
            last_commit = time.monotonic()

    try:
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=100, max_records=poll)
            if not batch:
                await settle(block=True)
                continue
            futures = []
            offsets = {}
            for tp, records in batch.items():
                for r in records:
                    if passthrough:
                        topic, key, value, headers = out_name, r.key, r.value, list(r.headers)
                    else:
                        topic, key, value, headers = stage_output(
                            r.key, r.value, r.headers, r.topic, r.partition, r.offset, out_name, dlq_name
                        )
                    futures.append(await producer.send(topic, value, key=key, headers=headers))
                offsets[tp] = records[-1].offset + 1
            in_flight.append((asyncio.gather(*futures), offsets))
            if len(in_flight) > spec.depth:
                await in_flight[0][0]
            await settle(block=False)
        await settle(block=True)
    finally:
        await producer.stop()
        await consumer.stop()


def worker_main(args: argparse.Namespace) -> None:
    spec = parse_spec(args.worker)
    if "uvloop" in spec.flags:
        import uvloop  # not a project dependency: make it importable, e.g. PYTHONPATH=/tmp/uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    if spec.pattern == "raw":
        asyncio.run(raw_worker(spec, args))
        return
    from faust.worker import Worker

    (Path(args.data_dir) / args.app_id).mkdir(parents=True, exist_ok=True)
    app = build_app(spec, args)
    logging.getLogger("aiokafka").setLevel(logging.WARNING)  # as app/cli/worker.py does
    Worker(app, loglevel="debug" if spec.debug else "info", quiet=True).execute_from_commandline()


# --------------------------------------------------------------------------------------------------
# Orchestrator side
# --------------------------------------------------------------------------------------------------

DEVICES = ("desktop", "mobile", "app")
USER_AGENTS = {
    "desktop": (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/124.0.0.0 Safari/537.36",
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4_1) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "Version/17.4.1 Safari/605.1.15",
    ),
    "mobile": (
        "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/124.0.6367.82 Mobile Safari/537.36",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "Version/17.4 Mobile/15E148 Safari/604.1",
    ),
    "app": ("IVTShop/3.2.1 (iPhone; iOS 17.4; Scale/3.00)", "IVTShop/3.2.0 (Android 14; Pixel 8)"),
}


def make_clicks(n: int, seed: int = 7) -> list[tuple[bytes, bytes, list[tuple[str, bytes]]]]:
    """(key, value, headers) of ``n`` realistic clicks: households of users, a third anonymous."""
    from app.contracts.events import Click

    rng = random.Random(seed)
    n_users = max(n // 5, 10)
    t0_ms = int(time.time() * 1000) - n  # one ms apart, ending about now
    out = []
    for i in range(n):
        u = rng.randrange(n_users)
        ip = f"2001:db8::{u:x}" if u % 10 == 0 else f"100.{u % 250}.{(u // 250) % 250}.{u % 7 + 1}"
        user = None if u % 3 == 0 else f"user-{u:07d}"
        device = DEVICES[u % 3] if rng.random() < 0.9 else rng.choice(DEVICES)
        t_ms = t0_ms + i
        click = Click(
            click_id=f"{rng.getrandbits(64):016x}-{i}",
            event_time_ms=t_ms,
            ip=ip,
            session_id=f"s-{u}-{t_ms // 1_200_000}",
            user_id=user,
            logged_in=user is not None and rng.random() < 0.7,
            device_type=device,
            user_agent=rng.choice(USER_AGENTS[device]),
            ad_id=f"ad-{rng.randrange(5000):05d}",
            campaign_id=f"cmp-{rng.randrange(300):04d}",
            advertiser_id=f"adv-{rng.randrange(60):03d}",
        )
        ns = str(t_ms * 1_000_000).encode()
        out.append((ip.encode(), click.to_json(), [("ivt-intended-ns", ns), ("ivt-sent-ns", ns)]))
    return out


async def produce_input(bootstrap: str, topic: str, n: int) -> float:
    from aiokafka import AIOKafkaProducer

    data = make_clicks(n)
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=512 * 1024, acks="all"
    )
    await producer.start()
    t = time.monotonic()
    try:
        futures = [
            await producer.send(topic, value, key=key, headers=headers) for key, value, headers in data
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return n / (time.monotonic() - t)


def _proc_cpu_s(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _load() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


@dataclass
class Result:
    variant: str
    ok: bool
    rate: float = 0.0
    seconds: float = 0.0
    outputs: int = 0
    worker_cpu_pct: float | None = None
    cpu_us_per_msg: float | None = None
    commit_s: float | None = None
    committed: int = 0
    load_before: str = ""
    load_after: str = ""
    profiled: bool = False
    note: str = ""
    profile: str | None = None


class Runner:
    def __init__(self, args: argparse.Namespace, bootstrap: str, workdir: Path, prefix: str) -> None:
        self.args = args
        self.bootstrap = bootstrap
        self.workdir = workdir
        self.prefix = prefix
        self.input = f"{prefix}clicks"
        self.dlq = f"{prefix}clicks-dlq"

    def run_variant(self, index: int, text: str) -> Result:
        parse_spec(text)
        app_id = f"{self.prefix}v{index}"
        output = f"{self.prefix}out-v{index}"
        from app.contracts.settings import Settings
        from app.kafka.admin import TopicSpec, ensure_topics

        ensure_topics(
            Settings.from_env(bootstrap_servers=self.bootstrap),
            [TopicSpec(output, PARTITIONS, "client IP")],
        )
        log_path = self.workdir / f"worker-v{index}.log"
        cmd = [
            sys.executable, str(Path(__file__).resolve()), "--worker", text,
            "--bootstrap", self.bootstrap, "--input", self.input, "--output", output, "--dlq", self.dlq,
            "--app-id", app_id, "--data-dir", str(self.workdir / "data"),
        ]  # fmt: skip
        result = Result(variant=text, ok=False, load_before=_load(), profiled=self.args.profile)
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                cmd, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )  # fmt: skip
            try:
                asyncio.run(self._watch(proc, output, app_id, result, index))
            except Exception as exc:  # noqa: BLE001 - report and carry on with the next variant
                result.note = f"{type(exc).__name__}: {exc}"
            finally:
                _stop(proc)
        result.load_after = _load()
        if not result.ok:
            tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-15:])
            print(f"  !! {text}: {result.note}\n  worker log tail:\n{tail}", file=sys.stderr)
        return result

    async def _watch(
        self, proc: subprocess.Popen[bytes], output: str, app_id: str, result: Result, index: int
    ) -> None:
        from aiokafka import AIOKafkaConsumer, TopicPartition
        from aiokafka.admin import AIOKafkaAdminClient
        from aiokafka.errors import KafkaError

        n = self.args.messages
        tps = [TopicPartition(output, p) for p in range(PARTITIONS)]
        in_tps = [TopicPartition(self.input, p) for p in range(PARTITIONS)]
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False)
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await consumer.start()
        await admin.start()
        pyspy: subprocess.Popen[bytes] | None = None
        try:
            consumer.assign(tps)
            t0 = time.monotonic()
            first = cpu_first = None
            first_total = 0
            last_total, last_change = 0, t0
            while True:
                try:
                    ends = await consumer.end_offsets(tps)
                except KafkaError:  # a just-created topic's leader not yet in this client's metadata
                    await asyncio.sleep(0.2)
                    continue
                total = sum(ends.values())
                now = time.monotonic()
                if total and first is None:
                    first, cpu_first, first_total = now, _proc_cpu_s(proc.pid), total
                    if self.args.profile:
                        pyspy = self._start_pyspy(proc.pid, index)
                if total != last_total:
                    last_total, last_change = total, now
                if total >= n:
                    break
                if proc.poll() is not None:
                    raise RuntimeError(f"worker exited with {proc.returncode} after {total} outputs")
                if first is None and now - t0 > self.args.start_timeout:
                    raise RuntimeError(f"no output within {self.args.start_timeout:.0f} s")
                if first is not None and now - last_change > self.args.stall_timeout:
                    raise RuntimeError(f"stalled at {total}/{n} outputs for {self.args.stall_timeout:.0f} s")
                await asyncio.sleep(0.1)
            done, cpu_done = time.monotonic(), _proc_cpu_s(proc.pid)
            result.outputs = total
            if cpu_first is not None and cpu_done is not None and done > first:
                result.worker_cpu_pct = 100.0 * (cpu_done - cpu_first) / (done - first)
                result.cpu_us_per_msg = 1e6 * (cpu_done - cpu_first) / max(total - first_total, 1)
            first_ts, last_ts = await _edge_timestamps(consumer, tps, ends)
            result.seconds = (last_ts - first_ts) / 1000.0
            result.rate = n / result.seconds if result.seconds > 0 else float("inf")
            # At-least-once bookkeeping: the group's committed offsets must reach the input's end.
            in_end = sum((await consumer.end_offsets(in_tps)).values())
            deadline = time.monotonic() + self.args.commit_timeout
            while True:
                committed = await _committed(admin, app_id, in_tps)
                if committed >= in_end or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.1)
            result.committed = committed
            result.commit_s = time.monotonic() - done if committed >= in_end else None
            await asyncio.sleep(0.5)  # any late duplicate would show up in the count
            result.outputs = sum((await consumer.end_offsets(tps)).values())
            result.ok = result.outputs == n and committed >= in_end
            if not result.ok:
                result.note = f"outputs {result.outputs}/{n}, committed {committed}/{in_end}"
            if pyspy is not None:
                try:
                    pyspy.wait(self.args.profile_seconds + 30)
                except subprocess.TimeoutExpired:
                    pyspy.send_signal(signal.SIGINT)
                    pyspy.wait(30)
                result.profile = str(self._profile_path(index))
        finally:
            if pyspy is not None and pyspy.poll() is None:
                pyspy.send_signal(signal.SIGINT)
                try:
                    pyspy.wait(30)
                except subprocess.TimeoutExpired:
                    pyspy.kill()
                    pyspy.wait()
            await consumer.stop()
            await admin.close()

    def _profile_path(self, index: int) -> Path:
        return Path(self.args.out) / f"profile-v{index}.txt"

    def _start_pyspy(self, pid: int, index: int) -> subprocess.Popen[bytes]:
        path = self._profile_path(index)
        path.parent.mkdir(parents=True, exist_ok=True)
        cmd = [
            self.args.pyspy, "record", "-p", str(pid), "-d", str(self.args.profile_seconds), "-r", "200",
            "-f", "raw", "-o", str(path), "--nonblocking", "--threads",
        ]  # fmt: skip
        return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def _edge_timestamps(consumer: Any, tps: Sequence[Any], ends: dict[Any, int]) -> tuple[int, int]:
    """CreateTime of the first and of the last output record (over all partitions)."""
    firsts, lasts = [], []
    for tp in tps:
        if not ends[tp]:
            continue
        for offset, bucket in ((0, firsts), (ends[tp] - 1, lasts)):
            consumer.seek(tp, offset)
            records = (await consumer.getmany(tp, timeout_ms=5000, max_records=1)).get(tp, [])
            if not records:
                raise RuntimeError(f"could not read {tp} at {offset}")
            bucket.append(records[0].timestamp)
    return min(firsts), max(lasts)


async def _committed(admin: Any, group: str, tps: Sequence[Any]) -> int:
    offsets = await admin.list_consumer_group_offsets(group, partitions=list(tps))
    return sum(max(meta.offset, 0) for meta in offsets.values())


def _stop(proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    """SIGTERM the worker's process group (a graceful Faust shutdown), SIGKILL it after ``timeout``."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        except ProcessLookupError:
            pass


# --------------------------------------------------------------------------------------------------
# Profiles
# --------------------------------------------------------------------------------------------------

_FRAME = re.compile(r"^(?P<fn>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")
_SITE = re.compile(r".*/site-packages/")


def _frame_name(frame: str) -> str:
    m = _FRAME.match(frame.strip())
    if not m:
        return frame.strip()
    file = _SITE.sub("", m["file"])
    file = file.replace(str(REPO_ROOT) + "/", "")
    file = re.sub(r".*/lib/python3\.\d+/", "", file)
    return f"{m['fn']} ({file})"


def summarize_profile(path: Path, top: int = 25) -> str:
    """Top frames of a py-spy ``-f raw`` (collapsed stacks) file by self and by inclusive samples."""
    self_t: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        c = int(count)
        frames = [_frame_name(f) for f in stack.split(";") if f]
        if not frames:
            continue
        total += c
        self_t[frames[-1]] += c
        for name in set(frames):
            incl[name] += c
    if not total:
        return f"{path}: no samples"
    lines = [f"{path.name}: {total} active samples"]
    lines.append("  self %   function")
    lines += [f"  {100 * c / total:5.1f}   {name}" for name, c in self_t.most_common(top)]
    lines.append("  incl %   function")
    lines += [f"  {100 * c / total:5.1f}   {name}" for name, c in incl.most_common(top + 15)]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------------


def print_table(results: list[Result], n: int) -> None:
    """One row per variant: the best of its repeats (contention on a shared box only slows runs down),
    with every repeat's rate listed."""
    by_variant: dict[str, list[Result]] = {}
    for r in results:
        by_variant.setdefault(r.variant, []).append(r)
    best = {v: max(rs, key=lambda r: r.rate if r.ok else -1.0) for v, rs in by_variant.items()}
    raw = next((r.rate for v, r in best.items() if r.ok and v.split(":")[0] == "raw"), None)
    width = max(len(v) for v in best)
    print()
    print(
        f"{n:,} messages, {PARTITIONS} partitions; rate = first to last output (CreateTime), best of repeats"
    )
    header = (
        f"{'variant':<{width}}  {'msgs/s':>8}  {'x raw':>6}  {'cpu %':>5}  {'us/msg':>6}  {'commit':>7}"
        "  load before/after      all repeats"
    )
    print(header)
    print("-" * len(header))
    for v, r in best.items():
        reps = ", ".join(f"{x.rate:,.0f}" if x.ok else "FAIL" for x in by_variant[v])
        if not r.ok and not r.rate:
            print(f"{v:<{width}}  {'FAILED':>8}  {r.note}")
            continue
        ratio = f"{r.rate / raw:.2f}" if raw else "-"
        cpu = f"{r.worker_cpu_pct:.0f}" if r.worker_cpu_pct is not None else "-"
        us = f"{r.cpu_us_per_msg:.0f}" if r.cpu_us_per_msg is not None else "-"
        commit = f"+{r.commit_s:.1f}s" if r.commit_s is not None else "NO"
        mark = " (profiled)" if r.profiled else ""
        note = f"  !! {r.note}" if r.note else ""
        print(
            f"{v:<{width}}  {r.rate:>8,.0f}  {ratio:>6}  {cpu:>5}  {us:>6}  {commit:>7}  "
            f"{r.load_before} / {r.load_after}  [{reps}]{mark}{note}"
        )
    print("cpu % = worker process CPU (all threads) / wall time while producing outputs; 100 = one core.")
    print("us/msg = worker CPU time per output (robust to other load on the box; 1e6/us = one-core bound).")
    print("commit = time after the last output until the group's committed offsets reached the input end.")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument(
        "--variant", default="all", help="'all' or comma-free ';'-separated specs, see --list"
    )
    parser.add_argument("--list", action="store_true", help="print the variants of 'all' and exit")
    parser.add_argument(
        "--repeat", type=int, default=1, help="run the variant list this many times, round robin"
    )
    parser.add_argument("--profile", action="store_true", help="py-spy each variant from its first output")
    parser.add_argument("--profile-seconds", type=int, default=10)
    parser.add_argument("--pyspy", default=DEFAULT_PYSPY)
    parser.add_argument(
        "--out", default=None, help="where profiles and results.json go (default: a temp dir)"
    )
    parser.add_argument("--start-timeout", type=float, default=90.0)
    parser.add_argument("--stall-timeout", type=float, default=30.0)
    parser.add_argument("--commit-timeout", type=float, default=15.0)
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (broker data, worker logs)")
    # worker mode (internal)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    for name in ("--bootstrap", "--input", "--output", "--dlq", "--app-id", "--data-dir"):
        parser.add_argument(name, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        worker_main(args)
        return 0
    if args.list:
        print("\n".join(ALL_VARIANTS))
        return 0
    variants = list(ALL_VARIANTS) if args.variant == "all" else _split_variants(args.variant)
    for v in variants:
        parse_spec(v)  # fail before starting anything
    if args.profile and not Path(args.pyspy).exists():
        raise SystemExit(f"py-spy not found at {args.pyspy} (--pyspy)")

    from app.contracts.settings import Settings
    from app.kafka.admin import TopicSpec, ensure_topics
    from app.kafka.local import LocalBroker

    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # transient metadata errors on new topics
    workdir = Path(tempfile.mkdtemp(prefix="ivt-faust-bench-"))
    args.out = args.out or str(workdir / "out")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    prefix = f"fb{os.getpid()}-"
    settings = Settings.from_env(cache_dir=REPO_ROOT / ".cache", data_dir=workdir / "data")
    broker = LocalBroker(settings, state_dir=workdir / "broker", free_ports=True, die_with_parent=True)
    results: list[Result] = []
    try:
        t = time.monotonic()
        state = broker.start()
        print(f"broker {state.bootstrap} up in {time.monotonic() - t:.1f} s (load {_load()})", flush=True)
        runner = Runner(args, state.bootstrap, workdir, prefix)
        ensure_topics(
            Settings.from_env(bootstrap_servers=state.bootstrap),
            [TopicSpec(runner.input, PARTITIONS, "client IP"), TopicSpec(runner.dlq, 1, "source")],
        )
        rate = asyncio.run(produce_input(state.bootstrap, runner.input, args.messages))
        print(f"pre-produced {args.messages:,} clicks at {rate:,.0f}/s", flush=True)
        runs = [v for _ in range(args.repeat) for v in variants]
        for i, v in enumerate(runs):
            print(f"[{i + 1}/{len(runs)}] {v} (load {_load()}) ...", end=" ", flush=True)
            r = runner.run_variant(i, v)
            results.append(r)
            print(
                f"{r.rate:,.0f} msgs/s, {r.cpu_us_per_msg or 0:.0f} us CPU/msg"
                if r.ok
                else f"FAILED {r.note}",
                flush=True,
            )
            if r.profile and Path(r.profile).exists():
                print(summarize_profile(Path(r.profile)), flush=True)
    finally:
        broker.stop()
        (Path(args.out) / "results.json").write_text(
            json.dumps([r.__dict__ for r in results], indent=2, default=str) + "\n"
        )
        if not args.keep:
            out_in_workdir = Path(args.out).resolve().is_relative_to(workdir)
            if out_in_workdir and args.profile:
                print(f"profiles kept in {args.out}")
                shutil.rmtree(workdir / "broker", ignore_errors=True)
                shutil.rmtree(workdir / "data", ignore_errors=True)
            elif out_in_workdir:
                shutil.rmtree(workdir, ignore_errors=True)
            else:
                shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"kept {workdir}")
    if results:
        print_table(results, args.messages)
    return 0 if results and all(r.ok for r in results) else 1


def _split_variants(text: str) -> list[str]:
    """Variants are separated by ';' (commas separate a variant's options); a lone list of bare
    pattern names may use commas too (``baseline,manual``)."""
    if ";" in text:
        return [v.strip() for v in text.split(";") if v.strip()]
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if ":" not in text and all(p in PATTERNS for p in parts):
        return parts
    return [text.strip()]


if __name__ == "__main__":
    sys.exit(main())
