"""`ivt simulate live` against the real broker: clicks come back parseable, keyed, stamped, on time."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer

from app.contracts.events import parse_account_rfm, parse_click
from app.contracts.settings import Settings
from app.contracts.topics import ACCOUNT_RFM, CLICKS
from app.simulator.live import INTENDED_HEADER, SENT_HEADER, LiveOptions, publish_live

pytestmark = pytest.mark.integration


async def _read(settings: Settings, topic: str, expected: int, timeout_s: float = 30.0) -> list[Any]:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=settings.bootstrap_servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    records: list[Any] = []
    try:
        deadline = time.monotonic() + timeout_s
        while len(records) < expected and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500, max_records=5_000)
            for msgs in batch.values():
                records.extend(msgs)
        # anything past the expected count would be a duplicate: give it a moment
        extra = await consumer.getmany(timeout_ms=1000)
        records.extend(m for msgs in extra.values() for m in msgs)
    finally:
        await consumer.stop()
    return records


@pytest.mark.parametrize("pregenerate", [False, True], ids=["encoder-ahead", "pregenerated"])
def test_live_publishes_clicks_purchases_and_rfm_at_the_rate(
    kafka_settings: Settings, pregenerate: bool
) -> None:
    """The same traffic whether it is encoded while it is sent or all of it before the first send."""
    options = LiveOptions(
        rate=300,
        duration_s=3,
        seed=5,
        warmup_s=120,
        progress=False,
        purchase_delay_scale=0.001,
        pregenerate=pregenerate,
    )
    report = asyncio.run(publish_live(kafka_settings, options))
    assert report.errors == 0, report.first_error
    assert report.sent == report.acked == 900
    assert 250 < report.achieved_rate < 350
    assert report.max_lag_ms < 1000
    assert sum(report.clicks_by_family.values()) == 900

    records = asyncio.run(_read(kafka_settings, kafka_settings.topic(CLICKS), expected=900))
    assert len(records) == 900
    families = set()
    intended_prev = {}
    # the report's schedule start is click 0's intended send time
    assert min(int(dict(r.headers)[INTENDED_HEADER]) for r in records) == report.start_ns
    for r in records:
        click = parse_click(r.value)
        assert r.key == click.ip.encode()
        headers = dict(r.headers)
        intended, sent = int(headers[INTENDED_HEADER]), int(headers[SENT_HEADER])
        assert sent >= intended
        # within a partition the schedule only moves forward
        assert intended >= intended_prev.get(r.partition, 0)
        intended_prev[r.partition] = intended
        truth = orjson.loads(r.value)["_truth"]
        assert truth["actor"] in ("human", "bot")
        families.add(truth["family"])
        # event times follow the wall clock (simulation starts with the schedule)
        assert abs(click.event_time_ms - intended // 1_000_000) < 60_000
    assert "human" in families and len(families) >= 3

    assert report.rfm_updates > 0
    rfm = asyncio.run(_read(kafka_settings, kafka_settings.topic(ACCOUNT_RFM), expected=report.rfm_updates))
    assert len(rfm) == report.rfm_updates
    for r in rfm:
        assert parse_account_rfm(r.value).user_id == r.key.decode()
