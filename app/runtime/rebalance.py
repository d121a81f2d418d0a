"""Commit what was processed before partitions are handed over, so a rebalance replays nothing.

faust-streaming's consumer, when the group rebalances, first *forgets* the acked-but-uncommitted
offsets of the revoked partitions (``Consumer.on_partitions_revoked`` pops ``_acked``) and only then
runs the app's revoke handler, whose final commit therefore has nothing to commit for them. With an
eager rebalance every partition is revoked, so up to one commit interval of work is read again from
the last commit: by the new owner, which restores the counters from the changelog and emits a second
verdict per click, and by a worker that keeps its partition, whose local RocksDB already holds those
clicks, so it counts them twice (the scale-out test in tests/integration checks it).

:class:`CommitBeforeRevokeConsumer` does the handover in the right order: stop taking new messages,
wait until every message that started processing is acked (our stages ack a batch only once its
outputs are on the broker), commit, and only then let Faust drop its bookkeeping. Faust's commit
flushes the producer, table changelogs included, before it commits the offsets, so the changelog a
new owner restores from is at least as new as the offsets it starts from. A worker killed with
SIGKILL still replays from its last commit (at-least-once, see ``app.runtime.acks``).

It also keeps acks out of the consumer's books from that commit until the consumer has sought to
the committed offsets of the new assignment. A stream that meets a message fetched before the
rebalance skips it *and acks it* (faust ``Stream.__aiter__``). After the revoke handler has dropped a
partition's bookkeeping, that ack lands in fresh books with no committed offset to check against, and
the periodic commit, which runs while the new assignment recovers its tables, commits past it: the
seek that follows starts after a click that nobody processed. So only acks made by a stage's acker
(:func:`processed_acks`) are recorded; any other message is read again from the committed offset,
so forgetting its ack loses nothing.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Set
from typing import Any

from faust.types import TP, Message
from faust.types.tuples import ack_lock
from mode.utils.futures import notify

from app.runtime.drain import FastDrainConsumer

__all__ = ["CommitBeforeRevokeConsumer", "install", "processed_acks"]

log = logging.getLogger(__name__)


class CommitBeforeRevokeConsumer(FastDrainConsumer):
    """The worker's consumer: Faust's aiokafka consumer with the drain loop of app.runtime.drain."""

    #: The generation being handed over, from the pre-handover commit until the seek to the new
    #: assignment's committed offsets; None outside a rebalance.
    handing_over: int | None = None
    #: True only while a stage's acker acks batches it processed (:func:`processed_acks`).
    acking_processed: bool = False
    #: Acks forgotten since the last seek (messages skipped by a stream, or of a stale generation).
    forgotten_acks: int = 0

    def ack(self, message: Message) -> bool:
        """Record the ack of a message a stage processed; forget any other (it is read again).

        Faust's streams also ack what they *skip*: a message fetched before a rebalance, or one that
        arrives while the flow is suspended. Those were never processed, so recording them would let
        a commit pass them. Forgotten too: an ack during a handover, or of an older generation.
        """
        if (
            not self.acking_processed
            or self.handing_over is not None
            or message.generation_id != self.app.consumer_generation_id
        ):
            with ack_lock:
                message.acked = True
                self._unacked_messages.discard(message)  # no rebalance waits for it
                notify(self._waiting_for_ack)
            self.forgotten_acks += 1
            return False
        return super().ack(message)

    async def perform_seek(self) -> None:
        await super().perform_seek()
        if self.forgotten_acks:
            log.info("seek to committed offsets; %d unprocessed messages read again", self.forgotten_acks)
            self.forgotten_acks = 0
        # Faust also seeks when a fetch returns while the flow is stopped, which can happen during
        # the handover itself; only a seek in the new generation ends it.
        if self.handing_over is not None and self.app.consumer_generation_id != self.handing_over:
            self.handing_over = None

    async def on_partitions_revoked(self, revoked: Set[TP]) -> None:
        app = self.app
        assignment = self.assignment()
        if revoked and assignment and not app.should_stop:
            # What Faust's own revoke handler does next, moved before its bookkeeping is dropped.
            self.stop_flow()
            app.flow_control.suspend()
            self.pause_partitions(assignment)
            app.flow_control.clear()
            await self.wait_empty()  # acks in flight land, then one commit of everything acked
            # That commit does nothing when a periodic commit was under way (Consumer.commit waits for
            # it and returns), so acks that came after the periodic one's snapshot would be dropped.
            while self._commit_fut is not None:
                await self.maybe_wait_for_commit_to_finish()
            await self.commit()
            log.info("committed processed offsets before handing over %d partitions", len(revoked))
        if revoked:
            self.handing_over = app.consumer_generation_id
        await super().on_partitions_revoked(revoked)


@contextlib.contextmanager
def processed_acks(consumer: Any) -> Iterator[None]:
    """Acks made inside are of processed messages and move the committed offset (no awaits inside:
    an ack from elsewhere must not slip in)."""
    consumer.acking_processed = True
    try:
        yield
    finally:
        consumer.acking_processed = False


def install(app: Any, fetch_max_wait_ms: int = CommitBeforeRevokeConsumer.fetch_max_wait_ms) -> None:
    """Make ``app`` create a :class:`CommitBeforeRevokeConsumer` whose fetches wait at most
    ``fetch_max_wait_ms`` on the broker (call before the app creates its consumer)."""
    if app._consumer is not None:
        raise RuntimeError("install() must run before the app creates its consumer")
    app.transport.Consumer = type(
        "WorkerConsumer", (CommitBeforeRevokeConsumer,), {"fetch_max_wait_ms": fetch_max_wait_ms}
    )
