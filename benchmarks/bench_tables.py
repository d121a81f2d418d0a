"""Per-user click counts over 1 min, 10 min, 1 h and 24 h on event time: one compact value per key
(``UserState`` in a plain Faust table) against Faust's windowed tables (one table per window).

Each variant is a fresh ``faust.App`` in its own worker subprocess reading the same pre-produced
input topic (key: user id, value: event time as int64, record timestamp = event time) with
``stream.events()``, one event at a time. Per variant: events/s (first event to last, including a
producer flush), changelog records (sum of end offsets of the app's changelog topics), changelog bytes
on the broker's disk, and the worker's peak RSS (VmHWM).

Variants:

* ``compact``: read bytes, ``UserState.from_bytes``, ``clicks.add``, read the four counts, write bytes
  back: one table write per click.
* ``tumbling``: four ``.tumbling(size)`` tables; ``+= 1`` and ``.current()`` each: four writes per click.
* ``hopping``: four ``.hopping(size, step)`` tables with the steps of our bucket layout where it is
  cheap (1 min/10 s, 10 min/1 min, 1 h/5 min, 24 h/1 h): 6 + 10 + 12 + 24 = 52 writes per click.

Run: ``.venv/bin/python benchmarks/bench_tables.py --clicks 50000`` (``make bench-short`` runs
``--clicks 3000 --hop-clicks 500``).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import random
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

PARTITIONS = 6
VARIANTS = ("compact", "tumbling", "hopping")
MIN, HOUR = 60.0, 3600.0
#: (name, size s, hopping step s)
WINDOWS = (("1m", MIN, 10.0), ("10m", 10 * MIN, MIN), ("1h", HOUR, 5 * MIN), ("24h", 24 * HOUR, HOUR))
_T = struct.Struct(">q")


def rocksdb_options() -> dict[str, int]:
    """Copy of ``app.runtime.app.rocksdb_options`` (importing that module registers the project's app)."""
    from app.contracts.settings import Settings

    s = Settings.from_env()
    mib = 1024 * 1024
    return {
        "block_cache_size": s.rocksdb_block_cache_mb * mib,
        "block_cache_compressed_size": 0,
        "write_buffer_size": s.rocksdb_write_buffer_mb * mib,
        "max_write_buffer_number": 2,
        "target_file_size_base": 16 * mib,
        "max_open_files": 256,
    }


# --------------------------------------------------------------------------------------------------
# Worker
# --------------------------------------------------------------------------------------------------


def build_app(args: argparse.Namespace) -> Any:
    import faust

    from app.features.state import UserState

    app = faust.App(
        args.app_id,
        broker=f"kafka://{args.bootstrap}",
        store="rocksdb://",
        datadir=str(Path(args.data_dir) / args.app_id),
        autodiscover=False,
        topic_allow_declare=True,  # its leader topic; the orchestrator creates the changelogs
        topic_partitions=PARTITIONS,
        consumer_auto_offset_reset="earliest",
        producer_linger=0.005,
        producer_acks=-1,
        broker_commit_every=10_000,
        broker_commit_interval=1.0,
        broker_max_poll_records=2000,
        consumer_max_fetch_size=4 * 1024 * 1024,
        stream_buffer_maxsize=16384,
        web_enabled=False,
        # Our tables hold raw bytes; Faust's windowed keys are (key, (start, end)) tuples, which need json.
        key_serializer="raw" if args.worker == "compact" else "json",
        value_serializer="raw" if args.worker == "compact" else "json",
    )
    src = app.topic(
        args.input,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        internal=False,
    )
    opts = rocksdb_options()
    n = args.clicks
    done = Path(args.done)
    state = {"count": 0, "t0": 0.0}

    async def finish() -> None:
        await app.producer.flush()
        secs = time.monotonic() - state["t0"]
        done.write_text(f"{n} {secs}\n")

    if args.worker == "compact":
        table = app.Table(
            "user-state",
            default=None,
            key_type=bytes,
            value_type=bytes,
            partitions=PARTITIONS,
            options=opts,
        )
        spans = ((0, 6), (1, 10), (1, 60), (2, 24))

        @app.agent(src)
        async def compact(stream: Any) -> None:
            async for event in stream.events():
                if not state["count"]:
                    state["t0"] = time.monotonic()
                key = event.key
                t_ms = _T.unpack(event.value)[0]
                data = table.get(key)
                st = UserState.from_bytes(data) if data is not None else UserState()
                st.clicks.add(t_ms)
                counts = [st.clicks.count(lv, span, t_ms) for lv, span in spans]
                assert counts[0] >= 1
                table[key] = st.to_bytes()
                state["count"] += 1
                if state["count"] == n:
                    await finish()

    else:
        tables = []
        for name, size, step in WINDOWS:
            base = app.Table(
                f"clicks-{name}",
                default=int,
                partitions=PARTITIONS,
                options=opts,
            )
            expires = timedelta(seconds=size + step)
            if args.worker == "tumbling":
                windowed = base.tumbling(size, expires=expires)
            else:
                windowed = base.hopping(size, step, expires=expires)
            tables.append(windowed.relative_to_stream())

        @app.agent(src)
        async def windowed_agent(stream: Any) -> None:
            async for event in stream.events():
                if not state["count"]:
                    state["t0"] = time.monotonic()
                key = event.key.decode()
                counts = []
                for t in tables:
                    t[key] += 1
                    counts.append(t[key].current())
                assert counts[0] >= 1
                state["count"] += 1
                if state["count"] == n:
                    await finish()

    return app


def worker_main(args: argparse.Namespace) -> None:
    from faust.worker import Worker

    (Path(args.data_dir) / args.app_id).mkdir(parents=True, exist_ok=True)
    app = build_app(args)
    if app.monitor in set(app.sensors):
        app.sensors.remove(app.monitor)
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    Worker(app, loglevel="warning", quiet=True).execute_from_commandline()


# --------------------------------------------------------------------------------------------------
# Orchestrator
# --------------------------------------------------------------------------------------------------


async def produce(bootstrap: str, topic: str, n: int, span_h: float) -> None:
    """``n`` clicks by ``n // 10`` users (skewed), event times spread evenly over ``span_h`` hours."""
    from aiokafka import AIOKafkaProducer

    rng = random.Random(7)
    users = max(n // 10, 10)
    t0 = int(time.time() * 1000) - int(span_h * 3_600_000)
    step = span_h * 3_600_000 / n
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=512 * 1024)
    await producer.start()
    try:
        futs = []
        for i in range(n):
            u = min(int(rng.paretovariate(1.2)) - 1, users - 1) if i % 2 else rng.randrange(users)
            t = t0 + int(i * step)
            futs.append(await producer.send(topic, _T.pack(t), key=f"user-{u:07d}".encode(), timestamp_ms=t))
        await asyncio.gather(*futs)
    finally:
        await producer.stop()


async def changelog_records(bootstrap: str, app_id: str) -> tuple[int, list[str]]:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    c = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await c.start()
    try:
        names = [t for t in await c.topics() if t.startswith(f"{app_id}-") and t.endswith("-changelog")]
        tps = [TopicPartition(t, p) for t in names for p in range(PARTITIONS)]
        ends = await c.end_offsets(tps) if tps else {}
        return sum(ends.values()), names
    finally:
        await c.stop()


def dir_bytes(data: Path, topics: list[str]) -> int:
    total = 0
    for d in data.iterdir():
        if d.is_dir() and d.name.rpartition("-")[0] in topics:
            total += sum(f.stat().st_size for f in d.iterdir() if f.suffix == ".log")
    return total


def vmhwm_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        except ProcessLookupError:
            pass


def run_variant(args: argparse.Namespace, variant: str, bootstrap: str, workdir: Path, data: Path) -> dict:
    from app.contracts.settings import Settings
    from app.contracts.topics import TopicSpec
    from app.kafka.admin import ensure_topics

    app_id = f"bt{os.getpid()}-{variant}"
    done = workdir / f"{variant}.done"
    tables = ["user-state"] if variant == "compact" else [f"clicks-{w[0]}" for w in WINDOWS]
    compact = {"cleanup.policy": "compact"}
    specs = [TopicSpec(f"{app_id}-{t}-changelog", PARTITIONS, "table key", compact) for t in tables]
    ensure_topics(Settings.from_env(bootstrap_servers=bootstrap), specs)
    n_variant = min(args.hop_clicks, args.clicks) if variant == "hopping" else args.clicks
    log = workdir / f"{variant}.log"
    cmd = [
        sys.executable, str(Path(__file__).resolve()), "--worker", variant, "--bootstrap", bootstrap,
        "--input", args.input, "--app-id", app_id, "--data-dir", str(workdir / "workers"),
        "--done", str(done), "--clicks", str(n_variant),
    ]  # fmt: skip
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd, cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            deadline = time.monotonic() + args.timeout
            while not done.exists():
                if proc.poll() is not None or time.monotonic() > deadline:
                    tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
                    raise RuntimeError(f"{variant}: worker exited or timed out\n{tail}")
                time.sleep(0.2)
            n, secs = done.read_text().split()
            time.sleep(1.0)
            hwm = vmhwm_kib(proc.pid)
        finally:
            stop(proc)
    records, names = asyncio.run(changelog_records(bootstrap, app_id))
    return {
        "variant": variant,
        "rate": int(n) / float(secs),
        "secs": float(secs),
        "records": records,
        "clicks": int(n),
        "bytes": dir_bytes(data, names),
        "tables": len(names),
        "hwm_mib": hwm / 1024,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clicks", type=int, default=50_000)
    p.add_argument("--hop-clicks", type=int, default=5_000, help="hopping reads only the first N (slow)")
    p.add_argument("--span-hours", type=float, default=2.0, help="event-time span of the input")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--timeout", type=float, default=300.0, help="per variant")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    for name in ("--bootstrap", "--input", "--app-id", "--data-dir", "--done"):
        p.add_argument(name, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker_main(args)
        return 0

    from app.contracts.settings import Settings
    from app.contracts.topics import TopicSpec
    from app.kafka.admin import ensure_topics
    from app.kafka.local import LocalBroker

    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    workdir = Path(tempfile.mkdtemp(prefix="ivt-bench-tables-"))
    settings = Settings.from_env(cache_dir=REPO_ROOT / ".cache", data_dir=workdir / "data")
    broker = LocalBroker(settings, state_dir=workdir / "broker", free_ports=True)
    rows = []
    try:
        state = broker.start()
        args.input = f"bt{os.getpid()}-clicks"
        ensure_topics(
            Settings.from_env(bootstrap_servers=state.bootstrap),
            [TopicSpec(args.input, PARTITIONS, "user id")],
        )
        asyncio.run(produce(state.bootstrap, args.input, args.clicks, args.span_hours))
        print(f"produced {args.clicks:,} clicks over {args.span_hours} h of event time", flush=True)
        for v in args.variants.split(","):
            r = run_variant(args, v, state.bootstrap, workdir, broker.data_dir)
            rows.append(r)
            print(f"  {v}: {r['rate']:,.0f} events/s", flush=True)
    finally:
        broker.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    print("\n| variant | clicks | events/s | changelog records | per click | changelog MiB | peak RSS MiB |")
    print("|---|--:|--:|--:|--:|--:|--:|")
    for r in rows:
        print(
            f"| {r['variant']} ({r['tables']} tables) | {r['clicks']:,} | {r['rate']:,.0f} | {r['records']:,} | "
            f"{r['records'] / r['clicks']:.1f} | {r['bytes'] / 2**20:.1f} | {r['hwm_mib']:.0f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
