"""Per-batch latency of ``Scorer.score`` on the reference MLP (a script, not a test).

For each batch size: p50 / p99 / p99.9 of one ``score`` call in microseconds, p50 per row, rows per
second at p50, and two parts of the cost: the bare ``session.run`` (p50) and ``decide`` with one
slice per row (p50). The provider actually running is printed first.

    .venv/bin/python benchmarks/bench_scorer.py                     # ~15 s
    .venv/bin/python benchmarks/bench_scorer.py --seconds 0.5 --threads 2 --providers cpu
    .venv/bin/python benchmarks/bench_scorer.py --seconds 0.2 --providers cpu   # make bench-short

Run it on an otherwise idle machine; figures on a shared one are upper bounds (see the load average
printed in the header).
"""

from __future__ import annotations

import argparse
import functools
import gc
import logging
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from app.contracts.events import SLICES
from models.registry import Registry
from models.scorer import Scorer
from models.tiny import build_reference_model, fit_reference, reference_dataset

SIZES = (1, 8, 64, 256, 1024)


def timings_us(
    fn: Callable[[Any], object], inputs: Sequence[Any], seconds: float, min_reps: int = 300
) -> np.ndarray:
    """Wall time of ``fn(inputs[i % len(inputs)])`` per call, in microseconds, after a warm-up."""
    for i in range(20):
        fn(inputs[i % len(inputs)])
    out = []
    clock = time.perf_counter_ns
    stop = clock() + int(seconds * 1e9)
    i = 0
    gc.disable()
    try:
        while (i < min_reps or clock() < stop) and i < 200_000:
            x = inputs[i % len(inputs)]
            t0 = clock()
            fn(x)
            out.append(clock() - t0)
            i += 1
    finally:
        gc.enable()
    return np.asarray(out, dtype=np.float64) / 1000.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=2.0, help="time per batch size (default 2)")
    ap.add_argument("--threads", type=int, default=1, help="intra-op threads (default 1, as the worker)")
    ap.add_argument("--providers", default="auto", help="auto | cpu | cuda (default auto)")
    ap.add_argument("--sizes", default=",".join(map(str, SIZES)), help="comma-separated batch sizes")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    with tempfile.TemporaryDirectory() as tmp:
        reg = Registry(Path(tmp))
        t0 = time.perf_counter()
        manifest = build_reference_model(reg)
        build_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        scorer = Scorer.from_registry(reg, manifest.version, args.providers, intra_op_threads=args.threads)
        load_ms = (time.perf_counter() - t0) * 1000

    X, _ = reference_dataset(max(sizes) * 4, seed=123)
    rng = np.random.default_rng(1)
    session = scorer._session  # the bare ORT call, to show what the wrapper adds
    decide = scorer.decide

    print(
        f"python {platform.python_version()}, onnxruntime {ort.__version__}, numpy {np.__version__}, "
        f"{os.cpu_count()} cpus, load average {os.getloadavg()[0]:.2f}"
    )
    print(
        f"model {manifest.version}: {manifest.n_features} features, StandardScaler + MLP(32, 16) in the graph, "
        f"{len(fit_reference().onnx_bytes)} ONNX bytes; built in {build_s:.2f} s, session ready in {load_ms:.0f} ms"
    )
    print(
        f"provider: {scorer.provider}  (asked: {args.providers}; available: {ort.get_available_providers()})"
    )
    print(f"intra-op threads: {args.threads}, {args.seconds:.1f} s per size\n")
    header = (
        f"{'batch':>6} {'calls':>7} {'p50 us':>9} {'p99 us':>9} {'p99.9 us':>9} {'us/row':>8} "
        f"{'rows/s':>10} {'run p50':>9} {'decide p50':>10}"
    )
    print(header)
    print("-" * len(header))
    for n in sizes:
        starts = rng.integers(0, len(X) - n + 1, 64)
        batches = [np.ascontiguousarray(X[s : s + n]) for s in starts]
        slices = [SLICES[i % len(SLICES)] for i in range(n)]
        t = timings_us(scorer.score, batches, args.seconds)
        feeds = [{manifest.input_name: b} for b in batches]
        bare = timings_us(functools.partial(session.run, [manifest.output_name]), feeds, args.seconds / 4)
        scores = [scorer.score(b) for b in batches[:8]]
        dec = timings_us(functools.partial(decide, slices=slices), scores, args.seconds / 4)
        p50, p99, p999 = np.percentile(t, [50, 99, 99.9])
        print(
            f"{n:>6} {len(t):>7} {p50:>9.1f} {p99:>9.1f} {p999:>9.1f} {p50 / n:>8.2f} "
            f"{n / p50 * 1e6:>10.0f} {np.percentile(bare, 50):>9.1f} {np.percentile(dec, 50):>10.1f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
