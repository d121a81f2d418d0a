"""``ivt replay-worker``: the process that runs replay jobs, one at a time, in submission order.

It is its own process (never a live worker's agent), lowers its own CPU priority
(``IVT_REPLAY_NICE``), and talks to Kafka with plain aiokafka: live traffic never waits for it.

On start it reads ``replay-progress`` (latest checkpoint per job) and then follows ``replay-jobs``
from the beginning: every job whose latest submission has no finished checkpoint is run, a started
one from its checkpoint. Run one replay worker per app id: jobs run strictly one after another, so
each job's revisions go above every earlier job's (a second worker would run the same jobs).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from agents.replay.exceptions import ReplayError
from agents.replay.job import ReplayJob
from agents.replay.progress import Progress
from agents.replay.reader import new_consumer, read_ranges
from agents.replay.runner import JobRunner, Stopped
from app.contracts import topics
from app.contracts.settings import Settings
from app.kafka import clients

__all__ = ["READY_MARK", "ReplayService", "run_replay_worker", "latest_records"]

log = logging.getLogger(__name__)
READY_MARK = "replay worker ready"


def new_producer(settings: Settings) -> AIOKafkaProducer:
    """Idempotent (no duplicates from retries) and acks=all: an acknowledged verdict is in the log."""
    return clients.producer(
        settings,
        acks="all",
        enable_idempotence=True,
        # fewer, larger produce requests: less broker CPU taken from the live path per verdict
        linger_ms=50,
        max_batch_size=512 * 1024,
        max_request_size=8 * 1024 * 1024,
    )


async def latest_records(consumer: AIOKafkaConsumer, topic: str) -> dict[str, tuple[int, bytes | None]]:
    """Key -> (offset, value) of the latest record per key, from the start of ``topic`` to its end now."""
    tp = TopicPartition(topic, 0)
    begin, end = (await consumer.beginning_offsets([tp]))[tp], (await consumer.end_offsets([tp]))[tp]
    out: dict[str, tuple[int, bytes | None]] = {}
    async for _, records in read_ranges(consumer, topic, {0: (begin, end)}):
        for r in records:
            if r.key is not None:
                out[r.key.decode("utf-8", "replace")] = (r.offset, r.value)
    return out


class ReplayService:
    def __init__(self, settings: Settings, stop: asyncio.Event) -> None:
        self.settings = settings
        self.stop = stop
        self.jobs_topic = settings.topic(topics.REPLAY_JOBS)
        self.progress_topic = settings.topic(topics.REPLAY_PROGRESS)
        self.jobs: dict[str, tuple[int, ReplayJob]] = {}
        self.progress: dict[str, Progress] = {}

    def _finished(self, job: ReplayJob) -> bool:
        p = self.progress.get(job.job_id)
        return p is not None and p.submitted_at_ms == job.submitted_at_ms and p.finished

    async def _checkpoint(self, progress: Progress) -> None:
        self.progress[progress.job_id] = progress
        await self.producer.send_and_wait(self.progress_topic, progress.to_json(), progress.job_id.encode())

    async def run(self) -> None:
        self.producer = new_producer(self.settings)
        data = new_consumer(self.settings)
        jobs = new_consumer(self.settings)
        await self.producer.start()
        await data.start()
        await jobs.start()
        try:
            for key, (_, value) in (await latest_records(data, self.progress_topic)).items():
                if value is not None:
                    try:
                        self.progress[key] = Progress.from_json(value)
                    except ReplayError as exc:
                        log.error("ignoring progress of %s: %s", key, exc)
            tp = TopicPartition(self.jobs_topic, 0)
            jobs.assign([tp])
            await jobs.seek_to_beginning(tp)
            log.info("%s (jobs on %s)", READY_MARK, self.jobs_topic)
            while not self.stop.is_set():
                for record in (await jobs.getmany(tp, timeout_ms=300)).get(tp, []):
                    self._take(record)
                pending = sorted((off, j.job_id) for off, j in self.jobs.values() if not self._finished(j))
                if not pending:
                    continue
                job = self.jobs[pending[0][1]][1]
                log.info(
                    "replay job %s: %s, model %s, %s",
                    job.job_id,
                    job.mode,
                    job.model_version,
                    job.describe_range(),
                )
                runner = JobRunner(
                    self.settings,
                    job,
                    self.progress.get(job.job_id),
                    self.producer,
                    data,
                    self._checkpoint,
                    self.stop,
                )
                try:
                    await runner.run()
                except Stopped:
                    log.info("replay job %s interrupted; it resumes from its last checkpoint", job.job_id)
        finally:
            await jobs.stop()
            await data.stop()
            await self.producer.stop()

    def _take(self, record: object) -> None:
        key = record.key.decode("utf-8", "replace") if record.key is not None else None  # type: ignore[attr-defined]
        if key is None:
            return
        if record.value is None:  # type: ignore[attr-defined]
            self.jobs.pop(key, None)
            return
        try:
            job = ReplayJob.from_json(record.value)  # type: ignore[attr-defined]
        except ReplayError as exc:
            log.error("ignoring replay job record at offset %s: %s", record.offset, exc)  # type: ignore[attr-defined]
            return
        self.jobs[job.job_id] = (record.offset, job)  # type: ignore[attr-defined]


def run_replay_worker(settings: Settings | None = None, log_level: str | None = None) -> None:
    """The ``ivt replay-worker`` entry point: until SIGTERM / SIGINT, which stops after the current chunk."""
    settings = settings or Settings.from_env()
    logging.basicConfig(
        level=(log_level or settings.log_level).upper(),
        format="[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s",
    )
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    if settings.replay_nice:
        os.nice(settings.replay_nice)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await ReplayService(settings, stop).run()

    asyncio.run(main())
