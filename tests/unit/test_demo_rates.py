"""The demo's live IVR/FPR join of verdicts and purchases, by hand."""

from __future__ import annotations

import math

from app.cli.demo import LiveRates


def test_join_in_either_order_and_duplicates_ignored() -> None:
    r = LiveRates()
    r.verdict("c1", "desktop/anon", True, "m1")
    r.verdict("c2", "desktop/anon", False, "m1")
    r.purchase("c3")  # its verdict comes later
    r.verdict("c3", "mobile/in", True, "m1")
    r.purchase("c2")
    r.purchase("c2")  # a second purchase of the same click counts once
    r.verdict("c1", "desktop/anon", False, "m2")  # a later revision does not replace the live one
    n, ivr, p, fpr = r.overall()
    assert (n, p) == (3, 2)
    assert ivr == 2 / 3 and fpr == 1 / 2
    assert r.purchasing == {"mobile/in": 1, "desktop/anon": 1}
    assert r.purchasing_invalid == {"mobile/in": 1, "desktop/anon": 0}
    assert r.model_versions == {"m1"}


def test_nothing_yet() -> None:
    n, ivr, p, fpr = LiveRates().overall()
    assert n == 0 and p == 0 and math.isnan(ivr) and math.isnan(fpr)
