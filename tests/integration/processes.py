"""Real ``ivt`` processes for integration tests."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from app.cli.worker import WorkerProcess
from app.contracts.settings import Settings


@contextmanager
def running_worker(settings: Settings, log_path: Path, **kwargs: object) -> Iterator[WorkerProcess]:
    """A ready ``ivt worker`` for the body of the ``with``, stopped afterwards."""
    worker = WorkerProcess(settings, log_path, **kwargs)  # type: ignore[arg-type]
    try:
        worker.wait_ready()
        yield worker
    finally:
        worker.stop()
