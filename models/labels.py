"""Weak labels, as in SLIDR, and what to do with clicks whose label is not final yet.

The rule (:func:`weak_labels`): a click is **human** (``y = 0``) when

* a purchase names it and happened within the attribution window after it
  (``0 <= purchase_time - click_time <= attribution_window_ms``), as far as purchases are known at
  ``horizon_ms`` (the time up to which the purchase stream has been read), or
* it comes from an account whose RFM score, **as of the click's time** (the newest ``account-rfm``
  update at or before the click; a later update would leak the future), is at least ``rfm_high``.

Every other click is **non-human** (``y = 1``, the class the models score). Only logged-in clicks
have an account here; anonymous clicks can only be human through a purchase.

Late purchases. A purchase arrives minutes to days after its click (the simulator's delays have a
median of 40 minutes, 98.5 % within 24 h). At ``horizon_ms`` a click younger than the window that has
no purchase yet may still get one, so its "non-human" is provisional. Human labels are final as soon
as they are observed. :func:`weak_labels` marks ``complete`` = human, or the window has closed
(``click_time + window <= horizon``). Two policies (:data:`LATE_POLICIES`):

* ``"holdout"`` (the default): incomplete clicks get training weight 0. They stay in the dataset
  (for evaluation of later days and for auditing) but never teach the model. Simple and unbiased;
  costs the newest ``window`` of data.
* ``"weight"``: the importance-weighting idea of the delayed-feedback note
  (``../shared/reference/delayed-labels-and-uncertainty.txt``): an incomplete non-human click of age
  ``e`` keeps weight ``1 - q(e)``, where ``q(e)`` is the probability that a click with no purchase
  after ``e`` still converts within the window, ``q(e) = r (1 - F(e)) / (1 - r F(e))``, with ``r``
  the share of complete clicks that purchase within the window and ``F`` the empirical CDF of their
  purchase delays (:class:`DelayModel`, fitted on the complete part of the same data). This is the
  ratio P/Q restricted to one pre-conversion signal (the age); ``r`` is global, not per click.

Defaults (:class:`LabelRule`): a 24 h window (98.5 % of the simulator's purchases) and
``rfm_high = 0.6`` (about a quarter of logged-in human clicks; every stolen-account bot passes it too,
which is the weak label's known blind spot, kept on purpose).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "HUMAN",
    "NON_HUMAN",
    "LATE_POLICIES",
    "DEFAULT_ATTRIBUTION_WINDOW_MS",
    "DEFAULT_RFM_HIGH",
    "LabelRule",
    "Labels",
    "weak_labels",
    "DelayModel",
    "late_weights",
]

HUMAN: Final = 0
NON_HUMAN: Final = 1
LATE_POLICIES: Final[tuple[str, ...]] = ("holdout", "weight")
DEFAULT_ATTRIBUTION_WINDOW_MS: Final = 24 * 3_600_000
DEFAULT_RFM_HIGH: Final = 0.6


@dataclass(frozen=True, slots=True)
class LabelRule:
    """Parameters of the weak label."""

    attribution_window_ms: int = DEFAULT_ATTRIBUTION_WINDOW_MS
    rfm_high: float = DEFAULT_RFM_HIGH
    late_policy: str = "holdout"

    def __post_init__(self) -> None:
        if self.attribution_window_ms <= 0:
            raise ValueError(f"attribution window must be > 0 ms, got {self.attribution_window_ms}")
        if not 0.0 <= self.rfm_high <= 1.0:
            raise ValueError(f"rfm_high must be in [0, 1], got {self.rfm_high}")
        if self.late_policy not in LATE_POLICIES:
            raise ValueError(f"late policy {self.late_policy!r} not one of {', '.join(LATE_POLICIES)}")

    def to_dict(self) -> dict[str, object]:
        return {
            "attribution_window_ms": self.attribution_window_ms,
            "rfm_high": self.rfm_high,
            "late_policy": self.late_policy,
        }


@dataclass(frozen=True, slots=True)
class Labels:
    """Per-click label arrays (one length)."""

    #: 1 non-human, 0 human (int8)
    y: NDArray[np.int8]
    #: a purchase within the window, known at the horizon
    is_purchasing: NDArray[np.bool_]
    #: the account's RFM score at click time >= rfm_high
    high_rfm: NDArray[np.bool_]
    #: the label can no longer change (human, or the window closed before the horizon)
    complete: NDArray[np.bool_]
    #: horizon - click time, ms (how long purchases have had to arrive)
    age_ms: NDArray[np.int64]


def weak_labels(
    click_time_ms: ArrayLike,
    purchase_time_ms: ArrayLike,
    rfm_at_click: ArrayLike,
    horizon_ms: int,
    rule: LabelRule = LabelRule(),
) -> Labels:
    """Weak labels of clicks.

    ``purchase_time_ms``: per click, the time of the earliest purchase naming it, or -1 for none
    (a purchase after ``horizon_ms`` is treated as not yet known). ``rfm_at_click``: the account's
    score as of the click, nan for an anonymous click or an account without a score.
    """
    t = np.asarray(click_time_ms, dtype=np.int64).ravel()
    p = np.asarray(purchase_time_ms, dtype=np.int64).ravel()
    rfm = np.asarray(rfm_at_click, dtype=np.float64).ravel()
    if not len(t) == len(p) == len(rfm):
        raise ValueError(f"lengths differ: clicks {len(t)}, purchases {len(p)}, rfm {len(rfm)}")
    delay = p - t
    known = (p >= 0) & (p <= horizon_ms)
    is_purchasing = known & (delay >= 0) & (delay <= rule.attribution_window_ms)
    with np.errstate(invalid="ignore"):
        high_rfm = rfm >= rule.rfm_high  # nan -> False
    human = is_purchasing | high_rfm
    closed = t + rule.attribution_window_ms <= horizon_ms
    return Labels(
        y=np.where(human, HUMAN, NON_HUMAN).astype(np.int8),
        is_purchasing=is_purchasing,
        high_rfm=high_rfm,
        complete=human | closed,
        age_ms=horizon_ms - t,
    )


@dataclass(frozen=True, slots=True)
class DelayModel:
    """``r`` (purchase rate within the window) and the empirical CDF ``F`` of purchase delays."""

    window_ms: int
    rate: float
    delays_ms: NDArray[np.int64]  # sorted

    @classmethod
    def fit(
        cls, labels: Labels, click_time_ms: ArrayLike, purchase_time_ms: ArrayLike, window_ms: int
    ) -> DelayModel:
        """Fit on the clicks whose window has closed (their purchase record is complete)."""
        t = np.asarray(click_time_ms, dtype=np.int64).ravel()
        p = np.asarray(purchase_time_ms, dtype=np.int64).ravel()
        closed = labels.age_ms >= window_ms
        n = int(closed.sum())
        bought = closed & labels.is_purchasing
        rate = float(bought.sum() / n) if n else 0.0
        return cls(window_ms=window_ms, rate=rate, delays_ms=np.sort(p[bought] - t[bought]))

    def cdf(self, age_ms: ArrayLike) -> NDArray[np.float64]:
        """F(e): share of within-window purchases that came within ``e`` ms of their click."""
        a = np.asarray(age_ms, dtype=np.int64)
        if len(self.delays_ms) == 0:
            return np.ones(a.shape)
        return np.searchsorted(self.delays_ms, a, side="right") / len(self.delays_ms)

    def still_converts(self, age_ms: ArrayLike) -> NDArray[np.float64]:
        """q(e) = P(purchase within the window | none after e) = r (1 - F) / (1 - r F)."""
        f = self.cdf(age_ms)
        return self.rate * (1.0 - f) / np.maximum(1.0 - self.rate * f, 1e-12)


def late_weights(labels: Labels, policy: str, delay_model: DelayModel | None = None) -> NDArray[np.float64]:
    """Per-click training-weight multiplier for the late-purchase policy (1 for complete clicks)."""
    if policy not in LATE_POLICIES:
        raise ValueError(f"late policy {policy!r} not one of {', '.join(LATE_POLICIES)}")
    w = np.ones(len(labels.y))
    pending = ~labels.complete
    if policy == "holdout":
        w[pending] = 0.0
    else:
        if delay_model is None:
            raise ValueError("the 'weight' policy needs a DelayModel")
        w[pending] = 1.0 - delay_model.still_converts(np.maximum(labels.age_ms[pending], 0))
    return w
