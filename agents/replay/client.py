"""What ``ivt replay submit|status|list|rerun`` do, as functions (tests and benchmarks call them)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import replace

from aiokafka import TopicPartition

from agents.replay.exceptions import BadJob, ReplayError
from agents.replay.job import ReplayJob
from agents.replay.progress import Progress
from agents.replay.reader import new_consumer, resolve
from agents.replay.runner import load_pinned_scorer
from agents.replay.worker import latest_records, new_producer
from app.contracts import topics
from app.contracts.settings import Settings

__all__ = ["submit", "submit_async", "rerun", "jobs_and_progress", "follow", "wait_done"]


async def jobs_and_progress(settings: Settings) -> tuple[dict[str, ReplayJob], dict[str, Progress]]:
    """Latest spec and latest checkpoint of every job."""
    consumer = new_consumer(settings)
    await consumer.start()
    try:
        raw_jobs = await latest_records(consumer, settings.topic(topics.REPLAY_JOBS))
        raw_progress = await latest_records(consumer, settings.topic(topics.REPLAY_PROGRESS))
    finally:
        await consumer.stop()
    jobs = {k: ReplayJob.from_json(v) for k, (_, v) in sorted(raw_jobs.items(), key=lambda kv: kv[1][0]) if v}
    progress = {k: Progress.from_json(v) for k, (_, v) in raw_progress.items() if v}
    return jobs, progress


async def submit_async(settings: Settings, job: ReplayJob) -> ReplayJob:
    """Check the job (model, range, id) and publish it; :class:`BadJob` says what is wrong."""
    load_pinned_scorer(settings, job.model_version)
    existing, _ = await jobs_and_progress(settings)
    old = existing.get(job.job_id)
    if old is not None and not old.same_request(job):
        raise BadJob(
            f"job id {job.job_id!r} was submitted before with another spec ({old.mode}, model "
            f"{old.model_version}, {old.describe_range()}); choose another id"
        )
    consumer = new_consumer(settings)
    await consumer.start()
    try:
        await resolve(consumer, settings, job)  # the worker resolves again; this is for clear errors now
    finally:
        await consumer.stop()
    producer = new_producer(settings)
    await producer.start()
    try:
        await producer.send_and_wait(settings.topic(topics.REPLAY_JOBS), job.to_json(), job.job_id.encode())
    finally:
        await producer.stop()
    return job


def submit(settings: Settings, job: ReplayJob) -> ReplayJob:
    return asyncio.run(submit_async(settings, job))


async def rerun(settings: Settings, job_id: str) -> ReplayJob:
    """Submit a known job again (a new run; it publishes nothing its earlier runs published)."""
    jobs, _ = await jobs_and_progress(settings)
    if job_id not in jobs:
        raise BadJob(f"no replay job {job_id!r} (known: {', '.join(jobs) or 'none'})")
    return await submit_async(settings, replace(jobs[job_id], submitted_at_ms=time.time_ns() // 1_000_000))


async def follow(settings: Settings, job_id: str, timeout_s: float | None = None) -> AsyncIterator[Progress]:
    """Yield the job's latest checkpoint about every 0.3 s until its current run finishes.

    One consumer reads ``replay-progress`` from its start and keeps following it, so a checkpoint
    written while we start is never missed.
    """
    jobs, _ = await jobs_and_progress(settings)
    if job_id not in jobs:
        raise BadJob(f"no replay job {job_id!r} (known: {', '.join(jobs) or 'none'})")
    job = jobs[job_id]
    latest = Progress(job_id, job.submitted_at_ms)  # queued until the worker starts this run
    consumer = new_consumer(settings)
    await consumer.start()
    tp = TopicPartition(settings.topic(topics.REPLAY_PROGRESS), 0)
    consumer.assign([tp])
    await consumer.seek_to_beginning(tp)
    end = (await consumer.end_offsets([tp]))[tp]
    caught_up = end == 0
    key = job_id.encode()
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    try:
        while deadline is None or time.monotonic() < deadline:
            for r in (await consumer.getmany(tp, timeout_ms=300)).get(tp, []):
                if r.key == key and r.value is not None:
                    p = Progress.from_json(r.value)
                    if p.submitted_at_ms == job.submitted_at_ms:
                        latest = p
            caught_up = caught_up or await consumer.position(tp) >= end
            if caught_up:
                yield latest
                if latest.finished:
                    return
        raise ReplayError(f"replay job {job_id!r} not finished after {timeout_s} s (state {latest.state})")
    finally:
        await consumer.stop()


async def wait_done(settings: Settings, job_id: str, timeout_s: float = 120) -> Progress:
    """The job's final checkpoint (done or failed); :class:`ReplayError` after ``timeout_s``."""
    last = None
    async for p in follow(settings, job_id, timeout_s):
        last = p
    assert last is not None
    return last
