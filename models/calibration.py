"""Slice-level calibration (SLIDR): per-slice thresholds from a convex problem under an FPR budget.

Pure functions over plain arrays; no Kafka, no registry (``app.cli.calibrate`` does the I/O).

The steps, for a model's scores on a calibration set (one row per click: score, slice, purchasing
or not, clicks of its session in that hour):

1. **Empirical curves** (:func:`empirical_curve`): per slice, IVR, FPR and robotic coverage at every
   distinct score used as threshold (``models.metrics.ivr_fpr_curve``, exact, no subsampling). The
   IVR-FPR *staircase* keeps, for each FPR level ``j / purchasing``, the highest IVR reachable
   without exceeding it: those are the achievable operating points.
2. **Quadratic fit** (:func:`fit_concave_quadratic`): ``IVR(f) ~ a + b f + c f^2`` with ``c <= 0``
   (SLIDR's approximation; concave, so the problem below stays convex), least squares over the
   staircase points with ``f <= fit_max_fpr`` (constrained with ``scipy.optimize.lsq_linear``);
   fit quality is R^2, RMSE and the largest absolute error.
3. **Coverage floor**: a slice must reach robotic coverage ``C``; the smallest FPR on its empirical
   curve where it does is the lower bound ``L_s`` of that slice's FPR.
4. **The convex problem** (:func:`solve`): with ``n_s`` clicks and ``p_s`` purchasing clicks per
   slice, maximise ``sum n_s q_s(f_s) / sum n_s`` (combined IVR) subject to
   ``sum p_s f_s / sum p_s <= B`` (combined FPR) and ``L_s <= f_s <= U_s``. A concave separable
   objective under one linear constraint and box bounds: solved with scipy's SLSQP (analytic
   gradients; trust-constr as a fallback). If the floors alone cost more than the budget the
   problem is **infeasible**: the result says so and names the slices whose floors take the budget
   (no exception).
5. **FPR -> threshold** (:func:`threshold_at_fpr`): the lowest threshold whose *empirical* FPR is at
   most the slice's optimal ``f_s`` (so the realised combined FPR on the calibration set never
   exceeds the budget, and coverage never falls below the floor); the stored threshold lies halfway
   between that score and the next lower one, so it separates the same clicks with a margin.
6. **Comparison** (:func:`calibrate`): the single global threshold at the same overall FPR as the
   per-slice solution (the lowest global threshold whose pooled FPR is within it, which is the best
   any single threshold can do there), and the knee of the pooled IVR-FPR curve
   (:func:`knee_point`), evaluated per slice beside the per-slice solution.

Slices are ``app.contracts.events.SLICES`` (device x logged-in) by default; :data:`SLICINGS` groups them more
coarsely (``device``, ``login``, ``none``) and the group's threshold is written to every slice in it.
A slice with too few purchasing clicks to estimate its FPR is left out of the problem and served by
the default threshold; the result lists it.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.optimize import Bounds, LinearConstraint, lsq_linear, minimize

from app.contracts.events import SLICES
from models.exceptions import ModelError
from models.metrics import ALL, DEFAULT_K, ivr_fpr_curve, per_slice, robotic_mask

__all__ = [
    "CalibrationError",
    "SLICINGS",
    "CalibrationSet",
    "EmpiricalCurve",
    "QuadraticFit",
    "SliceProblem",
    "Solution",
    "SliceOutcome",
    "Operating",
    "CalibrationResult",
    "empirical_curve",
    "fit_concave_quadratic",
    "coverage_floor",
    "solve",
    "refine",
    "realised_ivr",
    "threshold_at_fpr",
    "knee_point",
    "evaluate",
    "calibrate",
]

#: Default upper end of the FPR range the quadratic is fitted on (and the optimiser may use).
DEFAULT_FIT_MAX_FPR: Final = 0.25
#: A slice needs this many purchasing clicks to get its own threshold.
DEFAULT_MIN_PURCHASING: Final = 30
#: Rounds of local refits after the first solve (:func:`refine`).
DEFAULT_MAX_REFITS: Final = 20
#: Slack on "FPR <= target" comparisons of floats.
_EPS: Final = 1e-12


class CalibrationError(ModelError, ValueError):
    """Bad calibration input: empty set, arguments out of range, unknown slicing or slice."""


def _group_device_login(s: str) -> str:
    return s


def _group_device(s: str) -> str:
    return s.split("/", 1)[0]


def _group_login(s: str) -> str:
    return s.split("/", 1)[1] if "/" in s else s


def _group_none(s: str) -> str:
    return "all-traffic"


#: How fine slices (``desktop/in``, ...) are grouped for calibration: name -> slice -> group.
SLICINGS: Final[Mapping[str, Callable[[str], str]]] = {
    "device_login": _group_device_login,
    "device": _group_device,
    "login": _group_login,
    "none": _group_none,
}


def _check_rate(name: str, value: float, *, open_low: bool, open_high: bool) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        raise CalibrationError(f"{name} must be a finite number, got {value!r}")
    lo_ok = value > 0 if open_low else value >= 0
    hi_ok = value < 1 if open_high else value <= 1
    if not (lo_ok and hi_ok):
        interval = f"{'(' if open_low else '['}0, 1{')' if open_high else ']'}"
        raise CalibrationError(f"{name} must be in {interval}, got {value}")
    return float(value)


# --------------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CalibrationSet:
    """Scores of one model on held-out clicks, with what the metrics need. Validated on construction.

    ``slices`` are fine slice keys (``app.contracts.events.SLICES``); ``purchasing`` marks clicks a purchase
    names (FPR's denominator); ``session_hour_clicks`` is the click's session's clicks in that hour
    (robotic when ``> k``).
    """

    scores: NDArray[np.float64]
    slices: NDArray[np.str_]
    purchasing: NDArray[np.bool_]
    session_hour_clicks: NDArray[np.int64]
    k: int = DEFAULT_K

    def __post_init__(self) -> None:
        s = np.asarray(self.scores, dtype=np.float64).ravel()
        sl = np.asarray(self.slices).ravel().astype(str)
        pur = np.asarray(self.purchasing, dtype=bool).ravel()
        shc = np.asarray(self.session_hour_clicks).ravel().astype(np.int64)
        lengths = {
            "scores": len(s),
            "slices": len(sl),
            "purchasing": len(pur),
            "session_hour_clicks": len(shc),
        }
        if len(set(lengths.values())) != 1:
            raise CalibrationError(f"calibration set columns differ in length: {lengths}")
        if len(s) == 0:
            raise CalibrationError("calibration set is empty")
        if not np.all(np.isfinite(s)):
            raise CalibrationError("calibration set has non-finite scores")
        unknown = sorted(set(np.unique(sl).tolist()) - set(SLICES))
        if unknown:
            raise CalibrationError(f"unknown slices {unknown[:5]} (known: {', '.join(SLICES)})")
        if self.k < 0:
            raise CalibrationError(f"k must be >= 0, got {self.k}")
        object.__setattr__(self, "scores", s)
        object.__setattr__(self, "slices", sl)
        object.__setattr__(self, "purchasing", pur)
        object.__setattr__(self, "session_hour_clicks", shc)

    def __len__(self) -> int:
        return len(self.scores)

    def robotic(self) -> NDArray[np.bool_]:
        return robotic_mask(self.session_hour_clicks, self.k)

    def grouped(self, slicing: str) -> NDArray[np.str_]:
        """The group of every row under ``slicing`` (a key of :data:`SLICINGS`)."""
        group = _slicing(slicing)
        mapping = {s: group(s) for s in SLICES}
        return np.asarray([mapping[s] for s in self.slices.tolist()], dtype=str)


def _slicing(name: str) -> Callable[[str], str]:
    try:
        return SLICINGS[name]
    except KeyError:
        raise CalibrationError(f"unknown slicing {name!r} (one of {', '.join(SLICINGS)})") from None


# --------------------------------------------------------------------------------------------------
# Empirical curves and thresholds
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EmpiricalCurve:
    """Exact operating points of one set of clicks, ordered by *descending* threshold.

    Point ``j`` invalidates the clicks with ``score >= scores[j]`` (point 0: none, ``scores[0]`` is
    ``+inf``); ``ivr``, ``fpr`` and ``coverage`` are non-decreasing along the arrays. ``fpr`` is nan
    when there is no purchasing click, ``coverage`` when there is no robotic click.
    """

    scores: NDArray[np.float64]
    ivr: NDArray[np.float64]
    fpr: NDArray[np.float64]
    coverage: NDArray[np.float64]
    clicks: int
    purchasing: int
    robotic: int

    def index_at_fpr(self, max_fpr: float) -> int:
        """The last point (most clicks invalid) whose FPR is at most ``max_fpr``."""
        if self.purchasing == 0:
            return 0
        return int(np.searchsorted(self.fpr, max_fpr + _EPS, side="right")) - 1

    def threshold(self, j: int) -> float:
        """A threshold in [0, 1] that invalidates exactly the clicks of point ``j``, with a margin.

        Halfway between the point's score and the next lower distinct score (0 below the lowest),
        or halfway between the highest score and 1 for the "nothing invalid" point. Thresholds stay
        within [0, 1] (the manifest's range), so a score of exactly 1.0 is always invalid.
        """
        if j == 0:
            top = self.scores[1] if len(self.scores) > 1 else 0.0
            return 1.0 if top >= 1.0 else float(min(1.0, (top + 1.0) / 2))
        here = self.scores[j]
        below = self.scores[j + 1] if j + 1 < len(self.scores) else 0.0
        if below == here:  # only when here == 0.0 is the lowest score
            return float(here)
        return float(min(1.0, max(0.0, (here + below) / 2)))

    def staircase(self, max_fpr: float = 1.0) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """``(fpr, ivr)`` at each FPR level ``j / purchasing`` up to ``max_fpr``: the best IVR there."""
        if self.purchasing == 0:
            return np.zeros(1), self.ivr[:1].copy()
        levels = np.arange(self.purchasing + 1, dtype=np.float64) / self.purchasing
        levels = levels[levels <= max_fpr + _EPS]
        idx = np.searchsorted(self.fpr, levels + _EPS, side="right") - 1
        return levels, self.ivr[idx]


def empirical_curve(
    scores: ArrayLike, purchasing: ArrayLike, session_hour_clicks: ArrayLike, k: int = DEFAULT_K
) -> EmpiricalCurve:
    """Every operating point of these clicks (``models.metrics.ivr_fpr_curve``, reversed)."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    pur = np.asarray(purchasing, dtype=bool).ravel()
    shc = np.asarray(session_hour_clicks).ravel()
    curve = ivr_fpr_curve(s, pur, shc, k, max_points=None)
    return EmpiricalCurve(
        scores=curve.thresholds[::-1].copy(),
        ivr=curve.ivr[::-1].copy(),
        fpr=curve.fpr[::-1].copy(),
        coverage=curve.coverage[::-1].copy(),
        clicks=len(s),
        purchasing=int(pur.sum()),
        robotic=int(robotic_mask(shc, k).sum()),
    )


def threshold_at_fpr(curve: EmpiricalCurve, max_fpr: float) -> tuple[float, int]:
    """``(threshold, point index)``: the most clicks invalid while the empirical FPR <= ``max_fpr``."""
    j = curve.index_at_fpr(max_fpr)
    return curve.threshold(j), j


def coverage_floor(curve: EmpiricalCurve, min_coverage: float) -> tuple[float, int]:
    """``(FPR, point index)`` of the first point whose coverage reaches ``min_coverage``.

    ``(0, 0)`` when the slice has no robotic click (no floor can be measured) or ``min_coverage`` is 0.
    """
    if curve.robotic == 0 or min_coverage <= 0:
        return 0.0, 0
    j = int(np.argmax(curve.coverage >= min_coverage - _EPS))  # coverage reaches 1 at the last point
    f = float(curve.fpr[j]) if curve.purchasing else 0.0
    return f, j


# --------------------------------------------------------------------------------------------------
# Quadratic fit
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class QuadraticFit:
    """``IVR(f) = a + b f + c f^2`` with ``c <= 0``, fitted on ``f`` in ``[0, max_fpr]``."""

    a: float
    b: float
    c: float
    r2: float
    rmse: float
    max_abs_error: float
    points: int
    max_fpr: float
    min_fpr: float = 0.0

    def __call__(self, f: ArrayLike) -> NDArray[np.float64]:
        x = np.asarray(f, dtype=np.float64)
        return self.a + self.b * x + self.c * x * x

    def slope(self, f: ArrayLike) -> NDArray[np.float64]:
        return self.b + 2 * self.c * np.asarray(f, dtype=np.float64)

    def to_dict(self) -> dict[str, float | int]:
        return {
            "a": self.a,
            "b": self.b,
            "c": self.c,
            "r2": round(self.r2, 6),
            "rmse": round(self.rmse, 8),
            "max_abs_error": round(self.max_abs_error, 8),
            "points": self.points,
            "min_fpr": round(self.min_fpr, 8),
            "max_fpr": round(self.max_fpr, 8),
        }


def fit_concave_quadratic(
    fpr: ArrayLike, ivr: ArrayLike, max_fpr: float = 1.0, min_fpr: float = 0.0
) -> QuadraticFit:
    """Least-squares ``a + b f + c f^2`` with ``c <= 0`` over the points with ``min_fpr <= fpr <= max_fpr``."""
    x = np.asarray(fpr, dtype=np.float64).ravel()
    y = np.asarray(ivr, dtype=np.float64).ravel()
    if len(x) != len(y):
        raise CalibrationError(f"fit: {len(x)} FPR values for {len(y)} IVR values")
    keep = np.isfinite(x) & np.isfinite(y) & (x <= max_fpr + _EPS) & (x >= min_fpr - _EPS)
    x, y = x[keep], y[keep]
    if len(x) == 0:
        raise CalibrationError("fit: no point with a finite FPR in range")
    if len(np.unique(x)) < 3:
        # Too few distinct FPR levels for three coefficients: a flat line through the mean.
        a, b, c = float(y.mean()), 0.0, 0.0
    else:
        A = np.stack([np.ones_like(x), x, x * x], axis=1)
        res = lsq_linear(A, y, bounds=([-np.inf, -np.inf, -np.inf], [np.inf, np.inf, 0.0]), method="bvls")
        a, b, c = (float(v) for v in res.x)
    pred = a + b * x + c * x * x
    err = y - pred
    ss_res = float(np.sum(err**2))
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else 1.0
    return QuadraticFit(
        a=a,
        b=b,
        c=c,
        r2=r2,
        rmse=math.sqrt(ss_res / len(x)),
        max_abs_error=float(np.max(np.abs(err))),
        points=len(x),
        max_fpr=float(max_fpr),
        min_fpr=float(min_fpr),
    )


# --------------------------------------------------------------------------------------------------
# The convex problem
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SliceProblem:
    """One slice in the problem: its weights, fitted curve and FPR bounds."""

    name: str
    clicks: float  # IVR weight (slice volume)
    purchasing: float  # FPR weight
    fit: QuadraticFit
    lower: float  # FPR at the coverage floor
    upper: float  # end of the fitted range


@dataclass(frozen=True, slots=True)
class Solution:
    """The optimiser's answer; ``fpr`` is None when the problem is infeasible."""

    feasible: bool
    fpr: dict[str, float] | None
    objective: float | None  # combined IVR predicted by the fitted curves
    combined_fpr: float | None
    floor_fpr: float  # combined FPR with every slice at its floor
    message: str
    blocking: tuple[str, ...] = ()  # infeasible: the slices whose floors take the budget
    solver: str = ""


def _combined(problems: Sequence[SliceProblem], f: NDArray[np.float64]) -> tuple[float, float]:
    n = np.array([p.clicks for p in problems])
    v = np.array([p.purchasing for p in problems])
    ivr = sum(float(p.clicks * p.fit(fi)) for p, fi in zip(problems, f, strict=True)) / float(n.sum())
    return ivr, float(v @ f / v.sum())


def _infeasible_message(
    problems: Sequence[SliceProblem], budget: float, floor: float
) -> tuple[str, tuple[str, ...]]:
    v = np.array([p.purchasing for p in problems])
    share = np.array([p.purchasing * p.lower for p in problems]) / v.sum()
    alone = [p.name for p in problems if p.lower > budget + _EPS]
    # The fewest slices (largest FPR cost first) whose floors alone already exceed the budget.
    order = np.argsort(-share)
    blocking: list[str] = []
    acc = 0.0
    for i in order:
        blocking.append(problems[i].name)
        acc += share[i]
        if acc > budget + _EPS:
            break
    parts = [
        f"{problems[i].name} needs FPR >= {problems[i].lower:.4f} (adds {share[i]:.4f} to the combined FPR)"
        for i in order
        if share[i] > 0
    ]
    msg = (
        f"infeasible: the coverage floors alone give a combined FPR of {floor:.4f} > budget {budget:.4f}. "
        + (f"Slices whose own floor FPR exceeds the budget: {', '.join(alone)}. " if alone else "")
        + f"Slices that cannot all meet their floor within the budget: {', '.join(blocking)}. "
        + "; ".join(parts)
        + ". Raise the budget or lower the minimum coverage."
    )
    return msg, tuple(blocking)


def solve(problems: Sequence[SliceProblem], budget: float) -> Solution:
    """Maximise the combined IVR under the combined-FPR budget and the per-slice floors (scipy)."""
    budget = _check_rate("fpr budget", budget, open_low=True, open_high=True)
    if not problems:
        raise CalibrationError("no slice to calibrate")
    for p in problems:
        if p.fit.c > 0:
            raise CalibrationError(f"slice {p.name}: fitted curve is convex (c = {p.fit.c}), not concave")
        if not (0 <= p.lower <= p.upper <= 1):
            raise CalibrationError(f"slice {p.name}: bounds [{p.lower}, {p.upper}] not within [0, 1]")
        if p.purchasing <= 0 or p.clicks <= 0:
            raise CalibrationError(f"slice {p.name}: needs clicks and purchasing clicks")
    names = [p.name for p in problems]
    n = np.array([p.clicks for p in problems], dtype=np.float64)
    v = np.array([p.purchasing for p in problems], dtype=np.float64)
    b = np.array([p.fit.b for p in problems])
    c = np.array([p.fit.c for p in problems])
    lo = np.array([p.lower for p in problems])
    hi = np.array([p.upper for p in problems])
    wn, wv = n / n.sum(), v / v.sum()

    floor = float(wv @ lo)
    if floor > budget + 1e-12:
        msg, blocking = _infeasible_message(problems, budget, floor)
        return Solution(False, None, None, None, floor, msg, blocking)

    def neg(f: NDArray[np.float64]) -> float:
        return -float(wn @ (b * f + c * f * f))

    def neg_grad(f: NDArray[np.float64]) -> NDArray[np.float64]:
        return -(wn * (b + 2 * c * f))

    def neg_hess(f: NDArray[np.float64]) -> NDArray[np.float64]:
        return np.diag(-2 * wn * c)

    x0 = lo.copy()  # the floors are feasible
    bounds = Bounds(lo, hi)

    def feasible_point(x: NDArray[np.float64]) -> NDArray[np.float64] | None:
        """Clip to the bounds; pull back tiny budget overshoots (solver tolerance); None if far off."""
        f = np.clip(np.asarray(x, dtype=np.float64), lo, hi)
        over = float(wv @ f) - budget
        if over > 1e-6:
            return None
        if over > 0:  # pull back the slices above their floor, proportionally
            room = f - lo
            if float(wv @ room) > 0:
                f = f - room * min(1.0, over / float(wv @ room))
        return f

    # SLSQP is exact on this problem but sometimes ends with "positive directional derivative" at
    # the optimum (status 8); a feasible answer counts whatever its status. trust-constr (interior
    # point, a little inside the boundary) runs only when SLSQP did not converge, and the better
    # feasible answer wins.
    candidates: list[tuple[float, NDArray[np.float64], str, str]] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy's "delta_grad == 0" chatter; results are checked
        res = minimize(
            neg,
            x0,
            jac=neg_grad,
            method="SLSQP",
            bounds=bounds,
            constraints=[{"type": "ineq", "fun": lambda f: budget - wv @ f, "jac": lambda f: -wv}],
            options={"ftol": 1e-14, "maxiter": 500},
        )
        f1 = feasible_point(res.x)
        if f1 is not None:
            candidates.append((-neg(f1), f1, "SLSQP", str(res.message)))
        if not res.success or f1 is None:
            res2 = minimize(
                neg,
                x0,
                jac=neg_grad,
                hess=neg_hess,
                method="trust-constr",
                bounds=bounds,
                constraints=[LinearConstraint(wv[None, :], -np.inf, budget)],
                options={"gtol": 1e-12, "xtol": 1e-14, "maxiter": 5000},
            )
            f2 = feasible_point(res2.x)
            if f2 is not None:
                candidates.append((-neg(f2), f2, "trust-constr", str(res2.message)))
    if not candidates:  # cannot happen for a feasible problem; keep the floors, say so
        candidates.append((-neg(x0), x0, "none", "both solvers failed; the coverage floors are kept"))
    _, f, solver, solver_msg = max(candidates, key=lambda c: c[0])
    ivr, comb = _combined(problems, f)
    return Solution(
        True,
        dict(zip(names, (float(x) for x in f), strict=True)),
        ivr,
        comb,
        floor,
        f"optimal ({solver}: {solver_msg})",
        (),
        solver,
    )


def realised_ivr(curves: Mapping[str, EmpiricalCurve], fpr: Mapping[str, float]) -> float:
    """Combined IVR on the empirical curves when each slice runs at the threshold for ``fpr[slice]``."""
    num = sum(float(c.ivr[c.index_at_fpr(fpr[g])]) * c.clicks for g, c in curves.items())
    return num / sum(c.clicks for c in curves.values())


def refine(
    problems: Sequence[SliceProblem],
    curves: Mapping[str, EmpiricalCurve],
    budget: float,
    max_refits: int = 20,
    tol: float = 1e-5,
) -> tuple[Solution, dict[str, QuadraticFit], int]:
    """:func:`solve` on the fits of ``problems``, then on local refits around each answer.

    One quadratic over the whole FPR range fits a slice's curve loosely where it bends most (near
    FPR 0, where budgets live). So after the first solve each slice's concave quadratic is refitted
    on its staircase in a window around its current FPR (half-width: the larger of half that FPR,
    half the budget and five FPR steps), the problem is solved again with each slice kept inside its
    window (a trust region, which keeps the current point feasible), until the FPRs move less than
    ``tol`` or after ``max_refits`` rounds. Every round is a convex problem of the same form. The
    answer is the round whose thresholds give the highest combined IVR on the empirical curves.
    Returns ``(solution, the fits it used, rounds run)``; ``max_refits = 0`` is the plain SLIDR fit.
    """
    solution = solve(problems, budget)
    fits = {p.name: p.fit for p in problems}
    if not solution.feasible or solution.fpr is None or max_refits <= 0:
        return solution, fits, 0
    best = (realised_ivr(curves, solution.fpr), solution, fits)
    f = dict(solution.fpr)
    rounds = 0
    for rounds in range(1, max_refits + 1):  # noqa: B007 (the count is returned)
        local: list[SliceProblem] = []
        for p in problems:
            c = curves[p.name]
            h = max(0.5 * f[p.name], 0.5 * budget, 5.0 / c.purchasing)
            lo, hi = max(p.lower, f[p.name] - h), min(p.upper, f[p.name] + h)
            fx, iy = c.staircase(min(1.0, f[p.name] + h))
            fit = fit_concave_quadratic(fx, iy, min(1.0, f[p.name] + h), max(0.0, f[p.name] - h))
            local.append(SliceProblem(p.name, p.clicks, p.purchasing, fit, lo, max(lo, hi)))
        sol = solve(local, budget)
        if not sol.feasible or sol.fpr is None:  # cannot happen (the current point is feasible)
            break
        value = realised_ivr(curves, sol.fpr)
        if value > best[0] + 1e-12:
            best = (value, sol, {p.name: p.fit for p in local})
        step = max(abs(sol.fpr[g] - f[g]) for g in f)
        f = dict(sol.fpr)
        if step < tol:
            break
    return best[1], best[2], rounds


# --------------------------------------------------------------------------------------------------
# Knee, evaluation, the whole calibration
# --------------------------------------------------------------------------------------------------


def knee_point(curve: EmpiricalCurve, max_fpr: float = 1.0) -> int:
    """Index of the knee of the IVR-FPR staircase (Kneedle: farthest above the diagonal, normalised).

    Beyond the knee, FPR grows faster than IVR relative to the curve's overall ratio. ``max_fpr``
    limits the part of the curve considered.
    """
    fx, iy = curve.staircase(max_fpr)
    if len(fx) < 2 or iy[-1] <= 0:
        return curve.index_at_fpr(float(fx[-1]))
    # From the origin (nothing invalid): the clicks above every purchasing click are the first rise.
    x = fx / fx[-1]
    y = iy / iy[-1]
    k = int(np.argmax(y - x))
    return curve.index_at_fpr(float(fx[k]))


@dataclass(frozen=True, slots=True)
class Operating:
    """Measured rates of one threshold rule on the calibration set, per group and ``"all"``."""

    name: str
    thresholds: dict[str, float]  # per group
    rates: dict[str, dict[str, float | None]]  # group -> clicks/ivr/fpr/coverage/...

    def overall(self, key: str) -> float:
        v = self.rates[ALL][key]
        return float("nan") if v is None else float(v)


def evaluate(
    data: CalibrationSet, thresholds: Mapping[str, float], groups: NDArray[np.str_], name: str
) -> Operating:
    """IVR, FPR and coverage per group and overall when each group uses its threshold."""
    th = np.array([thresholds[g] for g in groups.tolist()], dtype=np.float64)
    invalid = data.scores >= th
    summary = per_slice(invalid, data.purchasing, data.session_hour_clicks, groups, data.k)
    return Operating(name, dict(thresholds), {g: s.to_dict() for g, s in summary.items()})


@dataclass(frozen=True, slots=True)
class SliceOutcome:
    """Everything measured and decided for one group."""

    name: str
    clicks: int
    purchasing: int
    robotic: int
    curve: EmpiricalCurve
    fit: QuadraticFit | None  # over [0, fit_max_fpr]: SLIDR's approximation of the whole curve
    floor_fpr: float | None
    target_fpr: float | None = None  # the optimiser's f_s
    predicted_ivr: float | None = None  # the local fit at f_s
    threshold: float | None = None  # None: served by the default threshold
    local_fit: QuadraticFit | None = None  # the fit the final solve used (== fit without refits)
    skipped: str | None = None  # why it has no threshold of its own


@dataclass(frozen=True, slots=True)
class CalibrationResult:
    """Per-slice solution, its global-threshold comparison and the knee; see :meth:`to_dict`."""

    budget: float
    min_coverage: float
    slicing: str
    k: int
    fit_max_fpr: float
    refits: int
    feasible: bool
    message: str
    blocking: tuple[str, ...]
    slices: dict[str, SliceOutcome]
    pooled: EmpiricalCurve
    solution: Solution
    per_slice: Operating | None  # None when infeasible
    global_same_fpr: Operating | None  # the best single threshold at the per-slice solution's FPR
    global_at_budget: Operating  # the best single threshold within the budget
    knee: Operating
    thresholds: dict[str, float] = field(default_factory=dict)  # per fine slice, for the manifest
    default_threshold: float = 0.5
    rows: int = 0
    max_slice_fpr: float | None = None

    def gain(self) -> dict[str, float] | None:
        """Per-slice minus global at the same FPR: overall IVR, coverage and FPR."""
        if self.per_slice is None or self.global_same_fpr is None:
            return None
        return {
            key: self.per_slice.overall(key) - self.global_same_fpr.overall(key)
            for key in ("ivr", "coverage", "fpr")
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (no curves) for the manifest's metrics."""

        def r(x: float | None) -> float | None:
            return None if x is None or x != x else round(float(x), 6)

        def op(o: Operating | None) -> dict[str, Any] | None:
            if o is None:
                return None
            return {"thresholds": {k: r(v) for k, v in o.thresholds.items()}, "rates": o.rates}

        gain = self.gain()
        return {
            "method": "slidr-slice-calibration/1",
            "fpr_budget": self.budget,
            "min_coverage": self.min_coverage,
            "slicing": self.slicing,
            "robotic_k": self.k,
            "fit_max_fpr": self.fit_max_fpr,
            "max_slice_fpr": self.max_slice_fpr,
            "refit_rounds": self.refits,
            "rows": self.rows,
            "feasible": self.feasible,
            "message": self.message,
            "blocking_slices": list(self.blocking),
            "solver": self.solution.solver,
            "predicted_combined_ivr": r(self.solution.objective),
            "slices": {
                name: {
                    "clicks": s.clicks,
                    "purchasing": s.purchasing,
                    "robotic": s.robotic,
                    "fit": None if s.fit is None else s.fit.to_dict(),
                    "local_fit": None if s.local_fit is None else s.local_fit.to_dict(),
                    "floor_fpr": r(s.floor_fpr),
                    "target_fpr": r(s.target_fpr),
                    "predicted_ivr": r(s.predicted_ivr),
                    "threshold": r(s.threshold),
                    "skipped": s.skipped,
                }
                for name, s in self.slices.items()
            },
            "per_slice": op(self.per_slice),
            "global_same_fpr": op(self.global_same_fpr),
            "global_at_budget": op(self.global_at_budget),
            "knee": op(self.knee),
            "gain_vs_global_same_fpr": None if gain is None else {k: r(v) for k, v in gain.items()},
        }


def calibrate(
    data: CalibrationSet,
    budget: float,
    min_coverage: float,
    *,
    slicing: str = "device_login",
    fit_max_fpr: float = DEFAULT_FIT_MAX_FPR,
    min_purchasing: int = DEFAULT_MIN_PURCHASING,
    knee_max_fpr: float = 1.0,
    max_refits: int = DEFAULT_MAX_REFITS,
    max_slice_fpr: float | None = None,
) -> CalibrationResult:
    """The whole calibration: curves, fits, floors, the convex problem, thresholds, comparisons.

    ``max_slice_fpr`` optionally caps every slice's own FPR (the problem only bounds the combined
    one, so without a cap a slice with few purchasing clicks may be given a high FPR).

    Infeasible budgets (or a floor above the cap) give a result with ``feasible = False`` and a
    message naming the slices; the manifest thresholds are then empty and ``default_threshold`` is
    the global one at the budget.
    """
    budget = _check_rate("fpr budget", budget, open_low=True, open_high=True)
    min_coverage = _check_rate("minimum coverage", min_coverage, open_low=False, open_high=False)
    fit_max_fpr = _check_rate("fit_max_fpr", fit_max_fpr, open_low=True, open_high=False)
    if min_purchasing < 1:
        raise CalibrationError(f"min_purchasing must be >= 1, got {min_purchasing}")
    if max_refits < 0:
        raise CalibrationError(f"max_refits must be >= 0, got {max_refits}")
    if max_slice_fpr is not None:
        max_slice_fpr = _check_rate("max_slice_fpr", max_slice_fpr, open_low=True, open_high=False)
    group_of = _slicing(slicing)
    groups = data.grouped(slicing)
    if int(data.purchasing.sum()) == 0:
        raise CalibrationError("calibration set has no purchasing click: FPR cannot be measured")

    pooled = empirical_curve(data.scores, data.purchasing, data.session_hour_clicks, data.k)
    outcomes: dict[str, SliceOutcome] = {}
    problems: list[SliceProblem] = []
    for g in sorted(set(groups.tolist())):
        m = groups == g
        curve = empirical_curve(data.scores[m], data.purchasing[m], data.session_hour_clicks[m], data.k)
        if curve.purchasing < min_purchasing:
            outcomes[g] = SliceOutcome(
                g,
                curve.clicks,
                curve.purchasing,
                curve.robotic,
                curve,
                None,
                None,
                skipped=f"{curve.purchasing} purchasing clicks < {min_purchasing}: served by the default threshold",
            )
            continue
        floor, _ = coverage_floor(curve, min_coverage)
        upper = max(fit_max_fpr, floor)
        if max_slice_fpr is not None:
            upper = min(upper, max(max_slice_fpr, 0.0))
        fx, iy = curve.staircase(upper)
        fit = fit_concave_quadratic(fx, iy, upper)
        outcomes[g] = SliceOutcome(g, curve.clicks, curve.purchasing, curve.robotic, curve, fit, floor)
        problems.append(SliceProblem(g, curve.clicks, curve.purchasing, fit, floor, upper))
    if not problems:
        raise CalibrationError(
            f"no slice has {min_purchasing} purchasing clicks under slicing {slicing!r}; "
            "use a larger calibration set or a coarser slicing"
        )

    curves = {g: o.curve for g, o in outcomes.items() if o.fit is not None}
    over_cap = [p for p in problems if p.lower > p.upper]
    if over_cap:
        msg = (
            "infeasible: the coverage floor needs more than the per-slice FPR cap "
            f"{max_slice_fpr:g} in: "
            + "; ".join(f"{p.name} (floor FPR {p.lower:.4f})" for p in over_cap)
            + ". Raise the cap or lower the minimum coverage."
        )
        floor_all = sum(p.purchasing * p.lower for p in problems) / sum(p.purchasing for p in problems)
        blocked = Solution(False, None, None, None, floor_all, msg, tuple(p.name for p in over_cap))
        solution, local_fits, refits = blocked, {p.name: p.fit for p in problems}, 0
    else:
        solution, local_fits, refits = refine(problems, curves, budget, max_refits)
    at_budget_j = pooled.index_at_fpr(budget)
    t_budget = pooled.threshold(at_budget_j)
    all_groups = sorted(set(groups.tolist()))
    global_at_budget = evaluate(data, dict.fromkeys(all_groups, t_budget), groups, "global at budget")
    knee_j = knee_point(pooled, knee_max_fpr)
    knee = evaluate(data, dict.fromkeys(all_groups, pooled.threshold(knee_j)), groups, "global knee")

    per: Operating | None = None
    same: Operating | None = None
    fine: dict[str, float] = {}
    default = t_budget
    if solution.feasible and solution.fpr is not None:
        group_th: dict[str, float] = {}
        for p in problems:
            f = solution.fpr[p.name]
            t, _ = threshold_at_fpr(outcomes[p.name].curve, f)
            group_th[p.name] = t
            o = outcomes[p.name]
            local = local_fits[p.name]
            outcomes[p.name] = replace(
                o, target_fpr=f, predicted_ivr=float(local(f)), threshold=t, local_fit=local
            )
        # Skipped groups are served by the default; measure the solution as it will be served,
        # then put the global threshold at that overall FPR beside it.
        th_all = {g: group_th.get(g, t_budget) for g in all_groups}
        per = evaluate(data, th_all, groups, "per-slice")
        realised = per.overall("fpr")
        t_same = pooled.threshold(pooled.index_at_fpr(realised))
        same = evaluate(data, dict.fromkeys(all_groups, t_same), groups, "global at same FPR")
        default = t_same
        fine = {s: group_th[group_of(s)] for s in SLICES if group_of(s) in group_th}
    return CalibrationResult(
        budget=budget,
        min_coverage=min_coverage,
        slicing=slicing,
        k=data.k,
        fit_max_fpr=fit_max_fpr,
        refits=refits,
        feasible=solution.feasible,
        message=solution.message,
        blocking=solution.blocking,
        slices=outcomes,
        pooled=pooled,
        solution=solution,
        per_slice=per,
        global_same_fpr=same,
        global_at_budget=global_at_budget,
        knee=knee,
        thresholds=fine,
        default_threshold=default,
        rows=len(data),
        max_slice_fpr=max_slice_fpr,
    )
