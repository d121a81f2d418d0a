"""Metric definitions on small hand-computed examples."""

from __future__ import annotations

import math

import numpy as np
import pytest

from models.metrics import (
    ALL,
    curves_per_slice,
    decide,
    fpr,
    ivr,
    ivr_fpr_curve,
    per_slice,
    point_at_fpr,
    robotic_coverage,
    robotic_mask,
    summarize,
    threshold_for_fpr,
)

# Ten clicks. Purchasing: 0, 1. Session-hour counts: clicks 6-9 are in a session with 25 clicks
# that hour (robotic for k=20), click 5 in one with exactly 20 (not robotic: "more than k").
SCORES = np.array([0.1, 0.6, 0.2, 0.3, 0.4, 0.5, 0.7, 0.8, 0.9, 0.9])
PURCHASING = np.array([1, 1, 0, 0, 0, 0, 0, 0, 0, 0], dtype=bool)
SHC = np.array([1, 2, 3, 3, 3, 20, 25, 25, 25, 25])
SLICE = np.array(["desktop/in"] * 5 + ["mobile/anon"] * 5)


def test_ivr_fpr_coverage_by_hand() -> None:
    invalid = decide(SCORES, 0.55)  # clicks 1, 6, 7, 8, 9
    assert invalid.tolist() == [False, True, False, False, False, False, True, True, True, True]
    assert ivr(invalid) == pytest.approx(5 / 10)
    assert fpr(invalid, PURCHASING) == pytest.approx(1 / 2)
    assert robotic_mask(SHC, 20).tolist() == [False] * 6 + [True] * 4
    assert robotic_coverage(invalid, SHC, k=20) == pytest.approx(4 / 4)
    # k = 2: clicks 2..9 are robotic (8 of them), 4 of those invalid
    assert robotic_coverage(invalid, SHC, k=2) == pytest.approx(4 / 8)


def test_weighted_rates() -> None:
    invalid = np.array([True, False, True, False])
    w = np.array([3.0, 1.0, 0.0, 4.0])
    assert ivr(invalid, w) == pytest.approx(3 / 8)
    assert fpr(invalid, [True, True, False, False], w) == pytest.approx(3 / 4)


def test_nan_when_nothing_to_measure() -> None:
    assert math.isnan(fpr([True, False], [False, False]))
    assert math.isnan(robotic_coverage([True, False], [1, 1], k=5))
    assert math.isnan(ivr([]))


def test_length_mismatch_is_refused() -> None:
    with pytest.raises(ValueError, match="differ in length"):
        fpr([True, False], [True])
    with pytest.raises(ValueError):
        ivr([True], weights=[1.0, 2.0])


def test_summary_and_per_slice() -> None:
    invalid = decide(SCORES, 0.55)
    s = summarize(invalid, PURCHASING, SHC, k=20)
    assert (s.clicks, s.invalid, s.purchasing, s.purchasing_invalid, s.robotic, s.robotic_invalid) == (
        10,
        5,
        2,
        1,
        4,
        4,
    )
    by = per_slice(invalid, PURCHASING, SHC, SLICE, k=20)
    assert list(by) == ["desktop/in", "mobile/anon", ALL]
    # desktop/in: clicks 0-4, invalid {1}; purchasing {0, 1}; no robotic click
    assert by["desktop/in"].ivr == pytest.approx(1 / 5)
    assert by["desktop/in"].fpr == pytest.approx(1 / 2)
    assert math.isnan(by["desktop/in"].coverage)
    # mobile/anon: clicks 5-9, invalid {6,7,8,9}; no purchasing; robotic {6..9}
    assert by["mobile/anon"].ivr == pytest.approx(4 / 5)
    assert math.isnan(by["mobile/anon"].fpr)
    assert by["mobile/anon"].coverage == pytest.approx(1.0)
    assert by[ALL] == s
    d = by["mobile/anon"].to_dict()
    assert d["fpr"] is None and d["ivr"] == 0.8


def test_curve_by_hand() -> None:
    c = ivr_fpr_curve(SCORES, PURCHASING, SHC, k=20, max_points=None)
    # distinct scores ascending, then +inf; 0.9 appears twice (one point)
    assert c.thresholds.tolist() == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, math.inf]
    assert c.ivr.tolist() == pytest.approx([1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.0])
    assert c.fpr.tolist() == pytest.approx([1.0, 0.5, 0.5, 0.5, 0.5, 0.5, 0.0, 0.0, 0.0, 0.0])
    assert c.coverage.tolist() == pytest.approx([1, 1, 1, 1, 1, 1, 1, 0.75, 0.5, 0])
    # Every point agrees with the point-wise definitions.
    for t, iv, fp, cv in zip(c.thresholds, c.ivr, c.fpr, c.coverage, strict=True):
        inv = decide(SCORES, t)
        assert ivr(inv) == pytest.approx(iv)
        assert fpr(inv, PURCHASING) == pytest.approx(fp)
        assert robotic_coverage(inv, SHC, 20) == pytest.approx(cv)


def test_point_at_fpr() -> None:
    c = ivr_fpr_curve(SCORES, PURCHASING, SHC, k=20, max_points=None)
    assert point_at_fpr(c, 0.0) == {"threshold": 0.7, "ivr": 0.4, "fpr": 0.0, "coverage": 1.0}
    assert threshold_for_fpr(c, 0.5) == 0.2  # IVR 0.9 at FPR 0.5
    assert threshold_for_fpr(c, 1.0) == 0.1


def test_curve_downsampling_keeps_ends() -> None:
    rng = np.random.default_rng(0)
    s = rng.random(10_000)
    c = ivr_fpr_curve(s, rng.random(10_000) < 0.1, max_points=50)
    assert len(c) == 50
    assert c.ivr[0] == 1.0 and c.ivr[-1] == 0.0 and c.thresholds[-1] == math.inf
    assert np.all(np.diff(c.thresholds) > 0) and np.all(np.diff(c.ivr) <= 0)
    assert np.all(np.isnan(c.coverage))


def test_curves_per_slice() -> None:
    cs = curves_per_slice(SCORES, PURCHASING, SLICE, SHC, k=20, max_points=None)
    assert list(cs) == ["desktop/in", "mobile/anon", ALL]
    assert cs["desktop/in"].thresholds.tolist() == [0.1, 0.2, 0.3, 0.4, 0.6, math.inf]
    assert np.all(np.isnan(cs["mobile/anon"].fpr))
