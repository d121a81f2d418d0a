"""Replay against the real broker: a bad model scores live traffic, a replay job with the good model
publishes exactly the corrections, billing ends where a clean run of the good model ends, re-runs
publish nothing, recompute reproduces the live features, and a SIGKILLed replay worker resumes
without publishing anything twice."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from agents.replay.client import jobs_and_progress, rerun, submit_async, wait_done
from agents.replay.exceptions import BadJob, OffsetsOutOfRange
from agents.replay.job import ReplayJob
from agents.replay.progress import Progress
from agents.replay.reader import partitions_of
from app.cli.billing import read_book
from app.cli.processes import ReplayWorkerProcess
from app.contracts import topics
from app.contracts.events import SLICES, Click, Purchase, Verdict, parse_verdict
from app.contracts.settings import Settings
from app.features import FEATURE_VERSION, OfflineFeatureEngine
from app.kafka.admin import ensure_topics
from models.registry import Registry
from models.scorer import Scorer
from models.tiny import REFERENCE_VERSION, ensure_reference_model
from tests.integration.processes import running_worker
from tests.integration.scripted import T0, click, scripted_clicks

pytestmark = pytest.mark.integration

GOOD, BAD = REFERENCE_VERSION, "bad-0001"


@pytest.fixture
def models(kafka_settings: Settings) -> tuple[Scorer, Scorer]:
    """The good (reference) model and a deliberately bad one: same graph, absurd thresholds that
    invalidate every desktop click and only mobile or app clicks scored 1.0."""
    registry = Registry(kafka_settings.registry_dir)
    ensure_reference_model(registry)
    bad = {s: (0.0 if s.startswith("desktop") else 1.0) for s in SLICES}
    registry.with_thresholds(GOOD, BAD, bad, default_threshold=1.0)
    return (
        Scorer.from_registry(registry, GOOD, providers="cpu"),
        Scorer.from_registry(registry, BAD, providers="cpu"),
    )


def traffic() -> list[Click]:
    """The scripted human / gateway / burst plus a desktop bot burst and steady mobile and desktop users."""
    clicks = scripted_clicks()
    clicks += [
        click(f"dbot-{k}", 300.0 + 0.4 * k, "203.0.113.90", "s-dbot", "dbot", "desktop") for k in range(30)
    ]
    clicks += [
        click(f"mob-{u}-{k}", 10.0 + 45.0 * k + u, f"192.0.2.{100 + u}", f"s-mob-{u}", f"m{u}", "mobile")
        for u in range(8)
        for k in range(6)
    ]
    clicks += [
        click(f"desk-{u}-{k}", 20.0 + 50.0 * k + u, f"192.0.2.{150 + u}", f"s-desk-{u}", f"d{u}", "desktop")
        for u in range(6)
        for k in range(5)
    ]
    return sorted(clicks, key=lambda c: c.event_time_ms)


async def _publish(settings: Settings, clicks: list[Click]) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap_servers, acks="all", enable_idempotence=True
    )
    await producer.start()
    try:
        for c in clicks:  # in order: each partition holds its clicks in event-time order
            await producer.send_and_wait(
                settings.topic(topics.CLICKS), c.to_json(), key=c.ip.encode(), timestamp_ms=c.event_time_ms
            )
    finally:
        await producer.stop()


async def _publish_purchases(settings: Settings, purchases: list[Purchase]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all")
    await producer.start()
    try:
        for p in purchases:
            await producer.send_and_wait(
                settings.topic(topics.PURCHASES), p.to_json(), key=p.click_id.encode()
            )
    finally:
        await producer.stop()


async def _all_verdicts(
    settings: Settings, until: set[str] | None = None, timeout: float = 90
) -> list[Verdict]:
    """Every verdict record in log order per partition; with ``until``, wait until those clicks have one."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap_servers, enable_auto_commit=False)
    await consumer.start()
    topic = settings.topic(topics.VERDICTS)
    try:
        tps = await partitions_of(consumer, topic)
        deadline = time.monotonic() + timeout
        while True:
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            end = await consumer.end_offsets(tps)
            out: list[Verdict] = []
            todo = {tp for tp in tps if end[tp] > 0}
            while todo:
                for records in (await consumer.getmany(*todo, timeout_ms=500)).values():
                    out += [parse_verdict(r.value) for r in records]
                todo = {tp for tp in todo if await consumer.position(tp) < end[tp]}
            if until is None or until <= {v.click_id for v in out}:
                return out
            assert time.monotonic() < deadline, (
                f"missing verdicts: {sorted(until - {v.click_id for v in out})[:5]}"
            )
            await asyncio.sleep(0.5)
    finally:
        await consumer.stop()


def _clicks_end(settings: Settings) -> dict[int, int]:
    async def ends() -> dict[int, int]:
        consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap_servers)
        await consumer.start()
        try:
            topic = settings.topic(topics.CLICKS)
            tps = await partitions_of(consumer, topic)
            return {tp.partition: o for tp, o in (await consumer.end_offsets(tps)).items()}
        finally:
            await consumer.stop()

    return asyncio.run(ends())


@contextmanager
def replay_worker(settings: Settings, log: Path) -> Iterator[ReplayWorkerProcess]:
    worker = ReplayWorkerProcess(settings, log)
    try:
        worker.wait_ready()
        yield worker
    finally:
        worker.stop()


def _job(job_id: str, mode: str, publish: str = "changed", **kw: object) -> ReplayJob:
    return ReplayJob(
        job_id=job_id,
        model_version=GOOD,
        mode=mode,
        publish=publish,
        submitted_at_ms=time.time_ns() // 1_000_000,
        **kw,  # type: ignore[arg-type]
    )


def _run(settings: Settings, job: ReplayJob, timeout: float = 120) -> Progress:
    async def go() -> Progress:
        await submit_async(settings, job)
        return await wait_done(settings, job.job_id, timeout)

    progress = asyncio.run(go())
    assert progress.state == "done", progress.error
    return progress


def _offline(clicks: list[Click], scorer: Scorer) -> dict[str, tuple[np.ndarray, float, bool]]:
    engine = OfflineFeatureEngine()
    vectors = np.stack([engine.process(c) for c in clicks])
    scores = scorer.score(vectors)
    invalid, _ = scorer.decide(scores, [c.slice for c in clicks])
    return {c.click_id: (vectors[i], float(scores[i]), bool(invalid[i])) for i, c in enumerate(clicks)}


def test_rescore_publishes_exactly_the_corrections_and_billing_matches_a_clean_good_run(
    kafka_settings: Settings, models: tuple[Scorer, Scorer], tmp_path: Path
) -> None:
    clicks = traffic()
    ids = {c.click_id for c in clicks}
    # A period of live traffic scored by the bad model.
    asyncio.run(_publish(kafka_settings, clicks))
    with running_worker(replace(kafka_settings, model_version=BAD), tmp_path / "live-bad.log"):
        live = {v.click_id: v for v in asyncio.run(_all_verdicts(kafka_settings, ids))}
    assert {v.model_version for v in live.values()} == {BAD}

    # A clean run of the good model on the same clicks, in its own topics.
    tag = uuid.uuid4().hex[:8]
    clean = replace(
        kafka_settings, topic_prefix=f"c{tag}-", app_id=f"ivt-clean-{tag}", data_dir=tmp_path / "clean"
    )
    clean = replace(clean, model_dir=kafka_settings.registry_dir, model_version=GOOD)
    ensure_topics(clean)
    asyncio.run(_publish(clean, clicks))
    with running_worker(clean, tmp_path / "live-good.log"):
        good = {v.click_id: v for v in asyncio.run(_all_verdicts(clean, ids))}
    wrong = {cid for cid in ids if live[cid].decision != good[cid].decision}
    assert len(wrong) > 20 and {live[c].decision for c in wrong} == {"valid", "invalid"}  # flips both ways

    # One purchase inside the 24 h attribution window, one a day and a half late: only the first
    # makes its click a purchasing one in the job's FPR (the weak label's rule).
    hour = 3_600_000
    bought, late = clicks[0], clicks[1]
    asyncio.run(
        _publish_purchases(
            kafka_settings,
            [
                Purchase("p-1", bought.click_id, None, bought.event_time_ms + hour, 10.0),
                Purchase("p-2", late.click_id, None, late.event_time_ms + 36 * hour, 10.0),
            ],
        )
    )

    offsets = {p: (0, end) for p, end in _clicks_end(kafka_settings).items() if end}
    with replay_worker(kafka_settings, tmp_path / "replay.log"):
        progress = _run(kafka_settings, _job("fix-1", "rescore", offsets=offsets))
        assert sum(row[2] for row in progress.rates["after"].values()) == 1  # purchasing clicks
        after = asyncio.run(_all_verdicts(kafka_settings))
        replayed = [v for v in after if v.source == "replay"]
        # Exactly the corrected decisions, each once, above the live revision, with the logged features.
        assert sorted(v.click_id for v in replayed) == sorted(wrong)
        for v in replayed:
            assert (v.revision, v.job_id, v.model_version, v.feature_version) == (
                1,
                "fix-1",
                GOOD,
                FEATURE_VERSION,
            )
            assert v.decision == good[v.click_id].decision
            assert v.score == pytest.approx(good[v.click_id].score, abs=1e-6)
            assert v.features == live[v.click_id].features
        c = progress.counters
        assert (c["read"], c["decided"], c["published"], c["unchanged"]) == (
            len(clicks),
            len(clicks),
            len(wrong),
            len(clicks) - len(wrong),
        )
        assert c["flipped_to_invalid"] + c["flipped_to_valid"] == len(wrong) and c["flipped_to_valid"] > 0
        assert progress.rates["after"] and progress.rates["before"]

        # The reference billing consumer ends with the clean run's decisions.
        book = asyncio.run(read_book(kafka_settings))
        assert book.decisions() == {cid: v.decision for cid, v in good.items()}
        assert book.corrections == len(wrong)

        # Running the same job again, or a new job with the same spec, publishes nothing new.
        again = asyncio.run(rerun(kafka_settings, "fix-1"))
        rerun_progress = asyncio.run(wait_done(kafka_settings, again.job_id))
        assert rerun_progress.counters["published"] == 0
        assert rerun_progress.counters["already_published"] == len(wrong)
        same = _run(kafka_settings, _job("fix-2", "rescore", offsets=offsets))
        assert (same.counters["published"], same.counters["unchanged"]) == (0, len(clicks))
        assert len(asyncio.run(_all_verdicts(kafka_settings))) == len(after)


def test_recompute_over_an_event_time_range_reproduces_live_features_and_good_scores(
    kafka_settings: Settings, models: tuple[Scorer, Scorer], tmp_path: Path
) -> None:
    good_scorer, _ = models
    clicks = traffic()
    asyncio.run(_publish(kafka_settings, clicks))
    with running_worker(replace(kafka_settings, model_version=BAD), tmp_path / "live-bad.log"):
        live = {
            v.click_id: v for v in asyncio.run(_all_verdicts(kafka_settings, {c.click_id for c in clicks}))
        }
    expected = _offline(clicks, good_scorer)

    # Only the middle of the traffic is decided; everything before it warms the job's own counters.
    start, end = T0 + 100_000, T0 + 250_000
    inside = {c.click_id for c in clicks if start <= c.event_time_ms < end}
    job = _job("recompute-1", "recompute", "all", start_ms=start, end_ms=end, lookback_s=3600)
    # 30 s of lateness slack: clicks before start - 30 s are outside the offset range (look-back).
    settings = replace(kafka_settings, replay_lateness_s=30)
    with replay_worker(settings, tmp_path / "replay.log"):
        progress = _run(settings, job)
    replayed = {v.click_id: v for v in asyncio.run(_all_verdicts(kafka_settings)) if v.source == "replay"}
    assert set(replayed) == inside
    for cid, v in replayed.items():
        vector, score, invalid = expected[cid]
        assert np.array_equal(
            np.asarray(v.features, dtype=np.float32), np.asarray(live[cid].features, dtype=np.float32)
        ), cid
        assert np.array_equal(np.asarray(v.features, dtype=np.float32), vector), cid
        assert v.score == pytest.approx(score, abs=1e-6) and v.decision == ("invalid" if invalid else "valid")
        assert v.revision == 1
    c = progress.counters
    assert c["decided"] == c["published"] == len(inside)
    assert c["outside_time"] + c["decided"] == c["read"]
    assert c["warmup"] > 0 and c["outside_time"] > 0  # both kinds of context fed the counters


def _many_clicks(n: int) -> list[Click]:
    """Synthetic traffic: 400 users on 120 IPs, a click every 20 ms of event time."""
    out = []
    for k in range(n):
        u = (k * 7919) % 400
        out.append(
            click(
                f"k-{k}",
                0.02 * k,
                f"10.1.{u % 120}.{u % 7}",
                f"s-{u}-{k // 2000}",
                f"user-{u}",
                SLICES[u % 6].split("/")[0],
            )
        )
    return out


async def _publish_fast(settings: Settings, clicks: list[Click], verdicts: list[Verdict]) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap_servers, acks="all", enable_idempotence=True, linger_ms=5
    )
    await producer.start()
    try:
        futures = [
            await producer.send(
                settings.topic(topics.CLICKS), c.to_json(), key=c.ip.encode(), timestamp_ms=c.event_time_ms
            )
            for c in clicks
        ]
        futures += [
            await producer.send(settings.topic(topics.VERDICTS), v.to_json(), key=v.click_id.encode())
            for v in verdicts
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


def test_replay_worker_killed_mid_job_resumes_without_publishing_twice(
    kafka_settings: Settings, models: tuple[Scorer, Scorer], tmp_path: Path
) -> None:
    good_scorer, bad_scorer = models
    clicks = _many_clicks(30_000)
    # "Live" verdicts of the bad model, as the live worker would have written them (features offline).
    bad = _offline(clicks, bad_scorer)
    live = [
        Verdict(
            c.click_id,
            c.event_time_ms,
            "invalid" if bad[c.click_id][2] else "valid",
            bad[c.click_id][1],
            0.5,
            c.slice,
            BAD,
            0,
            "live",
            c.event_time_ms,
            FEATURE_VERSION,
            bad[c.click_id][0].tolist(),
        )
        for c in clicks
    ]
    asyncio.run(_publish_fast(kafka_settings, clicks, live))
    good = _offline(clicks, good_scorer)
    wrong = {c.click_id for c in clicks if good[c.click_id][2] != bad[c.click_id][2]}
    assert len(wrong) > 1000

    settings = replace(kafka_settings, replay_chunk_clicks=500)
    offsets = {p: (0, end) for p, end in _clicks_end(settings).items() if end}
    job = _job("crash-1", "recompute", offsets=offsets, lookback_s=0)
    first = ReplayWorkerProcess(settings, tmp_path / "replay-1.log")
    try:
        first.wait_ready()
        asyncio.run(submit_async(settings, job))

        async def until_midway() -> Progress:
            async for p in _progress_stream(settings, job.job_id):
                if p.state == "running" and p.done_positions >= 3000:
                    return p
            raise AssertionError("no progress")

        midway = asyncio.run(until_midway())
        first.stop(sig=signal.SIGKILL)
    finally:
        first.stop(sig=signal.SIGKILL)
    killed_at = asyncio.run(jobs_and_progress(settings))[1][job.job_id]
    assert killed_at.state == "running" and midway.done_positions <= killed_at.done_positions < len(clicks)

    with replay_worker(settings, tmp_path / "replay-2.log"):
        progress = asyncio.run(wait_done(settings, job.job_id, timeout_s=180))
    assert progress.state == "done", progress.error
    published = Counter(v.click_id for v in asyncio.run(_all_verdicts(settings)) if v.job_id == job.job_id)
    assert set(published) == wrong  # every correction ...
    assert max(published.values()) == 1  # ... exactly once, across the kill
    c = progress.counters
    assert c["decided"] == len(clicks)  # the checkpoint's counts plus the resumed part, nothing twice
    assert c["published"] + c["already_published"] == len(wrong)


async def _progress_stream(settings: Settings, job_id: str) -> AsyncIterator[Progress]:
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap_servers, enable_auto_commit=False)
    await consumer.start()
    tp = TopicPartition(settings.topic(topics.REPLAY_PROGRESS), 0)
    consumer.assign([tp])
    await consumer.seek_to_beginning(tp)
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            for r in (await consumer.getmany(tp, timeout_ms=100)).get(tp, []):
                if r.key == job_id.encode():
                    yield Progress.from_json(r.value)
    finally:
        await consumer.stop()


def test_bad_jobs_are_refused_with_a_clear_reason(
    kafka_settings: Settings, models: tuple[Scorer, Scorer]
) -> None:
    asyncio.run(_publish(kafka_settings, traffic()[:10]))
    end = _clicks_end(kafka_settings)
    used = next(p for p, e in end.items() if e)
    with pytest.raises(BadJob, match="unknown model version 'nope'"):
        asyncio.run(
            submit_async(
                kafka_settings, replace(_job("e1", "rescore", offsets={used: (0, 1)}), model_version="nope")
            )
        )
    with pytest.raises(OffsetsOutOfRange, match="beyond the end"):
        asyncio.run(submit_async(kafka_settings, _job("e2", "rescore", offsets={used: (0, end[used] + 5)})))
    with pytest.raises(OffsetsOutOfRange, match="does not exist"):
        asyncio.run(submit_async(kafka_settings, _job("e3", "rescore", offsets={99: (0, 1)})))
    with pytest.raises(BadJob, match="empty range"):
        asyncio.run(
            submit_async(kafka_settings, _job("e4", "rescore", start_ms=T0 + 10**9, end_ms=T0 + 10**9 + 1000))
        )
    with pytest.raises(BadJob, match="empty range"):
        _job("e5", "rescore", offsets={used: (3, 3)})
