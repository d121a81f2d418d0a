"""ONNX export of a fitted scikit-learn pipeline, checked against the pipeline before it is accepted.

:func:`export_onnx` converts ``StandardScaler + MLPClassifier`` (or any classifier skl2onnx knows)
with skl2onnx: one float32 input ``features`` of width F, output ``probabilities`` [n, 2] (ZipMap
off), standardisation folded into the graph (the manifest says ``preprocessing.applied_in =
"graph"``). :func:`check_parity` scores held-out rows with ONNX Runtime and with scikit-learn and
returns the largest absolute difference of P(non-human); :func:`export_checked` refuses an export
whose difference is above :data:`PARITY_TOL` (1e-4) with :class:`~models.exceptions.ExportMismatch`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from models.exceptions import ExportMismatch

__all__ = [
    "PARITY_TOL",
    "INPUT_NAME",
    "OUTPUT_NAME",
    "Export",
    "export_onnx",
    "check_parity",
    "export_checked",
]

PARITY_TOL: Final = 1e-4
INPUT_NAME: Final = "features"
OUTPUT_NAME: Final = "probabilities"


@dataclass(frozen=True, slots=True)
class Export:
    onnx_bytes: bytes
    max_abs_diff: float
    rows_checked: int


def export_onnx(pipeline: Any, n_features: int) -> bytes:
    """Serialized ONNX graph of a fitted pipeline (classifier last)."""
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType

    clf = pipeline.steps[-1][1] if hasattr(pipeline, "steps") else pipeline
    onx = to_onnx(
        pipeline,
        initial_types=[(INPUT_NAME, FloatTensorType([None, n_features]))],
        options={id(clf): {"zipmap": False}},
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    out = onx.graph.output
    if len(out) != 2 or out[1].name != OUTPUT_NAME:
        raise ExportMismatch(f"unexpected outputs of the exported graph: {[o.name for o in out]}")
    return bytes(onx.SerializeToString())


def onnx_scores(onnx_bytes: bytes, X: NDArray[np.float32], batch: int = 65_536) -> NDArray[np.float64]:
    """P(non-human) of rows under an exported graph (CPU)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(onnx_bytes, opts, providers=["CPUExecutionProvider"])
    X = np.ascontiguousarray(X, dtype=np.float32)
    parts = [
        sess.run([OUTPUT_NAME], {INPUT_NAME: X[i : i + batch]})[0][:, 1] for i in range(0, len(X), batch)
    ]
    return np.concatenate(parts).astype(np.float64) if parts else np.zeros(0)


def check_parity(onnx_bytes: bytes, pipeline: Any, X_hold: NDArray[np.float32]) -> float:
    """Largest |P_onnx - P_sklearn| over the held-out rows."""
    if len(X_hold) == 0:
        raise ExportMismatch("no held-out rows to check the export on")
    p_onnx = onnx_scores(onnx_bytes, X_hold)
    p_skl = pipeline.predict_proba(np.asarray(X_hold, dtype=np.float32))[:, 1].astype(np.float64)
    return float(np.max(np.abs(p_onnx - p_skl)))


def export_checked(pipeline: Any, X_hold: NDArray[np.float32], tol: float = PARITY_TOL) -> Export:
    """Export, check on ``X_hold``, refuse above ``tol``."""
    data = export_onnx(pipeline, X_hold.shape[1])
    diff = check_parity(data, pipeline, X_hold)
    if not diff <= tol:
        raise ExportMismatch(
            f"ONNX export differs from the trained model by {diff:.3g} > {tol:g} (max |dP| on {len(X_hold):,} held-out rows)"
        )
    return Export(onnx_bytes=data, max_abs_diff=diff, rows_checked=len(X_hold))
