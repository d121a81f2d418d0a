"""``ivt replay submit|status|list|rerun`` and ``ivt replay-worker``.

Errors the user can act on (unknown model version, empty range, offsets out of range, unknown job)
print as one red line and exit 1.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import AbstractContextManager

import orjson
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from app.cli.errors import user_errors

__all__ = ["replay_cli", "replay_worker_command"]

replay_cli = typer.Typer(no_args_is_help=True, add_completion=False)
console = Console(highlight=False)


def _user_errors() -> AbstractContextManager[None]:
    return user_errors(console)


def replay_worker_command(
    log_level: str = typer.Option(None, help="Log level (default IVT_LOG_LEVEL)."),
) -> None:
    """Run replay jobs (own process, lower CPU priority; resumes unfinished jobs on start)."""
    from agents.replay.worker import run_replay_worker

    run_replay_worker(log_level=log_level)


@replay_cli.command("submit")
def submit_command(
    model: str = typer.Option(..., "--model", help="Pinned model version from the registry."),
    mode: str = typer.Option("rescore", help="rescore (logged features) or recompute (from raw clicks)."),
    publish: str = typer.Option("changed", help="changed (decision or score differs) or all."),
    offsets: str = typer.Option(None, help="PARTITION:START-END,... of clicks (end exclusive)."),
    start: str = typer.Option(None, help="Event-time range start (RFC 3339 or epoch ms), inclusive."),
    end: str = typer.Option(None, help="Event-time range end (RFC 3339 or epoch ms), exclusive."),
    lookback_s: float = typer.Option(
        None,
        help="Recompute: seconds of clicks before the range to warm up on (default IVT_REPLAY_LOOKBACK_S).",
    ),
    job_id: str = typer.Option(None, help="Job id (default: replay-<time>-<random>)."),
    follow: bool = typer.Option(False, "--follow", help="Then show its progress until it finishes."),
) -> None:
    """Publish a replay job for the replay worker."""
    from agents.replay.client import submit
    from agents.replay.job import ReplayJob, new_job_id, parse_offsets, parse_when
    from app.contracts.settings import Settings

    with _user_errors():
        settings = Settings.from_env()
        now = time.time_ns() // 1_000_000
        job = ReplayJob(
            job_id=job_id or new_job_id(now),
            model_version=model,
            mode=mode,
            publish=publish,
            submitted_at_ms=now,
            offsets=parse_offsets(offsets) if offsets else None,
            start_ms=parse_when(start, "start") if start else None,
            end_ms=parse_when(end, "end") if end else None,
            lookback_s=settings.replay_lookback_s if lookback_s is None else lookback_s,
        )
        submit(settings, job)
        console.print(
            f"submitted [bold]{job.job_id}[/bold]: {job.mode}, model {job.model_version}, {job.describe_range()}"
        )
    if follow:
        status_command(job.job_id, follow=True, as_json=False, timeout=None)


@replay_cli.command("rerun")
def rerun_command(job_id: str = typer.Argument(..., help="Job id.")) -> None:
    """Submit a job again: a new run that publishes nothing the earlier runs published."""
    from agents.replay.client import rerun
    from app.contracts.settings import Settings

    with _user_errors():
        job = asyncio.run(rerun(Settings.from_env(), job_id))
        console.print(f"resubmitted [bold]{job.job_id}[/bold]")


@replay_cli.command("status")
def status_command(
    job_id: str = typer.Argument(..., help="Job id."),
    follow: bool = typer.Option(True, "--follow/--no-follow", help="Follow with a progress bar until done."),
    as_json: bool = typer.Option(False, "--json", help="Print the final checkpoint as JSON."),
    timeout: float = typer.Option(None, help="Give up following after this many seconds."),
) -> None:
    """Show a job's progress (a live progress bar) and, once finished, its summary."""
    from agents.replay.client import follow as follow_progress
    from app.contracts.settings import Settings

    settings = Settings.from_env()

    async def watch() -> object:
        updates = follow_progress(settings, job_id, timeout)
        last = await anext(updates)  # an unknown job fails here, before any bar is drawn
        if not follow or last.finished:
            await updates.aclose()
            return last
        with Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            console=console,
            disable=as_json,
        ) as bar:
            task = bar.add_task(job_id, total=None, rate="")
            async for p in updates:
                last = p
                bar.update(
                    task,
                    total=p.total or None,
                    completed=p.done_positions,
                    description=f"{job_id} [{p.state}]",
                    rate=f"{p.clicks_per_s:,.0f} clicks/s" if p.clicks_per_s else "",
                )
        return last

    with _user_errors():
        final = asyncio.run(watch())
    if as_json:
        from agents.replay.decide import summary

        typer.echo(orjson.dumps({**final.to_dict(), "summary": summary(final)}).decode())  # type: ignore[attr-defined]
        return
    _print_summary(final)
    if final.state == "failed":  # type: ignore[attr-defined]
        raise typer.Exit(1)


@replay_cli.command("list")
def list_command() -> None:
    """Every job with its latest state."""
    from agents.replay.client import jobs_and_progress
    from app.contracts.settings import Settings

    with _user_errors():
        jobs, progress = asyncio.run(jobs_and_progress(Settings.from_env()))
    table = Table("job", "mode", "model", "range", "publish", "state", "published")
    for job_id, job in jobs.items():
        p = progress.get(job_id)
        current = p is not None and p.submitted_at_ms == job.submitted_at_ms
        table.add_row(
            job_id,
            job.mode,
            job.model_version,
            job.short_range(),
            job.publish,
            p.state if current else "queued",  # type: ignore[union-attr]
            f"{p.counters['published']:,}" if current else "",  # type: ignore[union-attr]
        )
    console.print(table)


def _print_summary(p: object) -> None:
    from agents.replay.decide import summary

    if p is None:
        return
    if getattr(p, "error", ""):
        console.print(f"[red]failed:[/red] {p.error}")  # type: ignore[attr-defined]
    s = summary(p)
    c = s["counters"]
    console.print(
        f"read {c['read']:,} clicks; decided {c['decided']:,}; published {c['published']:,} "
        f"(already published {c['already_published']:,}, unchanged {c['unchanged']:,}); flipped "
        f"valid->invalid {c['flipped_to_invalid']:,}, invalid->valid {c['flipped_to_valid']:,}; "
        f"first decisions {c['first_decision']:,}; no logged features {c['no_features']:,}; "
        f"not clicks {c['invalid_input']:,}; outside the time range {c['outside_time']:,}; "
        f"warm-up {c['warmup']:,}"
    )
    table = Table("slice", "clicks", "IVR before -> after", "FPR before -> after", "coverage before -> after")

    def pct(x: float | None) -> str:
        return "-" if x is None else f"{100 * x:.1f}%"

    for name, rows in s["slices"].items():
        before, after = rows.get("before", {}), rows.get("after", {})
        table.add_row(
            name,
            f"{int(after.get('clicks') or 0):,}",
            *(f"{pct(before.get(k))} -> {pct(after.get(k))}" for k in ("ivr", "fpr", "coverage")),
        )
    console.print(table)
