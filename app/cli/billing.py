"""Reference billing consumer: the rule every consumer of ``verdicts`` applies, in a few lines.

**The rule**: for each click id keep the verdict with the highest ``revision``; when two have the same
revision keep the one that came later (all verdicts of a click are on one partition, keyed by click
id, so "later" is well defined). Live verdicts have revision 0; a replay correction has the revision
of the verdict it corrects + 1, ``source = "replay"`` and the ``job_id`` of the replay job. So a
correction that arrives hours later supersedes the first decision, a late or duplicated live verdict
never overrides a correction, and a correction delivered twice is the same record twice (same
revision, same decision), which the rule absorbs.

Run it with ``python -m app.cli.billing`` (reads ``verdicts`` from the beginning to the end of the log now
and prints what it would bill), or use :class:`BillingBook` in your own consumer.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import orjson

from agents.replay.reader import partitions_of
from app.contracts import topics
from app.contracts.settings import Settings
from app.kafka import clients

__all__ = ["BillingBook", "Entry", "read_book"]


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


async def read_book(settings: Settings, book: BillingBook | None = None) -> BillingBook:
    """Apply every verdict from the start of the topic to its end now."""
    book = book or BillingBook()
    topic = settings.topic(topics.VERDICTS)
    consumer = clients.consumer(settings, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = await partitions_of(consumer, topic)
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        todo = {tp for tp in tps if end[tp] > 0}
        while todo:
            batch = await consumer.getmany(*todo, timeout_ms=500, max_records=10000)
            for records in batch.values():
                for r in records:
                    if r.key is not None and r.value is not None:
                        book.apply_json(r.key.decode(), r.value)
            for tp in list(todo):
                if await consumer.position(tp) >= end[tp]:
                    todo.discard(tp)
    finally:
        await consumer.stop()
    return book


def main() -> None:
    book = asyncio.run(read_book(Settings.from_env()))
    n = len(book.entries)
    invalid = n - len(book.billable())
    print(
        f"{n:,} clicks: {n - invalid:,} billable, {invalid:,} invalid; "
        f"{book.corrections:,} corrections applied, {book.ignored:,} superseded verdicts ignored"
    )


if __name__ == "__main__":
    main()
