"""``ivt worker``: run the live stream stages in one Faust worker process.

Scale out by starting more of them with the same IVT_APP_ID: Kafka's group protocol spreads the
partitions (and with them the table state) over the workers.
"""

from __future__ import annotations

import importlib
import logging

__all__ = ["LIVE_STAGES", "run_worker"]

#: Agent modules the live worker runs, in data-flow order.
LIVE_STAGES: tuple[str, ...] = ("agents.validate",)


def run_worker(log_level: str = "info") -> None:
    """Import the stages (which registers their agents on the app) and hand over to Faust."""
    from faust.worker import Worker

    from app.faust_app import app, settings

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    for module in LIVE_STAGES:
        importlib.import_module(module)
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    Worker(app, loglevel=log_level, quiet=True).execute_from_commandline()
