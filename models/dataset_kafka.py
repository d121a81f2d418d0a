"""Training datasets from what serving logged: the feature vectors on the ``verdicts`` topic, joined
with ``clicks``, ``purchases`` and ``account-rfm`` (:func:`build_from_kafka`, ``ivt dataset
--from-kafka``). The file layout is :mod:`models.dataset`'s."""

from __future__ import annotations

import asyncio
import bisect
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import numpy as np
import orjson

from app.contracts import topics
from app.contracts.events import InvalidEvent, parse_click
from app.contracts.events import parse_time as parse_event_time
from app.contracts.settings import Settings
from app.features.spec import FEATURE_NAMES, FEATURE_VERSION
from app.kafka import clients
from app.runtime.metadata import topic_partitions
from models.dataset import HOUR_MS, DatasetError, DatasetInfo, DatasetWriter, HourRows
from models.labels import LabelRule

__all__ = ["build_from_kafka", "KAFKA_SLACK_MS"]

#: How much earlier than the range to start reading by broker timestamp (records are stamped when
#: produced, at or after their click's event time; the slack covers producers' clock skew).
KAFKA_SLACK_MS: Final = HOUR_MS


def build_from_kafka(
    settings: Settings,
    out: Path | str,
    *,
    start_ms: int,
    end_ms: int,
    rule: LabelRule | None = None,
    horizon_ms: int | None = None,
    progress: Callable[[int, str], None] | None = None,
) -> DatasetInfo:
    """A dataset from what serving logged: verdicts of clicks with ``start_ms <= event time < end_ms``.

    * features: the vector logged with the click's **live** verdict (revision 0; the first one read
      when a click has several, as at-least-once delivery can duplicate); a vector of another
      feature version is skipped and counted;
    * user, session, device: the click on ``clicks``, validated as the worker does (the RFM label
      needs the user, the session-hour count the session); a verdict whose click is gone from that
      topic keeps the slice's device and logged-in status, no RFM, and ``expm1(session_clicks_1h)`` as its count;
    * purchases: the earliest purchase naming the click; ``account-rfm``: the account's score as of
      the click, from every update still on the (compacted) topic;
    * truth: the simulator's ``_truth`` family where the click carries one (simulated traffic), for
      evaluation only: the trainer never reads it;
    * label horizon: ``horizon_ms``, default the time the topics' end offsets were taken (purchases
      after it are unknown; younger clicks are incomplete and follow ``rule.late_policy``).

    Memory: the range is joined in memory (about 300 bytes per click); read a long history in
    several ranges, or build from history files, which stream.
    """
    rule = rule if rule is not None else LabelRule()
    if start_ms >= end_ms:
        raise DatasetError("empty range: start is not before end")
    return asyncio.run(_build_from_kafka(settings, Path(out), start_ms, end_ms, rule, horizon_ms, progress))


async def _read_topic(
    settings: Settings,
    base: str,
    from_ts_ms: int | None,
    note: str,
    progress: Callable[[int, str], None] | None,
) -> Any:
    """Yield the values of one topic from ``from_ts_ms`` (None: the beginning) to its end now."""
    topic = settings.topic(base)
    consumer = clients.consumer(settings, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = await topic_partitions(consumer, topic)
        if not tps:
            raise DatasetError(f"topic {topic!r} does not exist on {settings.bootstrap_servers}")
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        starts = await consumer.beginning_offsets(tps)
        if from_ts_ms is not None:
            found = await consumer.offsets_for_times({tp: from_ts_ms for tp in tps})
            for tp in tps:
                starts[tp] = found[tp].offset if found[tp] is not None else ends[tp]
        todo = {tp for tp in tps if starts[tp] < ends[tp]}
        for tp in tps:
            consumer.seek(tp, starts[tp])
        done = 0
        while todo:
            batches = await consumer.getmany(*todo, timeout_ms=1000, max_records=10_000)
            for tp, records in batches.items():
                for r in records:
                    if r.offset < ends[tp]:
                        yield r.value
                        done += 1
                if records and records[-1].offset >= ends[tp] - 1:
                    todo.discard(tp)
            if progress is not None:
                progress(done, note)
    finally:
        await consumer.stop()


async def _build_from_kafka(
    settings: Settings,
    out: Path,
    start_ms: int,
    end_ms: int,
    rule: LabelRule,
    horizon_ms: int | None,
    progress: Callable[[int, str], None] | None,
) -> DatasetInfo:
    horizon = horizon_ms if horizon_ms is not None else int(time.time() * 1000)
    skipped = {"bad_verdict": 0, "other_feature_version": 0, "duplicate": 0, "no_click": 0, "bad_click": 0}

    # 1. who made each click (user, session, device): the clicks as producers sent them, validated
    #    here as the worker does (``clicks-by-ip`` is empty when the worker validates in its IP stage)
    meta: dict[str, tuple[str | None, str, bool, str, str | None]] = {}
    async for raw in _read_topic(settings, topics.CLICKS, start_ms - KAFKA_SLACK_MS, "clicks", progress):
        try:
            c = parse_click(raw)
        except InvalidEvent:
            skipped["bad_click"] += 1
            continue
        if start_ms <= c.event_time_ms < end_ms:
            meta[c.click_id] = (c.user_id, c.session_id, c.logged_in, c.device_type, _truth_family(raw))

    # 2. the feature log
    rows: dict[str, tuple[int, list[float], str]] = {}
    async for raw in _read_topic(settings, topics.VERDICTS, start_ms - KAFKA_SLACK_MS, "verdicts", progress):
        try:
            v = orjson.loads(raw)
            cid, t, rev = v["click_id"], _parse_wire_time(v["event_time"]), int(v["revision"])
            if not start_ms <= t < end_ms:
                continue
            if v["feature_version"] != FEATURE_VERSION or len(v["features"]) != len(FEATURE_NAMES):
                skipped["other_feature_version"] += 1
                continue
            if rev != 0 or cid in rows:
                skipped["duplicate"] += rev == 0
                continue
            rows[cid] = (t, v["features"], v["slice"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, InvalidEvent):
            skipped["bad_verdict"] += 1

    # 3. purchases and RFM
    purchases: dict[str, int] = {}
    async for raw in _read_topic(settings, topics.PURCHASES, start_ms, "purchases", progress):
        try:
            p = orjson.loads(raw)
            cid, pt = p["click_id"], _parse_wire_time(p["event_time"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, InvalidEvent):
            continue
        if cid in rows and (cid not in purchases or pt < purchases[cid]):
            purchases[cid] = pt
    rfm: dict[str, list[tuple[int, float]]] = {}
    async for raw in _read_topic(settings, topics.ACCOUNT_RFM, None, "account-rfm", progress):
        try:
            a = orjson.loads(raw)
            rfm.setdefault(a["user_id"], []).append(
                (_parse_wire_time(a["updated_at"]), float(a["rfm_score"]))
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, InvalidEvent):
            continue
    for history in rfm.values():
        history.sort()

    # 4. hour by hour, in event-time order
    order = sorted(rows, key=lambda k: rows[k][0])
    writer = DatasetWriter(out, rule, horizon_ms=horizon)
    shc_idx = FEATURE_NAMES.index("session_clicks_1h")
    nan = float("nan")
    try:
        cur, hr = -1, HourRows(session_hour_clicks=None)
        fallback: list[int | None] = []
        for cid in order:
            t, features, slice_ = rows[cid]
            if t // HOUR_MS != cur:
                _flush_kafka_hour(writer, hr, fallback)
                cur, hr, fallback = t // HOUR_MS, HourRows(), []
            m = meta.get(cid)
            if m is None:
                skipped["no_click"] += 1
                device, logged = slice_.split("/")
                user, session, li, family = None, f"?{cid}", logged == "in", None
                fallback.append(int(round(math.expm1(features[shc_idx]))))
            else:
                user, session, li, device, family = m
                fallback.append(None)
            hr.features.append(np.asarray(features, dtype=np.float32))
            hr.click_id.append(cid)
            hr.event_time_ms.append(t)
            hr.logged_in.append(li)
            hr.device_type.append(device)
            hr.session_key.append(session)
            hr.purchase_ms.append(purchases.get(cid, -1))
            hr.rfm.append(_rfm_at(rfm.get(user), t) if (li and user is not None) else nan)
            hr.truth_family.append(family)
        _flush_kafka_hour(writer, hr, fallback)
        return writer.finish(
            {
                "kind": "kafka",
                "bootstrap_servers": settings.bootstrap_servers,
                "topic_prefix": settings.topic_prefix,
                "rows_from_ms": start_ms,
                "rows_until_ms": end_ms,
                "skipped": skipped,
            }
        )
    except BaseException:
        writer.abort()
        raise


def _flush_kafka_hour(writer: DatasetWriter, hr: HourRows, fallback: list[int | None]) -> None:
    if not len(hr):
        return
    if any(f is not None for f in fallback):
        # Count sessions we know; a click without its session takes its logged session count.
        keys = np.asarray(hr.session_key, dtype=str)
        _, inv, counts = np.unique(keys, return_inverse=True, return_counts=True)
        exact = counts[inv]
        hr.session_hour_clicks = [int(e) if f is None else f for e, f in zip(exact, fallback, strict=True)]
    writer.write_hour(hr)


def _truth_family(raw: bytes) -> str | None:
    """The simulator's ``_truth.family`` of a click (never a feature: evaluation reads it only)."""
    truth = orjson.loads(raw).get("_truth")
    family = truth.get("family") if isinstance(truth, dict) else None
    return family if isinstance(family, str) else None


def _rfm_at(history: list[tuple[int, float]] | None, t_ms: int) -> float:
    """The newest score at or before ``t_ms`` (nan when the account had none yet)."""
    if not history:
        return float("nan")
    i = bisect.bisect_right(history, (t_ms, float("inf")))
    return history[i - 1][1] if i else float("nan")


def _parse_wire_time(value: str) -> int:
    return parse_event_time(value, "time")
