"""app.runtime.batches.current_events: stale events are dropped and released, not acked."""

from __future__ import annotations

import weakref
from types import SimpleNamespace

from app.runtime.batches import current_events


class _Message:
    def __init__(self, offset: int, generation: int) -> None:
        self.offset, self.generation_id, self.acked = offset, generation, False


def _app(active: bool, generation: int, messages: list[_Message]) -> SimpleNamespace:
    in_progress: weakref.WeakSet[_Message] = weakref.WeakSet(messages)
    return SimpleNamespace(
        flow_control=SimpleNamespace(is_active=lambda: active),
        consumer_generation_id=generation,
        consumer=SimpleNamespace(_unacked_messages=in_progress),
    )


def test_events_of_an_older_generation_are_dropped_and_no_longer_awaited_by_the_next_rebalance() -> None:
    old, new = _Message(52, generation=1), _Message(53, generation=2)
    events = [SimpleNamespace(message=old), SimpleNamespace(message=new)]
    app = _app(active=True, generation=2, messages=[old, new])
    assert current_events(app, events) == [events[1]]
    assert set(app.consumer._unacked_messages) == {new}  # the fresh one is still in progress
    assert not old.acked  # released, not acked: its offset is not committed, it is read again


def test_nothing_is_processed_while_flow_is_suspended_and_everything_is_released() -> None:
    messages = [_Message(k, generation=3) for k in range(3)]
    events = [SimpleNamespace(message=m) for m in messages]
    app = _app(active=False, generation=3, messages=messages)
    assert current_events(app, events) == []
    assert set(app.consumer._unacked_messages) == set()


def test_a_current_batch_is_returned_as_it_is() -> None:
    messages = [_Message(k, generation=4) for k in range(2)]
    events = [SimpleNamespace(message=m) for m in messages]
    app = _app(active=True, generation=4, messages=messages)
    assert current_events(app, events) is events
    assert set(app.consumer._unacked_messages) == set(messages)
