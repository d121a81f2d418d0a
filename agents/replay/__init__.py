"""The replay agent: reprocess historical ``clicks`` offsets through a pinned model and publish corrections.

``ivt replay submit`` publishes a :class:`~agents.replay.job.ReplayJob`; ``ivt replay-worker``
(:mod:`agents.replay.worker`) runs jobs one at a time with :class:`~agents.replay.runner.JobRunner`; the
pure rules (latest verdict, revision, changed, summary) are in :mod:`agents.replay.decide`. The design
and the guarantees are in ``docs/replay.md``.
"""

from agents.replay.exceptions import BadJob, OffsetsOutOfRange, ReplayError
from agents.replay.job import MODES, PUBLISH, ReplayJob
from agents.replay.progress import Progress

__all__ = ["MODES", "PUBLISH", "ReplayJob", "Progress", "ReplayError", "BadJob", "OffsetsOutOfRange"]
