"""What a live worker measures about itself, and the snapshot file it writes for people and benchmarks.

The in-process cost of a scoring batch (batch formed -> verdicts handed to the producer) goes into an
HDR histogram in microseconds, and so does the state flush after each take of records (RocksDB
writes and changelog records); decisions are counted per slice, so IVR per slice can be followed
live. A snapshot is written atomically as JSON to ``$IVT_DATA_DIR/stats/worker-<pid>.json``.
"""

from __future__ import annotations

import os
import resource
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from hdrh.histogram import HdrHistogram

__all__ = ["WorkerStats", "STATS", "stats_dir", "read_snapshots"]

_MAX_US = 60_000_000  # one minute: anything slower is clamped, not lost


def peak_rss_mib() -> float:
    """This process's peak resident memory, MiB.

    From ``VmHWM`` (per address space): ``getrusage``'s ``ru_maxrss`` survives fork+exec on Linux, so
    a worker started by a large parent would report the parent's peak.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def stats_dir(data_dir: Path) -> Path:
    return data_dir / "stats"


@dataclass
class WorkerStats:
    model_version: str = ""
    provider: str = ""
    started_at: float = field(default_factory=time.time)
    batch_cost_us: HdrHistogram = field(default_factory=lambda: HdrHistogram(1, _MAX_US, 3))
    #: The same span in CPU time of the worker's event-loop thread: the wall time above also counts
    #: time the process was not running (other processes on the same cores), this one does not.
    batch_cpu_us: HdrHistogram = field(default_factory=lambda: HdrHistogram(1, _MAX_US, 3))
    batch_sizes: HdrHistogram = field(default_factory=lambda: HdrHistogram(1, 1_000_000, 3))
    #: Writing a take's user and session changes to RocksDB and handing their changelog records to
    #: the producer (once per take, after its scoring batches), wall and CPU time.
    flush_cost_us: HdrHistogram = field(default_factory=lambda: HdrHistogram(1, _MAX_US, 3))
    flush_cpu_us: HdrHistogram = field(default_factory=lambda: HdrHistogram(1, _MAX_US, 3))
    clicks_by_slice: Counter[str] = field(default_factory=Counter)
    invalid_by_slice: Counter[str] = field(default_factory=Counter)
    ip_stage_clicks: int = 0

    def record_batch(self, cost_us: float, cpu_us: float, slices: list[str], invalid: list[bool]) -> None:
        self.batch_cost_us.record_value(min(max(int(cost_us), 1), _MAX_US))
        self.batch_cpu_us.record_value(min(max(int(cpu_us), 1), _MAX_US))
        self.batch_sizes.record_value(max(len(slices), 1))
        self.clicks_by_slice.update(slices)
        self.invalid_by_slice.update(s for s, bad in zip(slices, invalid, strict=True) if bad)

    def record_flush(self, cost_us: float, cpu_us: float) -> None:
        self.flush_cost_us.record_value(min(max(int(cost_us), 1), _MAX_US))
        self.flush_cpu_us.record_value(min(max(int(cpu_us), 1), _MAX_US))

    def snapshot(self) -> dict[str, Any]:
        h = self.batch_cost_us
        return {
            "pid": os.getpid(),
            "at": time.time(),
            "uptime_s": round(time.time() - self.started_at, 1),
            "model_version": self.model_version,
            "provider": self.provider,
            "verdicts": sum(self.clicks_by_slice.values()),
            "ip_stage_clicks": self.ip_stage_clicks,
            "batches": h.get_total_count(),
            "batch_cost_us": _percentiles(h),
            "batch_cpu_us": _percentiles(self.batch_cpu_us),
            "batch_size_mean": round(self.batch_sizes.get_mean_value(), 1),
            "flush_cost_us": _percentiles(self.flush_cost_us),
            "flush_cpu_us": _percentiles(self.flush_cpu_us),
            "batch_cost_hdr": h.encode().decode() if h.get_total_count() else "",
            "clicks_by_slice": dict(self.clicks_by_slice),
            "invalid_by_slice": dict(self.invalid_by_slice),
            "peak_rss_mib": peak_rss_mib(),
        }

    def write(self, folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"worker-{os.getpid()}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(orjson.dumps(self.snapshot(), option=orjson.OPT_INDENT_2))
        tmp.replace(path)
        return path


def _percentiles(h: HdrHistogram) -> dict[str, float]:
    return {
        "p50": h.get_value_at_percentile(50),
        "p99": h.get_value_at_percentile(99),
        "p99.9": h.get_value_at_percentile(99.9),
        "max": h.get_max_value(),
        "mean": round(h.get_mean_value(), 1),
    }


#: The one stats object of a worker process; every stage records into it.
STATS = WorkerStats()


def read_snapshots(folder: Path) -> list[dict[str, Any]]:
    """Every worker's latest snapshot in ``folder`` (workers of one data dir)."""
    return [orjson.loads(p.read_bytes()) for p in sorted(folder.glob("worker-*.json"))]
