"""The billing rule: the one rule every consumer of ``verdicts`` applies, in a few lines.

**The rule**: for each click id keep the verdict with the highest ``revision``; when two have the same
revision keep the one that came later (all verdicts of a click are on one partition, keyed by click
id, so "later" is well defined). Live verdicts have revision 0; a replay correction has the revision
of the verdict it corrects + 1, ``source = "replay"`` and the ``job_id`` of the replay job. So a
correction that arrives hours later supersedes the first decision, a late or duplicated live verdict
never overrides a correction, and a correction delivered twice is the same record twice (same
revision, same decision), which the rule absorbs.

``python -m app.cli.billing`` applies it (reads ``verdicts`` from the beginning to the end of the log now
and prints what it would bill), or use :class:`BillingBook` in your own consumer.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import orjson

__all__ = ["BillingBook", "Entry"]


@dataclass(frozen=True, slots=True)
class Entry:
    """What billing keeps per click."""

    revision: int
    invalid: bool
    source: str
    job_id: str | None
    model_version: str


@dataclass
class BillingBook:
    """Latest decision per click under the rule above."""

    entries: dict[str, Entry] = field(default_factory=dict)
    corrections: int = 0  # verdicts that replaced an earlier one with a higher revision
    ignored: int = 0  # verdicts older (lower revision) than the one already kept

    def apply(self, click_id: str, entry: Entry) -> bool:
        """Apply one verdict in log order; True if it is now the click's decision."""
        old = self.entries.get(click_id)
        if old is not None and entry.revision < old.revision:
            self.ignored += 1
            return False
        if old is not None and entry.revision > old.revision:
            self.corrections += 1
        self.entries[click_id] = entry
        return True

    def apply_json(self, click_id: str, raw: bytes) -> bool:
        d = orjson.loads(raw)
        return self.apply(
            click_id,
            Entry(
                int(d["revision"]),
                d["decision"] == "invalid",
                d["source"],
                d.get("job_id"),
                d["model_version"],
            ),
        )

    def billable(self) -> set[str]:
        """Clicks to charge: those whose latest decision is valid."""
        return {k for k, e in self.entries.items() if not e.invalid}

    def decisions(self) -> dict[str, str]:
        return {k: "invalid" if e.invalid else "valid" for k, e in self.entries.items()}
