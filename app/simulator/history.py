"""History files: days of simulated traffic as Apache Parquet, written and read in bounded memory.

Layout under the output folder::

    manifest.json                     seed, parameters, time range, counts per family, files
    clicks/day=YYYY-MM-DD.parquet     CLICK_SCHEMA: the Click wire fields + truth columns
    purchases/day=YYYY-MM-DD.parquet  PURCHASE_SCHEMA
    account_rfm/day=YYYY-MM-DD.parquet RFM_SCHEMA

Every stream has a file for every day (possibly without rows), sorted by event time. Clicks are
written one row group per chunk (an hour by default) as they are generated; purchases and RFM
updates, which are few, are buffered up to :data:`ROW_GROUP_ROWS` rows. Same seed and parameters
=> byte-identical files (for the same pyarrow version: Parquet records the writer's version).

Times are int64 epoch milliseconds (``event_time_ms``, ``updated_at_ms``); the wire's RFC 3339
strings are :func:`app.contracts.events.format_time` of them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from app.contracts.events import format_time
from app.simulator.generator import (
    CLICK_SCHEMA,
    PURCHASE_SCHEMA,
    RFM_SCHEMA,
    Simulator,
    click_table,
    purchase_table,
    rfm_table,
)
from app.simulator.params import SimParams
from app.simulator.truth import FAMILIES

__all__ = ["write_history", "iter_history", "read_manifest", "STREAMS", "MANIFEST", "FORMAT"]

FORMAT: Final = "ivt-simulator-history/1"
MANIFEST: Final = "manifest.json"
#: stream (folder) -> schema
STREAMS: Final[dict[str, pa.Schema]] = {
    "clicks": CLICK_SCHEMA,
    "purchases": PURCHASE_SCHEMA,
    "account_rfm": RFM_SCHEMA,
}
_TIME_COLUMN: Final = {
    "clicks": "event_time_ms",
    "purchases": "event_time_ms",
    "account_rfm": "updated_at_ms",
}
ROW_GROUP_ROWS: Final = 131_072
_DAY_MS: Final = 86_400_000


def _day_name(day_ms: int) -> str:
    return datetime.fromtimestamp(day_ms / 1000, tz=UTC).strftime("day=%Y-%m-%d.parquet")


class _DayWriter:
    """One stream's files: a ParquetWriter per day, opened on demand, rows buffered to row groups."""

    def __init__(self, folder: Path, schema: pa.Schema, buffer_rows: int) -> None:
        self.folder = folder
        self.schema = schema
        self.buffer_rows = buffer_rows
        self.files: list[str] = []
        self._day: int | None = None
        self._writer: pq.ParquetWriter | None = None
        self._buffer: list[pa.Table] = []
        self._buffered = 0
        folder.mkdir(parents=True, exist_ok=True)

    def open_day(self, day_ms: int) -> None:
        if self._day == day_ms:
            return
        self.close()
        name = _day_name(day_ms)
        self._writer = pq.ParquetWriter(
            self.folder / name, self.schema, compression="zstd", write_statistics=True, use_dictionary=True
        )
        self.files.append(f"{self.folder.name}/{name}")
        self._day = day_ms

    def write(self, table: pa.Table) -> None:
        if table.num_rows == 0:
            return
        self._buffer.append(table)
        self._buffered += table.num_rows
        if self._buffered >= self.buffer_rows:
            self._flush()

    def _flush(self) -> None:
        if self._buffer and self._writer is not None:
            self._writer.write_table(pa.concat_tables(self._buffer), row_group_size=max(self._buffered, 1))
        self._buffer, self._buffered = [], 0

    def close(self) -> None:
        self._flush()
        if self._writer is not None:
            self._writer.close()
        self._writer, self._day = None, None


def write_history(
    out: Path,
    params: SimParams,
    days: int,
    on_chunk: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Simulate ``days`` days from ``params.start_ms`` into ``out``; returns the manifest.

    ``on_chunk(chunks_done, clicks_in_chunk)`` is called after every chunk (for a progress bar).
    """
    if days < 1:
        raise ValueError("days must be >= 1")
    if params.start_ms % _DAY_MS:
        raise ValueError("history starts at midnight UTC (one file per day)")
    out.mkdir(parents=True, exist_ok=True)
    end_ms = params.start_ms + days * _DAY_MS
    sim = Simulator(params)
    writers = {
        "clicks": _DayWriter(out / "clicks", CLICK_SCHEMA, buffer_rows=1),  # one row group per chunk
        "purchases": _DayWriter(out / "purchases", PURCHASE_SCHEMA, ROW_GROUP_ROWS),
        "account_rfm": _DayWriter(out / "account_rfm", RFM_SCHEMA, ROW_GROUP_ROWS),
    }
    clicks_by_family = np.zeros(len(FAMILIES), dtype=np.int64)
    purchases_by_family = np.zeros(len(FAMILIES), dtype=np.int64)
    rfm_rows = 0
    for done, chunk in enumerate(sim.run(end_ms), start=1):
        tables = {
            "clicks": (chunk.clicks, click_table(params, sim.pop, chunk.clicks)),
            "purchases": (chunk.purchases, purchase_table(params, sim.pop, chunk.purchases)),
            "account_rfm": (chunk.rfm, rfm_table(sim.pop, chunk.rfm)),
        }
        for stream, (cols, table) in tables.items():
            _write_by_day(writers[stream], cols["t_ms"], table, chunk.t0_ms, chunk.t1_ms)
        clicks_by_family += np.bincount(chunk.clicks["family"], minlength=len(FAMILIES))
        purchases_by_family += np.bincount(chunk.purchases["family"], minlength=len(FAMILIES))
        rfm_rows += chunk.rfm.rows
        if on_chunk is not None:
            on_chunk(done, chunk.clicks.rows)
    for w in writers.values():
        # every stream gets a file for every day, with rows or without
        for d in range(days):
            if f"{w.folder.name}/{_day_name(params.start_ms + d * _DAY_MS)}" not in w.files:
                w.open_day(params.start_ms + d * _DAY_MS)
        w.close()
    manifest = {
        "format": FORMAT,
        "seed": params.seed,
        "params": params.to_json(),
        "days": days,
        "start": format_time(params.start_ms),
        "end": format_time(end_ms),
        "start_ms": params.start_ms,
        "end_ms": end_ms,
        "counts": {
            "clicks": int(clicks_by_family.sum()),
            "clicks_by_family": dict(zip(FAMILIES, clicks_by_family.tolist(), strict=True)),
            "purchases": int(purchases_by_family.sum()),
            "purchases_by_family": dict(zip(FAMILIES, purchases_by_family.tolist(), strict=True)),
            "account_rfm": rfm_rows,
        },
        "streams": {
            s: {"files": sorted(w.files), "columns": STREAMS[s].names, "time_column": _TIME_COLUMN[s]}
            for s, w in writers.items()
        },
    }
    (out / MANIFEST).write_bytes(
        orjson.dumps(manifest, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"
    )
    return manifest


def _write_by_day(writer: _DayWriter, t_ms: np.ndarray, table: pa.Table, t0_ms: int, t1_ms: int) -> None:
    """Write a chunk's rows to the day files they belong to (a chunk may straddle midnight)."""
    first_day = t0_ms // _DAY_MS * _DAY_MS
    for day in range(first_day, t1_ms, _DAY_MS):
        lo, hi = np.searchsorted(t_ms, [day, day + _DAY_MS])
        writer.open_day(day)
        if hi > lo:
            writer.write(table.slice(int(lo), int(hi - lo)))


def read_manifest(path: Path) -> dict[str, Any]:
    manifest: dict[str, Any] = orjson.loads((Path(path) / MANIFEST).read_bytes())
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{path}: not a simulator history ({manifest.get('format')!r})")
    return manifest


def iter_history(
    path: Path | str,
    stream: str,
    columns: list[str] | None = None,
    batch_size: int = 65_536,
) -> Iterator[pa.RecordBatch]:
    """Stream one stream of a history folder as RecordBatches, in event-time order, day after day.

    Only ``batch_size`` rows (of the chosen ``columns``) are in memory at a time.
    """
    if stream not in STREAMS:
        raise ValueError(f"unknown stream {stream!r}; one of {', '.join(STREAMS)}")
    manifest = read_manifest(Path(path))
    for name in manifest["streams"][stream]["files"]:
        f = pq.ParquetFile(Path(path) / name)
        try:
            yield from f.iter_batches(batch_size=batch_size, columns=columns)
        finally:
            f.close()
