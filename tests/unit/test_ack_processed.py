"""ack_processed: a batch's acks as Faust's ``Stream.ack`` makes them, marked as processed."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from faust.types.tuples import TP, ConsumerMessage, Message

from app.runtime.acks import ack_processed


class _Consumer:
    """Records the final acks and whether each came from a processed batch."""

    def __init__(self) -> None:
        self.acking_processed = False
        self.acked: list[tuple[int, bool]] = []

    def ack(self, message: Message) -> bool:
        message.acked = True  # as Faust's Consumer.ack
        self.acked.append((message.offset, self.acking_processed))
        return True


def _event(offset: int, streams: int = 1) -> Any:
    message = ConsumerMessage(
        "clicks", 3, offset, 0.0, 0, None, None, b"v", None, tp=TP("clicks", 3)
    )  # what Faust makes of a fetched record
    message.incref(streams)  # as Faust's conductor does, once per stream the message goes to
    return SimpleNamespace(message=message)


def test_every_event_is_acked_once_as_processed_and_reported_out() -> None:
    consumer, out = _Consumer(), []
    stream = SimpleNamespace(
        app=SimpleNamespace(consumer=consumer),
        _on_message_out=lambda tp, offset, message: out.append((tp, offset)),
    )
    events = [_event(offset) for offset in (10, 11, 12)]
    ack_processed(stream, events)
    assert consumer.acked == [(10, True), (11, True), (12, True)]
    assert out == [(TP("clicks", 3), 10), (TP("clicks", 3), 11), (TP("clicks", 3), 12)]
    assert not consumer.acking_processed  # only while acking the batch
    ack_processed(stream, events)  # a second ack of the same events does nothing more
    assert len(consumer.acked) == 3


def test_a_message_read_by_two_streams_is_final_only_after_both_ack() -> None:
    consumer, out = _Consumer(), []
    stream = SimpleNamespace(app=SimpleNamespace(consumer=consumer), _on_message_out=lambda *a: out.append(a))
    shared = _event(7, streams=2)
    ack_processed(stream, [shared])
    assert consumer.acked == [] and out == []
    ack_processed(stream, [shared])
    assert consumer.acked == [(7, True)] and len(out) == 1
