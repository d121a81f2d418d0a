"""``ivt worker``: run the live stream stages in one Faust worker process.

Scale out by starting more of them with the same IVT_APP_ID: Kafka's group protocol spreads the
partitions (and with them the table state) over the workers. One worker process runs in one event
loop under one GIL, so on a machine with spare cores ``ivt worker --processes N``
(:func:`run_worker_group`) runs N of them in one group, each with its own state folder, and
``ivt worker --split-stages`` runs each stage in a process of its own (:func:`group_layout`): the
stages already hand clicks to each other through Kafka, so the IP stage of one click and the scoring
of an earlier one run on two cores at once.
:class:`WorkerProcess` starts one as a child process; the demo and the integration tests use it, so
what they run is what users run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from agents import STAGES, binding
from app.cli.processes import ChildProcess
from app.contracts.settings import Settings
from app.runtime import READY_MARK

__all__ = [
    "LIVE_STAGES",
    "check_stages",
    "run_worker",
    "run_worker_group",
    "process_settings",
    "group_layout",
    "stages_to_run",
    "WorkerProcess",
    "READY_MARK",
]

#: The stage modules, in data-flow order. A worker runs all of them unless told otherwise; stages
#: can also run in separate processes (each consumes and produces through Kafka).
LIVE_STAGES: tuple[str, ...] = tuple(STAGES.values())


def check_stages(stages: list[str] | None) -> None:
    """Refuse stage names that do not exist (before any process is started)."""
    unknown = sorted(set(stages or []) - set(STAGES))
    if unknown:
        raise ValueError(f"unknown stage(s) {', '.join(unknown)}; choose from {', '.join(STAGES)}")


def stages_to_run(stages: list[str] | None, clicks_keyed_by_ip: bool) -> list[str]:
    """The stages a worker runs: those asked for, else all, without the validation stage when
    producers key clicks by IP (the IP stage validates then, and the validation agent is not
    registered, so a process of its own would consume nothing)."""
    chosen = list(stages) if stages else list(STAGES)
    if clicks_keyed_by_ip and not stages:
        chosen.remove("validate")
    return chosen


def group_layout(
    stages: list[str] | None, processes: int, split_stages: bool, clicks_keyed_by_ip: bool
) -> list[tuple[str, list[str] | None]]:
    """(state folder name, stages or None for all) of each process of a worker group.

    Without ``split_stages``: ``processes`` copies of the worker, ``process-K``. With it: for each
    stage, ``processes`` processes that run only that stage, ``<stage>-K``. The names do not depend
    on start order, so a restarted group finds each process's RocksDB state where it left it.
    Faust's partition assignor assigns each topic only among the members subscribed to it, so the
    processes of one stage share that stage's partitions and nothing else.
    """
    if processes < 1:
        raise ValueError(f"--processes must be at least 1, got {processes}")
    if not split_stages:
        return [(f"process-{slot}", stages) for slot in range(processes)]
    return [
        (f"{stage}-{slot}", [stage])
        for stage in stages_to_run(stages, clicks_keyed_by_ip)
        for slot in range(processes)
    ]


def run_worker(settings: Settings, log_level: str = "info", stages: list[str] | None = None) -> None:
    """Build the app from ``settings``, bind the stages to it and hand over to Faust until it stops."""
    check_stages(stages)
    from app.runtime.app import create_app
    from app.runtime.worker import run

    runtime = create_app(settings)
    for name in stages or list(STAGES):
        binding(name)(runtime)
    run(runtime, log_level)


def process_settings(settings: Settings, slot: int | str, split_stages: bool = False) -> dict[str, str]:
    """Environment of worker process ``slot`` of a group: its own state folder, the shared registry.

    RocksDB allows one process per database, so processes on one machine cannot share
    ``IVT_DATA_DIR/worker``; the slot (``process-K`` or a name from :func:`group_layout`) keeps each
    process's folder the same across restarts, so a restarted process finds its state and only reads
    the changelog's tail.

    The processes of a split group run without standby replicas: Faust's group leader builds every
    member's assignment with its *own* tables, so a leader of one stage leaves out the standby
    partitions of another stage's tables, and the members of that stage then fail Faust's check of
    their assignment (``PartitionAssignor.on_assignment``) and stop. A stage process that dies is
    replaced from the changelog instead of a warm standby.
    """
    folder = f"process-{slot}" if isinstance(slot, int) else slot
    return {
        **settings.to_env(),
        **({"IVT_TABLE_STANDBY_REPLICAS": "0"} if split_stages else {}),
        "IVT_DATA_DIR": str(settings.data_dir / folder),
        "IVT_MODEL_DIR": str(settings.registry_dir),
    }


def run_worker_group(
    settings: Settings,
    processes: int,
    log_level: str = "info",
    stages: list[str] | None = None,
    split_stages: bool = False,
) -> int:
    """Run the processes of a worker group (:func:`group_layout`) until one of them exits; its exit
    status.

    SIGTERM and SIGINT are passed on to every process (each shuts down as a single worker does). When
    one process exits, the others are stopped too, so a supervisor sees one failure and restarts the
    group, as it would a single worker (see ARCHITECTURE.md, "Delivery is at least once").
    """
    layout = group_layout(stages, processes, split_stages, settings.clicks_keyed_by_ip)
    base = [sys.executable, "-m", "app.cli", "worker", "--log-level", log_level]
    children = [
        subprocess.Popen(
            base + (["--stages", ",".join(only)] if only else []),
            env={**os.environ, **process_settings(settings, folder, split_stages)},
        )
        for folder, only in layout
    ]

    def pass_on(signum: int, _frame: object) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGTERM, pass_on)
    signal.signal(signal.SIGINT, pass_on)
    while all(child.poll() is None for child in children):
        time.sleep(0.2)
    first = next(child for child in children if child.poll() is not None)
    pass_on(signal.SIGTERM, None)
    for child in children:
        try:
            child.wait(60)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
    return first.returncode


class WorkerProcess(ChildProcess):
    """An ``ivt worker`` child process (see :class:`~app.cli.processes.ChildProcess`)."""

    def __init__(
        self,
        settings: Settings,
        log_path: Path,
        extra_env: dict[str, str] | None = None,
        stages: list[str] | None = None,
        processes: int = 1,
        split_stages: bool = False,
    ) -> None:
        args = ["worker", "--log-level", "info", *(["--stages", ",".join(stages)] if stages else [])]
        if processes > 1:
            args += ["--processes", str(processes)]
        if split_stages:
            args.append("--split-stages")
        keyed = Settings.from_env({**settings.to_env(), **(extra_env or {})}).clicks_keyed_by_ip
        count = len(group_layout(stages, processes, split_stages, keyed))
        super().__init__("worker", args, READY_MARK, settings, log_path, extra_env, ready_count=count)
