"""A history published to Kafka (every click once, with its id; purchases after their clicks), and live
traffic continuing it (same population, event time from its end, compressed)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from aiokafka import AIOKafkaConsumer
from rich.console import Console
from typer.testing import CliRunner

from app.cli.simulate import simulate_cli
from app.contracts.events import format_time, parse_account_rfm, parse_click, parse_purchase
from app.contracts.settings import Settings
from app.contracts.topics import ACCOUNT_RFM, CLICKS, PURCHASES
from app.simulator.history import iter_history, write_history
from app.simulator.live import LiveOptions, publish_live
from app.simulator.params import SimParams
from app.simulator.publish_history import count_clicks, publish_history

pytestmark = pytest.mark.integration

DAY_MS = 86_400_000


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("history")
    return out, write_history(out, SimParams(seed=9, users=300), days=2)


async def _read(settings: Settings, topics: list[str], expected: int, timeout_s: float = 30.0) -> list[Any]:
    consumer = AIOKafkaConsumer(
        *topics,
        bootstrap_servers=settings.bootstrap_servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    records: list[Any] = []
    try:
        deadline = time.monotonic() + timeout_s
        while len(records) < expected and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500, max_records=10_000)
            for msgs in batch.values():
                records.extend(msgs)
        extra = await consumer.getmany(timeout_ms=1000)  # duplicates would show here
        records.extend(m for msgs in extra.values() for m in msgs)
    finally:
        await consumer.stop()
    return records


def test_publish_history_sends_every_click_once_in_event_time_order(
    kafka_settings: Settings, history: tuple[Path, dict[str, Any]]
) -> None:
    path, manifest = history
    counts = manifest["counts"]
    seen: list[int] = []
    report = asyncio.run(publish_history(kafka_settings, path, progress=seen.append, batch_rows=2_000))
    assert report.errors == 0, report.first_error
    assert report.clicks == report.acked == counts["clicks"] > 1_000
    assert report.purchases == counts["purchases"] > 0
    assert report.rfm_updates == counts["account_rfm"] > 0
    assert report.clicks_by_family == counts["clicks_by_family"]
    assert len(seen) > 2 and seen[-1] == counts["clicks"] == count_clicks(path)
    assert seen == sorted(seen)

    names = [kafka_settings.topic(t) for t in (CLICKS, PURCHASES, ACCOUNT_RFM)]
    records = asyncio.run(_read(kafka_settings, names, expected=report.messages))
    assert len(records) == report.messages
    clicks = [r for r in records if r.topic == names[0]]
    purchases = [r for r in records if r.topic == names[1]]
    rfm = [r for r in records if r.topic == names[2]]

    # every click of the history, once, with its id, keyed by IP
    history_ids = pa.concat_tables(
        pa.Table.from_batches([b]) for b in iter_history(path, "clicks", columns=["click_id"])
    ).column("click_id")
    wire = [parse_click(r.value) for r in clicks]
    assert sorted(c.click_id for c in wire) == sorted(history_ids.to_pylist())
    assert all(r.key == c.ip.encode() for r, c in zip(clicks, wire, strict=True))
    # the producer sent in merged event-time order: a purchase's record is no older than its click's,
    # and each RFM update's user key matches its value
    click_sent = {c.click_id: (r.timestamp, c.event_time_ms) for r, c in zip(clicks, wire, strict=True)}
    for r in purchases:
        p = parse_purchase(r.value)
        assert r.key == p.click_id.encode()
        ts, click_ms = click_sent[p.click_id]
        assert r.timestamp >= ts and p.event_time_ms > click_ms
    for r in rfm:
        assert parse_account_rfm(r.value).user_id == r.key.decode()
    # within a partition, event times only move forward (the merged read order is the history's)
    last: dict[int, int] = {}
    for r, c in zip(clicks, wire, strict=True):
        assert c.event_time_ms >= last.get(r.partition, 0)
        last[r.partition] = c.event_time_ms


def test_publish_history_window(kafka_settings: Settings, history: tuple[Path, dict[str, Any]]) -> None:
    path, manifest = history
    lo = manifest["start_ms"] + DAY_MS + 6 * 3_600_000
    hi = lo + 3 * 3_600_000
    report = asyncio.run(publish_history(kafka_settings, path, lo, hi))
    assert report.errors == 0, report.first_error
    expected = sum(
        int(
            ((b.column("event_time_ms").to_numpy() >= lo) & (b.column("event_time_ms").to_numpy() < hi)).sum()
        )
        for b in iter_history(path, "clicks", columns=["event_time_ms"])
    )
    assert report.clicks == expected == count_clicks(path, lo, hi) > 0
    assert lo <= report.event_ms < hi
    records = asyncio.run(_read(kafka_settings, [kafka_settings.topic(CLICKS)], expected=expected))
    assert len(records) == expected
    assert all(lo <= parse_click(r.value).event_time_ms < hi for r in records)


def test_live_continues_the_history(kafka_settings: Settings, history: tuple[Path, dict[str, Any]]) -> None:
    """Same population, event time from the history's end, x3600: 2 s of wall time are 2 h of event time."""
    path, manifest = history
    options = LiveOptions.continuing(
        manifest, rate=100.0, speed=3_600.0, duration_s=2.0, warmup_s=300, progress=False
    )
    report = asyncio.run(publish_live(kafka_settings, options, console=Console(quiet=True)))
    assert report.errors == 0, report.first_error
    assert report.speed == 3_600.0 and report.event_start_ms == manifest["end_ms"]
    assert report.sent == report.acked > 0
    records = asyncio.run(_read(kafka_settings, [kafka_settings.topic(CLICKS)], expected=report.sent))
    assert len(records) == report.sent
    wire = [parse_click(r.value) for r in records]
    assert manifest["end_ms"] <= min(c.event_time_ms for c in wire)
    assert max(c.event_time_ms for c in wire) < manifest["end_ms"] + 2 * 3_600_000
    history_ids = set()
    history_users = set()
    for b in iter_history(path, "clicks", columns=["click_id", "user_id"]):
        history_ids.update(b.column("click_id").to_pylist())
        history_users.update(u for u in b.column("user_id").to_pylist() if u is not None)
    assert not history_ids & {c.click_id for c in wire}
    live_users = {c.user_id for c in wire if c.user_id is not None}
    assert live_users and len(live_users & history_users) / len(live_users) > 0.5


def test_cli_publish_history_and_continue(
    kafka_settings: Settings, history: tuple[Path, dict[str, Any]]
) -> None:
    path, manifest = history
    env = {
        "IVT_BOOTSTRAP_SERVERS": kafka_settings.bootstrap_servers,
        "IVT_TOPIC_PREFIX": kafka_settings.topic_prefix,
    }
    start = format_time(manifest["start_ms"] + 12 * 3_600_000)
    result = CliRunner().invoke(
        simulate_cli, ["publish-history", str(path), "--start", start, "--end", "2026-11-04"], env=env
    )
    assert result.exit_code == 0, result.output
    expected = count_clicks(path, manifest["start_ms"] + 12 * 3_600_000, manifest["end_ms"])
    assert f"{expected:,} clicks" in result.output and "clicks/s" in result.output
    result = CliRunner().invoke(
        simulate_cli,
        ["live", "--continue-history", str(path), "--speed", "7200", "--duration", "1", "--warmup", "60"],
        env=env,
    )
    assert result.exit_code == 0, result.output
    assert "speed x7,200" in result.output and "300 users" in result.output
