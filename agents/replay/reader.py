"""Reading ``clicks`` and ``verdicts`` by offset with plain aiokafka: assign, seek, batched getmany.

* :func:`resolve` turns a job's offsets or event-time range into per-partition offset ranges (with
  clear errors for unknown partitions, offsets already deleted by retention or beyond the end, and
  empty ranges) and, for recompute, where the warm-up starts;
* :func:`read_ranges` yields record batches of ``[start, end)`` per partition;
* :func:`merged_clicks` merges partitions into one stream ordered by (event time, partition, offset),
  the order live traffic has when producers send in event-time order, so recompute's counters see
  every key's clicks in the order the live stages saw them;
* :func:`index_verdicts` finds the latest verdict of each wanted click and the ones this job has
  already published; :func:`purchased` the wanted clicks a purchase names.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any, Final

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from agents.replay.decide import Prior
from agents.replay.exceptions import BadJob, OffsetsOutOfRange
from agents.replay.job import ReplayJob
from app.contracts import topics
from app.contracts.events import Click, format_time, parse_click, parse_time
from app.contracts.exceptions import InvalidEvent
from app.contracts.settings import Settings
from app.kafka import clients
from app.runtime.metadata import topic_partitions

__all__ = [
    "Item",
    "new_consumer",
    "partitions_of",
    "resolve",
    "read_ranges",
    "merged_clicks",
    "parse_record",
    "index_verdicts",
    "purchased",
]

#: (partition, offset, click or None if the record is not a valid click, record timestamp)
Item = tuple[int, int, Click | None, int]
_FETCH_RECORDS: Final = 5000
_MERGE_BUFFER: Final = 20000  # records buffered per partition before its fetching pauses


def new_consumer(settings: Settings) -> AIOKafkaConsumer:
    """A group-less consumer for manual assignment (nothing is committed; progress is ours)."""
    return clients.consumer(
        settings,
        enable_auto_commit=False,
        group_id=None,
        auto_offset_reset="none",
        fetch_max_bytes=16 * 1024 * 1024,
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )


async def partitions_of(consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    parts = await topic_partitions(consumer, topic)
    if not parts:
        raise BadJob(f"topic {topic!r} does not exist (run `ivt topics create`)")
    return parts


async def _first_timestamps(consumer: AIOKafkaConsumer, topic: str, starts: dict[int, int]) -> list[int]:
    stamps = []
    for p, offset in starts.items():
        tp = TopicPartition(topic, p)
        consumer.assign([tp])
        consumer.seek(tp, offset)
        records = (await consumer.getmany(tp, timeout_ms=10000, max_records=1)).get(tp, [])
        if records:
            stamps.append(records[0].timestamp)
    return stamps


async def _offsets_at(
    consumer: AIOKafkaConsumer, tps: list[TopicPartition], ts: int, end: dict[TopicPartition, int]
) -> dict[int, int]:
    """First offset with a record timestamp >= ts per partition (the end when there is none)."""
    found = await consumer.offsets_for_times({tp: max(ts, 0) for tp in tps})
    return {tp.partition: (found[tp].offset if found.get(tp) else end[tp]) for tp in tps}


async def resolve(
    consumer: AIOKafkaConsumer, settings: Settings, job: ReplayJob
) -> tuple[dict[int, tuple[int, int]], dict[int, int], dict[int, int], tuple[int, int] | None]:
    """``(range, warm_from, read_end, event_range)`` of a job (see :class:`~agents.replay.progress.Progress`)."""
    topic = settings.topic(topics.CLICKS)
    tps = await partitions_of(consumer, topic)
    begin = await consumer.beginning_offsets(tps)
    end = await consumer.end_offsets(tps)
    by_p = {tp.partition: tp for tp in tps}
    lateness_ms = int(settings.replay_lateness_s * 1000)
    if job.offsets is not None:
        problems = []
        for p, (lo, hi) in sorted(job.offsets.items()):
            if p not in by_p:
                problems.append(f"partition {p} does not exist ({topic} has partitions 0-{len(tps) - 1})")
                continue
            tp = by_p[p]
            if lo < begin[tp]:
                problems.append(
                    f"partition {p}: start {lo} is before the earliest retained offset {begin[tp]}"
                )
            if hi > end[tp]:
                problems.append(f"partition {p}: end {hi} is beyond the end of the log ({end[tp]})")
        if problems:
            raise OffsetsOutOfRange(f"replay job {job.job_id!r}: " + "; ".join(problems))
        ranges = {p: r for p, r in sorted(job.offsets.items()) if r[1] > r[0]}
        event_range = None
        stamps = await _first_timestamps(consumer, topic, {p: lo for p, (lo, _) in ranges.items()})
        anchor = min(stamps) if stamps else 0
    else:
        assert job.start_ms is not None and job.end_ms is not None
        lo_at = await _offsets_at(consumer, tps, job.start_ms - lateness_ms, end)
        hi_at = await _offsets_at(consumer, tps, job.end_ms + lateness_ms, end)
        ranges = {p: (lo_at[p], hi_at[p]) for p in sorted(lo_at) if hi_at[p] > lo_at[p]}
        event_range = (job.start_ms, job.end_ms)
        anchor = job.start_ms - lateness_ms
        if not ranges:
            raise BadJob(
                f"replay job {job.job_id!r}: no click has a record timestamp in "
                f"[{format_time(job.start_ms - lateness_ms)}, {format_time(job.end_ms + lateness_ms)}) "
                "(empty range)"
            )
    if not ranges:
        raise BadJob(f"replay job {job.job_id!r}: empty range")
    warm_from: dict[int, int] = {}
    read_end = {p: hi for p, (_, hi) in ranges.items()}
    if job.mode == "recompute":
        at = await _offsets_at(consumer, tps, anchor - int(job.lookback_s * 1000), end)
        for tp in tps:
            p = tp.partition
            start = max(at[p], begin[tp])
            warm_from[p] = min(start, ranges[p][0]) if p in ranges else start
            if p not in ranges:
                read_end[p] = end[tp]
    return ranges, warm_from, read_end, event_range


class _Fetcher:
    """Manual assignment of ``[start, end)`` per partition; :meth:`fetch` returns what arrived."""

    def __init__(self, consumer: AIOKafkaConsumer, topic: str, ranges: dict[int, tuple[int, int]]) -> None:
        self.consumer = consumer
        self.active = {TopicPartition(topic, p): hi for p, (lo, hi) in ranges.items() if hi > lo}
        self.done = {p for p, (lo, hi) in ranges.items() if hi <= lo}
        self.tps = {tp.partition: tp for tp in self.active}
        consumer.assign(list(self.active))
        for tp in self.active:
            consumer.seek(tp, ranges[tp.partition][0])

    async def fetch(self, max_records: int = _FETCH_RECORDS) -> list[tuple[int, list[Any]]]:
        if not self.active:
            return []
        batch = await self.consumer.getmany(*self.active, timeout_ms=500, max_records=max_records)
        out = []
        for tp in list(self.active):
            hi = self.active[tp]
            records = batch.get(tp)
            if records:
                if records[-1].offset >= hi:
                    records = [r for r in records if r.offset < hi]
                if records:
                    out.append((tp.partition, records))
            # control records and compaction leave gaps in offsets: the position says where we are
            if await self.consumer.position(tp) >= hi:
                self.consumer.pause(tp)
                del self.active[tp]
                self.done.add(tp.partition)
        return out


async def read_ranges(
    consumer: AIOKafkaConsumer, topic: str, ranges: dict[int, tuple[int, int]]
) -> AsyncIterator[tuple[int, list[Any]]]:
    """Yield ``(partition, records)`` until every partition has reached its end (exclusive)."""
    fetcher = _Fetcher(consumer, topic, ranges)
    while fetcher.active:
        for item in await fetcher.fetch():
            yield item


def parse_record(record: Any, max_bytes: int) -> Click | None:
    try:
        return parse_click(record.value, max_bytes)
    except (InvalidEvent, TypeError):
        return None


async def merged_clicks(
    consumer: AIOKafkaConsumer,
    topic: str,
    ranges: dict[int, tuple[int, int]],
    max_bytes: int,
    stop_when_done: Iterable[int] | None = None,
) -> AsyncIterator[list[Item]]:
    """Parsed clicks of ``ranges`` merged by (event time, partition, offset), in lists.

    A partition's records keep their order, so what has been yielded is a prefix of every partition
    (which is what makes a per-partition checkpoint valid). A record that is not a valid click takes
    the event time of the one before it. With ``stop_when_done``, the merge ends once those
    partitions are exhausted (later records of the others cannot come before their last click).
    """
    fetcher = _Fetcher(consumer, topic, ranges)
    parts = [p for p, (lo, hi) in ranges.items() if hi > lo]
    buffers: dict[int, deque[tuple[int, int, Item]]] = {p: deque() for p in parts}
    last_t = dict.fromkeys(parts, -1)
    must = set(parts) if stop_when_done is None else set(stop_when_done) & set(parts)
    paused: set[int] = set()

    def add(p: int, records: list[Any]) -> None:
        buf, t = buffers[p], last_t[p]
        for r in records:
            click = parse_record(r, max_bytes)
            if click is not None:
                t = click.event_time_ms
            buf.append((t, r.offset, (p, r.offset, click, r.timestamp)))
        last_t[p] = t
        if len(buf) > _MERGE_BUFFER and p not in paused:
            consumer.pause(fetcher.tps[p])
            paused.add(p)

    while not all(p in fetcher.done and not buffers[p] for p in must):
        # the minimum is known only once every unfinished partition has a head
        while any(not buffers[p] and p not in fetcher.done for p in parts):
            for p, records in await fetcher.fetch():
                add(p, records)
        heap = [(buffers[p][0][0], p, buffers[p][0][1]) for p in parts if buffers[p]]
        heapq.heapify(heap)
        out: list[Item] = []
        while heap and len(out) < _FETCH_RECORDS:
            _, p, _ = heapq.heappop(heap)
            buf = buffers[p]
            out.append(buf.popleft()[2])
            if buf:
                heapq.heappush(heap, (buf[0][0], p, buf[0][1]))
            elif p not in fetcher.done:
                break  # its next record is not here yet
        for p in list(paused):
            if len(buffers[p]) < _MERGE_BUFFER // 2:
                consumer.resume(fetcher.tps[p])
                paused.discard(p)
        if out:
            yield out


async def _since(consumer: AIOKafkaConsumer, topic: str, since_ts: int) -> dict[int, tuple[int, int]]:
    tps = await partitions_of(consumer, topic)
    end = await consumer.end_offsets(tps)
    start = await _offsets_at(consumer, tps, since_ts, end)
    return {tp.partition: (start[tp.partition], end[tp]) for tp in tps}


async def index_verdicts(
    consumer: AIOKafkaConsumer,
    settings: Settings,
    wanted: Callable[[str], bool],
    since_ts: int,
    job_id: str,
    keep_features: bool,
) -> tuple[dict[str, Prior], set[str], int]:
    """``(latest verdict per wanted click not of this job, clicks this job already has, records read)``.

    Reads ``verdicts`` from the first record stamped at or after ``since_ts`` to the end of the log
    now. Verdicts are keyed by click id, so other clicks' records are skipped without parsing.
    """
    topic = settings.topic(topics.VERDICTS)
    prior: dict[str, Prior] = {}
    mine: set[str] = set()
    n = 0
    async for _, records in read_ranges(consumer, topic, await _since(consumer, topic, since_ts)):
        n += len(records)
        for r in records:
            if r.key is None:
                continue
            click_id = r.key.decode("utf-8", "replace")
            if not wanted(click_id):
                continue
            try:
                d = orjson.loads(r.value)
                revision = int(d["revision"])
                if d.get("source") == "replay" and d.get("job_id") == job_id:
                    mine.add(click_id)
                    continue
                old = prior.get(click_id)
                if old is None or revision >= old.revision:  # billing's rule: the later of equals wins
                    prior[click_id] = Prior(
                        revision,
                        d["decision"] == "invalid",
                        float(d["score"]),
                        d.get("feature_version", ""),
                        d.get("features") if keep_features else None,
                    )
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                continue  # not ours to judge: the verdict topic is written by our workers only
    return prior, mine, n


async def purchased(
    consumer: AIOKafkaConsumer, settings: Settings, wanted: Callable[[str], bool], since_ts: int
) -> dict[str, int]:
    """Wanted clicks that a purchase on ``purchases`` (keyed by click id) names, up to now, with the
    event time of the earliest such purchase (the attribution window is applied by the caller)."""
    topic = settings.topic(topics.PURCHASES)
    out: dict[str, int] = {}
    async for _, records in read_ranges(consumer, topic, await _since(consumer, topic, since_ts)):
        for r in records:
            try:
                doc = orjson.loads(r.value)
                click_id = r.key.decode("utf-8", "replace") if r.key is not None else str(doc.get("click_id"))
                t = parse_time(doc.get("event_time"))
            except (orjson.JSONDecodeError, AttributeError, InvalidEvent):
                continue
            if wanted(click_id) and t < out.get(click_id, t + 1):
                out[click_id] = t
    return out
