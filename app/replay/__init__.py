"""Replay: reprocess historical ``clicks`` offsets through a pinned model and publish corrections.

``ivt replay submit`` publishes a :class:`~app.replay.job.ReplayJob`; ``ivt replay-worker``
(:mod:`app.replay.worker`) runs jobs one at a time with :class:`~app.replay.runner.JobRunner`; the
pure rules (latest verdict, revision, changed, summary) are in :mod:`app.replay.decide`. The design
and the guarantees are in ``docs/replay.md``.
"""

from app.replay.exceptions import BadJob, OffsetsOutOfRange, ReplayError
from app.replay.job import MODES, PUBLISH, ReplayJob
from app.replay.progress import Progress

__all__ = ["MODES", "PUBLISH", "ReplayJob", "Progress", "ReplayError", "BadJob", "OffsetsOutOfRange"]
