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

__all__ = ["SummingHistogram", "WorkerStats", "STATS", "stats_dir", "read_snapshots"]

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


class SummingHistogram(HdrHistogram):
    """An HDR histogram that also keeps the sum of what it recorded, for the mean.

    ``HdrHistogram.get_mean_value`` walks every bucket in Python: 23 ms per histogram, and the worker
    writes six of them every five seconds (about 3 % of its CPU time at full load).
    """

    def __init__(self, highest: int) -> None:
        super().__init__(1, highest, 3)
        self.highest, self.value_sum = highest, 0

    def record_value(self, value: int, count: int = 1) -> bool:
        self.value_sum += value * count
        return bool(super().record_value(value, count))

    def record(self, value: float) -> None:
        """Record ``value`` as an integer clamped to the histogram's range: too slow is kept, not lost."""
        self.record_value(min(max(int(value), 1), self.highest))

    def mean(self) -> float:
        count = self.get_total_count()
        return self.value_sum / count if count else 0.0


def _cost_histogram() -> SummingHistogram:
    return SummingHistogram(_MAX_US)


@dataclass
class WorkerStats:
    model_version: str = ""
    provider: str = ""
    started_at: float = field(default_factory=time.time)
    batch_cost_us: SummingHistogram = field(default_factory=_cost_histogram)
    #: The same span in CPU time of the worker's event-loop thread: the wall time above also counts
    #: time the process was not running (other processes on the same cores), this one does not.
    batch_cpu_us: SummingHistogram = field(default_factory=_cost_histogram)
    batch_sizes: SummingHistogram = field(default_factory=lambda: SummingHistogram(1_000_000))
    #: Writing a take's user and session changes to RocksDB and handing their changelog records to
    #: the producer (once per take, after its scoring batches), wall and CPU time.
    flush_cost_us: SummingHistogram = field(default_factory=_cost_histogram)
    flush_cpu_us: SummingHistogram = field(default_factory=_cost_histogram)
    clicks_by_slice: Counter[str] = field(default_factory=Counter)
    invalid_by_slice: Counter[str] = field(default_factory=Counter)
    ip_stage_clicks: int = 0

    def record_batch(self, cost_us: float, cpu_us: float, slices: list[str], invalid: list[bool]) -> None:
        self.batch_cost_us.record(cost_us)
        self.batch_cpu_us.record(cpu_us)
        self.batch_sizes.record(len(slices))
        self.clicks_by_slice.update(slices)
        self.invalid_by_slice.update(s for s, bad in zip(slices, invalid, strict=True) if bad)

    def record_flush(self, cost_us: float, cpu_us: float) -> None:
        self.flush_cost_us.record(cost_us)
        self.flush_cpu_us.record(cpu_us)

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
            "batch_size_mean": round(self.batch_sizes.mean(), 1),
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


def _percentiles(h: SummingHistogram) -> dict[str, float]:
    # one walk of the buckets for the three; an empty histogram gives no entries (0, as before)
    at = h.get_percentile_to_value_dict([50, 99, 99.9])
    return {
        "p50": at.get(50, 0),
        "p99": at.get(99, 0),
        "p99.9": at.get(99.9, 0),
        "max": h.get_max_value(),
        "mean": round(h.mean(), 1),
    }


#: The one stats object of a worker process; every stage records into it.
STATS = WorkerStats()


def read_snapshots(folder: Path) -> list[dict[str, Any]]:
    """Every worker's latest snapshot in ``folder`` (workers of one data dir)."""
    return [orjson.loads(p.read_bytes()) for p in sorted(folder.glob("worker-*.json"))]
