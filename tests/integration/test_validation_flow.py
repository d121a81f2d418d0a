"""Validation stage through the real broker: good clicks come through, bad ones land in the DLQ.

Runs a real ``ivt worker`` process against the session's local Kafka broker.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from app.contracts import topics
from app.contracts.events import Click, parse_click
from app.contracts.settings import Settings
from tests.integration.processes import running_worker

pytestmark = pytest.mark.integration

T0 = 1_763_800_000_000


def good(i: int) -> Click:
    user = f"u{i % 5000}" if i % 3 else None
    return Click(
        click_id=f"good-{i}",
        event_time_ms=T0 + i * 7,
        ip=f"10.{i % 7}.{(i // 7) % 250}.{i % 251}" if i % 5 else f"2001:db8::{i % 4096:x}",
        session_id=f"s{i % 20000}",
        user_id=user,
        logged_in=user is not None and i % 2 == 0,
        device_type=("desktop", "mobile", "app")[i % 3],
        user_agent="Mozilla/5.0 (X11; Linux x86_64)",
        ad_id=f"ad{i % 300}",
        campaign_id=f"cmp{i % 30}",
        advertiser_id=f"adv{i % 10}",
    )


def _doc(i: int, **changes: object) -> bytes:
    doc = good(i).to_wire()
    doc["click_id"] = f"bad-{i}"
    doc.update(changes)
    return orjson.dumps({k: v for k, v in doc.items() if v is not _DROP})


_DROP = object()

#: One maker per kind of breakage, with the start of the reason the DLQ must carry.
BAD_KINDS = [
    (lambda i: b"\xff\xfe not json %d" % i, "not JSON"),
    (lambda i: orjson.dumps([i]), "expected a JSON object"),
    (lambda i: _doc(i, click_id=_DROP), "click_id: missing"),
    (lambda i: _doc(i, event_time="20 minutes ago"), "event_time: unparsable time"),
    (lambda i: _doc(i, event_time="2025-11-22T08:00:00"), "event_time: time"),
    (lambda i: _doc(i, ip="256.0.0.1"), "ip: invalid IPv4/IPv6 address"),
    (lambda i: _doc(i, ip="2001:db8:::1"), "ip: invalid IPv4/IPv6 address"),
    (lambda i: _doc(i, logged_in="true"), "logged_in: expected boolean"),
    (lambda i: _doc(i, user_agent="B" * 2000), "user_agent: 2000 characters > 1024"),
    (lambda i: _doc(i, padding="P" * 9000), "oversize event"),
]


async def _produce(settings: Settings, messages: list[tuple[bytes | None, bytes]]) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap_servers, linger_ms=5, max_batch_size=256 * 1024, acks="all"
    )
    await producer.start()
    try:
        futures = [
            await producer.send(settings.topic(topics.CLICKS), value, key=key) for key, value in messages
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def _consume(settings: Settings, base: str, expected: int, timeout: float) -> list:
    consumer = AIOKafkaConsumer(
        settings.topic(base),
        bootstrap_servers=settings.bootstrap_servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    records = []
    try:
        deadline = time.monotonic() + timeout
        while len(records) < expected and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500, max_records=20_000)
            for msgs in batch.values():
                records.extend(msgs)
        # Anything past the expected count would be a duplicate or a misroute: give it a moment.
        extra = await consumer.getmany(timeout_ms=1500)
        for msgs in extra.values():
            records.extend(msgs)
    finally:
        await consumer.stop()
    return records


def test_malformed_events_go_to_dlq_and_every_good_click_comes_through(
    kafka_settings: Settings, tmp_path: Path
) -> None:
    n_good, n_bad = 100_000, 10_000
    messages: list[tuple[bytes | None, bytes]] = []
    expected_reason: dict[bytes, str] = {}
    for i in range(n_good):
        click = good(i)
        messages.append((click.ip.encode(), click.to_json()))
        if i % 10 == 5:  # one bad event after every tenth good one, all kinds in turn
            j = i // 10
            make, reason = BAD_KINDS[j % len(BAD_KINDS)]
            raw = make(j)
            expected_reason[raw] = reason
            messages.append((f"k{j}".encode(), raw))
    assert len(expected_reason) == n_bad

    asyncio.run(_produce(kafka_settings, messages))
    with running_worker(kafka_settings, tmp_path / "worker.log", stages=["validate"]) as worker:
        passed = asyncio.run(_consume(kafka_settings, topics.CLICKS_BY_IP, n_good, timeout=240))
        dlq = asyncio.run(_consume(kafka_settings, topics.CLICKS_DLQ, n_bad, timeout=60))
        assert worker.alive, worker.log_tail()

    # Every good click exactly once, canonical and keyed by IP (same IP -> same partition).
    ids = [parse_click(r.value).click_id for r in passed]
    assert len(ids) == n_good
    assert set(ids) == {f"good-{i}" for i in range(n_good)}
    partitions_by_ip: dict[bytes, set[int]] = defaultdict(set)
    for r in passed:
        assert r.key == parse_click(r.value).ip.encode()
        partitions_by_ip[r.key].add(r.partition)
    assert all(len(p) == 1 for p in partitions_by_ip.values())

    # Every bad event exactly once, original bytes untouched, with reason and source coordinates.
    assert len(dlq) == n_bad
    seen = set()
    for r in dlq:
        headers = {k: v.decode() for k, v in r.headers}
        assert r.value in expected_reason, r.value[:80]
        assert headers["ivt-dlq-reason"].startswith(expected_reason[r.value]), headers
        assert headers["ivt-dlq-topic"] == kafka_settings.topic(topics.CLICKS)
        assert int(headers["ivt-dlq-offset"]) >= 0 and int(headers["ivt-dlq-partition"]) >= 0
        seen.add(r.value)
    assert len(seen) == n_bad


def test_with_clicks_keyed_by_ip_the_ip_stage_validates_and_rejects_clicks_keyed_otherwise(
    kafka_settings: Settings, tmp_path: Path
) -> None:
    """IVT_CLICKS_KEYED_BY_IP=true: no validation stage and no clicks-by-ip hop; same DLQ contract."""
    settings = replace(kafka_settings, clicks_keyed_by_ip=True)
    n_good = 3_000
    messages: list[tuple[bytes | None, bytes]] = []
    expected_reason: dict[bytes, str] = {}
    for i in range(n_good):
        click = parse_click(good(i).to_json())  # canonical IP: what a producer keying by IP sends
        messages.append((click.ip.encode(), click.to_json()))
        if i % 100 == 7:
            j = i // 100
            make, reason = BAD_KINDS[j % len(BAD_KINDS)]
            raw = make(j)
            expected_reason[raw] = reason
            messages.append((f"k{j}".encode(), raw))
    # Valid clicks keyed by something else than their canonical IP: their IP's state may live on
    # another partition, so they are rejected, not counted in the wrong place.
    for j, key in enumerate([b"not-an-ip", b"2001:db8::0", None]):
        raw = replace(good(j), click_id=f"miskeyed-{j}", ip="2001:db8::0").to_json()
        expected_reason[raw] = "record key"
        messages.append((key, raw))

    asyncio.run(_produce(settings, messages))
    with running_worker(settings, tmp_path / "worker.log") as worker:
        verdicts = asyncio.run(_consume(settings, topics.VERDICTS, n_good, timeout=240))
        dlq = asyncio.run(_consume(settings, topics.CLICKS_DLQ, len(expected_reason), timeout=60))
        repartitioned = asyncio.run(_consume(settings, topics.CLICKS_BY_IP, 0, timeout=1))
        assert worker.alive, worker.log_tail()

    assert sorted(orjson.loads(r.value)["click_id"] for r in verdicts) == sorted(
        f"good-{i}" for i in range(n_good)
    )
    assert repartitioned == []
    assert len(dlq) == len(expected_reason)
    for r in dlq:
        headers = {k: v.decode() for k, v in r.headers}
        assert headers["ivt-dlq-reason"].startswith(expected_reason[r.value]), headers
        assert headers["ivt-dlq-topic"] == settings.topic(topics.CLICKS)
    assert {r.value for r in dlq} == set(expected_reason)
