"""Stage 3: user and session counters, the feature vector, micro-batched ONNX scoring, verdicts.

Consumes ``clicks-by-entity`` (bundles of clicks on the partition of their user, or session when
there is no user: a session belongs to one user, so its state lives on the same partition). Records
are taken for up to ``IVT_BATCH_MAX_WAIT_MS`` and their clicks scored in batches of up to
``IVT_BATCH_MAX_EVENTS``: state is updated click by click in arrival order (so features equal the
offline engine's), each batch is scored in one ONNX Runtime call, each click is judged against its
slice's threshold, and verdicts keyed by click id go to ``verdicts`` with the feature vector that
produced them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

import faust
import numpy as np
import orjson

from agents.delivery import acking
from agents.event_batches import take_batches
from agents.faust_compat import current_events
from agents.headers import forward_headers
from agents.record_batches import RecordBatches, fetch_metadata, kafka_producer
from agents.sweeper import PartitionSweeper
from agents.table_writes import TableWriter
from app import features
from app.events import Click, EnrichedClick, decode_entity_bundle, format_time, model_verdict_wire
from app.exceptions import InvalidEvent
from app.faust_app import app, clicks_by_entity_topic, settings, state_table, verdicts_topic
from app.features import FEATURE_VERSION, SessionState, UserState, entity_stage
from app.gc_tuning import freeze_startup_heap
from app.metrics import STATS, stats_dir
from app.topics import key_partitions
from models.registry import Registry
from models.scorer import Scorer

__all__ = [
    "score_clicks",
    "user_states",
    "session_states",
    "load_scorer",
    "verdict_values",
    "decode_events",
    "score_batch",
    "flush_states",
]

log = logging.getLogger(__name__)

user_states = state_table("user-state", "UserState bytes per Click.entity_key (user, else session)")
session_states = state_table("session-state", "SessionState bytes per session id")
user_writer, session_writer = TableWriter(user_states), TableWriter(session_states)
_every_ms = int(settings.state_sweep_s * 1000)
user_sweeper = PartitionSweeper(user_writer, UserState, _every_ms)
session_sweeper = PartitionSweeper(session_writer, SessionState, _every_ms)


def load_scorer() -> Scorer:
    """The pinned version (IVT_MODEL_VERSION), else the newest active one, else the reference model."""
    registry = Registry(settings.registry_dir)
    version = settings.model_version
    if not version:
        active = registry.latest(status="active")
        if active is None:
            from models.tiny import ensure_reference_model

            active = ensure_reference_model(registry)
            log.warning(
                "no active model in %s: serving the reference model %s", registry.root, active.version
            )
        version = active.version
    scorer = Scorer.from_registry(registry, version, providers=settings.onnx_provider)
    for size in range(1, settings.batch_max_events + 1):  # ONNX Runtime plans memory per batch shape
        scorer.score(np.zeros((size, scorer.n_features), dtype=np.float32))
    log.info(
        "serving model %s on %s; feature engine %s",
        scorer.version,
        scorer.provider,
        "compiled (mypyc)" if features.COMPILED else "in Python (not compiled, see app/features/compiled.py)",
    )
    STATS.model_version, STATS.provider = scorer.version, scorer.provider
    return scorer


def verdict_values(
    clicks: list,
    vectors: np.ndarray,
    scores: np.ndarray,
    invalid: np.ndarray,
    thresholds: np.ndarray,
    model_version: str,
    decided_at_ms: int,
) -> list[bytes]:
    """One live verdict (revision 0) per click, as the JSON of :func:`app.events.model_verdict_wire`.

    Pure, so tests can call it. No :class:`app.events.Verdict` objects in between: building one per
    click and then its dict cost about as much as the JSON itself.
    """
    decided_at, dumps, option = format_time(decided_at_ms), orjson.dumps, orjson.OPT_SERIALIZE_NUMPY
    return [
        dumps(
            model_verdict_wire(
                click, bad, score, threshold, model_version, 0, "live", decided_at, FEATURE_VERSION, vector
            ),
            option=option,
        )
        for click, vector, score, bad, threshold in zip(
            clicks, vectors, scores.tolist(), invalid.tolist(), thresholds.tolist(), strict=True
        )
    ]


def decode_events(events: Sequence) -> list[tuple[int, EnrichedClick]]:
    """The clicks of a batch of ``clicks-by-entity`` records, in order, each with its partition."""
    clicks: list[tuple[int, EnrichedClick]] = []
    for event in events:
        message = event.message
        try:
            bundle = decode_entity_bundle(event.value, forward_headers(message.headers))
        except InvalidEvent as exc:
            log.error("undecodable record on %s@%s: %s", message.partition, message.offset, exc.reason)
            continue
        clicks.extend((message.partition, item) for item in bundle)
    return clicks


def update_states(items: Sequence[tuple[int, EnrichedClick]]) -> tuple[list[Click], np.ndarray]:
    """Update each click's user and session state in arrival order: the clicks and their vectors."""
    clicks, rows = [], []
    for partition, (click, ip_features, _) in items:
        user_key, session_key = click.entity_key.encode(), click.session_id.encode()
        user, session, vector = entity_stage(
            click,
            user_writer.get(partition, user_key),
            session_writer.get(partition, session_key),
            np.asarray(ip_features, dtype=np.float32),
        )
        user_writer.put(partition, user_key, user.to_bytes())
        session_writer.put(partition, session_key, session.to_bytes())
        user_sweeper.maybe_sweep(partition, click.event_time_ms)
        session_sweeper.maybe_sweep(partition, click.event_time_ms)
        clicks.append(click)
        rows.append(vector)
    return clicks, np.stack(rows)


@app.agent(clicks_by_entity_topic, name="score-clicks")
async def score_clicks(stream: faust.StreamT[bytes]) -> None:
    scorer = load_scorer()
    freeze_startup_heap()  # the last start-up step: Faust, the model and ONNX Runtime are loaded
    max_events, max_wait_s = settings.batch_max_events, settings.batch_max_wait_ms / 1000
    outputs = (verdicts_topic.get_topic_name(), user_writer.changelog, session_writer.changelog)
    await fetch_metadata(kafka_producer(app), *outputs)
    async with acking(stream, "score-clicks") as acker:
        async for events in take_batches(stream, max_events, max_wait_s):
            events = current_events(app, events)
            items = decode_events(events)
            keys = [click.click_id.encode() for _, (click, _, _) in items]
            partitions = key_partitions(keys, await RecordBatches(kafka_producer(app)).partitions(outputs[0]))
            deliveries = []
            for start in range(0, len(items), max_events):
                if start:
                    await asyncio.sleep(0)  # let the producer send the previous batch's verdicts
                end = start + max_events
                deliveries += await score_batch(
                    scorer, items[start:end], keys[start:end], partitions[start:end]
                )
            deliveries += await flush_states(kafka_producer(app))
            await acker.submit(events, deliveries)


async def score_batch(
    scorer: Scorer,
    items: Sequence[tuple[int, EnrichedClick]],
    keys: Sequence[bytes],
    partitions: Sequence[int],
) -> list:
    """State, scores and verdicts of up to IVT_BATCH_MAX_EVENTS clicks, sent; their delivery futures.

    ``keys`` are the verdicts' keys (the click ids) and ``partitions`` their partitions of
    ``verdicts``, computed for the whole take at once (:func:`app.topics.key_partitions`).

    The user and session changes stay buffered in the table writers (reads see them) until
    :func:`flush_states`. The worker's in-process cost histograms time this call: batch formed ->
    verdicts handed to the producer.
    """
    started, started_cpu = time.perf_counter(), time.thread_time()
    clicks, vectors = update_states(items)
    scores = scorer.score(vectors)
    slices = [c.slice for c in clicks]
    invalid, thresholds = scorer.decide(scores, slices)
    decided_at_ms = time.time_ns() // 1_000_000
    values = verdict_values(clicks, vectors, scores, invalid, thresholds, scorer.version, decided_at_ms)
    out = verdicts_topic.get_topic_name()
    batches = RecordBatches(kafka_producer(app))
    for key, partition, value, (_, (_, _, headers)) in zip(keys, partitions, values, items, strict=True):
        batches.add(out, partition, key, value, headers)
    deliveries = [batch.future for batch in await batches.send()]
    STATS.record_batch(
        (time.perf_counter() - started) * 1e6,
        (time.thread_time() - started_cpu) * 1e6,
        slices,
        invalid.tolist(),
    )
    return deliveries


async def flush_states(producer: object) -> list:
    """Write the buffered user and session changes to RocksDB and send their changelog records.

    Once per take of records, after all its scoring batches, not once per scoring batch: the records
    gate only the acks, and a key changed in several batches of a take costs one write and one
    record. Their delivery futures; timed into the worker's flush histograms.
    """
    started, started_cpu = time.perf_counter(), time.thread_time()
    deliveries = await user_writer.flush(producer) + await session_writer.flush(producer)
    STATS.record_flush((time.perf_counter() - started) * 1e6, (time.thread_time() - started_cpu) * 1e6)
    return deliveries


@app.timer(interval=5.0, name="worker-stats")
async def write_stats() -> None:
    STATS.write(stats_dir(settings.data_dir))
