"""Dataset builder on a small simulated history: columns, labels, session-hour counts, weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from app.contracts.events import slice_key
from app.features.engine import OfflineFeatureEngine
from app.features.spec import FEATURE_NAMES
from app.simulator.history import iter_history, write_history
from app.simulator.params import SimParams
from models.dataset import DATA_FILE, DatasetError, build_from_history, iter_dataset, parse_time, read_info
from models.labels import LabelRule
from models.weights import cell_totals

H = 3_600_000


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("hist")
    write_history(out, SimParams(seed=7, users=400), days=2)
    return out


@pytest.fixture(scope="module")
def built(history: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pa.Table]:
    out = tmp_path_factory.mktemp("ds")
    build_from_history(history, out, warmup_hours=2)
    return out, pq.read_table(out / DATA_FILE)


def _clicks(history: Path) -> pa.Table:
    return pa.Table.from_batches(list(iter_history(history, "clicks")))


def test_rows_columns_and_order(history: Path, built: tuple[Path, pa.Table]) -> None:
    out, t = built
    info = read_info(out)
    clicks = _clicks(history)
    start = info.doc["source"]["rows_from_ms"]
    expected = clicks.filter(pc.greater_equal(clicks["event_time_ms"], start))
    assert t.num_rows == expected.num_rows == info.rows
    assert t["click_id"].to_pylist() == expected["click_id"].to_pylist()
    assert t.column_names[: len(FEATURE_NAMES)] == list(FEATURE_NAMES)
    # truth is kept, in its own column
    assert t["truth_family"].to_pylist() == expected["truth_family"].to_pylist()
    # slices and hour/dow
    sl = [
        slice_key(d, li)
        for d, li in zip(expected["device_type"].to_pylist(), expected["logged_in"].to_pylist(), strict=False)
    ]
    assert t["slice"].to_pylist() == sl
    tm = t["event_time_ms"].to_numpy()
    assert (t["hour"].to_numpy() == tm // H % 24).all()
    # 2026-11-02 (the default start) is a Monday
    assert t["dow"].to_numpy()[0] == 0


def test_features_equal_the_engine(history: Path, built: tuple[Path, pa.Table]) -> None:
    from app.contracts.events import Click

    _, t = built
    eng = OfflineFeatureEngine()
    clicks = _clicks(history).to_pylist()
    by_id = {}
    for c in clicks:
        fields = {k: c[k] for k in Click.__slots__}  # type: ignore[attr-defined]
        by_id[c["click_id"]] = eng.process(Click(**fields))
    X = np.column_stack([t[n].to_numpy() for n in FEATURE_NAMES])
    ids = t["click_id"].to_pylist()
    for i in (0, len(ids) // 2, len(ids) - 1):
        assert np.array_equal(X[i], by_id[ids[i]])


def test_labels_follow_purchases_and_rfm(history: Path, built: tuple[Path, pa.Table]) -> None:
    _, t = built
    purchases = pa.Table.from_batches(list(iter_history(history, "purchases")))
    first: dict[str, int] = {}
    for cid, pt in zip(
        purchases["click_id"].to_pylist(), purchases["event_time_ms"].to_pylist(), strict=False
    ):
        first[cid] = min(pt, first.get(cid, pt))
    ids = t["click_id"].to_pylist()
    tm = t["event_time_ms"].to_numpy()
    purch = t["is_purchasing"].to_numpy(zero_copy_only=False)
    expected = np.array(
        [cid in first and first[cid] - ct <= 24 * H for cid, ct in zip(ids, tm, strict=False)]
    )
    assert (purch == expected).all()
    assert purch.sum() > 0
    y = t["label"].to_numpy()
    high = t["high_rfm"].to_numpy(zero_copy_only=False)
    assert ((y == 0) == (purch | high)).all()
    # anonymous clicks never have a high RFM
    li = t["logged_in"].to_numpy()
    assert not high[li == 0].any()


def test_session_hour_clicks_exact(history: Path, built: tuple[Path, pa.Table]) -> None:
    _, t = built
    clicks = _clicks(history)
    sid = dict(zip(clicks["click_id"].to_pylist(), clicks["session_id"].to_pylist(), strict=False))
    keys = [
        (sid[c], tm // H)
        for c, tm in zip(t["click_id"].to_pylist(), t["event_time_ms"].to_pylist(), strict=False)
    ]
    counts: dict[tuple[str, int], int] = {}
    for k in keys:
        counts[k] = counts.get(k, 0) + 1
    assert t["session_hour_clicks"].to_pylist() == [counts[k] for k in keys]


def test_holdout_and_weights(built: tuple[Path, pa.Table]) -> None:
    out, t = built
    complete = t["label_complete"].to_numpy(zero_copy_only=False)
    lw = t["late_weight"].to_numpy()
    w = t["weight"].to_numpy().astype(np.float64)
    assert (~complete).sum() > 0
    assert (lw[~complete] == 0).all() and (lw[complete] == 1).all()
    assert (w[~complete] == 0).all()
    totals = cell_totals(
        t["hour"].to_numpy(), t["dow"].to_numpy(), t["logged_in"].to_numpy(), t["label"].to_numpy(), w
    )
    present = totals[totals > 0]
    assert np.allclose(present, present[0], rtol=1e-4)
    assert read_info(out).doc["counts"]["incomplete"] == int((~complete).sum())


def test_weight_policy_keeps_young_negatives(history: Path, tmp_path: Path) -> None:
    build_from_history(history, tmp_path, warmup_hours=2, rule=LabelRule(late_policy="weight"))
    t = pq.read_table(tmp_path / DATA_FILE, columns=["label_complete", "late_weight", "label"])
    pending = ~t["label_complete"].to_numpy(zero_copy_only=False)
    lw = t["late_weight"].to_numpy()
    assert ((lw[pending] > 0.9) & (lw[pending] < 1.0)).any()
    assert (lw[~pending] == 1.0).all()


def test_iter_dataset_by_day(built: tuple[Path, pa.Table]) -> None:
    out, t = built
    days = sorted(set(t["day"].to_pylist()))
    got = sum(g.num_rows for g in iter_dataset(out, ["label"], (days[-1], days[-1] + 1)))
    assert got == sum(1 for d in t["day"].to_pylist() if d == days[-1])


def test_errors(history: Path, tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no such folder"):
        build_from_history(tmp_path / "missing", tmp_path / "o")
    with pytest.raises(DatasetError, match="no manifest"):
        build_from_history(tmp_path, tmp_path / "o")
    with pytest.raises(DatasetError, match="empty range"):
        build_from_history(history, tmp_path / "o", start_ms=parse_time("2030-01-01"))
    with pytest.raises(DatasetError, match="not a dataset"):
        read_info(tmp_path)
    with pytest.raises(DatasetError, match="no zone"):
        parse_time("2026-11-02T10:00:00")
