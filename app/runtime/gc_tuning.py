"""Keep Python's full garbage collections off the hot path of a long-running worker.

A worker holds a couple of hundred thousand long-lived objects once it runs (Faust, aiokafka, ONNX
Runtime, numpy, the model). CPython's full (generation 2) collection walks all of them: measured in
the live worker on this machine, 60-90 ms per collection, one every 10 s or so under load, which is
exactly the tail of the in-process batch cost and of the event-to-verdict latency. ``gc.freeze()``
moves everything alive at start-up into a permanent generation that collections skip; what the
stream allocates afterwards is still collected as usual.
"""

from __future__ import annotations

import gc
import logging
import time

__all__ = ["freeze_startup_heap", "YOUNG_THRESHOLD"]

#: Container allocations between young-generation collections (CPython's default is 700). The stream
#: allocates and frees tens of containers per click, nearly all freed by reference counting, so a
#: collection every 700 allocations mostly walks objects about to die anyway.
YOUNG_THRESHOLD = 20_000

log = logging.getLogger(__name__)


def freeze_startup_heap() -> int:
    """Collect once, then exempt every surviving object from future collections; objects frozen."""
    started = time.perf_counter()
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, *gc.get_threshold()[1:])
    frozen = gc.get_freeze_count()
    log.info(
        "froze %d start-up objects out of the GC (%.0f ms)", frozen, (time.perf_counter() - started) * 1000
    )
    return frozen
