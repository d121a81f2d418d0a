"""The ``ivt`` command: wiring only. Each sub-command group lives beside the code it drives."""

from __future__ import annotations

import typer

from app.cli.broker import broker_cli, topics_cli
from app.cli.calibrate import calibrate_command
from app.cli.models import register as register_model_commands
from app.cli.replay import replay_cli, replay_worker_command
from app.cli.simulate import simulate_cli

cli = typer.Typer(no_args_is_help=True, add_completion=False, help="Real-time robotic ad-click detector.")
cli.add_typer(broker_cli, name="broker", help="Run the local single-node Kafka broker (KRaft).")
cli.add_typer(topics_cli, name="topics", help="Create and inspect the project's topics.")
cli.add_typer(simulate_cli, name="simulate", help="Deterministic traffic simulator (history files, live).")
cli.add_typer(replay_cli, name="replay", help="Replay history through a pinned model: submit, status, list.")
cli.command("replay-worker")(replay_worker_command)
register_model_commands(cli)  # ivt dataset / train / evaluate / models ...
cli.command("calibrate")(calibrate_command)  # per-slice thresholds -> a new model version


@cli.command()
def worker(
    log_level: str = typer.Option(None, help="Log level (default IVT_LOG_LEVEL)."),
    stages: str = typer.Option(
        "", help="Comma-separated stages to run (validate, ip-counters, score); default all."
    ),
    processes: int = typer.Option(
        1,
        min=1,
        help="Worker processes of one group on this machine, each with its state in "
        "IVT_DATA_DIR/process-K (one process uses one core at most).",
    ),
    split_stages: bool = typer.Option(
        False,
        "--split-stages",
        help="Run each stage in a process of its own (with --processes N: N per stage), state in "
        "IVT_DATA_DIR/<stage>-K: the stages of one worker then use a core each.",
    ),
) -> None:
    """Run the live detector stages as one Faust worker; start more to scale out."""
    from app.cli.worker import check_stages, run_worker, run_worker_group
    from app.contracts.settings import Settings

    chosen = [s.strip() for s in stages.split(",") if s.strip()] or None
    try:
        check_stages(chosen)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    settings = Settings.from_env()
    level = log_level or settings.log_level
    if processes > 1 or split_stages:
        raise typer.Exit(run_worker_group(settings, processes, level, chosen, split_stages))
    run_worker(settings, level, chosen)


@cli.command()
def schemas(out: str = typer.Option(None, help="Folder to write to (default: the repo's schemas/).")) -> None:
    """Write the JSON Schema of every event contract, for producers in other languages."""
    from pathlib import Path

    from app.contracts.schemas import SCHEMA_DIR, write_schemas

    for path in write_schemas(Path(out) if out else SCHEMA_DIR):
        typer.echo(str(path))


@cli.command()
def demo(
    rate: float = typer.Option(400, min=1, help="Live clicks per second of wall time (open loop)."),
    duration: float = typer.Option(60, min=1, help="Seconds of live traffic."),
    malformed: float = typer.Option(0.005, min=0, max=1, help="Share of extra malformed events."),
    seed: int = typer.Option(42, min=0, help="Simulator seed: the world's population and history."),
    summary_json: str = typer.Option(
        "", "--summary-json", help="Write the final scoreboard (overall, slices, families) as JSON here."
    ),
) -> None:
    """Run everything locally: broker, a fresh demo deployment, the world's history through the
    worker, a model trained on what it logged, live traffic continuing the history, the scoreboard.

    Example: ivt demo --seed 7 --summary-json var/demo-7.json
    """
    from pathlib import Path

    from app.cli.demo import DemoOptions, run_demo
    from app.contracts.settings import Settings

    run_demo(
        Settings.from_env(),
        DemoOptions(
            rate=rate,
            duration_s=duration,
            malformed_fraction=malformed,
            seed=seed,
            summary_json=Path(summary_json) if summary_json else None,
        ),
    )


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
