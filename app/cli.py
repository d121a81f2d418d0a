"""The ``ivt`` command: wiring only. Each sub-command group lives beside the code it drives."""

from __future__ import annotations

import typer

from app.broker.cli import broker_cli, topics_cli
from app.simulator.cli import simulate_cli

cli = typer.Typer(no_args_is_help=True, add_completion=False, help="Real-time robotic ad-click detector.")
cli.add_typer(broker_cli, name="broker", help="Run the local single-node Kafka broker (KRaft).")
cli.add_typer(topics_cli, name="topics", help="Create and inspect the project's topics.")
cli.add_typer(simulate_cli, name="simulate", help="Deterministic traffic simulator (history files, live).")


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
