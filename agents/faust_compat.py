"""The one place that reaches into Faust internals, and why.

Faust decides which RocksDB partition database a table write goes to, and which changelog partition
records it, from the *current event* (a context variable the stream sets while iterating). With
``stream.take_events()`` the current event is the last one of the batch, while the batch mixes events
of several partitions; writing state for an earlier event would land in the wrong partition. So the
scoring stage makes each event current before touching the tables for it.
"""

from __future__ import annotations

import weakref
from typing import Any

from faust.streams import _current_event

__all__ = ["make_current"]


def make_current(event: Any) -> None:
    """Make ``event`` Faust's current event for the table reads and writes that follow."""
    _current_event.set(weakref.ref(event))
