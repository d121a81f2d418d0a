"""Replay errors: everything the user can act on is a :class:`ReplayError` with a readable message.

Tree::

    IvtError (app.contracts.exceptions)
    └── ReplayError            base of this package's errors
        ├── BadJob             a job spec that cannot run: bad mode, unknown model, empty range, ...
        └── OffsetsOutOfRange  offsets outside what the ``clicks`` partitions hold now
"""

from __future__ import annotations

from app.contracts.exceptions import IvtError

__all__ = ["ReplayError", "BadJob", "OffsetsOutOfRange"]


class ReplayError(IvtError):
    """Base class of replay errors."""


class BadJob(ReplayError):
    """The job spec is invalid or names something that does not exist."""


class OffsetsOutOfRange(BadJob):
    """Requested offsets lie outside a partition's retained log (or the partition does not exist)."""
