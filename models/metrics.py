"""Detection metrics, as SLIDR defines them: pure numpy functions over plain arrays.

Stable names (calibration, replay and the live summary import them; change with care):

* :func:`ivr` (invalidation rate): share of all clicks marked invalid.
* :func:`fpr` (false-positive rate): share of *purchasing* clicks marked invalid. A purchasing click
  is one a purchase names within the attribution window (:mod:`models.labels`); it is a human for
  certain, so invalidating it is a false positive. ``nan`` when there is no purchasing click.
* :func:`robotic_mask` / :func:`robotic_coverage`: SLIDR's heuristic label "robotic" is every click
  of a session with **more than k** ad clicks in an hour; coverage is the share of those clicks
  marked invalid. ``session_hour_clicks`` is, per click, the number of clicks its session made in
  the same UTC clock hour (``event_time_ms // 3_600_000``; :mod:`models.dataset` computes it), and
  ``k`` defaults to :data:`DEFAULT_K`. ``nan`` when no click is robotic.
* :func:`summarize` -> :class:`RateSummary` (counts and the three rates), :func:`per_slice` -> one
  summary per traffic slice plus ``"all"``.
* :func:`ivr_fpr_curve` -> :class:`Curve`: IVR, FPR and coverage at every candidate threshold, sorted
  by threshold ascending (so IVR and FPR are non-increasing along it). A click is invalid when
  ``score >= threshold`` (the scorer's rule). The last point has threshold ``+inf``: nothing invalid.
  :func:`curves_per_slice` does the same per slice; :func:`point_at_fpr` picks the point with the
  highest IVR whose FPR is within a budget; :func:`threshold_for_fpr` returns just its threshold.

Every function takes optional ``weights`` (one per click, e.g. importance weights); rates are then
weighted shares. Inputs are array-likes of one length; a length mismatch raises ``ValueError``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "DEFAULT_K",
    "ALL",
    "ivr",
    "fpr",
    "robotic_mask",
    "robotic_coverage",
    "RateSummary",
    "summarize",
    "per_slice",
    "Curve",
    "ivr_fpr_curve",
    "curves_per_slice",
    "point_at_fpr",
    "threshold_for_fpr",
    "decide",
    "summaries_to_dict",
]

#: Clicks of one session in one hour above which SLIDR's heuristic calls the session robotic.
DEFAULT_K: Final = 20
#: Key of the overall summary/curve beside the slices.
ALL: Final = "all"


def _bool(a: ArrayLike) -> NDArray[np.bool_]:
    return np.asarray(a, dtype=bool).ravel()


def _weights(weights: ArrayLike | None, n: int) -> NDArray[np.float64] | None:
    if weights is None:
        return None
    w = np.asarray(weights, dtype=np.float64).ravel()
    if len(w) != n:
        raise ValueError(f"weights has {len(w)} values, expected {n}")
    if np.any(w < 0) or not np.all(np.isfinite(w)):
        raise ValueError("weights must be finite and >= 0")
    return w


def _same_len(**arrays: NDArray[Any]) -> int:
    lengths = {k: len(v) for k, v in arrays.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"arrays differ in length: {lengths}")
    return next(iter(lengths.values()))


def _share(flag: NDArray[np.bool_], among: NDArray[np.bool_] | None, w: NDArray[np.float64] | None) -> float:
    """Weighted share of ``flag`` among the rows where ``among`` (all rows if None); nan if none."""
    if among is not None:
        flag = flag[among]
        w = None if w is None else w[among]
    if w is None:
        return float(flag.mean()) if len(flag) else float("nan")
    total = float(w.sum())
    return float(w[flag].sum() / total) if total > 0 else float("nan")


def decide(scores: ArrayLike, threshold: float | ArrayLike) -> NDArray[np.bool_]:
    """``invalid = score >= threshold`` (a scalar, or one threshold per click)."""
    return np.asarray(scores, dtype=np.float64).ravel() >= np.asarray(threshold, dtype=np.float64)


def ivr(invalid: ArrayLike, weights: ArrayLike | None = None) -> float:
    """Invalidation rate: share of all clicks marked invalid (nan for no clicks)."""
    inv = _bool(invalid)
    return _share(inv, None, _weights(weights, len(inv)))


def fpr(invalid: ArrayLike, is_purchasing: ArrayLike, weights: ArrayLike | None = None) -> float:
    """Share of purchasing clicks marked invalid (nan if there is none)."""
    inv, pur = _bool(invalid), _bool(is_purchasing)
    n = _same_len(invalid=inv, is_purchasing=pur)
    return _share(inv, pur, _weights(weights, n))


def robotic_mask(session_hour_clicks: ArrayLike, k: int = DEFAULT_K) -> NDArray[np.bool_]:
    """True for clicks whose session made more than ``k`` clicks in that hour."""
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    return np.asarray(session_hour_clicks).ravel() > k


def robotic_coverage(
    invalid: ArrayLike,
    session_hour_clicks: ArrayLike,
    k: int = DEFAULT_K,
    weights: ArrayLike | None = None,
) -> float:
    """Share of robotic clicks (session with > k clicks in the hour) marked invalid; nan if none."""
    inv, rob = _bool(invalid), robotic_mask(session_hour_clicks, k)
    n = _same_len(invalid=inv, session_hour_clicks=rob)
    return _share(inv, rob, _weights(weights, n))


@dataclass(frozen=True, slots=True)
class RateSummary:
    """Counts and rates of one set of clicks (weighted counts when weights were given)."""

    clicks: float
    invalid: float
    purchasing: float
    purchasing_invalid: float
    robotic: float
    robotic_invalid: float

    @property
    def ivr(self) -> float:
        return self.invalid / self.clicks if self.clicks else float("nan")

    @property
    def fpr(self) -> float:
        return self.purchasing_invalid / self.purchasing if self.purchasing else float("nan")

    @property
    def coverage(self) -> float:
        return self.robotic_invalid / self.robotic if self.robotic else float("nan")

    def to_dict(self) -> dict[str, float | None]:
        """JSON-ready (nan -> None)."""

        def clean(x: float) -> float | None:
            return None if x != x else round(float(x), 6)

        return {
            "clicks": clean(self.clicks),
            "invalid": clean(self.invalid),
            "purchasing": clean(self.purchasing),
            "ivr": clean(self.ivr),
            "fpr": clean(self.fpr),
            "robotic": clean(self.robotic),
            "coverage": clean(self.coverage),
        }


def summarize(
    invalid: ArrayLike,
    is_purchasing: ArrayLike,
    session_hour_clicks: ArrayLike,
    k: int = DEFAULT_K,
    weights: ArrayLike | None = None,
) -> RateSummary:
    """IVR, FPR and robotic coverage of one set of clicks, with the counts behind them."""
    inv, pur, rob = _bool(invalid), _bool(is_purchasing), robotic_mask(session_hour_clicks, k)
    n = _same_len(invalid=inv, is_purchasing=pur, session_hour_clicks=rob)
    w = _weights(weights, n)
    if w is None:
        w = np.ones(n)
    return RateSummary(
        clicks=float(w.sum()),
        invalid=float(w[inv].sum()),
        purchasing=float(w[pur].sum()),
        purchasing_invalid=float(w[inv & pur].sum()),
        robotic=float(w[rob].sum()),
        robotic_invalid=float(w[inv & rob].sum()),
    )


def per_slice(
    invalid: ArrayLike,
    is_purchasing: ArrayLike,
    session_hour_clicks: ArrayLike,
    slices: ArrayLike,
    k: int = DEFAULT_K,
    weights: ArrayLike | None = None,
) -> dict[str, RateSummary]:
    """One :class:`RateSummary` per slice present (sorted by name), then ``"all"``."""
    inv, pur = _bool(invalid), _bool(is_purchasing)
    shc = np.asarray(session_hour_clicks).ravel()
    sl = np.asarray(slices).ravel().astype(str)
    n = _same_len(invalid=inv, is_purchasing=pur, session_hour_clicks=shc, slices=sl)
    w = _weights(weights, n)
    out: dict[str, RateSummary] = {}
    for name in sorted(set(sl.tolist())):
        m = sl == name
        out[name] = summarize(inv[m], pur[m], shc[m], k, None if w is None else w[m])
    out[ALL] = summarize(inv, pur, shc, k, w)
    return out


@dataclass(frozen=True, slots=True)
class Curve:
    """IVR, FPR and robotic coverage per threshold; ``thresholds`` ascending, last one ``+inf``."""

    thresholds: NDArray[np.float64]
    ivr: NDArray[np.float64]
    fpr: NDArray[np.float64]
    coverage: NDArray[np.float64]

    def __len__(self) -> int:
        return len(self.thresholds)

    def to_dict(self) -> dict[str, list[float | None]]:
        def clean(a: NDArray[np.float64]) -> list[float | None]:
            return [None if not np.isfinite(x) else round(float(x), 6) for x in a]

        return {
            "thresholds": clean(self.thresholds),
            "ivr": clean(self.ivr),
            "fpr": clean(self.fpr),
            "coverage": clean(self.coverage),
        }


def ivr_fpr_curve(
    scores: ArrayLike,
    is_purchasing: ArrayLike,
    session_hour_clicks: ArrayLike | None = None,
    k: int = DEFAULT_K,
    *,
    weights: ArrayLike | None = None,
    max_points: int | None = 512,
) -> Curve:
    """IVR, FPR and coverage at each threshold (each distinct score, plus ``+inf``).

    At threshold ``t`` a click is invalid when ``score >= t``. One sort, then cumulative sums: O(n log
    n). ``max_points`` keeps that many thresholds evenly spaced in rank (both ends always kept);
    ``None`` keeps every distinct score. ``coverage`` is nan everywhere when ``session_hour_clicks``
    is None or no click is robotic; ``fpr`` is nan everywhere when no click is purchasing.
    """
    s = np.asarray(scores, dtype=np.float64).ravel()
    pur = _bool(is_purchasing)
    rob = robotic_mask(session_hour_clicks, k) if session_hour_clicks is not None else np.zeros(len(s), bool)
    n = _same_len(scores=s, is_purchasing=pur, session_hour_clicks=rob)
    if np.isnan(s).any():
        raise ValueError("scores contain nan")
    w = _weights(weights, n)
    if w is None:
        w = np.ones(n)
    order = np.argsort(-s, kind="stable")
    s_desc = s[order]
    w_desc = w[order]
    cum_all = np.cumsum(w_desc)
    cum_pur = np.cumsum(w_desc * pur[order])
    cum_rob = np.cumsum(w_desc * rob[order])
    # Last index of each run of equal scores: "score >= t" takes the whole run.
    ends = np.flatnonzero(np.r_[s_desc[1:] != s_desc[:-1], True]) if n else np.zeros(0, np.int64)
    th = s_desc[ends]
    tot_all = cum_all[-1] if n else 0.0
    tot_pur = cum_pur[-1] if n else 0.0
    tot_rob = cum_rob[-1] if n else 0.0
    with np.errstate(invalid="ignore", divide="ignore"):
        iv = cum_all[ends] / tot_all if tot_all > 0 else np.full(len(ends), np.nan)
        fp = cum_pur[ends] / tot_pur if tot_pur > 0 else np.full(len(ends), np.nan)
        cv = cum_rob[ends] / tot_rob if tot_rob > 0 else np.full(len(ends), np.nan)
    # Ascending threshold order, then the "nothing invalid" point.
    th, iv, fp, cv = th[::-1], iv[::-1], fp[::-1], cv[::-1]
    zero_f = 0.0 if tot_pur > 0 else np.nan
    zero_c = 0.0 if tot_rob > 0 else np.nan
    th = np.r_[th, np.inf]
    iv = np.r_[iv, 0.0 if tot_all > 0 else np.nan]
    fp = np.r_[fp, zero_f]
    cv = np.r_[cv, zero_c]
    if max_points is not None and len(th) > max_points:
        if max_points < 2:
            raise ValueError("max_points must be >= 2")
        keep = np.unique(np.linspace(0, len(th) - 1, max_points).round().astype(np.int64))
        th, iv, fp, cv = th[keep], iv[keep], fp[keep], cv[keep]
    return Curve(thresholds=th, ivr=iv, fpr=fp, coverage=cv)


def curves_per_slice(
    scores: ArrayLike,
    is_purchasing: ArrayLike,
    slices: ArrayLike,
    session_hour_clicks: ArrayLike | None = None,
    k: int = DEFAULT_K,
    *,
    weights: ArrayLike | None = None,
    max_points: int | None = 512,
) -> dict[str, Curve]:
    """:func:`ivr_fpr_curve` for each slice present (sorted), then ``"all"``."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    pur = _bool(is_purchasing)
    sl = np.asarray(slices).ravel().astype(str)
    shc = None if session_hour_clicks is None else np.asarray(session_hour_clicks).ravel()
    n = _same_len(scores=s, is_purchasing=pur, slices=sl)
    w = _weights(weights, n)
    out: dict[str, Curve] = {}
    for name in sorted(set(sl.tolist())):
        m = sl == name
        out[name] = ivr_fpr_curve(
            s[m],
            pur[m],
            None if shc is None else shc[m],
            k,
            weights=None if w is None else w[m],
            max_points=max_points,
        )
    out[ALL] = ivr_fpr_curve(s, pur, shc, k, weights=w, max_points=max_points)
    return out


def point_at_fpr(curve: Curve, max_fpr: float) -> dict[str, float]:
    """The curve point with the highest IVR among those with FPR <= ``max_fpr``.

    Ties go to the highest threshold. Returns ``{"threshold", "ivr", "fpr", "coverage"}``; the
    ``+inf`` point (nothing invalid) always qualifies, so there is always an answer. When FPR is nan
    (no purchasing click) every point qualifies.
    """
    ok = ~(curve.fpr > max_fpr)  # nan counts as within budget
    # Highest IVR; among equals the highest threshold (the last in ascending order).
    ivs = np.where(ok, curve.ivr, -np.inf)
    top = np.nanmax(ivs)
    best = int(np.flatnonzero(ivs == top)[-1])
    return {
        "threshold": float(curve.thresholds[best]),
        "ivr": float(curve.ivr[best]),
        "fpr": float(curve.fpr[best]),
        "coverage": float(curve.coverage[best]),
    }


def threshold_for_fpr(curve: Curve, max_fpr: float) -> float:
    """The threshold of :func:`point_at_fpr` (``+inf`` when no threshold keeps FPR in budget)."""
    return point_at_fpr(curve, max_fpr)["threshold"]


def summaries_to_dict(summaries: Mapping[str, RateSummary]) -> dict[str, dict[str, float | None]]:
    """``{slice: summary.to_dict()}`` for manifests and reports."""
    return {k: v.to_dict() for k, v in summaries.items()}
