"""Hand a built app over to Faust's worker: the process then runs until SIGTERM or SIGINT."""

from __future__ import annotations

import logging

from faust.worker import Worker

from app.runtime.app import Runtime

__all__ = ["run"]


def run(runtime: Runtime, log_level: str = "info") -> None:
    """Start Faust's worker on ``runtime``'s app (its state folder created first)."""
    runtime.settings.data_dir.mkdir(parents=True, exist_ok=True)
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    Worker(runtime.app, loglevel=log_level, quiet=True).execute_from_commandline()
