"""app.runtime.gc_tuning: objects alive at start-up are frozen out of full collections."""

from __future__ import annotations

import gc

from app.runtime.gc_tuning import YOUNG_THRESHOLD, freeze_startup_heap


def test_freezing_the_start_up_heap_exempts_live_objects_from_collections() -> None:
    survivor = [object() for _ in range(1000)]
    threshold = gc.get_threshold()
    try:
        assert freeze_startup_heap() >= len(survivor)
        assert gc.get_threshold() == (YOUNG_THRESHOLD, *threshold[1:])  # young collections less often
        assert gc.get_freeze_count() >= len(survivor)
        assert not any(obj is survivor for obj in gc.get_objects(generation=2))  # frozen, not walked
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)
