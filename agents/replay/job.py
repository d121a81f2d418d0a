"""The replay job contract: what ``ivt replay submit`` publishes on ``replay-jobs`` (keyed by job id).

A job names

* **what to replay**: either ``offsets`` (``{partition: [start, end)}`` of ``clicks``, end exclusive)
  or an event-time range ``[start_ms, end_ms)`` that the worker resolves to offsets through record
  timestamps (``IVT_REPLAY_LATENESS_S`` of slack on both sides; clicks outside the event-time range
  are read, and feed recompute's counters, but are not decided);
* a **pinned model version** from the registry;
* a **mode**: ``rescore`` (score the feature vectors logged in the latest verdict of each click) or
  ``recompute`` (recompute the features from the raw clicks, warming fresh counters up on
  ``lookback_s`` seconds of clicks before the range);
* what to **publish**: ``changed`` (decision or score differs from the latest verdict) or ``all``.

``submitted_at_ms`` tells two submissions of one job id apart: a resubmission re-runs the job (and
publishes nothing its earlier runs published). The JSON form is strict: unknown or missing fields
are refused.
"""

from __future__ import annotations

import re
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import orjson

from agents.replay.exceptions import BadJob
from app.contracts.events import format_time, parse_time
from app.contracts.exceptions import InvalidEvent

__all__ = [
    "MODES",
    "PUBLISH",
    "ReplayJob",
    "new_job_id",
    "parse_offsets",
    "parse_when",
]

MODES: Final = ("rescore", "recompute")
PUBLISH: Final = ("changed", "all")
JOB_ID_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_KEYS: Final = {
    "job_id",
    "model_version",
    "mode",
    "publish",
    "offsets",
    "start",
    "end",
    "lookback_s",
    "submitted_at",
}


@dataclass(frozen=True)
class ReplayJob:
    """One replay job (see the module doc); validated on construction (:class:`BadJob`)."""

    job_id: str
    model_version: str
    mode: str
    publish: str
    submitted_at_ms: int
    offsets: dict[int, tuple[int, int]] | None = None
    start_ms: int | None = None
    end_ms: int | None = None
    lookback_s: float = 0.0

    def __post_init__(self) -> None:
        problems = []
        if not isinstance(self.job_id, str) or not JOB_ID_RE.match(self.job_id):
            problems.append(f"job id {self.job_id!r}: 1-100 of [A-Za-z0-9._-], not starting with . _ -")
        if not isinstance(self.model_version, str) or not self.model_version:
            problems.append("model version: required")
        if self.mode not in MODES:
            problems.append(f"mode {self.mode!r}: one of {', '.join(MODES)}")
        if self.publish not in PUBLISH:
            problems.append(f"publish {self.publish!r}: one of {', '.join(PUBLISH)}")
        by_offsets = self.offsets is not None
        by_time = self.start_ms is not None or self.end_ms is not None
        if by_offsets == by_time:
            problems.append("give either offsets or an event-time range (start and end), not both")
        if by_offsets:
            if not self.offsets:
                problems.append("offsets: empty range (no partition named)")
            for p, (lo, hi) in (self.offsets or {}).items():
                if p < 0 or lo < 0 or hi < lo:
                    problems.append(f"offsets of partition {p}: [{lo}, {hi}) is not a range")
            if self.offsets and all(hi == lo for lo, hi in self.offsets.values()):
                problems.append("offsets: empty range (every partition's start equals its end)")
        if by_time:
            if self.start_ms is None or self.end_ms is None:
                problems.append("event-time range: give both start and end")
            elif self.end_ms <= self.start_ms:
                problems.append(
                    f"event-time range: empty (end {format_time(self.end_ms)} is not after start "
                    f"{format_time(self.start_ms)})"
                )
        if not (isinstance(self.lookback_s, int | float) and 0 <= self.lookback_s <= 30 * 86400):
            problems.append(f"lookback: {self.lookback_s!r} s is not within 0..30 days")
        if problems:
            raise BadJob(f"replay job {self.job_id!r}: " + "; ".join(problems))

    @property
    def by_event_time(self) -> bool:
        return self.offsets is None

    def describe_range(self) -> str:
        if self.offsets is not None:
            return ", ".join(f"p{p}:[{lo},{hi})" for p, (lo, hi) in sorted(self.offsets.items()))
        assert self.start_ms is not None and self.end_ms is not None
        return f"event time [{format_time(self.start_ms)}, {format_time(self.end_ms)})"

    def short_range(self) -> str:
        """One short line for tables: partitions and offsets, or the event-time range."""
        if self.offsets is None:
            return self.describe_range()
        total = sum(hi - lo for lo, hi in self.offsets.values())
        return f"{len(self.offsets)} partition(s), {total:,} offsets"

    def same_request(self, other: ReplayJob) -> bool:
        """True when ``other`` asks for the same work (a resubmission), whatever its submission time."""
        mine, theirs = self.to_dict(), other.to_dict()
        mine.pop("submitted_at")
        theirs.pop("submitted_at")
        return mine == theirs

    # --- JSON -----------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "model_version": self.model_version,
            "mode": self.mode,
            "publish": self.publish,
            "offsets": None
            if self.offsets is None
            else {str(p): [lo, hi] for p, (lo, hi) in sorted(self.offsets.items())},
            "start": None if self.start_ms is None else format_time(self.start_ms),
            "end": None if self.end_ms is None else format_time(self.end_ms),
            "lookback_s": self.lookback_s,
            "submitted_at": format_time(self.submitted_at_ms),
        }

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict())

    @classmethod
    def from_json(cls, raw: bytes) -> ReplayJob:
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise BadJob(f"replay job is not JSON: {exc}") from None
        if not isinstance(doc, dict) or set(doc) != _KEYS:
            got = sorted(doc) if isinstance(doc, dict) else type(doc).__name__
            raise BadJob(f"replay job: expected fields {sorted(_KEYS)}, got {got}")
        try:
            offsets = doc["offsets"]
            parsed = (
                None
                if offsets is None
                else {int(p): (int(r[0]), int(r[1])) for p, r in offsets.items() if len(r) == 2}
            )
            return cls(
                job_id=doc["job_id"],
                model_version=doc["model_version"],
                mode=doc["mode"],
                publish=doc["publish"],
                offsets=parsed,
                start_ms=None if doc["start"] is None else parse_time(doc["start"], "start"),
                end_ms=None if doc["end"] is None else parse_time(doc["end"], "end"),
                lookback_s=float(doc["lookback_s"]),
                submitted_at_ms=parse_time(doc["submitted_at"], "submitted_at"),
            )
        except (InvalidEvent, AttributeError, TypeError, ValueError) as exc:
            raise BadJob(f"replay job: {exc}") from None


def new_job_id(now_ms: int | None = None) -> str:
    """``replay-YYYYmmddTHHMMSS-xxxx``: sortable by submission time, unique enough to type."""
    ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    stamp = datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y%m%dT%H%M%S")
    return f"replay-{stamp}-{uuid.uuid4().hex[:4]}"


def parse_offsets(text: str) -> dict[int, tuple[int, int]]:
    """``"0:100-200,3:0-50"`` -> ``{0: (100, 200), 3: (0, 50)}`` (end exclusive)."""
    out: dict[int, tuple[int, int]] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        m = re.fullmatch(r"(\d+):(\d+)-(\d+)", part)
        if not m:
            raise BadJob(f"offsets {part!r}: expected PARTITION:START-END (end exclusive), e.g. 0:100-200")
        p, lo, hi = (int(g) for g in m.groups())
        if p in out:
            raise BadJob(f"offsets: partition {p} named twice")
        out[p] = (lo, hi)
    if not out:
        raise BadJob("offsets: empty (expected PARTITION:START-END,...)")
    return out


def parse_when(text: str, name: str) -> int:
    """An RFC 3339 time with offset, or epoch milliseconds, -> epoch ms."""
    if text.isdigit():
        return int(text)
    try:
        return parse_time(text, name)
    except InvalidEvent as exc:
        raise BadJob(
            f"{name}: {exc.reason} (use RFC 3339 with an offset, e.g. 2026-11-22T10:00:00Z)"
        ) from None
