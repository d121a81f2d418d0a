"""A job's durable progress: the checkpoint on ``replay-progress`` (compacted, keyed by job id).

The worker writes one after every published chunk, **after** the chunk's verdicts are acknowledged,
so a checkpoint never claims work that is not in the verdict log. It holds the resolved range (so a
resumed job reads exactly the same clicks), the next offset to process per partition, the counters
and the per-slice rate counts behind the summary. A restarted worker continues from the latest one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from agents.replay.exceptions import ReplayError

__all__ = ["STATES", "COUNTERS", "RATE_FIELDS", "Progress"]

#: queued -> resolving -> indexing -> running -> done | failed
STATES: Final = ("queued", "resolving", "indexing", "running", "done", "failed")
#: Counters of a job, all plain integers.
COUNTERS: Final = (
    "read",  # click records read in the range (every position, decided or not)
    "invalid_input",  # records in the range that are not valid clicks (the live DLQ has them too)
    "outside_time",  # valid clicks in the offset range but outside the event-time range
    "decided",  # clicks the pinned model decided
    "no_features",  # rescore: clicks with no logged feature vector (no verdict, or another feature version)
    "published",  # corrected verdicts this run published
    "already_published",  # decided clicks an earlier run of this job had already published (skipped)
    "unchanged",  # same decision and score as the latest verdict (not published in "changed" mode)
    "first_decision",  # clicks that had no verdict at all
    "flipped_to_invalid",  # latest verdict valid, the pinned model says invalid
    "flipped_to_valid",  # latest verdict invalid, the pinned model says valid
    "warmup",  # recompute: look-back clicks fed to the counters only, by the latest (re)start
)
#: Per slice, before and after: the counts behind IVR, FPR and robotic coverage (models.metrics).
RATE_FIELDS: Final = ("clicks", "invalid", "purchasing", "purchasing_invalid", "robotic", "robotic_invalid")


@dataclass
class Progress:
    """Mutable progress of one run of one job (``submitted_at_ms`` names the run)."""

    job_id: str
    submitted_at_ms: int
    state: str = "queued"
    error: str = ""
    #: partition -> [start, end) of clicks to decide
    range: dict[int, tuple[int, int]] = field(default_factory=dict)
    #: partition -> first offset read by recompute's warm-up (<= range start)
    warm_from: dict[int, int] = field(default_factory=dict)
    #: partition -> offset where reading stops (range end, or for recompute's other partitions the
    #: end of the log when the job was resolved)
    read_end: dict[int, int] = field(default_factory=dict)
    #: [start_ms, end_ms) filter of event-time jobs, else None
    event_range: tuple[int, int] | None = None
    #: partition -> next offset to process
    next: dict[int, int] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTERS, 0))
    #: "before"/"after" -> slice -> counts in RATE_FIELDS order
    rates: dict[str, dict[str, list[int]]] = field(default_factory=lambda: {"before": {}, "after": {}})
    started_at_ms: int = 0
    updated_at_ms: int = 0
    clicks_per_s: float = 0.0

    @property
    def total(self) -> int:
        return sum(hi - lo for lo, hi in self.range.values())

    @property
    def done_positions(self) -> int:
        return sum(self.next.get(p, lo) - lo for p, (lo, _hi) in self.range.items())

    @property
    def finished(self) -> bool:
        return self.state in ("done", "failed")

    def add_rate(self, which: str, slice_: str, invalid: bool, purchasing: bool, robotic: bool) -> None:
        row = self.rates[which].setdefault(slice_, [0] * len(RATE_FIELDS))
        row[0] += 1
        row[1] += invalid
        row[2] += purchasing
        row[3] += invalid and purchasing
        row[4] += robotic
        row[5] += invalid and robotic

    def to_dict(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "submitted_at_ms": self.submitted_at_ms,
            "state": self.state,
            "error": self.error,
            "range": {str(p): list(r) for p, r in sorted(self.range.items())},
            "warm_from": {str(p): o for p, o in sorted(self.warm_from.items())},
            "read_end": {str(p): o for p, o in sorted(self.read_end.items())},
            "event_range": None if self.event_range is None else list(self.event_range),
            "next": {str(p): o for p, o in sorted(self.next.items())},
            "counters": self.counters,
            "rates": self.rates,
            "started_at_ms": self.started_at_ms,
            "updated_at_ms": self.updated_at_ms,
            "clicks_per_s": round(self.clicks_per_s, 1),
        }

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict())

    @classmethod
    def from_json(cls, raw: bytes) -> Progress:
        try:
            d = orjson.loads(raw)
            counters = dict.fromkeys(COUNTERS, 0)
            counters.update({k: int(v) for k, v in d["counters"].items()})
            return cls(
                job_id=d["job_id"],
                submitted_at_ms=int(d["submitted_at_ms"]),
                state=d["state"],
                error=d.get("error", ""),
                range={int(p): (int(r[0]), int(r[1])) for p, r in d["range"].items()},
                warm_from={int(p): int(o) for p, o in d["warm_from"].items()},
                read_end={int(p): int(o) for p, o in d["read_end"].items()},
                event_range=None if d["event_range"] is None else tuple(d["event_range"]),
                next={int(p): int(o) for p, o in d["next"].items()},
                counters=counters,
                rates={
                    w: {s: list(v) for s, v in d["rates"].get(w, {}).items()} for w in ("before", "after")
                },
                started_at_ms=int(d.get("started_at_ms", 0)),
                updated_at_ms=int(d.get("updated_at_ms", 0)),
                clicks_per_s=float(d.get("clicks_per_s", 0.0)),
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ReplayError(f"unreadable replay progress record: {exc}") from None
