"""Plain inputs for the stage tests: clicks as the records a producer keyed by IP would write, and
the three stages chained over in-memory state."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from agents.ip_counters import IpCounters
from agents.score import Score, load_scorer
from agents.validate import Validate
from app.contracts import topics
from app.contracts.events import Click
from app.contracts.settings import Settings
from app.contracts.topics import key_partition
from app.runtime.stage import InputRecord, OutputRecord
from app.runtime.testing import MemoryTable, run


def settings_for(tmp_path: Path, **overrides: object) -> Settings:
    return Settings.from_env({}, data_dir=tmp_path, **overrides)


def as_inputs(outputs: Sequence[OutputRecord], offset0: int = 0) -> list[InputRecord]:
    """What the next stage reads of ``outputs`` (the partition each record was sent to)."""
    return [
        InputRecord(
            o.topic, o.partition if o.partition is not None else 0, offset0 + k, o.key, o.value, o.headers
        )
        for k, o in enumerate(outputs)
    ]


class Pipeline:
    """ip-counters -> score over in-memory state, clicks keyed by IP as the simulator sends them.

    Each call of :meth:`send` is one batch of one partition of ``clicks``; the test chooses the order
    in which partitions are read, as a worker's consumer would."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.wall = 0.0
        self.ip_states = MemoryTable("ip-state")
        self.users, self.sessions = MemoryTable("user-state"), MemoryTable("session-state")
        self.ip = IpCounters(settings, self.ip_states)
        self.score = Score(
            settings,
            self.users,
            self.sessions,
            load=load_scorer,
            clock_ms=lambda: 0,
            wall_clock_s=lambda: self.wall,
        )
        used = (topics.CLICKS_BY_ENTITY, topics.VERDICTS)
        partitions = {settings.topic(t): settings.click_partitions for t in used}
        for stage in (self.ip, self.score):
            stage.open(partitions)

    def partition_of(self, click: Click) -> int:
        return key_partition(click.ip.encode(), self.settings.click_partitions)

    def send(self, clicks: Sequence[Click]) -> list[OutputRecord]:
        """One batch of clicks of one ``clicks`` partition; every output of both stages."""
        (partition,) = {self.partition_of(c) for c in clicks}
        raw = [
            InputRecord(self.settings.topic(topics.CLICKS), partition, k, c.ip.encode(), c.to_json(), [])
            for k, c in enumerate(clicks)
        ]
        bundles = run_once(self.ip, raw)
        return bundles + run_once(self.score, as_inputs(bundles))

    def finish(self) -> list[OutputRecord]:
        """What the score stage still holds, once it has waited as long as it may."""
        self.wall += 3600.0
        return run_once(self.score, [])


def run_once(stage: object, batch: list[InputRecord]) -> list[OutputRecord]:
    return [record for chunk in stage.process(batch) for record in chunk]  # type: ignore[attr-defined]


__all__ = ["Pipeline", "Validate", "as_inputs", "run", "run_once", "settings_for"]
