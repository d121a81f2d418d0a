"""The weak label rule, late purchases and the two late-label policies."""

from __future__ import annotations

import math

import numpy as np
import pytest

from models.labels import HUMAN, NON_HUMAN, DelayModel, LabelRule, late_weights, weak_labels

H = 3_600_000
RULE = LabelRule(attribution_window_ms=24 * H, rfm_high=0.6)
NAN = math.nan


def test_rule_by_case() -> None:
    horizon = 100 * H
    clicks = [0, 0, 0, 0, 0, 0, 0]
    purchases = [
        5 * H,  # within the window: human
        24 * H,  # exactly at the window's end: human
        24 * H + 1,  # just after the window: not purchasing
        -1,  # no purchase
        -1,  # no purchase, high RFM: human
        -1,  # no purchase, RFM just below: non-human
        -5,  # garbage (before the click): ignored
    ]
    rfm = [NAN, NAN, NAN, NAN, 0.6, 0.5999, NAN]
    lab = weak_labels(clicks, purchases, rfm, horizon, RULE)
    assert lab.y.tolist() == [HUMAN, HUMAN, NON_HUMAN, NON_HUMAN, HUMAN, NON_HUMAN, NON_HUMAN]
    assert lab.is_purchasing.tolist() == [True, True, False, False, False, False, False]
    assert lab.high_rfm.tolist() == [False, False, False, False, True, False, False]
    assert lab.complete.all()


def test_late_purchase_makes_label_incomplete_until_window_closes() -> None:
    # A click at t=90h; its purchase comes at t=101h; we read purchases up to the horizon.
    clicks, purchase = [90 * H], [101 * H]
    early = weak_labels(clicks, purchase, [NAN], 100 * H, RULE)
    assert early.y.tolist() == [NON_HUMAN]  # the purchase is not known yet
    assert early.complete.tolist() == [False]  # 10 h old < 24 h window: provisional
    assert early.age_ms.tolist() == [10 * H]
    later = weak_labels(clicks, purchase, [NAN], 110 * H, RULE)
    assert later.y.tolist() == [HUMAN] and later.complete.tolist() == [True]
    # Without a purchase the label becomes complete once the window has closed.
    assert weak_labels(clicks, [-1], [NAN], 114 * H, RULE).complete.tolist() == [True]
    assert weak_labels(clicks, [-1], [NAN], 114 * H - 1, RULE).complete.tolist() == [False]


def test_human_label_is_final_even_when_young() -> None:
    lab = weak_labels([99 * H, 99 * H], [99 * H + 60_000, -1], [NAN, 0.9], 100 * H, RULE)
    assert lab.y.tolist() == [HUMAN, HUMAN]
    assert lab.complete.tolist() == [True, True]


def test_holdout_policy_zeroes_incomplete_rows() -> None:
    lab = weak_labels([0, 90 * H, 95 * H], [-1, -1, 95 * H + 1], [NAN, NAN, NAN], 100 * H, RULE)
    assert late_weights(lab, "holdout").tolist() == [1.0, 0.0, 1.0]


def test_weight_policy_matches_formula() -> None:
    # Complete history: 10 clicks closed, 2 purchased (delays 1 h and 3 h): r = 0.2, F(2h) = 0.5.
    t = np.array([0] * 10 + [99 * H])
    p = np.array([1 * H, 3 * H] + [-1] * 8 + [-1])
    lab = weak_labels(t, p, np.full(11, NAN), 101 * H, RULE)  # last click is 2 h old
    dm = DelayModel.fit(lab, t, p, RULE.attribution_window_ms)
    assert dm.rate == pytest.approx(0.2)
    assert dm.cdf([2 * H]).tolist() == [0.5]
    q = 0.2 * 0.5 / (1 - 0.2 * 0.5)
    w = late_weights(lab, "weight", dm)
    assert w[:10].tolist() == [1.0] * 10
    assert w[10] == pytest.approx(1 - q)
    # Older than every observed delay: nothing more is expected, full weight.
    assert dm.still_converts([5 * H]).tolist() == [0.0]


def test_bad_rule_is_refused() -> None:
    with pytest.raises(ValueError):
        LabelRule(attribution_window_ms=0)
    with pytest.raises(ValueError):
        LabelRule(rfm_high=1.5)
    with pytest.raises(ValueError):
        LabelRule(late_policy="ignore")
