"""``ivt broker start|stop|status`` and ``ivt topics create|list``.

Errors the user can act on (:class:`~app.contracts.exceptions.IvtError`) print as one red message and exit 1,
not as a traceback.
"""

from __future__ import annotations

import time
from contextlib import AbstractContextManager
from datetime import UTC, datetime

import typer
from rich.console import Console
from rich.table import Table

from app.cli.errors import user_errors
from app.contracts.exceptions import IvtError
from app.contracts.settings import Settings
from app.contracts.topics import topic_specs
from app.kafka.admin import ensure_topics, list_topics
from app.kafka.local import LocalBroker

__all__ = ["broker_cli", "topics_cli"]

broker_cli = typer.Typer(no_args_is_help=True, add_completion=False)
topics_cli = typer.Typer(no_args_is_help=True, add_completion=False)
console = Console(highlight=False)


def _user_errors() -> AbstractContextManager[None]:
    return user_errors(console)


@broker_cli.command("start")
def start(
    free_ports: bool = typer.Option(
        False, "--free-ports", help="Let the OS pick free ports (ignore IVT_BROKER_PORT)."
    ),
    timeout: float = typer.Option(60.0, help="Seconds to wait for the broker to be ready."),
) -> None:
    """Start the local broker in the background (fetches the jars with Maven the first time)."""
    with _user_errors():
        broker = LocalBroker(Settings.from_env(), free_ports=free_ports)
        before = broker.status()
        began = time.monotonic()
        state = broker.start(timeout_s=timeout)
        if before.running:
            console.print(f"already running: pid {state.pid}")
        else:
            console.print(
                f"started Kafka {state.kafka_version} in {time.monotonic() - began:.1f} s: pid {state.pid}"
            )
        console.print(f"log: {state.log}")
        console.print(f"bootstrap: [bold]{state.bootstrap}[/bold]")
        if state.bootstrap != Settings.from_env().bootstrap_servers:
            console.print(f"export IVT_BOOTSTRAP_SERVERS={state.bootstrap}")


@broker_cli.command("stop")
def stop(
    timeout: float = typer.Option(30.0, help="Seconds to allow a clean shutdown before SIGKILL."),
) -> None:
    """Stop the local broker (its data stays for the next start)."""
    with _user_errors():
        broker = LocalBroker(Settings.from_env())
        status = broker.status()
        if broker.stop(timeout_s=timeout) and status.state is not None:
            console.print(f"stopped broker pid {status.state.pid} ({status.state.bootstrap})")
        elif status.stale:
            console.print("not running (removed a stale state file)")
        else:
            console.print("not running")


@broker_cli.command("status")
def status() -> None:
    """Say whether the local broker runs, where, and whether it answers. Exit 1 when it does not run."""
    with _user_errors():
        broker = LocalBroker(Settings.from_env())
        current = broker.status()
        if not current.running or current.state is None:
            note = " (removed a stale state file)" if current.stale else ""
            console.print(f"not running{note}; state dir {current.state_dir}")
            raise typer.Exit(1)
        state = current.state
        try:
            broker.wait_ready(timeout_s=3)
            health = "[green]ready[/green]"
        except IvtError:
            health = "[yellow]not answering[/yellow]"
        started = datetime.fromisoformat(state.started_at)
        uptime = int((datetime.now(UTC) - started).total_seconds())
        console.print(
            f"running, {health}: pid {state.pid}, bootstrap [bold]{state.bootstrap}[/bold], "
            f"Kafka {state.kafka_version}, up {uptime} s"
        )
        console.print(f"log: {state.log}")


@topics_cli.command("create")
def create() -> None:
    """Create every project topic that is missing (safe to repeat); report partition/config drift."""
    with _user_errors():
        settings = Settings.from_env()
        report = ensure_topics(settings)
        for name in report.created:
            console.print(f"[green]created[/green] {name}")
        for name in report.present:
            console.print(f"present {name}")
        for line in report.mismatches:
            console.print(f"[red]mismatch[/red] {line}")
        if not report.ok:
            raise typer.Exit(1)


@topics_cli.command("list")
def list_(all_: bool = typer.Option(False, "--all", help="Include Kafka's internal __ topics.")) -> None:
    """List the cluster's topics with partition counts; project topics show their key."""
    with _user_errors():
        settings = Settings.from_env()
        counts = list_topics(settings, include_internal=all_)
        keys = {spec.name: spec.key for spec in topic_specs(settings)}
        table = Table("topic", "partitions", "key", box=None)
        for name, partitions in counts.items():
            table.add_row(name, str(partitions), keys.get(name, ""))
        console.print(table if counts else f"no topics on {settings.bootstrap_servers}")
