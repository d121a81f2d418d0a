"""Faust's aiokafka consumer thread, with a fetch wait short enough not to stall the stages.

aiokafka's fetcher keeps at most one fetch in flight per broker, and that fetch leaves out every
partition whose last records are still being consumed. faust-streaming 0.15.3 creates the consumer
with a fixed ``fetch_max_wait_ms=1500``, so a fetch that went out only for partitions with nothing
new (the input topic once it is drained, an idle partition) sits on the broker for up to 1.5 s, and
the partitions that ran dry meanwhile (the next stage's input, written by this very worker) cannot be
fetched until it returns: the whole worker idles (gaps of 0.25-0.75 s in a drain's timeline,
``benchmarks/drain_timeline.py``). With a 20 ms wait (``IVT_FETCH_MAX_WAIT_MS``) the gaps are gone.

An idle worker then sends ``1000 / fetch_max_wait_ms`` empty fetches a second, each a few hundred
microseconds of CPU; a busy one is never held back by a fetch that waits for nothing.
"""

from __future__ import annotations

from typing import Any

import aiokafka
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

__all__ = ["ShortFetchWaitConsumerThread"]


class ShortFetchWaitConsumerThread(AIOKafkaConsumerThread):
    """The consumer thread of Faust's aiokafka driver, with its consumer's ``fetch_max_wait_ms``
    (the ``fetch_max_wait_ms`` attribute of the Faust consumer that owns the thread)."""

    def _create_worker_consumer(self, transport: Any) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        # aiokafka takes no setter; the attribute is read once, when start() builds the fetcher.
        consumer._fetch_max_wait_ms = int(self.consumer.fetch_max_wait_ms)
        return consumer
