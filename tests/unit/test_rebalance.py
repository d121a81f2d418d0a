"""app.runtime.rebalance: acks of messages fetched before a rebalance never move a committed offset.

These drive Faust's own consumer bookkeeping (``Consumer.ack``, ``_new_offset``, the revoke
handler's pops, ``perform_seek``) without a broker: only the seek to committed offsets, which asks
the broker, is replaced.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import faust
import pytest
from faust.transport.drivers.aiokafka import Consumer as FaustConsumer
from faust.types import TP
from faust.types.tuples import Message

from app.runtime.rebalance import CommitBeforeRevokeConsumer, install, processed_acks

TP0 = TP("clicks", 0)
COMMITTED = 52  # the next offset to process, as Kafka stores it


@pytest.fixture
def app() -> Iterator[faust.App]:
    app = faust.App("test-rebalance", broker="kafka://127.0.0.1:1", autodiscover=False, web_enabled=False)
    install(app)
    app.topics._acking_topics.add(TP0.topic)  # what the conductor records when an agent subscribes
    yield app


def _message(app: faust.App, offset: int, generation: int | None = None) -> Message:
    generation = app.consumer_generation_id if generation is None else generation
    return Message(TP0.topic, TP0.partition, offset, 0.0, 0, None, b"k", b"v", None, generation_id=generation)


def _drop_bookkeeping_as_faust_does_on_revoke(consumer: FaustConsumer) -> None:
    for books in (consumer._acked, consumer._acked_index, consumer._committed_offset, consumer._read_offset):
        books.pop(TP0, None)


def _processed(consumer: FaustConsumer, message: Message) -> bool:
    """What a stage's acker does for a message whose outputs are on the broker."""
    with processed_acks(consumer):
        return consumer.ack(message)


def _commit_offsets(consumer: FaustConsumer) -> dict[TP, int]:
    return consumer._filter_committable_offsets([TP0])


def _seek_answers(consumer: FaustConsumer, committed: dict[TP, int]) -> None:
    async def seek_to_committed() -> dict[TP, int]:
        return committed

    consumer.seek_to_committed = seek_to_committed  # type: ignore[method-assign]


def test_the_hazard_faust_alone_commits_past_a_message_acked_after_its_partition_was_revoked(
    app: faust.App,
) -> None:
    """Why the override exists: a stream skips and acks a message fetched before the rebalance; in
    the fresh books after the revoke it is the only ack, so the next commit passes it unprocessed."""
    consumer = FaustConsumer.ack  # the method the worker's consumer overrides
    worker = app.consumer
    worker._committed_offset[TP0] = COMMITTED
    _drop_bookkeeping_as_faust_does_on_revoke(worker)
    assert consumer(worker, _message(app, COMMITTED))
    assert _commit_offsets(worker) == {TP0: COMMITTED + 1}  # offset 52 would never be processed


def test_during_a_handover_acks_are_not_recorded_and_nothing_is_committed(app: faust.App) -> None:
    worker = app.consumer
    assert isinstance(worker, CommitBeforeRevokeConsumer)
    worker._committed_offset[TP0] = COMMITTED
    worker.handing_over = app.consumer_generation_id  # what the revoke handler sets after its commit
    _drop_bookkeeping_as_faust_does_on_revoke(worker)
    stale = _message(app, COMMITTED)
    worker._unacked_messages.add(stale)
    assert not _processed(worker, stale)
    assert stale.acked and stale not in worker._unacked_messages  # a later rebalance does not wait for it
    assert _commit_offsets(worker) == {}


def test_a_seek_in_the_new_generation_ends_the_handover_and_acks_count_again(app: faust.App) -> None:
    worker = app.consumer
    old = app.consumer_generation_id
    worker.handing_over = old
    _drop_bookkeeping_as_faust_does_on_revoke(worker)
    _seek_answers(worker, {TP0: COMMITTED})

    asyncio.run(worker.perform_seek())  # Faust seeks when a fetch returns with the flow stopped
    assert worker.handing_over == old  # same generation: still handing over
    assert not _processed(worker, _message(app, COMMITTED))

    app.consumer_generation_id = old + 1  # the new assignment
    asyncio.run(worker.perform_seek())  # recovery's seek to the committed offsets
    assert worker.handing_over is None
    assert not _processed(worker, _message(app, COMMITTED + 1, generation=old))  # read again
    assert _processed(worker, _message(app, COMMITTED))
    assert _processed(worker, _message(app, COMMITTED + 1))
    assert _commit_offsets(worker) == {TP0: COMMITTED + 2}


def test_outside_a_rebalance_acks_are_recorded_as_faust_records_them(app: faust.App) -> None:
    worker = app.consumer
    worker._committed_offset[TP0] = COMMITTED
    for offset in range(COMMITTED, COMMITTED + 3):
        assert _processed(worker, _message(app, offset))
    assert _commit_offsets(worker) == {TP0: COMMITTED + 3}


def test_a_message_a_stream_skipped_is_never_recorded_so_no_commit_passes_it(app: faust.App) -> None:
    """A stream acks what it skips (flow suspended, say) with no rebalance of ours under way: the
    worker that joined mid-stream committed past such a click before its first seek."""
    worker = app.consumer
    worker._committed_offset[TP0] = COMMITTED
    skipped = _message(app, COMMITTED)
    worker._unacked_messages.add(skipped)
    assert not worker.ack(skipped)  # Stream.__aiter__'s ack of a skipped event
    assert skipped not in worker._unacked_messages
    assert _commit_offsets(worker) == {}
