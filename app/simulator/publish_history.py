"""A history folder published to Kafka as fast as the broker takes it (closed loop, no schedule).

What live mode would have sent, had it run through the history's days: clicks to ``clicks`` (keyed by
IP, with ``_truth``), purchases to ``purchases`` (keyed by click id), RFM updates to ``account-rfm``
(keyed by user id), as the same wire JSON (:func:`app.simulator.live.click_messages` and friends) and
with the history's own ids, so a dataset built from the files and one built from the verdicts of this
traffic (``models/dataset_kafka.py``) refer to the same clicks.

The three streams are merged in event-time order (an RFM score stamped at its account's first click
goes before that click, a purchase after its click: purchases follow clicks by 30 s or more), so a
consumer reading the topics sees each record no earlier than the records it depends on. Memory is
bounded: one record batch per stream is read at a time (plus, where a batch ends on a run of equal
times, the next one), encoded and handed to the producer before the next is read.

A ``start_ms``/``end_ms`` window applies to all three streams by event time: a purchase in the window
whose click is before ``start_ms`` is published without its click, and RFM scores published before
``start_ms`` are not repeated (publish from the history's start for complete state).

Clicks carry the ``ivt-sent-ns`` header (when they were handed to the producer); there is no
``ivt-intended-ns``, as there is no schedule. Kafka timestamps are the producer's wall clock.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from rich.console import Console

from app.contracts.events import format_time
from app.contracts.settings import Settings
from app.kafka import clients
from app.simulator.history import read_manifest
from app.simulator.live import (
    SENT_HEADER,
    _BatchSender,
    _topic_layout,
    click_messages,
    purchase_messages,
    rfm_messages,
)
from app.simulator.truth import FAMILIES

__all__ = ["publish_history", "count_clicks", "HistoryReport", "ProgressCallback"]

#: called after each merged step with the clicks sent so far
ProgressCallback = Callable[[int], None]

_DAY_MS: Final = 86_400_000
#: stream -> (time column, tie rank: on equal event times RFM updates go first, then clicks, then purchases)
_STREAMS: Final = {
    "account_rfm": ("updated_at_ms", 0),
    "clicks": ("event_time_ms", 1),
    "purchases": ("event_time_ms", 2),
}


@dataclass
class HistoryReport:
    history: str
    start_ms: int
    end_ms: int
    clicks: int = 0
    #: the latest event time published (epoch ms)
    event_ms: int = 0
    purchases: int = 0
    rfm_updates: int = 0
    acked: int = 0
    errors: int = 0
    first_error: str = ""
    elapsed_s: float = 0.0
    #: CPU seconds of the publishing process (reading Parquet, JSON encoding, the producer)
    cpu_s: float = 0.0
    clicks_by_family: dict[str, int] = field(default_factory=dict)

    @property
    def messages(self) -> int:
        return self.clicks + self.purchases + self.rfm_updates

    @property
    def clicks_per_s(self) -> float:
        return self.clicks / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def messages_per_s(self) -> float:
        return self.messages / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "history": self.history,
            "start_ms": self.start_ms,
            "end_ms": self.end_ms,
            "clicks": self.clicks,
            "purchases": self.purchases,
            "rfm_updates": self.rfm_updates,
            "acked": self.acked,
            "errors": self.errors,
            "first_error": self.first_error,
            "elapsed_s": round(self.elapsed_s, 3),
            "cpu_s": round(self.cpu_s, 2),
            "clicks_per_s": round(self.clicks_per_s, 1),
            "messages_per_s": round(self.messages_per_s, 1),
            "clicks_by_family": self.clicks_by_family,
        }

    def print(self, console: Console) -> None:
        console.print(
            f"published {self.history} ({format_time(self.start_ms)} .. {format_time(self.end_ms)}): "
            f"{self.clicks:,} clicks, {self.purchases:,} purchases, {self.rfm_updates:,} RFM updates "
            f"in {self.elapsed_s:.2f} s"
        )
        console.print(
            f"{self.clicks_per_s:,.0f} clicks/s ({self.messages_per_s:,.0f} messages/s), "
            f"{self.acked:,} acked, errors {self.errors}"
            f"{' (' + self.first_error + ')' if self.first_error else ''}; "
            f"CPU {self.cpu_s:.1f} s ({100 * self.cpu_s / max(self.elapsed_s, 1e-9):.0f} % of a core)"
        )
        console.print(
            "clicks by family: " + ", ".join(f"{k} {v:,}" for k, v in self.clicks_by_family.items())
        )


class _Stream:
    """One stream of the history, read ahead by one record batch, consumed by event time."""

    def __init__(self, batches: Iterator[pa.RecordBatch], time_column: str) -> None:
        self._batches = batches
        self._time_column = time_column
        self.table: pa.Table | None = None
        self.t = np.empty(0, dtype=np.int64)
        self.done = False

    def fill(self) -> None:
        """Read until rows are held whose times are not all equal, or the stream ends (so that the
        rows before the last time held can go, and something always can)."""
        while not self.done and (self.t.shape[0] == 0 or self.t[0] == self.t[-1]):
            try:
                batch = next(self._batches)
            except StopIteration:
                self.done = True
                break
            if batch.num_rows == 0:
                continue
            more = pa.Table.from_batches([batch])
            self.table = more if self.table is None else pa.concat_tables([self.table, more])
            self.t = np.concatenate([self.t, batch.column(self._time_column).to_numpy()])

    def take_before(self, horizon: int | None) -> tuple[pa.Table | None, np.ndarray]:
        """Remove and return the rows with time < ``horizon`` (all of them if None)."""
        n = self.t.shape[0] if horizon is None else int(np.searchsorted(self.t, horizon, side="left"))
        if n == 0 or self.table is None:
            return None, self.t[:0]
        out, times = self.table.slice(0, n), self.t[:n]
        self.table, self.t = self.table.slice(n), self.t[n:]
        return out, times


def _batches(
    path: Path,
    manifest: dict[str, Any],
    stream: str,
    start_ms: int,
    end_ms: int,
    batch_size: int,
    columns: list[str] | None = None,
) -> Iterator[pa.RecordBatch]:
    """Rows of ``stream`` with ``start_ms <= time < end_ms``, in time order; day files outside the
    window are not opened."""
    column = _STREAMS[stream][0]
    for name in manifest["streams"][stream]["files"]:
        day = datetime.strptime(Path(name).name, "day=%Y-%m-%d.parquet").replace(tzinfo=UTC)
        day_ms = int(day.timestamp() * 1000)
        if day_ms + _DAY_MS <= start_ms or day_ms >= end_ms:
            continue
        f = pq.ParquetFile(path / name)
        try:
            for batch in f.iter_batches(batch_size=batch_size, columns=columns):
                t = batch.column(column).to_numpy()
                if t.shape[0] == 0 or t[-1] < start_ms:
                    continue
                lo, hi = np.searchsorted(t, [start_ms, end_ms], side="left").tolist()
                if hi > lo:
                    yield batch.slice(lo, hi - lo)
                if hi < t.shape[0]:
                    return
        finally:
            f.close()


def count_clicks(history_dir: Path | str, start_ms: int | None = None, end_ms: int | None = None) -> int:
    """Clicks of a history with ``start_ms <= event time < end_ms`` (the manifest's count for all of
    it; otherwise the time column of the window's days is read)."""
    path = Path(history_dir)
    manifest = read_manifest(path)
    lo = int(manifest["start_ms"]) if start_ms is None else int(start_ms)
    hi = int(manifest["end_ms"]) if end_ms is None else int(end_ms)
    if lo <= int(manifest["start_ms"]) and hi >= int(manifest["end_ms"]):
        return int(manifest["counts"]["clicks"])
    return sum(b.num_rows for b in _batches(path, manifest, "clicks", lo, hi, 1 << 20, ["event_time_ms"]))


async def publish_history(
    settings: Settings,
    history_dir: Path | str,
    start_ms: int | None = None,
    end_ms: int | None = None,
    progress: ProgressCallback | None = None,
    *,
    batch_rows: int = 65_536,
    linger_ms: int = 5,
    max_batch_size: int = 512 * 1024,
    idempotence: bool = True,
) -> HistoryReport:
    """Publish the history in ``history_dir`` (clicks, purchases, RFM updates with event time in
    ``[start_ms, end_ms)``, default: all of it) to the topics of ``settings``; returns the report.

    ``progress(clicks_sent)`` is called after every merged step (about ``batch_rows`` clicks; the
    total is the manifest's click count, or :func:`count_clicks` for a window). Waits for every
    acknowledgement before it returns; ``HistoryReport.event_ms`` is the last click's event time.
    """
    path = Path(history_dir)
    manifest = read_manifest(path)
    lo = int(manifest["start_ms"]) if start_ms is None else int(start_ms)
    hi = int(manifest["end_ms"]) if end_ms is None else int(end_ms)
    report = HistoryReport(history=str(path), start_ms=lo, end_ms=hi)
    family_counts = dict.fromkeys(FAMILIES, 0)
    producer = clients.producer(
        settings,
        acks="all" if idempotence else 1,
        enable_idempotence=idempotence,
        linger_ms=linger_ms,
        max_batch_size=max_batch_size,
        max_request_size=max(1_048_576, max_batch_size * 2),
        request_timeout_ms=30_000,
    )
    await producer.start()
    began, cpu0 = time.perf_counter(), time.process_time()
    try:
        topics = await _topic_layout(settings, producer)
        sender = _BatchSender(producer, linger_ms)

        def on_done(fut: asyncio.Future[Any], n: int, topic: str) -> None:
            if fut.cancelled() or fut.exception() is not None:
                report.errors += n
                if not report.first_error:
                    report.first_error = "cancelled" if fut.cancelled() else repr(fut.exception())
            elif topic == topics.clicks:
                report.acked += n

        sender.on_done = on_done
        streams = {
            name: _Stream(_batches(path, manifest, name, lo, hi, batch_rows), column)
            for name, (column, _) in _STREAMS.items()
        }
        encoders = {
            "account_rfm": (topics.rfm, lambda t: rfm_messages(t, topics.rfm_partitions)),
            "clicks": (topics.clicks, lambda t: click_messages(t, topics.click_partitions)),
            "purchases": (topics.purchases, lambda t: purchase_messages(t, topics.purchase_partitions)),
        }
        last_tick = time.perf_counter_ns()
        while True:
            for s in streams.values():
                s.fill()
            open_ends = [int(s.t[-1]) for s in streams.values() if not s.done and s.t.shape[0]]
            horizon = min(open_ends) if open_ends else None
            # this step's rows of every stream, encoded, then interleaved by (time, tie rank)
            topic_of: list[str] = []
            parts: list[int] = []
            keys: list[bytes] = []
            values: list[bytes] = []
            times: list[np.ndarray] = []
            ranks: list[np.ndarray] = []
            for name, s in streams.items():
                table, t = s.take_before(horizon)
                if table is None:
                    continue
                topic, encoder = encoders[name]
                p, k, v = encoder(table)
                topic_of += [topic] * len(v)
                parts += p
                keys += k
                values += v
                times.append(t)
                ranks.append(np.full(t.shape[0], _STREAMS[name][1], dtype=np.int8))
                if name == "clicks":
                    for row in pc.value_counts(table.column("truth_family")).to_pylist():
                        family_counts[row["values"]] = family_counts.get(row["values"], 0) + row["counts"]
            if not values:
                if horizon is None:
                    break
                continue
            t_all = np.concatenate(times)
            order = np.lexsort((np.concatenate(ranks), t_all))
            for j in order.tolist():
                topic = topic_of[j]
                now = time.time_ns()
                if topic == topics.clicks:
                    await sender.append(
                        topic, parts[j], keys[j], values[j], [(SENT_HEADER, str(now).encode())], now
                    )
                    report.clicks += 1
                else:
                    await sender.append(topic, parts[j], keys[j], values[j], [], now)
                    if topic == topics.purchases:
                        report.purchases += 1
                    else:
                        report.rfm_updates += 1
                mono = time.perf_counter_ns()
                if mono - last_tick >= 1_000_000:
                    await sender.tick(now)
                    last_tick = mono
            report.event_ms = max(report.event_ms, int(t_all.max()))
            if progress is not None:
                progress(report.clicks)
        await sender.close()
    finally:
        await producer.stop()
        report.elapsed_s = time.perf_counter() - began
        report.cpu_s = time.process_time() - cpu0
        report.clicks_by_family = family_counts
    return report
