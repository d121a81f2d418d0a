"""Training time and peak memory with 10 million training rows (the default).

The simulator's 7-day history of 50,000 users gives about 3.8 M dataset rows; 10 M training rows
would need a far bigger simulation and a long feature replay first. So this script **synthesises**
the large dataset from a built one, honestly labelled as such: it appends whole copies of the
source in later weeks (day, event time and click id shifted by 7 days per copy, so hour-of-day and
day-of-week stay true and the time split still has training, validation and test days) and jitters
the continuous features of every copy after the first (each multiplied by ``1 + N(0, 0.01)``; flags,
one-hot and unit-circle features untouched). Labels, weights and slices are copied. It makes as
many copies as needed for the training days (all but the last validation + test days) to hold at
least ``--train-rows`` rows; the trainer then takes a seeded uniform sample of exactly about that
many (``TrainConfig.max_train_rows``).

Then it runs the real trainer (:func:`models.train.train`, the code behind ``ivt train``, default
config otherwise) in a **child process** and prints its wall time and its peak resident memory
(the child's ``ru_maxrss``, so synthesis does not count), the epochs run and the ONNX parity.

    python benchmarks/bench_train.py --source var/dataset --train-rows 10000000 [--work /tmp/bench-train]

With ``--short`` the source is a small dataset simulated and built here first (:func:`small_dataset`,
4 days of 2,000 users) and the training rows default to 100,000: the same steps, in seconds
(``make bench-short`` runs it so the script keeps working).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import queue
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.features.spec import FEATURE_NAMES  # noqa: E402
from models.dataset import DATA_FILE, DAY_MS, INFO_FILE, iter_dataset, read_info  # noqa: E402
from models.train import TrainConfig  # noqa: E402

#: features left exactly as they are (binary or unit circle)
_EXACT = {"hour_sin", "hour_cos", "dow_sin", "dow_cos", "logged_in", "has_user_id"} | {
    n for n in FEATURE_NAMES if n.startswith("device_")
}


def small_dataset(out: Path, users: int = 2_000, days: int = 4, seed: int = 7) -> Path:
    """A dataset of ``days`` simulated days of ``users`` users in ``out/dataset`` (``ivt simulate
    history`` and ``ivt dataset``, scaled down): training, validation and two test days."""
    from app.simulator.history import write_history
    from app.simulator.params import SimParams
    from models.dataset import build_from_history

    t0 = time.perf_counter()
    write_history(out / "history", SimParams(seed=seed, users=users), days=days)
    info = build_from_history(out / "history", out / "dataset", warmup_hours=2)
    print(
        f"small dataset: {days} simulated days of {users:,} users, {info.rows:,} rows in "
        f"{time.perf_counter() - t0:.0f} s -> {out / 'dataset'}",
        flush=True,
    )
    return out / "dataset"


def synthesise(source: Path, out: Path, train_rows: int, held_days: int, seed: int = 0) -> dict:
    info = read_info(source)
    n_src = info.rows
    last = int(info.doc["last_day"])
    tail = sum(g.num_rows for g in iter_dataset(source, ["label"], (last - held_days + 1, last + 1)))
    copies = max(1, -(-(train_rows + tail) // n_src))
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    f = pq.ParquetFile(source / DATA_FILE)
    writer = pq.ParquetWriter(out / DATA_FILE, f.schema_arrow, compression="zstd")
    written = 0
    try:
        for c in range(copies):
            shift_days = 7 * c
            for i in range(f.num_row_groups):
                g = f.read_row_group(i)
                if c:
                    cols = {}
                    for name in g.column_names:
                        col = g.column(name)
                        if name in FEATURE_NAMES and name not in _EXACT:
                            x = col.to_numpy()
                            col = pa.array((x * (1.0 + rng.normal(0, 0.01, len(x)))).astype(np.float32))
                        elif name == "day":
                            col = pa.array(col.to_numpy() + shift_days, pa.int32())
                        elif name == "event_time_ms":
                            col = pa.array(col.to_numpy() + shift_days * DAY_MS, pa.int64())
                        elif name == "click_id":
                            col = pa.array([f"{s}~{c}" for s in col.to_pylist()], pa.string())
                        cols[name] = col
                    g = pa.table(cols, schema=f.schema_arrow)
                writer.write_table(g)
                written += g.num_rows
    finally:
        writer.close()
        f.close()
    doc = dict(info.doc)
    doc["rows"] = written
    doc["last_day"] = int(info.doc["last_day"]) + 7 * (copies - 1)
    doc["last_event_ms"] = int(info.doc["last_event_ms"]) + 7 * (copies - 1) * DAY_MS
    doc["source"] = {"kind": "synthetic (bench_train.py)", "from": str(source.resolve()), "copies": copies}
    (out / INFO_FILE).write_text(json.dumps(doc, indent=2))
    return doc


def _child(path: str, train_rows: int, q: mp.Queue) -> None:  # type: ignore[type-arg]
    from models.train import TrainConfig, train

    t0 = time.perf_counter()
    last = [t0]

    def on_stage(s: str) -> None:
        now = time.perf_counter()
        print(f"  [{now - t0:7.1f} s] {s}", flush=True)
        last[0] = now

    def on_epoch(e: int, loss: float, vloss: float) -> None:
        print(
            f"  [{time.perf_counter() - t0:7.1f} s] epoch {e}: train {loss:.4f} valid {vloss:.4f}", flush=True
        )

    r = train(path, TrainConfig(max_train_rows=train_rows), on_epoch=on_epoch, on_stage=on_stage)
    q.put(
        {
            "seconds": time.perf_counter() - t0,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "rows": r.metrics["rows"],
            "epochs": len(r.metrics["epochs"]),
            "best_epoch": r.metrics["best_epoch"],
            "onnx_max_abs_diff": r.parity,
            "at_same_fpr": r.metrics["at_same_fpr"],
        }
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--source", type=Path, default=Path("var/dataset"), help="a dataset built by `ivt dataset`"
    )
    ap.add_argument(
        "--train-rows",
        type=int,
        default=None,
        help="training rows (after the split; default 10,000,000, with --short 100,000)",
    )
    ap.add_argument("--work", type=Path, default=Path("/tmp/bench-train"))
    ap.add_argument("--keep", action="store_true", help="keep the synthetic dataset afterwards")
    ap.add_argument(
        "--short",
        action="store_true",
        help="simulate and build a small source dataset here instead of reading --source",
    )
    args = ap.parse_args()
    if args.train_rows is None:
        args.train_rows = 100_000 if args.short else 10_000_000
    small = Path(tempfile.mkdtemp(prefix="ivt-bench-train-src-")) if args.short else None
    try:
        if small is not None:
            args.source = small_dataset(small)
        run(args)
    finally:
        if small is not None:
            shutil.rmtree(small, ignore_errors=True)


def run(args: argparse.Namespace) -> None:
    t0 = time.perf_counter()
    cfg = TrainConfig()
    doc = synthesise(args.source, args.work, args.train_rows, cfg.valid_days + cfg.test_days)
    print(
        f"synthetic dataset: {doc['rows']:,} rows ({doc['source']['copies']} jittered copies of {args.source}) "
        f"in {time.perf_counter() - t0:.0f} s -> {args.work}"
    )
    q: mp.Queue = mp.get_context("spawn").Queue()  # type: ignore[type-arg]
    p = mp.get_context("spawn").Process(target=_child, args=(str(args.work), args.train_rows, q))
    p.start()
    while True:
        try:
            result = q.get(timeout=5)
            break
        except queue.Empty:
            if not p.is_alive():
                raise SystemExit(f"the training process exited with {p.exitcode}") from None
    p.join()
    print(
        f"training on {result['rows']['train']:,} rows (validation {result['rows']['valid']:,}, test "
        f"{result['rows'].get('test', 0):,}): {result['seconds']:.0f} s wall "
        f"({result['seconds'] / 60:.1f} min; target < 15 min), peak RSS {result['peak_rss_mib']:,.0f} MiB "
        f"({result['peak_rss_mib'] / 1024:.2f} GiB; target < 8 GiB); {result['epochs']} epochs, best "
        f"{result['best_epoch']}; ONNX max |dP| {result['onnx_max_abs_diff']:.2e}"
    )
    print("at the same FPR on the test days:", json.dumps(result["at_same_fpr"]))
    if not args.keep:
        shutil.rmtree(args.work)


if __name__ == "__main__":
    main()
