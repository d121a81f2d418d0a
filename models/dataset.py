"""Training datasets: one columnar Parquet file of feature vectors, weak labels and weights.

Sources:

* :func:`build_from_history`: simulator history files (``ivt simulate history``). The clicks are
  replayed, in event-time order, through the live path's own feature engine
  (:class:`app.features.OfflineFeatureEngine`), so train and serve compute features the same way.
* :func:`models.dataset_kafka.build_from_kafka`: the feature vectors logged in the ``verdicts`` topic (what serving
  saw), joined with ``clicks`` (user and session of each click), ``purchases`` and
  ``account-rfm``, for a range of click times.

Layout of ``OUT/``::

    dataset.parquet   one row per click, one row group per UTC hour, in event-time order
    dataset.json      DATASET_FORMAT, source, label rule, time range, horizon, counts, columns

Columns: the 32 features in :data:`app.features.spec.FEATURE_NAMES` order (float32, named as in the
spec; ``logged_in`` is one of them, 0/1, and also serves the weight cells), then
:data:`META_COLUMNS`: ``click_id``, ``event_time_ms``, ``day`` (days since the epoch,
UTC), ``hour`` (0-23 UTC), ``dow`` (Monday = 0), ``slice``, ``session_hour_clicks``
(the click's session's clicks in the same UTC clock hour; what :mod:`models.metrics` calls robotic
when > k), ``label`` (1 non-human, 0 human; :mod:`models.labels`), ``is_purchasing``, ``high_rfm``,
``label_complete``, ``age_ms``, ``late_weight`` (the late-purchase policy's multiplier),
``weight`` (``late_weight`` x the cell balance of :mod:`models.weights` over the whole file) and
``truth_family`` (the simulator's ground truth, from the ``_truth`` of simulated clicks). **The trainer never reads
``truth_family``**; only the evaluation report does (true recall per bot family).

Bounded memory: clicks are read in record batches, rows are written an hour at a time (the
session-hour count needs the whole hour, nothing more), purchases are held as one dict entry per
purchased click (about 1 % of clicks) and RFM as one float per account. A second pass adds the
weights, reading and writing one row group at a time. The feature engine's state is bounded by its
TTL sweep. Peak memory therefore grows with clicks per hour and accounts, not with days.

Warm-up: the first ``warmup_hours`` (default 24) of the source feed the feature engine but are not
written, so the 24 h counters are full in every written row.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from app.contracts.events import Click, slice_key
from app.features.engine import OfflineFeatureEngine
from app.features.spec import FEATURE_NAMES, FEATURE_VERSION
from models.exceptions import ModelError
from models.labels import DelayModel, LabelRule, Labels, late_weights, weak_labels
from models.weights import CellCounter, cell_ids

__all__ = [
    "DATASET_FORMAT",
    "DATA_FILE",
    "INFO_FILE",
    "META_COLUMNS",
    "DatasetError",
    "DatasetInfo",
    "HourRows",
    "DatasetWriter",
    "build_from_history",
    "read_info",
    "iter_dataset",
    "dataset_schema",
    "parse_time",
]

DATASET_FORMAT: Final = "ivt-dataset/1"
DATA_FILE: Final = "dataset.parquet"
INFO_FILE: Final = "dataset.json"
HOUR_MS: Final = 3_600_000
DAY_MS: Final = 86_400_000
_CLICK_COLUMNS: Final = [
    "click_id",
    "event_time_ms",
    "ip",
    "session_id",
    "user_id",
    "logged_in",
    "device_type",
    "user_agent",
    "ad_id",
    "campaign_id",
    "advertiser_id",
    "truth_family",
]

META_COLUMNS: Final[tuple[tuple[str, pa.DataType], ...]] = (
    ("click_id", pa.string()),
    ("event_time_ms", pa.int64()),
    ("day", pa.int32()),
    ("hour", pa.int8()),
    ("dow", pa.int8()),
    ("slice", pa.string()),
    ("session_hour_clicks", pa.int32()),
    ("label", pa.int8()),
    ("is_purchasing", pa.bool_()),
    ("high_rfm", pa.bool_()),
    ("label_complete", pa.bool_()),
    ("age_ms", pa.int64()),
    ("late_weight", pa.float32()),
    ("weight", pa.float32()),
    ("truth_family", pa.string()),
)


class DatasetError(ModelError):
    """A dataset cannot be built or read (missing files, bad range, wrong format)."""


def dataset_schema() -> pa.Schema:
    return pa.schema([(n, pa.float32()) for n in FEATURE_NAMES] + list(META_COLUMNS))


def parse_time(text: str) -> int:
    """``2026-11-02`` or an RFC 3339 time with a zone -> epoch ms (a bare date is UTC midnight)."""
    try:
        if len(text) == 10:
            return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise DatasetError(f"not a date or RFC 3339 time: {text!r}") from exc
    if dt.tzinfo is None:
        raise DatasetError(f"time {text!r} has no zone; add Z or +00:00")
    return int(dt.timestamp() * 1000)


@dataclass
class HourRows:
    """The rows of one UTC hour before labelling: what every source produces."""

    features: list[np.ndarray] = field(default_factory=list)
    click_id: list[str] = field(default_factory=list)
    event_time_ms: list[int] = field(default_factory=list)
    logged_in: list[bool] = field(default_factory=list)
    device_type: list[str] = field(default_factory=list)
    session_key: list[str] = field(default_factory=list)
    purchase_ms: list[int] = field(default_factory=list)
    rfm: list[float] = field(default_factory=list)
    truth_family: list[str | None] = field(default_factory=list)
    #: when set, used instead of counting ``session_key`` (a source without session ids)
    session_hour_clicks: list[int] | None = None

    def __len__(self) -> int:
        return len(self.click_id)


@dataclass(frozen=True)
class DatasetInfo:
    path: Path
    doc: dict[str, Any]

    @property
    def rows(self) -> int:
        return int(self.doc["rows"])


class DatasetWriter:
    """Labels hours of rows and writes them; :meth:`finish` adds the weights and the info file."""

    def __init__(self, out: Path, rule: LabelRule, horizon_ms: int) -> None:
        self.out = Path(out)
        self.rule = rule
        self.horizon_ms = horizon_ms
        self.out.mkdir(parents=True, exist_ok=True)
        self._tmp = self.out / (DATA_FILE + ".part")
        self._schema = dataset_schema()
        self._writer = pq.ParquetWriter(self._tmp, self._schema, compression="zstd")
        self.rows = 0
        self.first_ms: int | None = None
        self.last_ms: int | None = None
        # For the late-purchase delay model: complete-window clicks and their purchase delays.
        self._closed = 0
        self._closed_bought_delays: list[np.ndarray] = []
        self.counts: dict[str, int] = {
            "human": 0,
            "non_human": 0,
            "purchasing": 0,
            "high_rfm": 0,
            "incomplete": 0,
        }

    def write_hour(self, rows: HourRows) -> None:
        n = len(rows)
        if n == 0:
            return
        t = np.asarray(rows.event_time_ms, dtype=np.int64)
        p = np.asarray(rows.purchase_ms, dtype=np.int64)
        lab = weak_labels(t, p, np.asarray(rows.rfm, dtype=np.float64), self.horizon_ms, self.rule)
        if rows.session_hour_clicks is not None:
            shc = np.asarray(rows.session_hour_clicks, dtype=np.int32)
        else:
            keys = np.asarray(rows.session_key, dtype=object)
            hour_of = t // HOUR_MS
            # One count per (session, hour); a buffer holds one hour, but stay exact if it holds more.
            _, inv, counts = np.unique(
                np.char.add(keys.astype(str), hour_of.astype(str)), return_inverse=True, return_counts=True
            )
            shc = counts[inv].astype(np.int32)
        slices = [slice_key(d, x) for d, x in zip(rows.device_type, rows.logged_in, strict=True)]
        X = np.vstack(rows.features).astype(np.float32, copy=False)
        cols: dict[str, Any] = {name: X[:, i] for i, name in enumerate(FEATURE_NAMES)}
        cols.update(
            click_id=pa.array(rows.click_id, pa.string()),
            event_time_ms=t,
            day=(t // DAY_MS).astype(np.int32),
            hour=(t // HOUR_MS % 24).astype(np.int8),
            dow=((t // DAY_MS + 3) % 7).astype(np.int8),  # 1970-01-01 was a Thursday (3)
            slice=pa.array(slices, pa.string()),
            session_hour_clicks=shc,
            label=lab.y,
            is_purchasing=lab.is_purchasing,
            high_rfm=lab.high_rfm,
            label_complete=lab.complete,
            age_ms=lab.age_ms,
            late_weight=np.ones(n, np.float32),
            weight=np.ones(n, np.float32),
            truth_family=pa.array(rows.truth_family, pa.string()),
        )
        self._writer.write_table(pa.table(cols, schema=self._schema))
        self._track(lab, t, p)

    def _track(self, lab: Labels, t: np.ndarray, p: np.ndarray) -> None:
        n = len(t)
        self.rows += n
        self.first_ms = int(t.min()) if self.first_ms is None else min(self.first_ms, int(t.min()))
        self.last_ms = int(t.max()) if self.last_ms is None else max(self.last_ms, int(t.max()))
        closed = lab.age_ms >= self.rule.attribution_window_ms
        self._closed += int(closed.sum())
        bought = closed & lab.is_purchasing
        self._closed_bought_delays.append((p[bought] - t[bought]).astype(np.int64))
        self.counts["human"] += int((lab.y == 0).sum())
        self.counts["non_human"] += int((lab.y == 1).sum())
        self.counts["purchasing"] += int(lab.is_purchasing.sum())
        self.counts["high_rfm"] += int(lab.high_rfm.sum())
        self.counts["incomplete"] += int((~lab.complete).sum())

    def delay_model(self) -> DelayModel:
        delays = (
            np.sort(np.concatenate(self._closed_bought_delays)) if self._closed_bought_delays else np.zeros(0)
        )
        rate = len(delays) / self._closed if self._closed else 0.0
        return DelayModel(
            window_ms=self.rule.attribution_window_ms, rate=rate, delays_ms=delays.astype(np.int64)
        )

    def finish(self, source: dict[str, Any]) -> DatasetInfo:
        """Second pass: late weights and cell-balanced weights; then the info file."""
        self._writer.close()
        if self.rows == 0:
            self._tmp.unlink(missing_ok=True)
            raise DatasetError("no clicks in the chosen range: nothing to write")
        dm = self.delay_model()
        part = pq.ParquetFile(self._tmp)
        light = ["hour", "dow", "logged_in", "label", "label_complete", "age_ms", "is_purchasing", "high_rfm"]
        counter = CellCounter()
        for i in range(part.num_row_groups):
            g = part.read_row_group(i, columns=light)
            lab, cells = _lab_cells(g)
            counter.add(cells, late_weights(lab, self.rule.late_policy, dm))
        final = self.out / DATA_FILE
        writer = pq.ParquetWriter(final, self._schema, compression="zstd")
        try:
            for i in range(part.num_row_groups):
                g = part.read_row_group(i)
                lab, cells = _lab_cells(g)
                lw = late_weights(lab, self.rule.late_policy, dm)
                w = counter.weights(cells, lw)
                g = g.set_column(
                    g.schema.get_field_index("late_weight"), "late_weight", pa.array(lw, pa.float32())
                )
                g = g.set_column(g.schema.get_field_index("weight"), "weight", pa.array(w, pa.float32()))
                writer.write_table(g)
        finally:
            writer.close()
            part.close()
        self._tmp.unlink(missing_ok=True)
        assert self.first_ms is not None and self.last_ms is not None
        doc = {
            "format": DATASET_FORMAT,
            "created_at": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "source": source,
            "rows": self.rows,
            "first_event_ms": self.first_ms,
            "last_event_ms": self.last_ms,
            "first_day": self.first_ms // DAY_MS,
            "last_day": self.last_ms // DAY_MS,
            "horizon_ms": self.horizon_ms,
            "label_rule": self.rule.to_dict(),
            "delay_model": {"rate": dm.rate, "purchases_in_closed_windows": len(dm.delays_ms)},
            "counts": self.counts,
            "cells_present": int((counter.totals > 0).sum()),
            "feature_version": FEATURE_VERSION,
            "feature_names": list(FEATURE_NAMES),
            "columns": self._schema.names,
        }
        (self.out / INFO_FILE).write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n")
        return DatasetInfo(self.out, doc)

    def abort(self) -> None:
        self._writer.close()
        self._tmp.unlink(missing_ok=True)


def _lab_cells(g: pa.Table) -> tuple[Labels, np.ndarray]:
    y = g.column("label").to_numpy()
    lab = Labels(
        y=y,
        is_purchasing=g.column("is_purchasing").to_numpy(),
        high_rfm=g.column("high_rfm").to_numpy(),
        complete=g.column("label_complete").to_numpy(),
        age_ms=g.column("age_ms").to_numpy(),
    )
    cells = cell_ids(
        g.column("hour").to_numpy(), g.column("dow").to_numpy(), g.column("logged_in").to_numpy(), y
    )
    return lab, cells


# --------------------------------------------------------------------------------------------------
# From simulator history
# --------------------------------------------------------------------------------------------------


def _history_manifest(path: Path) -> dict[str, Any]:
    from app.simulator.history import read_manifest

    if not (path / "manifest.json").is_file():
        raise DatasetError(
            f"{path}: no manifest.json; write history with `ivt simulate history --out {path}`"
        )
    try:
        return read_manifest(path)
    except ValueError as exc:
        raise DatasetError(str(exc)) from exc


def _purchases(path: Path) -> dict[str, int]:
    """click id -> earliest purchase time (one entry per purchased click)."""
    from app.simulator.history import iter_history

    first: dict[str, int] = {}
    for batch in iter_history(path, "purchases", columns=["click_id", "event_time_ms"]):
        for cid, t in zip(batch.column(0).to_pylist(), batch.column(1).to_pylist(), strict=True):
            if cid is not None and (cid not in first or t < first[cid]):
                first[cid] = t
    return first


def _rfm_updates(path: Path) -> Iterator[tuple[int, str, float]]:
    """RFM updates in time order (the history files are sorted by updated_at_ms)."""
    from app.simulator.history import iter_history

    for batch in iter_history(path, "account_rfm", columns=["updated_at_ms", "user_id", "rfm_score"]):
        yield from zip(
            batch.column(0).to_pylist(), batch.column(1).to_pylist(), batch.column(2).to_pylist(), strict=True
        )


def build_from_history(
    history: Path | str,
    out: Path | str,
    *,
    rule: LabelRule | None = None,
    start_ms: int | None = None,
    end_ms: int | None = None,
    warmup_hours: float = 24.0,
    progress: Callable[[int, int], None] | None = None,
) -> DatasetInfo:
    """Replay history clicks through the feature engine and write a labelled dataset.

    Rows are written for ``max(start_ms, history start + warmup) <= t < end_ms``; the clicks before
    feed the engine only. The label horizon is the history's end (purchases after it are unknown).
    ``progress(clicks_read, clicks_total)`` is called every batch.
    """
    from app.simulator.history import iter_history

    rule = rule if rule is not None else LabelRule()
    history = Path(history)
    if not history.is_dir():
        raise DatasetError(f"{history}: no such folder")
    m = _history_manifest(history)
    h0, h1 = int(m["start_ms"]), int(m["end_ms"])
    first = max(h0 + int(warmup_hours * HOUR_MS), start_ms if start_ms is not None else h0)
    last = min(h1, end_ms if end_ms is not None else h1)
    if first >= last:
        raise DatasetError(
            f"empty range: rows would start at {_fmt(first)} (history {_fmt(h0)} .. {_fmt(h1)}, "
            f"warm-up {warmup_hours:g} h) and end at {_fmt(last)}"
        )
    total = int(m["counts"]["clicks"])
    purchases = _purchases(history)
    rfm_iter = _rfm_updates(history)
    pending_rfm = next(rfm_iter, None)
    rfm_now: dict[str, float] = {}
    engine = OfflineFeatureEngine()
    writer = DatasetWriter(Path(out), rule, horizon_ms=h1)
    # Feature state older than the TTL cannot change a vector: skip clicks that early.
    feed_from = first - 26 * HOUR_MS
    rows = HourRows()
    cur_hour = -1
    read = 0
    nan = float("nan")
    try:
        for batch in iter_history(history, "clicks", columns=_CLICK_COLUMNS):
            cols = [batch.column(i).to_pylist() for i in range(len(_CLICK_COLUMNS))]
            read += batch.num_rows
            for cid, t, ip, sid, uid, li, dev, ua, ad, camp, adv, fam in zip(*cols, strict=True):
                if t < feed_from:
                    continue
                if t >= last:
                    break
                while pending_rfm is not None and pending_rfm[0] <= t:
                    rfm_now[pending_rfm[1]] = pending_rfm[2]
                    pending_rfm = next(rfm_iter, None)
                vec = engine.process(Click(cid, t, ip, sid, uid, li, dev, ua, ad, camp, adv))
                if t < first:
                    continue
                hour = t // HOUR_MS
                if hour != cur_hour:
                    writer.write_hour(rows)
                    rows = HourRows()
                    cur_hour = hour
                rows.features.append(vec)
                rows.click_id.append(cid)
                rows.event_time_ms.append(t)
                rows.logged_in.append(li)
                rows.device_type.append(dev)
                rows.session_key.append(sid)
                rows.purchase_ms.append(purchases.get(cid, -1))
                rows.rfm.append(rfm_now.get(uid, nan) if (li and uid is not None) else nan)
                rows.truth_family.append(fam)
            if progress is not None:
                progress(read, total)
            if batch.num_rows and cols[1][-1] >= last:
                break
        writer.write_hour(rows)
        info = writer.finish(
            {
                "kind": "history",
                "path": str(history.resolve()),
                "seed": m.get("seed"),
                "history_start_ms": h0,
                "history_end_ms": h1,
                "rows_from_ms": first,
                "rows_until_ms": last,
                "warmup_hours": warmup_hours,
            }
        )
    except BaseException:
        writer.abort()
        raise
    if progress is not None:
        progress(total, total)
    return info


def _fmt(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


# --------------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------------


def read_info(path: Path | str) -> DatasetInfo:
    """The dataset's info, checked: format, files present."""
    path = Path(path)
    info_file = path / INFO_FILE
    if not info_file.is_file() or not (path / DATA_FILE).is_file():
        raise DatasetError(
            f"{path}: not a dataset (expected {INFO_FILE} and {DATA_FILE}; build one with `ivt dataset`)"
        )
    doc = orjson.loads(info_file.read_bytes())
    if doc.get("format") != DATASET_FORMAT:
        raise DatasetError(f"{path}: format {doc.get('format')!r}, expected {DATASET_FORMAT}")
    return DatasetInfo(path, doc)


def iter_dataset(
    path: Path | str, columns: list[str] | None = None, days: tuple[int, int] | None = None
) -> Iterator[pa.Table]:
    """Row groups (one UTC hour each) of the chosen columns, optionally only days in ``[d0, d1)``."""
    info = read_info(path)
    f = pq.ParquetFile(info.path / DATA_FILE)
    try:
        want = None if columns is None else list(dict.fromkeys([*columns, *(["day"] if days else [])]))
        for i in range(f.num_row_groups):
            if days is not None:
                st = f.metadata.row_group(i).column(f.schema_arrow.get_field_index("day")).statistics
                if st is not None and st.has_min_max and (st.max < days[0] or st.min >= days[1]):
                    continue
            g = f.read_row_group(i, columns=want)
            if days is not None:
                d = g.column("day").to_numpy()
                keep = (d >= days[0]) & (d < days[1])
                if not keep.all():
                    g = g.filter(pa.array(keep))
                if columns is not None and "day" not in columns:
                    g = g.drop_columns(["day"])
            yield g
    finally:
        f.close()


# --------------------------------------------------------------------------------------------------
# From Kafka: the feature log in `verdicts`, joined with `clicks`, `purchases`, `account-rfm`
# --------------------------------------------------------------------------------------------------
