"""One simulated world: live traffic continues a history (same population, same clock), with event
time compressed by a speed factor where the realistic population is too small for the rate."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from rich.console import Console

from app.contracts.events import parse_account_rfm, parse_click, parse_purchase
from app.contracts.exceptions import ConfigError
from app.contracts.settings import Settings
from app.simulator.generator import Simulator, click_table
from app.simulator.history import iter_history, write_history
from app.simulator.live import (
    INTENDED_HEADER,
    SENT_HEADER,
    LiveOptions,
    LiveReport,
    TopicLayout,
    _Encoder,
    _send_by_event_time,
    chunk_for_speed,
    natural_rate,
    plan_speed,
    world_params,
)
from app.simulator.params import SimParams
from app.simulator.population import Population

HOUR_MS = 3_600_000
USERS = 2_000


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("world")
    manifest = write_history(out, SimParams(seed=11, users=USERS), days=1)
    return out, manifest


def _column(path: Path, name: str) -> np.ndarray:
    table = pa.Table.from_batches(list(iter_history(path, "clicks", columns=[name])))
    return table.column(name).to_numpy(zero_copy_only=False)


def test_continue_mode_uses_the_history_population_from_its_end(history: tuple[Path, dict[str, Any]]) -> None:
    path, manifest = history
    options = LiveOptions.continuing(manifest, rate=400.0, duration_s=10.0)
    assert (options.seed, options.users, options.start_ms) == (11, USERS, manifest["end_ms"])
    params = world_params(options)
    assert params.purchase_delay_scale == 1.0  # the history's delays
    sim = Simulator(params)
    tables = [click_table(params, sim.pop, out.clicks) for out in sim.run(manifest["end_ms"] + 6 * HOUR_MS)]
    live = pa.concat_tables(tables)
    t = live.column("event_time_ms").to_numpy()
    # the first click is at (or just after) the history's end, not before: the warm-up's clicks are dropped
    assert manifest["end_ms"] <= t.min() < manifest["end_ms"] + 10 * 60_000
    # same population: the accounts seen live are (mostly) accounts of the history
    live_users = {u for u in live.column("user_id").to_pylist() if u is not None}
    hist_users = {u for u in _column(path, "user_id").tolist() if u is not None}
    assert len(live_users) > 50
    assert len(live_users & hist_users) / len(live_users) > 0.5
    # and the humans are the history's humans (actor ids are user numbers)
    hist_humans = set(_column(path, "truth_actor_id")[_column(path, "truth_family") == "human"].tolist())
    live_fam = live.column("truth_family").to_numpy(zero_copy_only=False)
    live_humans = set(live.column("truth_actor_id").to_numpy()[live_fam == "human"].tolist())
    assert len(live_humans & hist_humans) / len(live_humans) > 0.5
    # ids never collide with the history's
    assert not set(live.column("click_id").to_pylist()) & set(_column(path, "click_id").tolist())


def test_continue_mode_needs_users() -> None:
    with pytest.raises(ConfigError):
        world_params(LiveOptions(start_ms=1_793_577_600_000))


def test_natural_rate_is_positive_and_scales_with_users() -> None:
    start = 1_793_577_600_000 + 14 * HOUR_MS
    small = natural_rate(SimParams(seed=3, users=2_000, start_ms=start, warmup_s=600))
    big = natural_rate(SimParams(seed=3, users=20_000, start_ms=start, warmup_s=600))
    assert small > 0
    assert 7 < big / small < 13


def test_speed_turns_the_natural_rate_into_the_target_rate(history: tuple[Path, dict[str, Any]]) -> None:
    _, manifest = history
    # a short run (under an hour of event time): sized on the rate at the start
    short = plan_speed(LiveOptions.continuing(manifest, rate=0.5, duration_s=60.0))
    assert short.window_s == 3600 and short.natural_rate == short.natural_rate_start > 0
    assert short.speed * short.natural_rate == pytest.approx(0.5)
    assert short.params.chunk_s == chunk_for_speed(short.speed, short.natural_rate)
    # a run of days of event time: sized on a day's average (the history ends at midnight, the
    # quietest hours, so the day's average is higher and the speed lower than the start's)
    long = plan_speed(LiveOptions.continuing(manifest, rate=400.0, duration_s=600.0))
    assert long.window_s == 86_400
    assert long.speed * long.natural_rate == pytest.approx(400.0)
    assert long.natural_rate > long.natural_rate_start
    fixed = plan_speed(LiveOptions.continuing(manifest, rate=400.0, speed=30.0))
    assert fixed.speed == 30.0 and fixed.params.chunk_s == 30


def test_chunk_for_speed_is_a_valid_chunk_length() -> None:
    assert chunk_for_speed(1.0, 20_000.0) == 1
    assert chunk_for_speed(500.0, 1.0) == 450
    assert chunk_for_speed(500.0, 1_000.0) == 20  # capped by clicks per chunk
    assert chunk_for_speed(50_000.0, 0.01) == 13 * 3600  # whole hours
    for speed in (0.5, 3.0, 77.0, 540.0, 4000.0):
        c = chunk_for_speed(speed, 1.0)
        SimParams(chunk_s=c)  # accepted by the simulator


class _FakeSender:
    """Records what the publisher hands over, and when."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, dict[str, bytes], int]] = []
        self.on_done: Any = None

    async def append(
        self, topic: str, partition: int, key: bytes, value: bytes, headers: list[tuple[str, bytes]], now: int
    ) -> None:
        self.sent.append((topic, value, dict(headers), now))

    async def tick(self, now: int) -> None:
        return None

    async def close(self) -> None:
        return None


def test_schedule_compresses_event_time_by_the_speed(history: tuple[Path, dict[str, Any]]) -> None:
    """Click at event time t is due at start + (t - start_ms) / speed: 3 h of event time in 1.5 s."""
    _, manifest = history
    speed = 7_200.0
    options = LiveOptions.continuing(manifest, rate=1.0, speed=speed, duration_s=1.5, progress=False)
    plan = plan_speed(options)
    params, natural = plan.params, plan.natural_rate
    start_ms = params.start_ms
    end_ms = start_ms + round(options.duration_s * speed * 1000)
    topics = TopicLayout.default(Settings.from_env(topic_prefix="w-"))
    encoder = _Encoder(params, Population(params), topics, ahead=1000, limit=2**62, end_ms=end_ms)
    encoder.start()
    sender = _FakeSender()
    report = LiveReport(target_rate=1.0, duration_s=1.5, users=USERS, speed=speed, event_start_ms=start_ms)
    try:
        asyncio.run(
            _send_by_event_time(
                sender, encoder, topics, start_ms, speed, 100, options, report, Console(quiet=True)
            )  # type: ignore[arg-type]
        )
    finally:
        encoder.stop()
    clicks = [s for s in sender.sent if s[0] == topics.clicks]
    assert report.sent == len(clicks) > 100
    ev = np.array([parse_click(v).event_time_ms for _, v, _, _ in clicks])
    intended = np.array([int(h[INTENDED_HEADER]) for _, _, h, _ in clicks])
    sent = np.array([int(h[SENT_HEADER]) for _, _, h, _ in clicks])
    assert start_ms <= ev.min() and ev.max() < end_ms
    assert np.all(np.diff(ev) >= 0)
    # every slot is start + (t - start_ms) / speed (to the rounding of a nanosecond)
    expected = report.start_ns + np.rint((ev - start_ms) * 1e6 / speed).astype(np.int64)
    assert np.abs(intended - expected).max() <= 1
    wall_span_s = (intended.max() - intended.min()) / 1e9
    assert wall_span_s == pytest.approx((ev.max() - ev.min()) / 1000 / speed, abs=1e-6)
    assert 1.0 < wall_span_s <= 1.5
    assert np.all(sent >= intended)  # never before its slot
    assert report.event_end_ms == ev.max()
    assert report.rfm_updates > 0 and natural > 0


def test_sender_merges_side_messages_by_event_time(history: tuple[Path, dict[str, Any]]) -> None:
    """Purchases are sent after their click, RFM scores at their time, within the compressed clock."""
    _, manifest = history
    speed = 20_000.0
    options = LiveOptions.continuing(manifest, rate=1.0, speed=speed, duration_s=1.0, progress=False)
    params = plan_speed(options).params
    topics = TopicLayout.default(Settings.from_env(topic_prefix="w-"))
    end_ms = params.start_ms + round(speed * 1000)
    encoder = _Encoder(params, Population(params), topics, ahead=1000, limit=2**62, end_ms=end_ms)
    encoder.start()
    sender = _FakeSender()
    report = LiveReport(target_rate=1.0, duration_s=1.0, users=USERS, speed=speed)
    try:
        asyncio.run(
            _send_by_event_time(
                sender, encoder, topics, params.start_ms, speed, 100, options, report, Console(quiet=True)
            )  # type: ignore[arg-type]
        )
    finally:
        encoder.stop()
    times, seen_clicks = [], set()
    purchases = 0
    for topic, value, _, _ in sender.sent:
        if topic == topics.clicks:
            click = parse_click(value)
            seen_clicks.add(click.click_id)
            times.append(click.event_time_ms)
        elif topic == topics.purchases:
            p = parse_purchase(value)
            assert p.click_id in seen_clicks  # after its click
            times.append(p.event_time_ms)
            purchases += 1
        else:
            times.append(parse_account_rfm(value).updated_at_ms)
    assert purchases == report.purchases > 0
    assert np.all(np.diff(np.array(times)) >= 0)
