"""``ivt worker``: run the live stream stages in one Faust worker process.

Scale out by starting more of them with the same IVT_APP_ID: Kafka's group protocol spreads the
partitions (and with them the table state) over the workers. :class:`WorkerProcess` starts one as a
child process; the demo and the integration tests use it, so what they run is what users run.
"""

from __future__ import annotations

import importlib
import logging
from pathlib import Path

from app.child_process import ChildProcess
from app.settings import Settings

__all__ = ["LIVE_STAGES", "run_worker", "WorkerProcess", "READY_MARK"]

#: Stage name -> agent module, in data-flow order. A worker runs all of them unless told otherwise;
#: stages can also run in separate processes (each consumes and produces through Kafka).
STAGES: dict[str, str] = {
    "validate": "agents.validate",
    "ip-counters": "agents.ip_counters",
    "score": "agents.score",
}
LIVE_STAGES: tuple[str, ...] = tuple(STAGES.values())
#: What Faust logs once the worker has its partitions and runs.
READY_MARK = "[^Worker]: Ready"


def run_worker(log_level: str = "info", stages: list[str] | None = None) -> None:
    """Import the stages (which registers their agents on the app) and hand over to Faust."""
    unknown = sorted(set(stages or []) - set(STAGES))
    if unknown:
        raise ValueError(f"unknown stage(s) {', '.join(unknown)}; choose from {', '.join(STAGES)}")
    modules = [STAGES[name] for name in stages] if stages else list(LIVE_STAGES)
    from faust.worker import Worker

    from app.faust_app import app, settings

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    for module in modules:
        importlib.import_module(module)
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    Worker(app, loglevel=log_level, quiet=True).execute_from_commandline()


class WorkerProcess(ChildProcess):
    """An ``ivt worker`` child process (see :class:`~app.child_process.ChildProcess`)."""

    def __init__(
        self,
        settings: Settings,
        log_path: Path,
        extra_env: dict[str, str] | None = None,
        stages: list[str] | None = None,
    ) -> None:
        args = ["worker", "--log-level", "info", *(["--stages", ",".join(stages)] if stages else [])]
        super().__init__("worker", args, READY_MARK, settings, log_path, extra_env)
