"""``ivt simulate``: write history files, or publish live traffic to Kafka."""

from __future__ import annotations

import asyncio
import resource
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from app.contracts.events import format_time
from app.contracts.settings import Settings
from app.simulator.params import DEFAULT_START, SimParams

__all__ = ["simulate_cli"]

simulate_cli = typer.Typer(
    no_args_is_help=True, add_completion=False, help="Deterministic traffic simulator."
)
console = Console(stderr=True)


def _parse_date(value: str) -> datetime:
    try:
        return datetime.strptime(value, "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError as exc:
        raise typer.BadParameter(f"expected YYYY-MM-DD, got {value!r}") from exc


def _parse_instant(value: str) -> int:
    """Epoch milliseconds from ``YYYY-MM-DD`` (UTC midnight), an RFC 3339 time, or epoch ms digits."""
    if value.isdigit():
        return int(value)
    try:
        dt = datetime.fromisoformat(value)
    except ValueError as exc:
        raise typer.BadParameter(f"expected YYYY-MM-DD, an RFC 3339 time or epoch ms, got {value!r}") from exc
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)


def peak_rss_mib() -> float:
    """Peak resident memory of this process (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@simulate_cli.command()
def history(
    days: Annotated[int, typer.Option(min=1, help="Simulated days.")] = 7,
    users: Annotated[int, typer.Option(min=1, help="Human users (bots scale with them).")] = 50_000,
    seed: Annotated[int, typer.Option(min=0, help="Random seed: same seed and options => same files.")] = 42,
    out: Annotated[Path | None, typer.Option(help="Output folder (default: $IVT_DATA_DIR/history).")] = None,
    start: Annotated[
        str, typer.Option(help="First day, YYYY-MM-DD (UTC midnight).")
    ] = DEFAULT_START.strftime("%Y-%m-%d"),
    bot_scale: Annotated[float, typer.Option(min=0.0, help="Multiplier on the number of bots.")] = 1.0,
    chunk_s: Annotated[int, typer.Option(min=1, help="Seconds of simulated time per chunk.")] = 3600,
) -> None:
    """Write DAYS of traffic as Parquet (clicks, purchases, account RFM) with ground truth."""
    from app.simulator.history import write_history

    folder = out if out is not None else Settings.from_env().data_dir / "history"
    params = SimParams(
        seed=seed,
        users=users,
        start_ms=int(_parse_date(start).timestamp() * 1000),
        chunk_s=chunk_s,
        bot_scale=bot_scale,
    )
    chunks = days * 86_400 // chunk_s
    clicks = 0
    began = time.perf_counter()
    with Progress(
        TextColumn("[bold]simulating"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("chunks  {task.fields[clicks]:,} clicks"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    ) as progress:
        task = progress.add_task("history", total=chunks, clicks=0)

        def on_chunk(done: int, n: int) -> None:
            nonlocal clicks
            clicks += n
            progress.update(task, completed=done, clicks=clicks)

        manifest = write_history(folder, params, days, on_chunk)
    elapsed = time.perf_counter() - began
    counts = manifest["counts"]
    console.print(f"wrote {folder} ({manifest['start']} .. {manifest['end']})")
    for family, n in counts["clicks_by_family"].items():
        console.print(f"  {family:<15} {n:>12,} clicks")
    console.print(f"  purchases {counts['purchases']:,}, account RFM updates {counts['account_rfm']:,}")
    console.print(
        f"elapsed {elapsed:.1f} s, clicks written {counts['clicks']:,}, "
        f"{counts['clicks'] / elapsed:,.0f} clicks/s, peak RSS {peak_rss_mib():,.0f} MiB"
    )


@simulate_cli.command()
def live(
    rate: Annotated[float, typer.Option(min=0.001, help="Target clicks per second (open loop).")] = 20_000,
    duration: Annotated[float, typer.Option(min=0.1, help="Seconds to publish.")] = 60,
    seed: Annotated[int, typer.Option(min=0, help="Random seed.")] = 42,
    users: Annotated[
        int | None, typer.Option(min=1, help="Human users (default: as many as make RATE at today's rhythm).")
    ] = None,
    purchase_delay_scale: Annotated[
        float, typer.Option(min=1e-6, help="Multiplier on purchase and RFM delays (minutes..days).")
    ] = 0.01,
    bot_scale: Annotated[float, typer.Option(min=0.0, help="Multiplier on the number of bots.")] = 1.0,
    acks: Annotated[str, typer.Option(help="Producer acks: 0, 1 or all.")] = "1",
    idempotence: Annotated[bool, typer.Option(help="Idempotent producer (forces acks=all).")] = True,
    producer: Annotated[
        str, typer.Option(help="batch: own batches + send_batch (cheaper); send: producer.send per message.")
    ] = "batch",
    warmup: Annotated[int, typer.Option(min=0, help="Simulated seconds generated before the start.")] = 600,
    bootstrap: Annotated[
        str | None, typer.Option(help="Kafka bootstrap (default: IVT_BOOTSTRAP_SERVERS).")
    ] = None,
    continue_history: Annotated[
        Path | None,
        typer.Option(
            help="Continue the world of this history folder: its population (seed, users, bots from "
            "manifest.json, overriding --seed/--users/--bot-scale) from its end, event time compressed "
            "by a speed factor so that it makes RATE clicks/s."
        ),
    ] = None,
    speed: Annotated[
        float | None,
        typer.Option(
            min=1e-6,
            help="With --continue-history: event-time seconds per wall second "
            "(default: RATE / the population's natural rate).",
        ),
    ] = None,
) -> None:
    """Publish live traffic at a steady RATE for DURATION seconds (clicks, purchases, RFM updates)."""
    from app.simulator.history import read_manifest
    from app.simulator.live import LiveOptions, publish_live

    settings = Settings.from_env(bootstrap_servers=bootstrap)
    common = {
        "rate": rate,
        "duration_s": duration,
        "purchase_delay_scale": purchase_delay_scale,
        "acks": acks,
        "idempotence": idempotence,
        "warmup_s": warmup,
        "producer": producer,
    }
    if continue_history is not None:
        try:
            manifest = read_manifest(continue_history)
        except (OSError, ValueError) as exc:
            raise typer.BadParameter(str(exc), param_hint="--continue-history") from exc
        options = LiveOptions.continuing(manifest, speed=speed, **common)
    else:
        if speed is not None:
            raise typer.BadParameter("--speed needs --continue-history", param_hint="--speed")
        options = LiveOptions(seed=seed, users=users, bot_scale=bot_scale, **common)
    report = asyncio.run(publish_live(settings, options, console=console))
    report.print(console)
    if report.errors:
        raise typer.Exit(1)


@simulate_cli.command("publish-history")
def publish_history_cmd(
    history_dir: Annotated[Path, typer.Argument(help="A history folder (ivt simulate history --out DIR).")],
    start: Annotated[
        str | None,
        typer.Option(
            help="First event time published: YYYY-MM-DD, RFC 3339 or epoch ms (default: the history's start)."
        ),
    ] = None,
    end: Annotated[
        str | None,
        typer.Option(help="Event time where publishing stops, exclusive (default: the history's end)."),
    ] = None,
    bootstrap: Annotated[
        str | None, typer.Option(help="Kafka bootstrap (default: IVT_BOOTSTRAP_SERVERS).")
    ] = None,
) -> None:
    """Publish a history folder to Kafka as fast as the broker takes it: clicks, purchases and RFM updates
    merged in event-time order, with the history's click ids."""
    from app.simulator.history import read_manifest
    from app.simulator.publish_history import count_clicks, publish_history

    try:
        manifest = read_manifest(history_dir)
    except (OSError, ValueError) as exc:
        raise typer.BadParameter(str(exc), param_hint="HISTORY_DIR") from exc
    start_ms = _parse_instant(start) if start is not None else int(manifest["start_ms"])
    end_ms = _parse_instant(end) if end is not None else int(manifest["end_ms"])
    if end_ms <= start_ms:
        raise typer.BadParameter("--end must be after --start")
    settings = Settings.from_env(bootstrap_servers=bootstrap)
    total = count_clicks(history_dir, start_ms, end_ms)
    console.print(f"publishing {total:,} clicks of {format_time(start_ms)} .. {format_time(end_ms)}")
    began = time.perf_counter()
    with Progress(
        TextColumn("[bold]publishing"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("clicks  {task.fields[rate]:,.0f} clicks/s"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    ) as progress:
        task = progress.add_task("history", total=total, rate=0.0)

        def on_progress(clicks: int) -> None:
            progress.update(task, completed=clicks, rate=clicks / max(time.perf_counter() - began, 1e-9))

        report = asyncio.run(publish_history(settings, history_dir, start_ms, end_ms, progress=on_progress))
    report.print(console)
    if report.errors:
        raise typer.Exit(1)


if __name__ == "__main__":
    simulate_cli()
