"""ONNX export parity and the registry's refusals (checksum, feature spec)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from app.features.spec import FEATURE_NAMES
from models.exceptions import ExportMismatch, FeatureMismatch, ModelIntegrityError
from models.export import PARITY_TOL, check_parity, export_checked, export_onnx, onnx_scores
from models.registry import MODEL_FILE, Registry


@pytest.fixture(scope="module")
def fitted() -> tuple[object, np.ndarray]:
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(0)
    X = rng.normal(size=(3000, len(FEATURE_NAMES))).astype(np.float32)
    y = (X[:, 0] + X[:, 5] > 0).astype(int)
    pipe = Pipeline([("s", StandardScaler()), ("m", MLPClassifier((16, 8), max_iter=300, random_state=0))])
    pipe.fit(X, y)
    return pipe, rng.normal(size=(500, len(FEATURE_NAMES))).astype(np.float32)


def test_export_matches_the_trained_model(fitted: tuple[object, np.ndarray]) -> None:
    pipe, X = fitted
    ex = export_checked(pipe, X)
    assert ex.rows_checked == 500
    assert ex.max_abs_diff <= PARITY_TOL
    assert np.allclose(onnx_scores(ex.onnx_bytes, X), pipe.predict_proba(X)[:, 1], atol=PARITY_TOL)  # type: ignore[attr-defined]


def test_export_that_disagrees_is_refused(
    fitted: tuple[object, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    import copy

    import models.export as ex

    pipe, X = fitted
    stale = export_onnx(pipe, X.shape[1])
    other = copy.deepcopy(pipe)
    other.named_steps["m"].coefs_[0][0, 0] += 5.0  # type: ignore[attr-defined]
    assert check_parity(stale, other, X) > PARITY_TOL
    # An exporter that returns a graph of something else than the model it was given is caught.
    monkeypatch.setattr(ex, "export_onnx", lambda p, n: stale)
    with pytest.raises(ExportMismatch, match="differs from the trained model"):
        ex.export_checked(other, X)


def _register(tmp_path: Path, fitted: tuple[object, np.ndarray], **kw: object) -> Registry:
    pipe, X = fitted
    reg = Registry(tmp_path)
    reg.register(
        export_checked(pipe, X).onnx_bytes,
        version="m1",
        train_start_ms=0,
        train_end_ms=1,
        default_threshold=0.5,
        **kw,
    )  # type: ignore[arg-type]
    return reg


def test_registry_refuses_a_changed_file(tmp_path: Path, fitted: tuple[object, np.ndarray]) -> None:
    reg = _register(tmp_path, fitted)
    reg.load("m1")
    f = tmp_path / "m1" / MODEL_FILE
    data = bytearray(f.read_bytes())
    data[-1] ^= 0xFF
    f.write_bytes(bytes(data))
    with pytest.raises(ModelIntegrityError, match="sha256"):
        reg.load("m1")


def test_registry_refuses_another_feature_order(tmp_path: Path, fitted: tuple[object, np.ndarray]) -> None:
    names = list(FEATURE_NAMES)
    names[0], names[1] = names[1], names[0]
    reg = _register(tmp_path, fitted, feature_names=names)
    with pytest.raises(FeatureMismatch):
        reg.load("m1")
