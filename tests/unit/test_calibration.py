"""Slice-level calibration: the optimiser against brute force and an exact KKT solution, infeasible
budgets reported, FPR -> threshold on empirical curves, fits, knee, and per-slice vs global."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.contracts.events import SLICES
from models.calibration import (
    CalibrationError,
    CalibrationSet,
    QuadraticFit,
    SliceProblem,
    calibrate,
    coverage_floor,
    empirical_curve,
    fit_concave_quadratic,
    knee_point,
    solve,
    threshold_at_fpr,
)


def quad(a: float, b: float, c: float) -> QuadraticFit:
    return QuadraticFit(a=a, b=b, c=c, r2=1.0, rmse=0.0, max_abs_error=0.0, points=0, max_fpr=1.0)


def problem(
    name: str, a: float, b: float, c: float, n: float, p: float, lo: float, hi: float
) -> SliceProblem:
    return SliceProblem(name, n, p, quad(a, b, c), lo, hi)


def objective(problems: list[SliceProblem], f: dict[str, float]) -> float:
    n = sum(p.clicks for p in problems)
    return sum(p.clicks * float(p.fit(f[p.name])) for p in problems) / n


def grid_optimum(problems: list[SliceProblem], budget: float, step: float) -> float:
    """Brute force over the first two slices' FPRs on a grid; the last slice takes the best FPR left.

    Slice 3's objective is concave, so given f1, f2 its best FPR is its vertex clipped to its bounds
    and to what the budget leaves: exact in that coordinate, a grid of ``step`` in the others.
    """
    p1, p2, p3 = problems
    v = np.array([p.purchasing for p in problems])
    wv = v / v.sum()
    wn = np.array([p.clicks for p in problems]) / sum(p.clicks for p in problems)
    g1 = np.r_[np.arange(p1.lower, p1.upper, step), p1.upper]
    g2 = np.r_[np.arange(p2.lower, p2.upper, step), p2.upper]
    f1, f2 = np.meshgrid(g1, g2, indexing="ij")
    left = (budget - wv[0] * f1 - wv[1] * f2) / wv[2]
    vertex = -p3.fit.b / (2 * p3.fit.c) if p3.fit.c < 0 else np.inf
    f3 = np.minimum(left, np.clip(vertex, p3.lower, p3.upper))
    ok = f3 >= p3.lower - 1e-12
    val = wn[0] * p1.fit(f1) + wn[1] * p2.fit(f2) + wn[2] * p3.fit(f3)
    return float(np.max(np.where(ok, val, -np.inf)))


def kkt_optimum(problems: list[SliceProblem], budget: float) -> float:
    """Exact optimum by bisection on the budget's multiplier (water-filling), an independent check."""
    n = np.array([p.clicks for p in problems])
    v = np.array([p.purchasing for p in problems])
    wn, wv = n / n.sum(), v / v.sum()
    b = np.array([p.fit.b for p in problems])
    c = np.array([p.fit.c for p in problems])
    lo = np.array([p.lower for p in problems])
    hi = np.array([p.upper for p in problems])

    def at(lam: float) -> np.ndarray:
        # argmax of wn (b f + c f^2) - lam wv f on [lo, hi], per slice
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            free = np.where(c < 0, (lam * wv / wn - b) / (2 * c), np.where(b * wn > lam * wv, hi, lo))
        return np.clip(free, lo, hi)

    if wv @ at(0.0) <= budget:
        f = at(0.0)
    else:
        low, high = 0.0, 1e6
        for _ in range(200):
            mid = (low + high) / 2
            low, high = (mid, high) if wv @ at(mid) > budget else (low, mid)
        # Linear slices jump at the critical multiplier: mix both sides to spend the budget exactly.
        over, under = at(low), at(high)
        gap = wv @ (over - under)
        f = under + (over - under) * ((budget - wv @ under) / gap if gap > 0 else 0.0)
    return objective(problems, {p.name: float(x) for p, x in zip(problems, f, strict=True)})


THREE = [
    problem("desktop/in", 0.02, 2.0, -6.0, 30_000, 900, 0.004, 0.25),
    problem("mobile/anon", 0.10, 3.0, -20.0, 50_000, 400, 0.0, 0.25),
    problem("app/anon", 0.25, 1.2, -1.0, 20_000, 100, 0.02, 0.25),
]


@pytest.mark.parametrize("budget", [0.005, 0.01, 0.02, 0.05, 0.1, 0.2])
def test_optimiser_agrees_with_brute_force_grid_within_1e3(budget: float) -> None:
    sol = solve(THREE, budget)
    if sum(p.purchasing * p.lower for p in THREE) / sum(p.purchasing for p in THREE) > budget:
        assert not sol.feasible
        return
    assert sol.feasible and sol.fpr is not None and sol.objective is not None
    best = grid_optimum(THREE, budget, step=2.5e-4)
    assert abs(sol.objective - best) <= 1e-3, (sol.objective, best)
    assert sol.objective >= best - 1e-6  # the grid can only be worse, up to its resolution
    assert abs(sol.objective - kkt_optimum(THREE, budget)) <= 1e-7
    # Constraints hold.
    assert sol.combined_fpr is not None and sol.combined_fpr <= budget + 1e-9
    for p in THREE:
        assert p.lower - 1e-12 <= sol.fpr[p.name] <= p.upper + 1e-12


slice_problems = st.lists(
    st.tuples(
        st.floats(0.0, 0.3),  # a
        st.floats(0.05, 5.0),  # b
        st.floats(-30.0, 0.0),  # c
        st.floats(100, 100_000),  # clicks
        st.floats(10, 5_000),  # purchasing
        st.floats(0.0, 0.05),  # lower
        st.floats(0.06, 0.3),  # upper
    ),
    min_size=1,
    max_size=6,
)


@settings(max_examples=150, deadline=None)
@given(slice_problems, st.floats(0.001, 0.2))
def test_optimiser_is_optimal_on_random_quadratic_curves(raw: list[tuple[float, ...]], budget: float) -> None:
    problems = [problem(SLICES[i], *args) for i, args in enumerate(raw)]
    floor = sum(p.purchasing * p.lower for p in problems) / sum(p.purchasing for p in problems)
    sol = solve(problems, budget)
    if floor > budget + 1e-12:  # the solver's own slack on "floors within budget"
        assert not sol.feasible and sol.fpr is None and sol.blocking
        assert "infeasible" in sol.message
        return
    assert sol.feasible and sol.fpr is not None and sol.objective is not None
    assert sol.combined_fpr is not None and sol.combined_fpr <= budget + 1e-9
    for p in problems:
        assert p.lower - 1e-12 <= sol.fpr[p.name] <= p.upper + 1e-12
    assert sol.objective == pytest.approx(kkt_optimum(problems, budget), abs=1e-6)
    if len(problems) == 3:  # never worse than any point of a (coarse) grid
        assert sol.objective >= grid_optimum(problems, budget, step=1e-3) - 1e-9


def test_infeasible_budget_is_reported_with_the_slice_that_cannot_meet_its_floor() -> None:
    problems = [
        problem("desktop/in", 0.0, 1.0, -1.0, 1000, 500, 0.001, 0.2),
        problem("app/anon", 0.0, 1.0, -1.0, 1000, 500, 0.15, 0.2),  # its floor alone costs 0.075
    ]
    sol = solve(problems, 0.05)
    assert not sol.feasible
    assert sol.blocking == ("app/anon",)
    assert "app/anon" in sol.message and "0.1500" in sol.message
    assert sol.floor_fpr == pytest.approx(0.0755)


@pytest.mark.parametrize("budget", [0.0, 1.0, -0.1, 1.5, math.nan, math.inf])
def test_budget_outside_the_open_unit_interval_is_refused(budget: float) -> None:
    with pytest.raises(CalibrationError, match="fpr budget"):
        solve(THREE, budget)


# --- empirical curves ----------------------------------------------------------------------------


def test_empirical_curve_and_thresholds_by_hand() -> None:
    scores = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4]
    purchasing = [False, True, False, False, True, False]
    shc = [30, 30, 1, 1, 1, 30]
    curve = empirical_curve(scores, purchasing, shc, k=20)
    assert curve.purchasing == 2 and curve.robotic == 3 and curve.clicks == 6
    assert curve.fpr.tolist() == [0.0, 0.0, 0.5, 0.5, 0.5, 1.0, 1.0]
    assert curve.ivr.tolist() == pytest.approx([0, 1 / 6, 2 / 6, 3 / 6, 4 / 6, 5 / 6, 1])
    # FPR budget 0.4: only the 0.9 click may go; the threshold lies between 0.9 and 0.8.
    t, j = threshold_at_fpr(curve, 0.4)
    assert j == 1 and t == pytest.approx(0.85)
    # 0.5: everything above the second purchasing click (0.5).
    t, j = threshold_at_fpr(curve, 0.5)
    assert j == 4 and t == pytest.approx(0.55)
    assert threshold_at_fpr(curve, 1.0) == (pytest.approx(0.2), 6)
    assert threshold_at_fpr(curve, 0.0)[1] == 1
    # Coverage 2/3 needs the 0.8 click: FPR 0.5.
    assert coverage_floor(curve, 0.6) == (0.5, 2)
    assert coverage_floor(curve, 0.0) == (0.0, 0)
    fx, iy = curve.staircase()
    assert fx.tolist() == [0.0, 0.5, 1.0]
    assert iy.tolist() == pytest.approx([1 / 6, 4 / 6, 1.0])


@settings(max_examples=100, deadline=None)
@given(
    # Below 1: a threshold is at most 1, so a score of exactly 1.0 is always invalid (documented).
    st.lists(st.tuples(st.floats(0, 0.99), st.booleans(), st.integers(0, 40)), min_size=1, max_size=300),
    st.floats(0, 1),
)
def test_threshold_keeps_empirical_fpr_within_target_and_invalidates_as_much_as_possible(
    rows: list[tuple[float, bool, int]], target: float
) -> None:
    scores = np.array([r[0] for r in rows], dtype=np.float32).astype(np.float64)  # as the scorer gives
    purchasing = np.array([r[1] for r in rows])
    shc = np.array([r[2] for r in rows])
    curve = empirical_curve(scores, purchasing, shc)
    t, j = threshold_at_fpr(curve, target)
    assert 0.0 <= t <= 1.0
    invalid = scores >= t
    assert invalid.sum() == pytest.approx(curve.ivr[j] * len(scores))
    if purchasing.any():
        fpr = invalid[purchasing].mean()
        assert fpr <= target + 1e-12
        # One more distinct score would break the budget (or there is none left).
        if invalid.sum() < len(scores):
            nxt = scores[~invalid].max()
            assert (scores[purchasing] >= nxt).mean() > target
    # Thresholds fall as the target rises.
    assert threshold_at_fpr(curve, min(1.0, target + 0.1))[0] <= t


# --- fits and knee --------------------------------------------------------------------------------


def test_fit_recovers_an_exact_concave_quadratic() -> None:
    f = np.linspace(0, 0.3, 50)
    fit = fit_concave_quadratic(f, 0.05 + 2.0 * f - 3.0 * f * f, max_fpr=0.3)
    assert (fit.a, fit.b, fit.c) == pytest.approx((0.05, 2.0, -3.0), abs=1e-9)
    assert fit.r2 == pytest.approx(1.0) and fit.rmse < 1e-9


def test_fit_of_convex_points_is_clamped_to_a_line() -> None:
    f = np.linspace(0, 1, 30)
    fit = fit_concave_quadratic(f, f * f, max_fpr=1.0)
    assert fit.c == 0.0
    assert fit.r2 < 1.0


def test_knee_is_where_the_curve_bends() -> None:
    # 100 purchasing clicks; 400 bots above all of them, then 20 other clicks per purchasing click.
    scores = np.r_[np.linspace(0.99, 0.9, 400), np.linspace(0.89, 0.0, 2100)]
    purchasing = np.zeros(len(scores), bool)
    purchasing[400 + 10 :: 21] = True
    curve = empirical_curve(scores, purchasing, np.zeros(len(scores)))
    j = knee_point(curve)
    assert curve.fpr[j] == 0.0  # the top of the jump: beyond it IVR grows no faster than FPR
    assert curve.ivr[j] == pytest.approx(410 / len(scores))
    # A bend in the middle: above FPR 0.3, IVR barely grows.
    f = np.linspace(0, 1, 101)
    ivr = np.minimum(f * 2, 0.6 + (f - 0.3) * 0.2)
    assert knee_from_points(f, ivr) == pytest.approx(0.3, abs=0.011)


def knee_from_points(f: np.ndarray, ivr: np.ndarray) -> float:
    """Build clicks whose staircase is (f, ivr) with 100 purchasing clicks; return the knee's FPR."""
    scores, purchasing = [], []
    score, prev = 1.0, 0.0
    total = 10_000
    for iv in ivr[1:]:  # one purchasing click per FPR step of 0.01
        for _ in range(round((iv - prev) * total) - 1):
            score -= 1e-5
            scores.append(score)
            purchasing.append(False)
        score -= 1e-5
        scores.append(score)
        purchasing.append(True)
        prev = iv
    curve = empirical_curve(np.array(scores), np.array(purchasing), np.zeros(len(scores)))
    return float(curve.fpr[knee_point(curve)])


# --- the whole calibration --------------------------------------------------------------------------


def synthetic(seed: int = 1, n: int = 120_000) -> CalibrationSet:
    """Six slices where the model separates bots from humans with different strength per slice."""
    rng = np.random.default_rng(seed)
    sl = rng.choice(SLICES, n)
    bot = rng.random(n) < 0.25
    sep = {s: 1.0 + i * 0.4 for i, s in enumerate(SLICES)}
    mu = np.array([sep[s] for s in sl])
    z = np.where(bot, rng.normal(mu, 1), rng.normal(0, 1, n))
    scores = (1 / (1 + np.exp(-(z - 1.5)))).astype(np.float32)
    purchasing = ~bot & (rng.random(n) < 0.05)
    shc = np.where(bot & (rng.random(n) < 0.6), 30, 3)
    return CalibrationSet(scores, sl, purchasing, shc)


def test_per_slice_beats_the_global_threshold_at_the_same_fpr() -> None:
    data = synthetic()
    res = calibrate(data, 0.02, 0.0)
    assert res.feasible and res.per_slice is not None and res.global_same_fpr is not None
    assert res.per_slice.overall("fpr") <= 0.02 + 1e-12
    assert res.global_same_fpr.overall("fpr") <= res.per_slice.overall("fpr") + 1e-12
    gain = res.gain()
    assert gain is not None and gain["ivr"] > 0 and gain["coverage"] > 0
    assert set(res.thresholds) == set(SLICES)
    assert len(set(res.thresholds.values())) == len(SLICES)
    # The thresholds reproduce the reported per-slice rates.
    invalid = data.scores >= np.array([res.thresholds[s] for s in data.slices])
    assert invalid.mean() == pytest.approx(res.per_slice.overall("ivr"), abs=1e-6)
    doc = res.to_dict()
    assert doc["feasible"] and doc["gain_vs_global_same_fpr"]["ivr"] > 0
    for s in SLICES:
        assert doc["slices"][s]["fit"]["r2"] > 0.8


def test_coverage_floors_are_met() -> None:
    res = calibrate(synthetic(), 0.05, 0.25)
    assert res.feasible and res.per_slice is not None
    for s in SLICES:
        assert res.per_slice.rates[s]["coverage"] >= 0.25
    # desktop/in's floor binds: without it, that slice would sit lower.
    free = calibrate(synthetic(), 0.05, 0.0)
    assert free.per_slice is not None
    assert free.per_slice.rates["desktop/in"]["coverage"] < 0.25


def test_a_per_slice_cap_bounds_every_slice_fpr() -> None:
    data = synthetic()
    free = calibrate(data, 0.05, 0.0)
    assert free.per_slice is not None
    assert max(free.per_slice.rates[s]["fpr"] for s in SLICES) > 0.06
    capped = calibrate(data, 0.05, 0.0, max_slice_fpr=0.06)
    assert capped.feasible and capped.per_slice is not None
    assert max(capped.per_slice.rates[s]["fpr"] for s in SLICES) <= 0.06
    assert capped.to_dict()["max_slice_fpr"] == 0.06
    # A coverage floor above the cap is infeasible, and says which slice.
    blocked = calibrate(data, 0.05, 0.25, max_slice_fpr=0.01)
    assert not blocked.feasible and "desktop/in" in blocked.blocking and "cap" in blocked.message


def test_infeasible_calibration_is_reported_not_raised() -> None:
    res = calibrate(synthetic(), 0.001, 0.95)
    assert not res.feasible
    assert res.per_slice is None and res.thresholds == {}
    assert res.blocking and all(b in SLICES for b in res.blocking)
    assert "cannot all meet their floor" in res.message
    assert res.to_dict()["blocking_slices"] == list(res.blocking)


def test_coarser_slicing_writes_the_group_threshold_to_each_slice() -> None:
    res = calibrate(synthetic(), 0.02, 0.0, slicing="device")
    assert set(res.slices) == {"desktop", "mobile", "app"}
    assert res.thresholds["desktop/in"] == res.thresholds["desktop/anon"]
    assert res.thresholds["app/in"] != res.thresholds["desktop/in"]


def test_a_slice_with_too_few_purchasing_clicks_uses_the_default() -> None:
    data = synthetic(n=20_000)
    keep = ~((data.slices == "app/in") & data.purchasing)
    thin = CalibrationSet(
        data.scores[keep], data.slices[keep], data.purchasing[keep], data.session_hour_clicks[keep]
    )
    res = calibrate(thin, 0.02, 0.0)
    assert res.slices["app/in"].skipped is not None
    assert "app/in" not in res.thresholds
    assert res.per_slice is not None
    assert res.per_slice.thresholds["app/in"] == res.global_at_budget.thresholds["app/in"]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"budget": 0.0}, "fpr budget"),
        ({"budget": 1.0}, "fpr budget"),
        ({"min_coverage": 1.2}, "minimum coverage"),
        ({"min_coverage": -0.1}, "minimum coverage"),
        ({"slicing": "country"}, "unknown slicing"),
        ({"max_refits": -1}, "max_refits"),
    ],
)
def test_bad_arguments_are_refused(kwargs: dict[str, object], match: str) -> None:
    args: dict[str, object] = {"budget": 0.02, "min_coverage": 0.1}
    args.update(kwargs)
    with pytest.raises(CalibrationError, match=match):
        calibrate(synthetic(n=5000), **args)  # type: ignore[arg-type]


def test_bad_calibration_sets_are_refused() -> None:
    with pytest.raises(CalibrationError, match="empty"):
        CalibrationSet(np.zeros(0), np.zeros(0, str), np.zeros(0, bool), np.zeros(0))
    with pytest.raises(CalibrationError, match="unknown slices"):
        CalibrationSet(np.zeros(1), np.array(["tv/in"]), np.zeros(1, bool), np.zeros(1))
    with pytest.raises(CalibrationError, match="length"):
        CalibrationSet(np.zeros(2), np.array(["app/in"]), np.zeros(2, bool), np.zeros(2))
    with pytest.raises(CalibrationError, match="non-finite"):
        CalibrationSet(np.array([np.nan]), np.array(["app/in"]), np.zeros(1, bool), np.zeros(1))
    no_purchase = CalibrationSet(np.zeros(3), np.array(["app/in"] * 3), np.zeros(3, bool), np.zeros(3))
    with pytest.raises(CalibrationError, match="no purchasing"):
        calibrate(no_purchase, 0.02, 0.1)
