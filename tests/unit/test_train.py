"""Trainer on a small simulated history: time split, early stopping, seed, registration."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from app.contracts.events import SLICES
from app.simulator.history import write_history
from app.simulator.params import SimParams
from models.baselines import velocity_scores
from models.dataset import DatasetError, build_from_history
from models.registry import Registry
from models.train import TrainConfig, next_version, plan_split, promote, train, train_and_register

CFG = TrainConfig(max_epochs=6, patience=2, batch_size=256, seed=3, test_days=1)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    hist = tmp_path_factory.mktemp("hist")
    write_history(hist, SimParams(seed=11, users=600), days=3)
    out = tmp_path_factory.mktemp("ds")
    build_from_history(hist, out, warmup_hours=2)
    return out


def test_plan_split_is_by_time() -> None:
    s = plan_split(100, 106, valid_days=1, test_days=2)
    assert s.train == (100, 104) and s.valid == (104, 105) and s.test == (105, 107)
    with pytest.raises(DatasetError, match="at least 4"):
        plan_split(100, 102, valid_days=1, test_days=2)


def test_train_same_seed_same_model(dataset: Path) -> None:
    a = train(dataset, CFG)
    b = train(dataset, CFG)
    assert a.onnx_bytes == b.onnx_bytes
    assert a.metrics["epochs"] == b.metrics["epochs"]
    assert a.parity <= 1e-4
    # early stopping kept the best epoch's weights
    losses = [e["valid_loss"] for e in a.metrics["epochs"]]
    assert a.metrics["best_valid_loss"] == min(losses)
    assert a.metrics["best_epoch"] == 1 + losses.index(min(losses))
    # the split: train < valid < test, one day each here
    sp = a.split
    assert sp.train[1] == sp.valid[0] and sp.valid[1] == sp.test[0]
    assert 0.0 <= a.default_threshold <= 1.0
    assert set(a.thresholds) <= set(SLICES)
    assert set(a.metrics["at_same_fpr"]) == {"mlp", "logreg", "velocity"}
    c = train(dataset, TrainConfig(max_epochs=2, patience=2, batch_size=256, seed=4, test_days=1))
    assert c.onnx_bytes != a.onnx_bytes


def test_register_and_promote(dataset: Path, tmp_path: Path) -> None:
    reg = Registry(tmp_path / "models")
    m1, _ = train_and_register(dataset, reg, CFG)
    assert m1.version == "mlp-0001" and m1.status == "candidate" and m1.parent is None
    assert m1.preprocessing["applied_in"] == "graph"
    promote(reg, m1.version)
    m2, _ = train_and_register(dataset, reg, CFG, activate=True)
    assert m2.version == "mlp-0002" and m2.parent == "mlp-0001" and m2.status == "active"
    assert reg.manifest("mlp-0001").status == "retired"
    assert next_version(reg) == "mlp-0003"
    manifest, data = reg.load("mlp-0002")
    assert manifest.metrics["onnx_max_abs_diff"] <= 1e-4


def test_velocity_heuristic_is_monotone_in_velocity() -> None:
    from app.features.spec import FEATURE_NAMES

    X = np.zeros((3, len(FEATURE_NAMES)), dtype=np.float32)
    X[:, FEATURE_NAMES.index("session_velocity")] = np.log1p([0.5, 6.0, 60.0])
    s = velocity_scores(X)
    assert s[1] == pytest.approx(0.5) and s[0] < s[1] < s[2]


def test_evaluate_report(dataset: Path, tmp_path: Path) -> None:
    from models.evaluate import evaluate

    reg = Registry(tmp_path / "models")
    m, result = train_and_register(dataset, reg, CFG)
    rep = evaluate(reg, m.version, tmp_path / "report", fprs=(0.01,))
    doc = rep.doc
    assert rep.markdown.is_file() and "IVR-FPR" in rep.markdown.read_text()
    assert {p for p in doc["plots"].values()} <= {p.name for p in (tmp_path / "report").glob("*.png")}
    assert "all" in doc["plots"]
    # the same numbers as the trainer measured on the same (test) rows with the same thresholds
    assert doc["at_model_thresholds"]["all"] == result.metrics["per_slice"]["all"]
    assert doc["at_same_fpr"]["0.01"] == result.metrics["at_same_fpr"]
    assert doc["truth"]["available"]
