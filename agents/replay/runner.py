"""Run one replay job: resolve, index, decide with the pinned model, publish, checkpoint.

Phases (each visible in the job's progress):

1. **resolving**: the job's range becomes offsets per partition (:func:`~agents.replay.reader.resolve`),
   stored in the first checkpoint so a resumed run reads exactly the same clicks.
2. **indexing**: the range is read once for its click ids (and per session-hour counts for robotic
   coverage); then ``verdicts`` (latest verdict per click, and what this job has already published)
   and ``purchases`` (for FPR: purchasing = named by a purchase within the weak label's attribution
   window, ``models.labels``) are read from just before the range's first record to their end.
3. **running**: clicks are decided in chunks of ``IVT_REPLAY_CHUNK_CLICKS``. Rescore reads the range
   from the checkpoint on and scores each click's logged features; recompute reads every partition
   from the look-back start, merged by event time, through a fresh :class:`OfflineFeatureEngine` of
   its own (clicks before the checkpoint only feed the counters), and scores the new vectors. A chunk's
   corrected verdicts are sent with an idempotent producer and acknowledged **before** the checkpoint
   that moves past them is written.
4. **done** (or **failed** with the reason).

Delivery guarantee (see docs/replay.md): every correction is published; none is published twice by
one job as long as a restarted run indexes the verdicts after the dead run's last request landed
(a restart takes seconds; a produce request is appended within its request timeout).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from agents.replay.decide import Action, Prior, plan
from agents.replay.exceptions import BadJob
from agents.replay.job import ReplayJob
from agents.replay.progress import Progress
from agents.replay.reader import (
    index_verdicts,
    merged_clicks,
    parse_record,
    purchased,
    read_ranges,
    resolve,
)
from app.contracts import topics
from app.contracts.events import format_time, model_verdict_wire
from app.contracts.settings import Settings
from app.features import FEATURE_VERSION, OfflineFeatureEngine
from models.exceptions import ModelError
from models.labels import DEFAULT_ATTRIBUTION_WINDOW_MS
from models.metrics import DEFAULT_K
from models.registry import Registry
from models.scorer import Scorer

__all__ = ["JobRunner", "Stopped", "load_pinned_scorer"]

log = logging.getLogger(__name__)
_HOUR_MS = 3_600_000


class Stopped(Exception):  # noqa: N818 - control flow, not an error
    """The worker is shutting down; the job resumes from its last checkpoint."""


def load_pinned_scorer(settings: Settings, version: str) -> Scorer:
    """The job's model, or :class:`BadJob` naming the versions the registry has."""
    registry = Registry(settings.registry_dir)
    try:
        exists = registry.exists(version)
    except ModelError:
        exists = False
    if not exists:
        known = ", ".join(registry.versions()) or "none"
        raise BadJob(f"unknown model version {version!r} in {registry.root} (registered: {known})")
    try:
        return Scorer.from_registry(registry, version, providers=settings.onnx_provider)
    except ModelError as exc:
        raise BadJob(f"model version {version!r} cannot be used: {exc}") from None


class JobRunner:
    def __init__(
        self,
        settings: Settings,
        job: ReplayJob,
        progress: Progress | None,
        producer: AIOKafkaProducer,
        consumer: AIOKafkaConsumer,
        checkpoint: Callable[[Progress], Awaitable[None]],
        stop: asyncio.Event,
    ) -> None:
        self.settings = settings
        self.job = job
        fresh = progress is None or progress.submitted_at_ms != job.submitted_at_ms
        self.progress = Progress(job.job_id, job.submitted_at_ms) if fresh else progress  # type: ignore[assignment]
        self.producer = producer
        self.consumer = consumer
        self._checkpoint = checkpoint
        self.stop = stop
        self.verdicts_topic = settings.topic(topics.VERDICTS)
        self.clicks_topic = settings.topic(topics.CLICKS)
        self.publish_all = job.publish == "all"
        self.decided_at = format_time(job.submitted_at_ms)
        self._run_started = 0.0
        self._run_positions = 0

    async def checkpoint(self, state: str | None = None) -> None:
        p = self.progress
        if state is not None:
            p.state = state
        p.updated_at_ms = time.time_ns() // 1_000_000
        elapsed = time.monotonic() - self._run_started
        if self._run_positions and elapsed > 0:
            p.clicks_per_s = self._run_positions / elapsed
        await self._checkpoint(p)

    async def run(self) -> Progress:
        p, job = self.progress, self.job
        self._run_started = time.monotonic()
        try:
            self.scorer = load_pinned_scorer(self.settings, job.model_version)
            if not p.range:
                p.started_at_ms = time.time_ns() // 1_000_000
                await self.checkpoint("resolving")
                p.range, p.warm_from, p.read_end, p.event_range = await resolve(
                    self.consumer, self.settings, job
                )
                p.next = {q: lo for q, (lo, _) in p.range.items()}
            await self.checkpoint("indexing")
            await self._index()
            await self.checkpoint("running")
            if job.mode == "rescore":
                await self._rescore()
            else:
                await self._recompute()
        except BadJob as exc:
            p.error = str(exc)
            await self.checkpoint("failed")
            log.error("replay job %s failed: %s", job.job_id, exc)
            return p
        await self.checkpoint("done")
        log.info("replay job %s done: %s", job.job_id, p.counters)
        return p

    # --- indexing ---------------------------------------------------------------------------------

    async def _index(self) -> None:
        p = self.progress
        ids: set[str] = set()
        session_hours: Counter[tuple[str, int]] = Counter()
        min_ts: int | None = None
        max_bytes = self.settings.max_event_bytes
        async for _, records in read_ranges(self.consumer, self.clicks_topic, p.range):
            first_ts = records[0].timestamp
            min_ts = first_ts if min_ts is None else min(min_ts, first_ts)
            for r in records:
                click = parse_record(r, max_bytes)
                if click is None or not self._in_time(click.event_time_ms):
                    continue
                ids.add(click.click_id)
                session_hours[(click.session_id, click.event_time_ms // _HOUR_MS)] += 1
        since = (min_ts or 0) - int(self.settings.replay_lateness_s * 1000)
        contains = ids.__contains__
        self.priors, self.mine, n_verdicts = await index_verdicts(
            self.consumer, self.settings, contains, since, self.job.job_id, self.job.mode == "rescore"
        )
        self.purchasing = await purchased(self.consumer, self.settings, contains, since)
        self.session_hours = session_hours
        log.info(
            "replay job %s: %d clicks in range, %d with a verdict (%d verdict records read), %d already "
            "published by this job, %d purchasing",
            self.job.job_id,
            len(ids),
            len(self.priors),
            n_verdicts,
            len(self.mine),
            len(self.purchasing),
        )

    def _in_time(self, t: int) -> bool:
        r = self.progress.event_range
        return r is None or r[0] <= t < r[1]

    # --- modes ------------------------------------------------------------------------------------

    async def _rescore(self) -> None:
        p = self.progress
        todo = {q: (p.next.get(q, lo), hi) for q, (lo, hi) in p.range.items()}
        max_bytes = self.settings.max_event_bytes
        chunk: list[tuple[int, int, Any, Any]] = []
        async for q, records in read_ranges(self.consumer, self.clicks_topic, todo):
            for r in records:
                click = parse_record(r, max_bytes)
                row = None
                if click is not None:
                    prior = self.priors.get(click.click_id)
                    if prior is not None and prior.features and prior.feature_version == FEATURE_VERSION:
                        row = prior.features
                chunk.append((q, r.offset, click, row))
            if len(chunk) >= self.settings.replay_chunk_clicks:
                await self._flush(chunk)
                chunk = []
        if chunk:
            await self._flush(chunk)

    async def _recompute(self) -> None:
        p = self.progress
        engine = OfflineFeatureEngine()
        p.counters["warmup"] = 0
        ranges = {q: (p.warm_from[q], p.read_end[q]) for q in p.warm_from}
        chunk: list[tuple[int, int, Any, Any]] = []
        async for items in merged_clicks(
            self.consumer, self.clicks_topic, ranges, self.settings.max_event_bytes, p.range.keys()
        ):
            for q, offset, click, _ts in items:
                bounds = p.range.get(q)
                if bounds is None or not bounds[0] <= offset < bounds[1]:
                    if click is not None:
                        engine.process(click)
                        p.counters["warmup"] += 1
                    continue
                if offset < p.next[q]:  # decided before a restart: counters only
                    if click is not None:
                        engine.process(click)
                    continue
                chunk.append((q, offset, click, engine.process(click) if click is not None else None))
            if len(chunk) >= self.settings.replay_chunk_clicks:
                await self._flush(chunk)
                chunk = []
        if chunk:
            await self._flush(chunk)

    # --- decide, publish, checkpoint --------------------------------------------------------------

    async def _flush(self, chunk: list[tuple[int, int, Any, Any]]) -> None:
        p, c = self.progress, self.progress.counters
        decided = []
        for _q, _offset, click, row in chunk:
            c["read"] += 1
            if click is None:
                c["invalid_input"] += 1
            elif not self._in_time(click.event_time_ms):
                c["outside_time"] += 1
            elif row is None:
                c["no_features"] += 1
            else:
                decided.append((click, row))
        futures = []
        if decided:
            matrix = np.asarray([row for _, row in decided], dtype=np.float32)
            scores = self.scorer.score(matrix)
            slices = [click.slice for click, _ in decided]
            invalid, thresholds = self.scorer.decide(scores, slices)
            send = self.producer.send
            for i, (click, _row) in enumerate(decided):
                cid = click.click_id
                bad, score = bool(invalid[i]), float(scores[i])
                prior = self.priors.get(cid)
                action, revision = plan(prior, cid in self.mine, bad, score, self.publish_all)
                c["decided"] += 1
                self._count(click, prior, bad)
                if action is Action.ALREADY:
                    c["already_published"] += 1
                elif action is Action.UNCHANGED:
                    c["unchanged"] += 1
                else:
                    value = self._verdict(click, matrix[i], score, float(thresholds[i]), bad, revision)
                    futures.append(await send(self.verdicts_topic, value, cid.encode()))
                    c["published"] += 1
        if futures:
            await asyncio.gather(*futures)  # acknowledged (acks=all) before the checkpoint moves on
        for q, offset, _click, _row in chunk:
            if offset + 1 > p.next.get(q, 0):
                p.next[q] = offset + 1
        self._run_positions += len(chunk)
        await self.checkpoint()
        if self.stop.is_set():
            raise Stopped(self.job.job_id)

    def _count(self, click: Any, prior: Prior | None, bad: bool) -> None:
        p, c = self.progress, self.progress.counters
        bought_ms = self.purchasing.get(click.click_id)
        # The weak label's rule (models.labels): a purchase within the attribution window.
        purchasing = (
            bought_ms is not None and 0 <= bought_ms - click.event_time_ms <= DEFAULT_ATTRIBUTION_WINDOW_MS
        )
        robotic = self.session_hours[(click.session_id, click.event_time_ms // _HOUR_MS)] > DEFAULT_K
        if prior is None:
            c["first_decision"] += 1
        else:
            if bad and not prior.invalid:
                c["flipped_to_invalid"] += 1
            elif prior.invalid and not bad:
                c["flipped_to_valid"] += 1
            p.add_rate("before", click.slice, prior.invalid, purchasing, robotic)
        p.add_rate("after", click.slice, bad, purchasing, robotic)

    def _verdict(
        self, click: Any, vector: np.ndarray, score: float, threshold: float, bad: bool, revision: int
    ) -> bytes:
        """The verdict's JSON (:func:`app.contracts.events.verdict_wire`, the one layout)."""
        return orjson.dumps(
            model_verdict_wire(
                click,
                bad,
                score,
                threshold,
                self.scorer.version,
                revision,
                "replay",
                self.decided_at,
                FEATURE_VERSION,
                vector,
                self.job.job_id,
            ),
            option=orjson.OPT_SERIALIZE_NUMPY,
        )
