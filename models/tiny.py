"""A small, real reference model: for tests, benchmarks and the live worker's bootstrap.

It is NOT a trained production model. It stands in until the trainer (issue 4) registers real ones,
so that everything downstream of the registry (scorer, micro-batching, verdicts, hot swap) runs a
real ONNX MLP of the production shape: StandardScaler + MLPClassifier with three fully connected
layers (hidden 32 and 16, ReLU, L2 penalty ``alpha``; the third is the output layer), exported with
skl2onnx (``zipmap`` off, so the output is a [n, 2] probability tensor; standardisation is folded
into the graph, ``preprocessing.applied_in = "graph"``).

Data (:func:`reference_dataset`) is synthetic, in the engine's feature space (log1p counts and
rates, unit-circle time, one-hot device), and the label is a plain function of velocity: a row is a
bot when the entity's 1-minute velocity or the session's velocity exceeds :data:`BOT_VELOCITY`
clicks per minute. Nothing else carries signal. There is no training window (both ends 0).

Before it is registered the export is checked against scikit-learn on held-out rows; a max absolute
difference in P(bot) above :data:`PARITY_TOL` refuses it (:class:`~models.exceptions.ExportMismatch`).
The fitted graph is cached per (seed, rows), so tests can register it in many registries cheaply.
"""

from __future__ import annotations

import functools
import math
import time
import warnings
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from app.features.spec import SPEC
from models.exceptions import DuplicateModel, ExportMismatch
from models.registry import Manifest, Registry

__all__ = [
    "BOT_VELOCITY",
    "PARITY_TOL",
    "REFERENCE_VERSION",
    "ReferenceModel",
    "reference_dataset",
    "fit_reference",
    "build_reference_model",
    "ensure_reference_model",
]

#: Clicks per minute above which a synthetic row is labelled bot.
BOT_VELOCITY: Final = 6.0
#: Largest accepted |P_onnx - P_sklearn| on held-out rows.
PARITY_TOL: Final = 1e-4
REFERENCE_VERSION: Final = "ref-0001"
INPUT_NAME: Final = "features"
OUTPUT_NAME: Final = "probabilities"


def reference_dataset(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(X float32 [n, F] in SPEC order, y int64 [n])``; y = 1 (bot) iff a velocity > BOT_VELOCITY.

    Rows mix human-like base rates (0.1-3 clicks/min) and bot-like ones (3-60) so that both classes
    and the boundary are well populated; the label is computed from the features, not the mixture.
    """
    rng = np.random.default_rng(seed)
    idx = {name: i for i, name in enumerate(SPEC.names)}
    X = np.zeros((n, SPEC.size), dtype=np.float64)
    botlike = rng.random(n) < 0.4
    rate = np.where(
        botlike,
        np.exp(rng.uniform(math.log(3), math.log(60), n)),
        np.exp(rng.uniform(math.log(0.1), math.log(3), n)),
    )
    v1m = rate * rng.uniform(0.5, 2.0, n)
    sess_v = rate * rng.uniform(0.3, 1.5, n)
    decay = rng.uniform(0.2, 1.0, n)
    for w, name in enumerate(("1m", "10m", "1h", "24h")):
        vel = v1m * decay**w
        minutes = (1, 10, 60, 1440)[w]
        X[:, idx[f"user_velocity_{name}"]] = np.log1p(vel)
        X[:, idx[f"user_clicks_{name}"]] = np.log1p(vel * minutes * rng.uniform(0.05, 1.0, n))
    X[:, idx["user_secs_since_prev"]] = np.log1p(np.minimum(60.0 / np.maximum(v1m, 1e-3), 86400))
    X[:, idx["session_velocity"]] = np.log1p(sess_v)
    dur_min = rng.uniform(0.5, 90, n)
    X[:, idx["session_duration_s"]] = np.log1p(dur_min * 60)
    total = sess_v * np.maximum(dur_min, 1.0)
    X[:, idx["session_clicks_total"]] = np.log1p(total)
    for name, minutes in (("1m", 1), ("10m", 10), ("1h", 60)):
        X[:, idx[f"session_clicks_{name}"]] = np.log1p(np.minimum(total, sess_v * minutes))
    # IP block: households to gateways, independent of the label.
    users = np.exp(rng.uniform(0, math.log(5000), n))
    for name, minutes in (("1m", 1), ("10m", 10), ("1h", 60), ("24h", 1440)):
        X[:, idx[f"ip_clicks_{name}"]] = np.log1p(users * minutes * rng.uniform(0.001, 0.05, n))
    for period, share in (("1h", 0.3), ("24h", 1.0)):
        X[:, idx[f"ip_users_{period}"]] = np.log1p(users * share)
        X[:, idx[f"ip_sessions_{period}"]] = np.log1p(users * share * rng.uniform(1, 3, n))
    hour = rng.integers(0, 24, n)
    dow = rng.integers(0, 7, n)
    X[:, idx["hour_sin"]] = np.sin(2 * np.pi * hour / 24)
    X[:, idx["hour_cos"]] = np.cos(2 * np.pi * hour / 24)
    X[:, idx["dow_sin"]] = np.sin(2 * np.pi * dow / 7)
    X[:, idx["dow_cos"]] = np.cos(2 * np.pi * dow / 7)
    logged_in = rng.random(n) < 0.5
    X[:, idx["logged_in"]] = logged_in
    X[:, idx["has_user_id"]] = logged_in | (rng.random(n) < 0.3)
    device = rng.integers(0, 3, n)
    for d, name in enumerate(("device_desktop", "device_mobile", "device_app")):
        X[:, idx[name]] = device == d
    y = (np.maximum(v1m, sess_v) > BOT_VELOCITY).astype(np.int64)
    return X.astype(np.float32), y


@dataclass(frozen=True, slots=True)
class ReferenceModel:
    """A fitted and exported reference model, ready to register."""

    onnx_bytes: bytes
    preprocessing: dict[str, Any]
    metrics: dict[str, Any]
    input_name: str = INPUT_NAME
    output_name: str = OUTPUT_NAME


@functools.lru_cache(maxsize=4)
def _fit(seed: int, n_rows: int) -> tuple[ReferenceModel, Any]:
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    t0 = time.perf_counter()
    X, y = reference_dataset(n_rows, seed)
    X_hold, y_hold = reference_dataset(max(n_rows // 4, 256), seed + 1_000_003)
    mlp = MLPClassifier(
        hidden_layer_sizes=(32, 16),
        activation="relu",
        alpha=1e-3,
        max_iter=200,
        random_state=seed,
    )
    pipe = Pipeline([("scale", StandardScaler()), ("mlp", mlp)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        pipe.fit(X, y)
    fit_s = time.perf_counter() - t0
    onx = to_onnx(
        pipe,
        initial_types=[(INPUT_NAME, FloatTensorType([None, SPEC.size]))],
        options={id(mlp): {"zipmap": False}},
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    data = onx.SerializeToString()

    import onnxruntime as ort

    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    p_onnx = sess.run([OUTPUT_NAME], {INPUT_NAME: X_hold})[0][:, 1].astype(np.float64)
    p_skl = pipe.predict_proba(X_hold)[:, 1]
    diff = float(np.max(np.abs(p_onnx - p_skl)))
    if not diff <= PARITY_TOL:
        raise ExportMismatch(
            f"reference model export differs from scikit-learn by {diff:.3g} > {PARITY_TOL} on {len(X_hold)} rows"
        )
    scaler: Any = pipe.named_steps["scale"]
    model = ReferenceModel(
        onnx_bytes=data,
        preprocessing={
            "applied_in": "graph",
            "kind": "standard_scaler",
            "mean": [float(v) for v in scaler.mean_],
            "scale": [float(v) for v in scaler.scale_],
        },
        metrics={
            "kind": "reference: synthetic data, label = velocity rule; not a production model",
            "n_train": int(n_rows),
            "n_holdout": int(len(X_hold)),
            "bot_share_train": round(float(y.mean()), 6),
            "holdout_accuracy": round(float(((p_skl >= 0.5) == y_hold).mean()), 6),
            "onnx_max_abs_diff": diff,
            "n_iter": int(mlp.n_iter_),
            "fit_seconds": round(fit_s, 3),
            "seed": seed,
        },
    )
    return model, pipe


def fit_reference(seed: int = 0, n_rows: int = 4000) -> ReferenceModel:
    """Fit, export and parity-check the reference model (cached per arguments; ~0.5-1 s the first time)."""
    return _fit(seed, n_rows)[0]


def reference_pipeline(seed: int = 0, n_rows: int = 4000) -> Any:
    """The fitted scikit-learn pipeline behind :func:`fit_reference` (for parity tests)."""
    return _fit(seed, n_rows)[1]


def build_reference_model(
    registry: Registry,
    version: str = REFERENCE_VERSION,
    *,
    seed: int = 0,
    n_rows: int = 4000,
    default_threshold: float = 0.5,
    thresholds: dict[str, float] | None = None,
    status: str = "candidate",
) -> Manifest:
    """Fit (or reuse) the reference model and register it as ``version``."""
    ref = fit_reference(seed, n_rows)
    return registry.register(
        ref.onnx_bytes,
        version=version,
        train_start_ms=0,
        train_end_ms=0,
        default_threshold=default_threshold,
        thresholds=thresholds or {},
        preprocessing=ref.preprocessing,
        metrics=ref.metrics,
        status=status,
        input_name=ref.input_name,
        output_name=ref.output_name,
        output_kind="probabilities",
    )


def ensure_reference_model(registry: Registry, version: str = REFERENCE_VERSION) -> Manifest:
    """The worker's bootstrap: the version's manifest if it is registered, else build it (active).

    Several worker processes of one machine (``ivt worker --processes``, ``--split-stages``) can
    start on an empty registry at once: the registry's atomic rename lets one of them register the
    version and the others find it there (the reference model is deterministic, so it is the same).
    """
    if registry.exists(version):
        return registry.manifest(version)
    try:
        return build_reference_model(registry, version, status="active")
    except DuplicateModel:
        return registry.manifest(version)
