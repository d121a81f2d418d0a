"""Stage 3: user and session counters, the feature vector, micro-batched ONNX scoring, verdicts.

Consumes ``clicks-by-entity`` (bundles of clicks on the partition of their user, or session when
there is no user: a session belongs to one user, so its state lives on the same partition). The
clicks of a take are scored in chunks of up to ``IVT_BATCH_MAX_EVENTS``: state is updated click by
click in arrival order (so features equal the offline engine's), each chunk is scored in one ONNX
Runtime call, each click is judged against its slice's threshold, and verdicts keyed by click id go
to ``verdicts`` with the feature vector that produced them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence

import numpy as np
import orjson

from agents.ordering import EventTimeOrder
from agents.sweeper import PartitionSweeper
from app import features
from app.contracts import topics
from app.contracts.events import (
    WATERMARKS_HEADER,
    Click,
    EnrichedClick,
    decode_entity_bundle,
    decode_watermarks,
    format_time,
    model_verdict_wire,
)
from app.contracts.exceptions import InvalidEvent
from app.contracts.headers import forward_headers
from app.contracts.settings import Settings
from app.contracts.topics import key_partitions
from app.features import FEATURE_VERSION, SessionState, UserState, entity_stage
from app.runtime.app import Runtime
from app.runtime.gc_tuning import freeze_startup_heap
from app.runtime.runner import bind_stage
from app.runtime.stage import InputRecord, OutputRecord, Stage, StateTable
from app.runtime.stats import STATS, stats_dir
from app.runtime.tables import TableWriter
from models.registry import Registry
from models.scorer import Scorer

__all__ = ["Score", "bind", "load_scorer", "verdict_values", "decode_records"]

log = logging.getLogger(__name__)


def load_scorer(settings: Settings) -> Scorer:
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
    """One live verdict (revision 0) per click, as the JSON of
    :func:`app.contracts.events.model_verdict_wire`, without a ``Verdict`` object per click."""
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


def decode_records(batch: Sequence[InputRecord]) -> list[tuple[int, EnrichedClick]]:
    """The clicks of a batch of ``clicks-by-entity`` records, in order, each with its partition."""
    clicks: list[tuple[int, EnrichedClick]] = []
    for record in batch:
        try:
            bundle = decode_entity_bundle(record.value, forward_headers(record.headers))
        except InvalidEvent as exc:
            log.error("undecodable record on %s@%s: %s", record.partition, record.offset, exc.reason)
            continue
        clicks.extend((record.partition, item) for item in bundle)
    return clicks


class Score(Stage):
    """Scores clicks with the model ``load`` returns when the stage opens (:func:`load_scorer`)."""

    name = "score-clicks"
    source = topics.CLICKS_BY_ENTITY

    def __init__(
        self,
        settings: Settings,
        user_states: StateTable,
        session_states: StateTable,
        load: Callable[[Settings], Scorer] = load_scorer,
        clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
        wall_clock_s: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings, self.load, self.clock_ms = settings, load, clock_ms
        self.max_events, self.max_wait_s = settings.batch_max_events, settings.batch_max_wait_ms / 1000
        self.out = settings.topic(topics.VERDICTS)
        self.outputs = (self.out,)
        self.users, self.sessions = user_states, session_states
        self.tables = (user_states, session_states)
        every_ms = int(settings.state_sweep_s * 1000)
        self.user_sweeper = PartitionSweeper(user_states, UserState, every_ms)
        self.session_sweeper = PartitionSweeper(session_states, SessionState, every_ms)
        self.verdict_partitions = 0
        self._last: tuple[list[str], list[bool]] = ([], [])  # the slices and decisions of the last chunk
        wait_s = settings.reorder_max_wait_ms / 1000
        #: Event-time order across the IP stage's partitions (None: arrival order).
        self.order = EventTimeOrder(settings.click_partitions, wait_s, wall_clock_s) if wait_s > 0 else None
        if self.order is not None:
            self.idle_s = min(0.1, wait_s)

    def open(self, partitions: Mapping[str, int]) -> None:
        self.scorer = self.load(self.settings)
        self.verdict_partitions = partitions[self.out]
        freeze_startup_heap()  # the last start-up step: Faust, the model and ONNX Runtime are loaded

    def process(self, batch: Sequence[InputRecord]) -> Iterator[list[OutputRecord]]:
        items = decode_records(batch) if self.order is None else self._in_event_time_order(batch)
        keys = [click.click_id.encode() for _, (click, _, _) in items]
        partitions = key_partitions(keys, self.verdict_partitions)
        return self._chunks(items, keys, partitions)

    def _in_event_time_order(self, batch: Sequence[InputRecord]) -> list[tuple[int, EnrichedClick]]:
        """Hold this batch's clicks, note the watermarks that came with them; the clicks released."""
        order = self.order
        assert order is not None
        number = order.new_batch()
        for record in batch:
            partition = record.partition
            for _, item in decode_records((record,)):
                order.hold(number, partition, item[0].event_time_ms, item)
            for key, value in record.headers or ():
                if key == WATERMARKS_HEADER:
                    try:
                        marks = decode_watermarks(value)
                    except InvalidEvent as exc:
                        log.error("record on %s@%s: %s", partition, record.offset, exc.reason)
                        continue
                    for source, mark in marks.items():
                        order.mark(partition, source, mark)
        return order.release()

    def holding(self) -> bool:
        return self.order is not None and self.order.holding()

    def settled(self, batches: int) -> int:
        return batches if self.order is None else self.order.settled()

    def _chunks(
        self, items: list[tuple[int, EnrichedClick]], keys: list[bytes], partitions: Sequence[int]
    ) -> Iterator[list[OutputRecord]]:
        size = self.max_events
        for start in range(0, len(items), size):
            end = start + size
            yield self.score_chunk(items[start:end], keys[start:end], partitions[start:end])

    def score_chunk(
        self, items: Sequence[tuple[int, EnrichedClick]], keys: Sequence[bytes], partitions: Sequence[int]
    ) -> list[OutputRecord]:
        """State, scores and verdicts of up to IVT_BATCH_MAX_EVENTS clicks.

        The user and session changes stay buffered in the state tables (reads see them) until the
        runner flushes them after the take: a key changed in several chunks costs one write.
        """
        clicks, vectors = self.update_states(items)
        scorer = self.scorer
        scores = scorer.score(vectors)
        slices = [c.slice for c in clicks]
        invalid, thresholds = scorer.decide(scores, slices)
        values = verdict_values(clicks, vectors, scores, invalid, thresholds, scorer.version, self.clock_ms())
        self._last = (slices, invalid.tolist())
        out = self.out
        return [
            OutputRecord(out, partition, key, value, headers)
            for key, partition, value, (_, (_, _, headers)) in zip(
                keys, partitions, values, items, strict=True
            )
        ]

    def update_states(self, items: Sequence[tuple[int, EnrichedClick]]) -> tuple[list[Click], np.ndarray]:
        """Update each click's user and session state in arrival order: the clicks and their vectors."""
        users, sessions = self.users, self.sessions
        user_sweeper, session_sweeper = self.user_sweeper, self.session_sweeper
        clicks, rows = [], []
        for partition, (click, ip_features, _) in items:
            user_key, session_key = click.entity_key.encode(), click.session_id.encode()
            user, session, vector = entity_stage(
                click,
                users.get(partition, user_key),
                sessions.get(partition, session_key),
                np.asarray(ip_features, dtype=np.float32),
            )
            users.put(partition, user_key, user.to_bytes())
            sessions.put(partition, session_key, session.to_bytes())
            user_sweeper.maybe_sweep(partition, click.event_time_ms)
            session_sweeper.maybe_sweep(partition, click.event_time_ms)
            clicks.append(click)
            rows.append(vector)
        return clicks, np.stack(rows)

    def chunk_sent(self, wall_us: float, cpu_us: float) -> None:
        """The worker's in-process cost of a scoring chunk: formed -> verdicts handed to the producer."""
        slices, invalid = self._last
        STATS.record_batch(wall_us, cpu_us, slices, invalid)

    def flushed(self, wall_us: float, cpu_us: float) -> None:
        STATS.record_flush(wall_us, cpu_us)


def bind(runtime: Runtime) -> None:
    users = runtime.table("user-state", "UserState bytes per Click.entity_key (user, else session)")
    sessions = runtime.table("session-state", "SessionState bytes per session id")
    bind_stage(runtime, Score(runtime.settings, TableWriter(users), TableWriter(sessions)))
    data_dir = runtime.settings.data_dir

    @runtime.app.timer(interval=5.0, name="worker-stats")
    async def write_stats() -> None:
        STATS.write(stats_dir(data_dir))
