"""A project command run as a child process in its own process group, logging to a file.

The demo, the benchmarks and the integration tests start workers this way, so what they run is what
users run. ``wait_ready`` watches the log for the command's ready line (only what was written since
this start, so a reused log file cannot answer for it); ``stop`` signals the whole group and
escalates to SIGKILL.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from agents.replay.worker import READY_MARK as REPLAY_READY_MARK
from app.contracts.settings import Settings

__all__ = ["ChildProcess", "ReplayWorkerProcess"]


class ChildProcess:
    def __init__(
        self,
        name: str,
        args: list[str],
        ready_mark: str,
        settings: Settings,
        log_path: Path,
        extra_env: dict[str, str] | None = None,
        ready_count: int = 1,
    ) -> None:
        self.name = name
        self.ready_count = ready_count  # a group of processes logs one ready line each
        self.ready_mark = ready_mark.encode()
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **settings.to_env(), **(extra_env or {}), "PYTHONUNBUFFERED": "1"}
        self._log = log_path.open("ab")
        self._start_size = log_path.stat().st_size
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "app.cli", *args],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Block until the ready line is logged; fail with the log tail if it dies or takes too long."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
            with self.log_path.open("rb") as f:
                f.seek(self._start_size)
                if f.read().count(self.ready_mark) >= self.ready_count:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} not ready after {timeout}s:\n{self.log_tail()}")

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


class ReplayWorkerProcess(ChildProcess):
    """An ``ivt replay-worker`` child process (see :class:`~app.cli.processes.ChildProcess`)."""

    def __init__(self, settings: Settings, log_path: Path, extra_env: dict[str, str] | None = None) -> None:
        super().__init__("replay worker", ["replay-worker"], REPLAY_READY_MARK, settings, log_path, extra_env)
