"""Run real ``ivt`` processes (workers) from tests, with their logs kept for the failure message."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from app.settings import Settings

READY_MARK = "[^Worker]: Ready"


class WorkerProcess:
    """A ``ivt worker`` child process writing its log to a file."""

    def __init__(self, settings: Settings, log_path: Path, extra_env: dict[str, str] | None = None) -> None:
        self.log_path = log_path
        env = {**os.environ, **settings.to_env(), **(extra_env or {}), "PYTHONUNBUFFERED": "1"}
        self._log = log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "worker", "--log-level", "info"],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited with {self.proc.returncode}:\n{self.log_tail()}")
            if READY_MARK in self.log_path.read_text(errors="replace"):
                return
            time.sleep(0.2)
        raise AssertionError(f"worker not ready after {timeout}s:\n{self.log_tail()}")

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self._log.close()
        return self.proc.returncode


@contextmanager
def running_worker(settings: Settings, log_path: Path, **kwargs: object) -> Iterator[WorkerProcess]:
    worker = WorkerProcess(settings, log_path, **kwargs)  # type: ignore[arg-type]
    try:
        worker.wait_ready()
        yield worker
    finally:
        worker.stop()
