"""`ivt dataset --from-kafka`: the verdicts' feature log joined with clicks, purchases and RFM."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from aiokafka import AIOKafkaProducer

from app.contracts import topics
from app.contracts.events import AccountRfm, Click, Purchase, Verdict
from app.contracts.settings import Settings
from app.features.engine import OfflineFeatureEngine
from app.features.spec import FEATURE_NAMES, FEATURE_VERSION
from models.dataset import DATA_FILE, read_info
from models.dataset_kafka import build_from_kafka
from models.labels import LabelRule

H = 3_600_000
T0 = 1_795_000_000_000 - 1_795_000_000_000 % H  # an hour boundary


def _click(cid: str, t: int, session: str, user: str | None, ip: str, device: str = "desktop") -> Click:
    return Click(cid, t, ip, session, user, user is not None, device, "Mozilla/5.0", "ad", "cmp", "adv")


def _scenario() -> tuple[list[Click], list[Purchase], list[AccountRfm]]:
    clicks = [_click(f"alice-{k}", T0 + 60_000 * k, "s-alice", "alice", "192.0.2.1") for k in range(3)]
    clicks += [
        _click(f"bob-{k}", T0 + 20 * 60_000 * k, "s-bob", "bob", "192.0.2.2", "mobile") for k in range(4)
    ]
    clicks += [_click(f"bot-{k}", T0 + 1000 * k, "s-bot", None, "203.0.113.9", "app") for k in range(30)]
    clicks += [_click("guest-0", T0 + H + 5_000, "s-guest", None, "192.0.2.3")]
    clicks += [_click("late-0", T0 + H + 9_000, "s-late", None, "192.0.2.4")]
    clicks.sort(key=lambda c: c.event_time_ms)
    purchases = [
        Purchase("p1", "guest-0", None, T0 + H + 600_000, 20.0),  # within the window: human
        Purchase("p2", "bot-3", None, T0 + 3 * H, 5.0),  # after a 1 h window: not purchasing
    ]
    rfm = [
        AccountRfm("alice", 0.9, 3.0, 10, 800.0, T0 - 1000),
        AccountRfm("bob", 0.3, 40.0, 1, 20.0, T0 - 1000),
        AccountRfm("bob", 0.8, 0.0, 2, 300.0, T0 + 30 * 60_000),  # bob's clicks after this: human
    ]
    return clicks, purchases, rfm


async def _publish(
    settings: Settings, clicks: list[Click], purchases: list[Purchase], rfm: list[AccountRfm]
) -> dict:
    engine = OfflineFeatureEngine()
    vectors = {c.click_id: engine.process(c) for c in clicks}
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all")
    await producer.start()
    try:
        for c in clicks:
            await producer.send(settings.topic(topics.CLICKS), c.to_json(), key=c.ip.encode())
            v = Verdict(
                c.click_id,
                c.event_time_ms,
                "valid",
                0.1,
                0.5,
                c.slice,
                "m1",
                0,
                "live",
                c.event_time_ms + 5,
                FEATURE_VERSION,
                [float(x) for x in vectors[c.click_id]],
            )
            await producer.send(settings.topic(topics.VERDICTS), v.to_json(), key=c.click_id.encode())
        # a duplicate live verdict with other features, a correction, and a vector of another version
        first = clicks[0]
        dup = Verdict(
            first.click_id, first.event_time_ms, "valid", 0.1, 0.5, first.slice, "m1", 0, "live", 1, FEATURE_VERSION,
            [9.0] * len(FEATURE_NAMES),
        )  # fmt: skip
        await producer.send(settings.topic(topics.VERDICTS), dup.to_json(), key=b"x")
        fix = Verdict(
            first.click_id, first.event_time_ms, "invalid", 0.9, 0.5, first.slice, "m2", 1, "replay", 2,
            FEATURE_VERSION, [7.0] * len(FEATURE_NAMES), job_id="j1",
        )  # fmt: skip
        await producer.send(settings.topic(topics.VERDICTS), fix.to_json(), key=b"x")
        old = Verdict("old-0", T0 + 5, "valid", 0.1, 0.5, "desktop/anon", "m0", 0, "live", 3, "v0", [0.0])
        await producer.send(settings.topic(topics.VERDICTS), old.to_json(), key=b"y")
        # outside the range
        out = _click("after-0", T0 + 5 * H, "s-x", None, "192.0.2.9")
        await producer.send(settings.topic(topics.CLICKS), out.to_json(), key=b"z")
        for p in purchases:
            await producer.send(settings.topic(topics.PURCHASES), p.to_json(), key=p.click_id.encode())
        for a in rfm:
            await producer.send(settings.topic(topics.ACCOUNT_RFM), a.to_json(), key=a.user_id.encode())
        await producer.flush()
    finally:
        await producer.stop()
    return vectors


def test_dataset_from_kafka(kafka_settings: Settings, tmp_path: Path) -> None:
    clicks, purchases, rfm = _scenario()
    vectors = asyncio.run(_publish(kafka_settings, clicks, purchases, rfm))
    rule = LabelRule(attribution_window_ms=H, rfm_high=0.6)
    horizon = T0 + H + 30 * 60_000  # guest-0 and late-0 are 21 min old: incomplete unless human
    info = build_from_kafka(
        kafka_settings, tmp_path, start_ms=T0, end_ms=T0 + 2 * H, rule=rule, horizon_ms=horizon
    )
    t = pq.read_table(tmp_path / DATA_FILE).to_pylist()
    by = {r["click_id"]: r for r in t}
    assert sorted(by) == sorted(c.click_id for c in clicks)
    assert info.rows == len(clicks)
    assert [r["event_time_ms"] for r in t] == sorted(r["event_time_ms"] for r in t)
    skipped = read_info(tmp_path).doc["source"]["skipped"]
    assert skipped["duplicate"] == 1 and skipped["other_feature_version"] == 1 and skipped["no_click"] == 0

    # features: the first live verdict's vector, exactly
    for cid, vec in vectors.items():
        assert np.array_equal(np.array([by[cid][n] for n in FEATURE_NAMES], dtype=np.float32), vec)

    # labels: RFM as of the click, purchases within the window, late ones incomplete
    assert [by[f"alice-{k}"]["label"] for k in range(3)] == [0, 0, 0]
    assert [by[f"bob-{k}"]["label"] for k in range(4)] == [1, 1, 0, 0]  # RFM 0.8 from minute 30
    assert by["guest-0"]["label"] == 0 and by["guest-0"]["is_purchasing"] and by["guest-0"]["label_complete"]
    assert by["bot-3"]["label"] == 1 and not by["bot-3"]["is_purchasing"]  # bought after the window
    assert by["late-0"]["label"] == 1 and not by["late-0"]["label_complete"]
    assert by["late-0"]["late_weight"] == 0.0  # held out
    assert by["bot-0"]["label_complete"]  # the window closed before the horizon

    # session-hour counts from the clicks' sessions; slices from the clicks
    assert by["bot-0"]["session_hour_clicks"] == 30
    assert by["bob-0"]["session_hour_clicks"] == 3 and by["bob-3"]["session_hour_clicks"] == 1
    assert by["bob-0"]["slice"] == "mobile/in" and by["bot-0"]["slice"] == "app/anon"
    assert by["bot-0"]["truth_family"] is None
    assert not math.isnan(by["alice-0"]["weight"]) and by["alice-0"]["weight"] > 0
