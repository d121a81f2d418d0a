"""The live worker judges every click against its own slice's threshold from the manifest.

A model version is registered with six deliberately different thresholds (one per device x
logged-in slice), each set just below or just above the score that slice's click will get, so that
the decision flips if another slice's threshold (or the default) were applied. A short burst per
slice (so that the reference model scores its last click mid-range) goes through the real broker
and a real ``ivt worker`` pinned to that version.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from app.contracts.events import DEVICE_TYPES, SLICES, Click
from app.contracts.settings import Settings
from app.features import OfflineFeatureEngine
from models.registry import Registry
from models.scorer import Scorer
from models.tiny import ensure_reference_model
from tests.integration.processes import running_worker
from tests.integration.scripted import click
from tests.integration.test_live_detection import _publish, _verdicts

pytestmark = pytest.mark.integration


BURST = 8  # clicks per slice, 12 s apart: the last one scores mid-range under the reference model


def clicks_per_slice() -> dict[str, list[Click]]:
    """Per slice, one session of BURST clicks 12 s apart (own IP, session and user)."""
    out: dict[str, list[Click]] = {}
    for n, device in enumerate(DEVICE_TYPES):
        for logged_in in (True, False):
            i = len(out)
            name = f"{device}-{'in' if logged_in else 'anon'}"
            burst = [
                click(
                    f"slice-{name}-{k}",
                    12.0 * k + 0.5 * i,
                    f"192.0.2.{100 + n * 2 + int(logged_in)}",
                    f"s-slice-{name}",
                    f"slice-user-{name}" if logged_in else None,
                    device,
                )
                for k in range(BURST)
            ]
            out[burst[0].slice] = burst
    assert sorted(out) == sorted(SLICES)
    return out


def test_each_click_is_judged_against_its_own_slice_threshold(
    kafka_settings: Settings, tmp_path: Path
) -> None:
    registry = Registry(kafka_settings.registry_dir)
    base = ensure_reference_model(registry)
    scorer = Scorer.from_registry(registry, base.version, providers="cpu")
    bursts = clicks_per_slice()
    clicks = sorted((c for burst in bursts.values() for c in burst), key=lambda c: c.event_time_ms)
    engine = OfflineFeatureEngine()
    all_scores = scorer.score(np.stack([engine.process(c) for c in clicks]))
    offline = {c.click_id: float(x) for c, x in zip(clicks, all_scores, strict=True)}
    # The probe of each slice is its burst's last click.
    score_of = {s: offline[burst[-1].click_id] for s, burst in bursts.items()}
    scores = np.array(list(score_of.values()))

    # In score order, alternate: just below the click's score (invalid), just above (valid). The
    # margin is under a third of the gap between neighbouring scores, so the neighbour's threshold
    # would flip each click's decision.
    gaps = np.diff(np.sort(np.r_[scores, 0.0, 1.0]))
    assert gaps.min() > 0, f"two slices score alike: {score_of}"
    margin = float(min(gaps.min() / 3, 1e-3))
    wanted: dict[str, float] = {}
    expect_invalid: dict[str, bool] = {}
    for rank, s in enumerate(sorted(SLICES, key=score_of.__getitem__)):
        invalid = rank % 2 == 0
        wanted[s] = score_of[s] - margin if invalid else score_of[s] + margin
        expect_invalid[s] = invalid
    assert len(set(wanted.values())) == len(SLICES)
    # The default would make every click valid: only a slice's own threshold invalidates it.
    calibrated = registry.with_thresholds(
        base.version, "ref-0001-slices", wanted, default_threshold=1.0, metrics={"test": "slice thresholds"}
    )
    assert dict(calibrated.thresholds) == wanted

    settings = replace(kafka_settings, model_version=calibrated.version)
    asyncio.run(_publish(settings, clicks))
    with running_worker(settings, tmp_path / "worker.log"):
        verdicts = asyncio.run(_verdicts(settings, {c.click_id for c in clicks}))

    # Every click carries its own slice's threshold and is decided by it ...
    for c in clicks:
        v = verdicts[c.click_id]
        assert (v.slice, v.model_version) == (c.slice, calibrated.version)
        assert v.score == offline[c.click_id], c.click_id
        assert v.threshold == wanted[c.slice], c.click_id
        assert v.decision == ("invalid" if v.score >= wanted[c.slice] else "valid"), c.click_id
    # ... and each slice's probe lands on the side of its threshold that was set up for it.
    for s, burst in bursts.items():
        v = verdicts[burst[-1].click_id]
        assert v.decision == ("invalid" if expect_invalid[s] else "valid"), (s, v.score, v.threshold)
    # Any other slice's threshold would have decided at least one click differently.
    for s in SLICES:
        others = [t for o, t in wanted.items() if o != s]
        assert any((score_of[s] >= t) != expect_invalid[s] for t in others), s
