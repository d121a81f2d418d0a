"""``ivt worker``: run the live stream stages in one Faust worker process.

Scale out by starting more of them with the same IVT_APP_ID: Kafka's group protocol spreads the
partitions (and with them the table state) over the workers. :class:`WorkerProcess` starts one as a
child process; the demo and the integration tests use it, so what they run is what users run.
"""

from __future__ import annotations

import importlib
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

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


class WorkerProcess:
    """A ``ivt worker`` child process in its own process group, logging to a file."""

    def __init__(
        self,
        settings: Settings,
        log_path: Path,
        extra_env: dict[str, str] | None = None,
        stages: list[str] | None = None,
    ) -> None:
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **settings.to_env(), **(extra_env or {}), "PYTHONUNBUFFERED": "1"}
        self._log = log_path.open("ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "app.cli",
                "worker",
                "--log-level",
                "info",
                *(["--stages", ",".join(stages)] if stages else []),
            ],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Block until Faust says Ready; fail with the log tail if it dies or takes too long."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited with {self.proc.returncode}:\n{self.log_tail()}")
            if READY_MARK in self.log_path.read_text(errors="replace"):
                return
            time.sleep(0.2)
        raise RuntimeError(f"worker not ready after {timeout}s:\n{self.log_tail()}")

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int | None:
        """Signal the whole process group; escalate to SIGKILL after ``timeout`` seconds."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self._log.close()
        return self.proc.returncode
