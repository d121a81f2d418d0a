"""Pure rules of a replay: what the latest verdict of a click is, whether a new decision is
published, with which revision, and the job summary. No Kafka here; the runner calls these.

* **Latest verdict** of a click: the highest ``revision``; between equal revisions the later one in
  the verdict partition (only live duplicates after a worker crash can tie). This is billing's rule
  (:mod:`app.cli.billing`), so replay compares against exactly what billing holds.
* **Revision** of a correction: the latest verdict's revision + 1 (1 for a click that had no verdict).
  Jobs run one after another in one replay worker and each indexes the verdict log when it starts,
  so a later job always sees an earlier job's corrections and goes above them.
* **Changed**: the decision differs, or the score differs by more than :data:`SCORE_TOLERANCE`
  (ONNX Runtime may round the last bit differently for another batch size).
* **Already published**: a verdict of this job id is in the log (an earlier run of the job, or this
  run before a crash): the click is skipped, which is why re-running a job publishes nothing new.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any, Final

from models.metrics import ALL, RateSummary

__all__ = ["SCORE_TOLERANCE", "Prior", "Action", "plan", "summary"]

SCORE_TOLERANCE: Final = 1e-6


@dataclass(frozen=True, slots=True)
class Prior:
    """The latest verdict of a click before this job (see the module doc)."""

    revision: int
    invalid: bool
    score: float
    feature_version: str = ""
    features: list[float] | None = None


class Action(Enum):
    PUBLISH = "publish"
    UNCHANGED = "unchanged"
    ALREADY = "already"


def plan(
    prior: Prior | None, mine: bool, invalid: bool, score: float, publish_all: bool
) -> tuple[Action, int]:
    """``(action, revision)`` for one decided click; ``mine``: this job already has a verdict for it."""
    if mine:
        return Action.ALREADY, -1
    if prior is None:
        return Action.PUBLISH, 1
    changed = prior.invalid != invalid or abs(prior.score - score) > SCORE_TOLERANCE
    if not changed and not publish_all:
        return Action.UNCHANGED, -1
    return Action.PUBLISH, prior.revision + 1


def newer(old: tuple[int, Any] | None, revision: int) -> bool:
    """Does a verdict with ``revision``, read after ``old`` in the same partition, supersede it?"""
    return old is None or revision >= old[0]


def summary(progress: Any) -> dict[str, Any]:
    """Clicks read, flips each way, and IVR / FPR / coverage before and after per slice (+ "all").

    "before" counts only clicks that had a verdict; "after" counts every decided click.
    """
    out: dict[str, Any] = {"counters": dict(progress.counters), "slices": {}}
    for which in ("before", "after"):
        rows = progress.rates[which]
        total = [sum(col) for col in zip(*rows.values(), strict=True)] if rows else [0] * 6
        for name, row in [*sorted(rows.items()), (ALL, total)]:
            out["slices"].setdefault(name, {})[which] = RateSummary(*map(float, row)).to_dict()
    return out
