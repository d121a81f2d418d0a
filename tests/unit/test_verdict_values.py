"""The live verdicts' JSON: every field the brief lists, the exact float32 vector, one wire layout."""

from __future__ import annotations

import numpy as np
import orjson
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from agents.score import verdict_values
from app.contracts.events import Click, Verdict, format_time, parse_verdict
from app.features import FEATURE_VERSION, N_FEATURES

T0 = 1_763_800_000_123


def click(i: int, *, user: str | None = "u-1") -> Click:
    return Click(
        click_id=f"c-{i}",
        event_time_ms=T0 + i,
        ip="192.0.2.7",
        session_id="s-1",
        user_id=user,
        logged_in=user is not None,
        device_type="app",
        user_agent="ua",
        ad_id="ad-1",
        campaign_id="cmp-1",
        advertiser_id="adv-1",
    )


float32s = st.floats(width=32, allow_nan=False, allow_infinity=False)


@given(arrays(np.float32, (3, N_FEATURES), elements=float32s))
@settings(max_examples=200)
def test_live_verdicts_carry_the_exact_float32_vector(vectors: np.ndarray) -> None:
    clicks = [click(0), click(1, user=None), click(2)]
    scores = np.array([0.1, 0.95, 0.5], dtype=np.float32)
    invalid = np.array([False, True, False])
    thresholds = np.array([0.6, 0.7, 0.5])
    values = verdict_values(clicks, vectors, scores, invalid, thresholds, "m-1", T0 + 99)
    verdicts = [parse_verdict(v) for v in values]
    for c, v, vector, score, bad, threshold in zip(
        clicks, verdicts, vectors, scores, invalid, thresholds, strict=True
    ):
        assert np.array_equal(np.asarray(v.features, dtype=np.float32), vector)
        assert (v.click_id, v.event_time_ms, v.slice) == (c.click_id, c.event_time_ms, c.slice)
        assert (v.score, v.threshold) == (float(score), float(threshold))
        assert v.decision == ("invalid" if bad else "valid")
        assert v.category == ("SIVT" if bad else None)
        assert v.reasons == (["model-score-above-slice-threshold"] if bad else [])
        assert (v.model_version, v.revision, v.source, v.job_id) == ("m-1", 0, "live", None)
        assert (v.feature_version, v.decided_at_ms) == (FEATURE_VERSION, T0 + 99)


def test_live_verdict_has_the_layout_of_the_verdict_record() -> None:
    vector = np.linspace(0, 1, N_FEATURES, dtype=np.float32)
    [value] = verdict_values(
        [click(0)], vector[None, :], np.array([0.2]), np.array([False]), np.array([0.5]), "m-1", T0
    )
    record = Verdict(
        "c-0", T0, "valid", 0.2, 0.5, "app/in", "m-1", 0, "live", T0, FEATURE_VERSION, vector.tolist()
    )
    live, written = orjson.loads(value), orjson.loads(record.to_json())
    assert list(live) == list(written)  # same fields, same order
    assert {k: v for k, v in live.items() if k != "features"} == {
        k: v for k, v in written.items() if k != "features"
    }
    assert live["decided_at"] == format_time(T0)
    # shortest float32 form: fewer bytes, the same float32 values
    assert len(value) < len(record.to_json())
    assert np.array_equal(np.asarray(live["features"], dtype=np.float32), vector)
