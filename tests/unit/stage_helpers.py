"""Plain inputs for the stage tests: the scripted clicks (tests/integration/scripted.py) as the
records a producer would write, and a pipeline of the three stages over in-memory state."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from agents.ip_counters import IpCounters
from agents.score import Score, load_scorer
from agents.validate import Validate
from app.contracts import topics
from app.contracts.settings import Settings
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
    """validate -> ip-counters -> score, each stage's outputs handed to the next in one batch."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.ip_states = MemoryTable("ip-state")
        self.users, self.sessions = MemoryTable("user-state"), MemoryTable("session-state")
        self.validate = Validate(settings)
        self.ip = IpCounters(settings, self.ip_states)
        self.score = Score(settings, self.users, self.sessions, load=load_scorer, clock_ms=lambda: 0)
        used = (topics.CLICKS_BY_IP, topics.CLICKS_BY_ENTITY, topics.VERDICTS)
        partitions = {settings.topic(t): settings.click_partitions for t in used}
        for stage in (self.validate, self.ip, self.score):
            stage.open(partitions)

    def send(
        self, values: Sequence[bytes], headers: list[tuple[str, bytes]] | None = None
    ) -> list[OutputRecord]:
        """Every output of every stage for one batch of raw ``clicks`` values."""
        clicks = self.settings.topic(topics.CLICKS)
        raw = [InputRecord(clicks, 0, k, None, v, headers or []) for k, v in enumerate(values)]
        validated = run_once(self.validate, raw)
        by_ip = [o for o in validated if o.partition is not None]
        bundles = run_once(self.ip, as_inputs(by_ip))
        verdicts = run_once(self.score, as_inputs([o for o in bundles if o.partition is not None]))
        return validated + bundles + verdicts


def run_once(stage: object, batch: list[InputRecord]) -> list[OutputRecord]:
    return [record for chunk in stage.process(batch) for record in chunk]  # type: ignore[attr-defined]


__all__ = ["Pipeline", "as_inputs", "run", "run_once", "settings_for"]
