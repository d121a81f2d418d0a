"""Faust's rebalance checks, applied to the events of a ``take`` batch.

(The stages' table writes go through :mod:`app.runtime.tables`, which names the partition
explicitly, so Faust's "current event" does not matter to them.)

Faust drops a message when it enters a stream during a rebalance (flow control suspended) or when
it was fetched before one (its ``generation_id`` is older than the consumer's), but not once it sits
in a ``take`` buffer. Such an event would be processed after the pre-rebalance commit and again when
the consumer re-reads from that commit: a duplicate output, and a click counted twice downstream.
:func:`current_events` applies the same two checks to each batch (found by the scale-out test).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

__all__ = ["current_events"]

log = logging.getLogger(__name__)


def current_events(app: Any, events: Sequence[Any]) -> Sequence[Any]:
    """The events of ``events`` that may be processed now; the rest is read again after the rebalance.

    Nothing may be processed while a rebalance is under way (its commit has been made), nor anything
    fetched in an earlier generation. Dropped events are neither processed nor acked: the committed
    offset of their partition is at or before them, so the consumer delivers them again. They are
    taken out of the consumer's set of messages in progress, though (without marking them acked): the
    next rebalance waits until that set is empty, and a dropped message left in it made that wait
    last for ever (found by the mid-stream scale-out test).
    """
    if not events:
        return events
    if not app.flow_control.is_active():
        fresh: Sequence[Any] = []
    else:
        generation = app.consumer_generation_id
        if all(event.message.generation_id == generation for event in events):
            return events
        fresh = [event for event in events if event.message.generation_id == generation]
    in_progress = getattr(app.consumer, "_unacked_messages", None)  # faust-streaming 0.15.3
    if in_progress is not None:
        kept = {id(event) for event in fresh}
        for event in events:
            if id(event) not in kept:
                in_progress.discard(event.message)
    log.info("dropped %d events fetched before the rebalance; they are read again", len(events) - len(fresh))
    return fresh
