"""How every ``ivt`` sub-command reports a user error: one red line, exit status 1, no traceback."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import typer
from aiokafka.errors import KafkaConnectionError
from rich.console import Console

from app.contracts.exceptions import IvtError

__all__ = ["user_errors"]


@contextmanager
def user_errors(console: Console) -> Iterator[None]:
    """Turn an :class:`~app.contracts.exceptions.IvtError`, or a broker that cannot be reached, raised inside
    into a one-line message and exit 1."""
    try:
        yield
    except IvtError as exc:
        console.print(f"[red]error:[/red] {exc}", soft_wrap=True)
        raise typer.Exit(1) from None
    except KafkaConnectionError as exc:
        console.print(
            f"[red]error:[/red] {exc}; is the broker running? (`ivt broker start`, or set IVT_BOOTSTRAP_SERVERS)",
            soft_wrap=True,
        )
        raise typer.Exit(1) from None
