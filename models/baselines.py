"""The two baselines every report shows beside the MLP.

* **Logistic regression** (:func:`fit_logreg`): scikit-learn's ``LogisticRegression`` on the same
  standardised features, the same cell-balanced weights and the same training days as the MLP. Its
  few numbers (standardisation, coefficients, intercept) are stored in the MLP's manifest
  (``metrics.baselines.logreg``), so a report recomputes its scores exactly with
  :func:`logreg_scores` without another file or another fit.
* **Velocity heuristic** (:func:`velocity_scores`): no learning. The score rises with the fastest of
  the click's entity velocity over 1 min and 10 min and its session velocity (clicks per minute;
  the engine stores ``log1p`` of them): ``score = v / (v + VELOCITY_HALF)``, so a click at
  :data:`VELOCITY_HALF` clicks/min scores 0.5. It is what a rule-based system would do: "too fast
  is a bot". Any monotone map gives the same IVR-FPR curve; this one only makes scores readable.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from app.features.spec import FEATURE_NAMES

__all__ = ["VELOCITY_HALF", "VELOCITY_FEATURES", "velocity_scores", "fit_logreg", "logreg_scores"]

#: clicks per minute at which the heuristic scores 0.5
VELOCITY_HALF: Final = 6.0
VELOCITY_FEATURES: Final[tuple[str, ...]] = ("user_velocity_1m", "user_velocity_10m", "session_velocity")
_IDX: Final = [FEATURE_NAMES.index(n) for n in VELOCITY_FEATURES]


def velocity_scores(X: NDArray[np.floating[Any]]) -> NDArray[np.float64]:
    """The heuristic's score of each row of an engine-ordered feature matrix."""
    v = np.expm1(np.asarray(X[:, _IDX], dtype=np.float64)).max(axis=1)
    v = np.maximum(v, 0.0)
    return v / (v + VELOCITY_HALF)


def fit_logreg(
    Xs: NDArray[np.float32],
    y: NDArray[np.integer[Any]],
    w: NDArray[np.float64],
    seed: int,
    max_iter: int = 200,
) -> dict[str, Any]:
    """Fit on standardised rows; returns ``{"coef": [...], "intercept": float, "n_iter": int}``."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    lr = LogisticRegression(C=1.0, max_iter=max_iter, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        lr.fit(Xs, y, sample_weight=w)
    return {
        "coef": [float(c) for c in lr.coef_[0]],
        "intercept": float(lr.intercept_[0]),
        "n_iter": int(np.max(lr.n_iter_)),
    }


def logreg_scores(
    X: NDArray[np.floating[Any]], params: Mapping[str, Any], mean: Any, scale: Any
) -> NDArray[np.float64]:
    """P(non-human) of raw (unstandardised) engine rows under stored logistic-regression params."""
    Xs = (np.asarray(X, dtype=np.float64) - np.asarray(mean, dtype=np.float64)) / np.asarray(
        scale, dtype=np.float64
    )
    z = Xs @ np.asarray(params["coef"], dtype=np.float64) + float(params["intercept"])
    return 1.0 / (1.0 + np.exp(-z))
