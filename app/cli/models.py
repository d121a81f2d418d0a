"""``ivt dataset``, ``ivt train``, ``ivt evaluate`` and ``ivt models ...``: offline ML commands.

:func:`register` adds them to the top-level ``ivt`` app (``app/cli.py`` stays wiring only).
"""

from __future__ import annotations

import resource
import sys
import time
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
from rich.table import Table

from app.contracts.settings import Settings

__all__ = ["register", "models_cli"]

console = Console(stderr=True)
# Tables go to stdout; wide enough to stay readable when piped into a file.
out_console = Console() if sys.stdout.isatty() else Console(width=160)
models_cli = typer.Typer(
    no_args_is_help=True, add_completion=False, help="List, inspect and promote model versions."
)


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _progress(label: str) -> Progress:
    return Progress(
        TextColumn(f"[bold]{label}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[note]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    )


def _fail(message: str) -> typer.Exit:
    console.print(f"[red]error:[/red] {message}")
    return typer.Exit(code=2)


def dataset(
    history: Annotated[
        Path | None, typer.Option(help="Simulator history folder (default $IVT_DATA_DIR/history).")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Output folder (default $IVT_DATA_DIR/dataset).")] = None,
    from_kafka: Annotated[
        bool, typer.Option("--from-kafka", help="Read verdicts + purchases + account-rfm from Kafka instead.")
    ] = False,
    start: Annotated[str | None, typer.Option(help="First click time: YYYY-MM-DD (UTC) or RFC 3339.")] = None,
    end: Annotated[str | None, typer.Option(help="End (exclusive): YYYY-MM-DD (UTC) or RFC 3339.")] = None,
    window_hours: Annotated[
        float, typer.Option(min=0.001, help="Purchase attribution window, hours.")
    ] = 24.0,
    rfm_high: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="RFM score at or above which a click is human.")
    ] = 0.6,
    late: Annotated[
        str,
        typer.Option(help="Clicks younger than the window: 'holdout' (weight 0) or 'weight' (importance)."),
    ] = "holdout",
    warmup_hours: Annotated[
        float, typer.Option(min=0.0, help="History hours that only warm the feature engine up (not written).")
    ] = 24.0,
) -> None:
    """Build a labelled, weighted training dataset (Parquet) from simulator history or from Kafka."""
    from models.dataset import DatasetError, parse_time
    from models.labels import LabelRule

    settings = Settings.from_env()
    target = out if out is not None else settings.data_dir / "dataset"
    try:
        rule = LabelRule(
            attribution_window_ms=int(window_hours * 3_600_000), rfm_high=rfm_high, late_policy=late
        )
        start_ms = parse_time(start) if start else None
        end_ms = parse_time(end) if end else None
    except (ValueError, DatasetError) as exc:
        raise _fail(str(exc)) from None
    if start_ms is not None and end_ms is not None and start_ms >= end_ms:
        raise _fail(f"--start {start} is not before --end {end}")
    began = time.perf_counter()
    try:
        if from_kafka:
            from models.dataset_kafka import build_from_kafka

            if start_ms is None or end_ms is None:
                raise _fail("--from-kafka needs --start and --end (the click time range to read)")
            with _progress("reading Kafka") as bar:
                task = bar.add_task("kafka", total=None, note="")

                def on_kafka(done: int, note: str) -> None:
                    bar.update(task, completed=done, note=note)

                info = build_from_kafka(
                    settings, target, start_ms=start_ms, end_ms=end_ms, rule=rule, progress=on_kafka
                )
        else:
            src = history if history is not None else settings.data_dir / "history"
            with _progress("features") as bar:
                task = bar.add_task("dataset", total=None, note="clicks")

                def on_batch(done: int, total: int) -> None:
                    bar.update(task, completed=done, total=total)

                from models.dataset import build_from_history

                info = build_from_history(
                    src,
                    target,
                    rule=rule,
                    start_ms=start_ms,
                    end_ms=end_ms,
                    warmup_hours=warmup_hours,
                    progress=on_batch,
                )
    except DatasetError as exc:
        raise _fail(str(exc)) from None
    c = info.doc["counts"]
    elapsed = time.perf_counter() - began
    console.print(
        f"wrote {info.path} : {info.rows:,} rows, human {c['human']:,}, non-human {c['non_human']:,} "
        f"(purchasing {c['purchasing']:,}, high RFM {c['high_rfm']:,}), incomplete labels {c['incomplete']:,} "
        f"({rule.late_policy}); {info.doc['cells_present']} of 672 weight cells present"
    )
    console.print(
        f"elapsed {elapsed:.1f} s, {info.rows / elapsed:,.0f} rows/s, peak RSS {_peak_rss_mib():,.0f} MiB"
    )


def register(cli: typer.Typer) -> None:
    """Add the offline ML commands to the ``ivt`` app."""
    cli.command("dataset")(dataset)
    cli.command("train")(train_cmd)
    cli.command("evaluate")(evaluate_cmd)
    cli.add_typer(models_cli, name="models", help="List, inspect and promote model versions.")


def train_cmd(
    dataset_dir: Annotated[
        Path | None, typer.Option("--dataset", help="Dataset folder (default $IVT_DATA_DIR/dataset).")
    ] = None,
    seed: Annotated[int, typer.Option(min=0, help="Random seed (same data + seed => same model).")] = 0,
    max_epochs: Annotated[
        int, typer.Option(min=1, help="Most epochs; early stopping usually ends sooner.")
    ] = 30,
    patience: Annotated[
        int, typer.Option(min=1, help="Epochs without validation improvement before stopping.")
    ] = 3,
    hidden: Annotated[str, typer.Option(help="Widths of the two hidden layers, e.g. 64,32.")] = "64,32",
    alpha: Annotated[float, typer.Option(min=0.0, help="L2 penalty.")] = 1e-4,
    batch_size: Annotated[int, typer.Option(min=1, help="Mini-batch size.")] = 1024,
    valid_days: Annotated[
        int, typer.Option(min=1, help="Days before the test days used for early stopping.")
    ] = 1,
    test_days: Annotated[int, typer.Option(min=0, help="Latest days held out for testing.")] = 2,
    target_fpr: Annotated[
        float, typer.Option(min=1e-6, max=0.999, help="FPR per slice the thresholds aim at.")
    ] = 0.01,
    k: Annotated[
        int, typer.Option(min=0, help="Robotic coverage: sessions with more than k clicks in an hour.")
    ] = 20,
    max_rows: Annotated[
        int | None, typer.Option(min=1000, help="Sample at most this many training rows.")
    ] = None,
    max_examples: Annotated[
        int, typer.Option(min=1, help="Training budget: epochs are capped at this // training rows.")
    ] = 150_000_000,
    version: Annotated[
        str | None, typer.Option(help="Version name (default mlp-NNNN, the next number).")
    ] = None,
    activate: Annotated[
        bool, typer.Option(help="Make the new version the active one the workers serve.")
    ] = False,
) -> None:
    """Train the MLP (and the baselines), export to ONNX, check parity, register the version."""
    from models.dataset import DatasetError
    from models.exceptions import ModelError
    from models.registry import Registry
    from models.train import TrainConfig, train_and_register

    settings = Settings.from_env()
    path = dataset_dir if dataset_dir is not None else settings.data_dir / "dataset"
    try:
        widths = tuple(int(x) for x in hidden.split(","))
        cfg = TrainConfig(
            hidden=widths,
            alpha=alpha,
            batch_size=batch_size,
            max_epochs=max_epochs,
            patience=patience,
            seed=seed,
            valid_days=valid_days,
            test_days=test_days,
            target_fpr=target_fpr,
            k=k,
            max_train_rows=max_rows,
            max_examples=max_examples,
        )
    except ValueError as exc:
        raise _fail(f"bad option: {exc}") from None
    began = time.perf_counter()
    with _progress("training") as bar:
        task = bar.add_task("train", total=max_epochs, note="loading")

        def on_stage(s: str) -> None:
            bar.update(task, note=s)

        def on_epoch(epoch: int, loss: float, vloss: float) -> None:
            bar.update(
                task, completed=epoch, note=f"epoch {epoch}: train loss {loss:.4f}, valid loss {vloss:.4f}"
            )

        try:
            manifest, result = train_and_register(
                path,
                Registry(settings.registry_dir),
                cfg,
                version=version,
                activate=activate,
                on_epoch=on_epoch,
                on_stage=on_stage,
            )
        except (DatasetError, ModelError) as exc:
            raise _fail(str(exc)) from None
        bar.update(task, completed=max_epochs)
    m = result.metrics
    console.print(
        f"registered {manifest.version} ({manifest.status}) in {settings.registry_dir}: best epoch {m['best_epoch']} "
        f"of {len(m['epochs'])}, valid loss {m['best_valid_loss']:.4f}; ONNX parity max |dP| {result.parity:.2e} "
        f"on {result.parity_rows:,} held-out rows"
    )
    table = Table(
        title=f"{m['evaluated_on']} days {m['split']['test'][0]} to {m['split']['test'][1]} (end excluded): "
        f"one threshold each at FPR <= {cfg.target_fpr:g}"
    )
    for col in ("model", "threshold", "IVR", "FPR", f"coverage (k={cfg.k})"):
        table.add_column(col, justify="right")
    for name, pt in m["at_same_fpr"].items():
        table.add_row(
            name,
            *(
                _pct(pt[c]) if c != "threshold" else _num(pt[c])
                for c in ("threshold", "ivr", "fpr", "coverage")
            ),
        )
    out_console.print(table)
    console.print(
        f"rows: {m['rows']}; elapsed {time.perf_counter() - began:.1f} s; peak RSS {_peak_rss_mib():,.0f} MiB"
    )


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f} %"


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"


@models_cli.command("list")
def list_cmd(status: Annotated[str | None, typer.Option(help="Only this status.")] = None) -> None:
    """Every registered version, oldest first."""
    from models.exceptions import ModelError
    from models.registry import Registry

    settings = Settings.from_env()
    try:
        manifests = Registry(settings.registry_dir).manifests(status)
    except ModelError as exc:
        raise _fail(str(exc)) from None
    table = Table(title=f"models in {settings.registry_dir}")
    for col in (
        "version",
        "status",
        "created",
        "parent",
        "training window",
        "default th",
        "test IVR",
        "test FPR",
    ):
        table.add_column(col)
    for m in manifests:
        overall = (m.metrics.get("per_slice") or {}).get("all") or {}
        window = "-" if m.train_end_ms == 0 else f"{_day(m.train_start_ms)} .. {_day(m.train_end_ms)}"
        table.add_row(
            m.version,
            m.status,
            m.created_at[:19],
            m.parent or "-",
            window,
            f"{m.default_threshold:.4f}",
            _pct(overall.get("ivr")),
            _pct(overall.get("fpr")),
        )
    out_console.print(table)


def _day(ms: int) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(ms / 1000))


@models_cli.command("show")
def show_cmd(
    version: Annotated[str, typer.Argument(help="Version name.")],
    verify: Annotated[bool, typer.Option(help="Also verify the checksum and the feature spec.")] = True,
) -> None:
    """Print a version's manifest (JSON); with --verify (default) check checksum and features first."""
    from models.exceptions import ModelError
    from models.registry import Registry

    reg = Registry(Settings.from_env().registry_dir)
    try:
        manifest = reg.load(version)[0] if verify else reg.manifest(version)
    except ModelError as exc:
        raise _fail(str(exc)) from None
    typer.echo(manifest.to_json().decode())


@models_cli.command("promote")
def promote_cmd(version: Annotated[str, typer.Argument(help="Version to make active.")]) -> None:
    """Make VERSION the active model (checked first); the previously active one is retired."""
    from models.exceptions import ModelError
    from models.registry import Registry
    from models.train import promote

    reg = Registry(Settings.from_env().registry_dir)
    try:
        m = promote(reg, version)
    except ModelError as exc:
        raise _fail(str(exc)) from None
    console.print(f"{m.version} is active (workers pick the newest active version when they start)")


def evaluate_cmd(
    version: Annotated[
        str | None, typer.Option(help="Model version (default: the newest registered).")
    ] = None,
    dataset_dir: Annotated[
        Path | None,
        typer.Option("--dataset", help="Dataset folder (default: the one the model was trained on)."),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Report folder (default $IVT_DATA_DIR/reports/VERSION).")
    ] = None,
    start: Annotated[
        str | None, typer.Option(help="First day to evaluate, YYYY-MM-DD (default: the test days).")
    ] = None,
    end: Annotated[str | None, typer.Option(help="End day (exclusive), YYYY-MM-DD.")] = None,
    k: Annotated[
        int | None, typer.Option(min=0, help="Robotic: sessions with more than k clicks in an hour.")
    ] = None,
    fpr: Annotated[
        str, typer.Option(help="FPR budgets for the same-FPR comparison, comma separated.")
    ] = "0.005,0.01,0.02",
) -> None:
    """Evaluate a model and both baselines on held-out days: Markdown report, JSON, PNG curves."""
    from models.dataset import DatasetError, parse_time
    from models.evaluate import evaluate
    from models.exceptions import ModelError
    from models.registry import Registry

    settings = Settings.from_env()
    reg = Registry(settings.registry_dir)
    try:
        if version is None:
            latest = reg.latest()
            if latest is None:
                raise _fail(f"no model in {settings.registry_dir}; train one with `ivt train`")
            version = latest.version
        budgets = tuple(float(x) for x in fpr.split(","))
        if not all(0 < b < 1 for b in budgets):
            raise ValueError("FPR budgets must be in (0, 1)")
        days = None
        if start or end:
            if not (start and end):
                raise _fail("give both --start and --end, or neither")
            days = (parse_time(start) // 86_400_000, parse_time(end) // 86_400_000)
            if days[0] >= days[1]:
                raise _fail(f"--start {start} is not before --end {end}")
        target = out if out is not None else settings.data_dir / "reports" / version
        with console.status(f"evaluating {version}"):
            report = evaluate(reg, version, target, dataset=dataset_dir, days=days, k=k, fprs=budgets)
    except (DatasetError, ModelError, ValueError) as exc:
        raise _fail(str(exc)) from None
    doc = report.doc
    table = Table(
        title=f"{version} on {doc['days'][0]} .. {doc['days'][1]} (excl.), {doc['rows']:,} clicks, k={doc['k']}"
    )
    for col in ("FPR budget", "scorer", "IVR", "FPR", "coverage"):
        table.add_column(col, justify="right")
    for f, by in doc["at_same_fpr"].items():
        for name, pt in by.items():
            table.add_row(
                f"{float(f) * 100:g} %", name, _pct(pt["ivr"]), _pct(pt["fpr"]), _pct(pt["coverage"])
            )
    out_console.print(table)
    truth = doc["truth"]
    if truth.get("available"):
        from models.scoreboard import format_table

        out_console.print("against the simulator's truth, the model at its thresholds:")
        for line in format_table(truth["scoreboard"]):
            out_console.print(line, highlight=False)
    console.print(f"report: {report.markdown} (plots beside it)")
