"""``ivt replay submit|status|list`` against the real broker and a real replay worker."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from app.cli.main import cli
from app.contracts.events import SLICES, Verdict
from app.contracts.settings import Settings
from app.features import FEATURE_VERSION
from models.registry import Registry
from models.scorer import Scorer
from models.tiny import REFERENCE_VERSION, ensure_reference_model
from tests.integration.test_replay import _clicks_end, _many_clicks, _offline, _publish_fast, replay_worker

pytestmark = pytest.mark.integration


def test_submit_follow_status_and_list(
    kafka_settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = Registry(kafka_settings.registry_dir)
    ensure_reference_model(registry)
    registry.with_thresholds(REFERENCE_VERSION, "bad", {s: 0.0 for s in SLICES if s.startswith("desktop")})
    bad = Scorer.from_registry(registry, "bad", providers="cpu")
    clicks = _many_clicks(3000)
    scored = _offline(clicks, bad)
    live = [
        Verdict(
            c.click_id,
            c.event_time_ms,
            "invalid" if scored[c.click_id][2] else "valid",
            scored[c.click_id][1],
            0.0,
            c.slice,
            "bad",
            0,
            "live",
            c.event_time_ms,
            FEATURE_VERSION,
            scored[c.click_id][0].tolist(),
        )
        for c in clicks
    ]
    asyncio.run(_publish_fast(kafka_settings, clicks, live))
    for key, value in kafka_settings.to_env().items():
        monkeypatch.setenv(key, value)
    offsets = ",".join(f"{p}:0-{end}" for p, end in _clicks_end(kafka_settings).items() if end)
    runner = CliRunner()

    refused = runner.invoke(cli, ["replay", "submit", "--model", "nope", "--offsets", offsets])
    assert refused.exit_code == 1 and "unknown model version 'nope'" in refused.output
    unknown = runner.invoke(cli, ["replay", "status", "no-such-job"])
    assert unknown.exit_code == 1 and "no replay job 'no-such-job'" in unknown.output

    with replay_worker(kafka_settings, tmp_path / "replay.log"):
        args = ["replay", "submit", "--model", REFERENCE_VERSION, "--offsets", offsets, "--job-id", "cli-1"]
        done = runner.invoke(cli, [*args, "--follow"])
        assert done.exit_code == 0, done.output
        assert "submitted cli-1" in done.output and "IVR" in done.output and "flipped" in done.output
        status = runner.invoke(cli, ["replay", "status", "cli-1", "--json"])
        assert status.exit_code == 0, status.output
        doc = orjson.loads(status.output)
        assert doc["state"] == "done" and doc["counters"]["read"] == len(clicks)
        assert doc["counters"]["published"] == doc["counters"]["flipped_to_valid"] > 0
        assert doc["summary"]["slices"]["desktop/in"]["before"]["ivr"] == 1.0
        listing = runner.invoke(cli, ["replay", "list"])
        assert listing.exit_code == 0 and "cli-1" in listing.output and "done" in listing.output
        clash = runner.invoke(cli, [*args[:-2], "--job-id", "cli-1", "--mode", "recompute"])
        assert clash.exit_code == 1 and "another spec" in clash.output
