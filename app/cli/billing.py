"""``python -m app.cli.billing``: the reference billing consumer. Reads ``verdicts`` from the
beginning to the end of the log now, applies the billing rule (:class:`app.contracts.billing.BillingBook`)
and prints what it would bill."""

from __future__ import annotations

import asyncio

from agents.replay.reader import partitions_of
from app.contracts import topics
from app.contracts.billing import BillingBook
from app.contracts.settings import Settings
from app.kafka import clients

__all__ = ["read_book"]


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
