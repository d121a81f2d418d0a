"""``ivt calibrate``: new per-slice thresholds for a registered model, as a new model version.

The ONNX graph is not touched: :meth:`models.registry.Registry.with_thresholds` writes a child
version with the same checksummed graph, the new thresholds, and the calibration (budget, floors,
fits, per-slice and global results, calibration set) under ``metrics["calibration"]``. So the daily
job can recalibrate without retraining, and every verdict's ``model_version`` still names one exact
(graph, thresholds) pair.

The calibration set is a dataset folder (``ivt dataset``): feature vectors, slice, purchasing flag
and session-hour counts. By default it is the dataset the model was trained from, restricted to the
model's held-out test days (its manifest's ``metrics.split.test``); ``--calibration-set`` and
``--days`` choose others. The model scores those rows (ONNX Runtime, as in serving), then
:func:`models.calibration.calibrate` does the rest and :func:`models.calibration_report.write_report`
writes the report.

Strategies (what is written to the manifest):

* ``slices`` (default): the per-slice thresholds; the default threshold (for a slice without its
  own) is the single global threshold at the same overall FPR;
* ``knee``: no per-slice thresholds; the default is the knee of the pooled IVR-FPR curve;
* ``global``: no per-slice thresholds; the default is the best single threshold within the budget.

The report always shows all of them. An infeasible budget writes the report, registers nothing and
exits with status 1, naming the slices that cannot meet their coverage floor.
"""

from __future__ import annotations

import re
import shlex
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from app.contracts.settings import Settings

__all__ = ["calibrate_command", "load_calibration_set", "default_version_name", "STRATEGIES"]

console = Console(stderr=True)
out_console = Console()
if not out_console.is_terminal:  # files and pipes: room for the whole comparison table
    out_console = Console(width=160)
STRATEGIES = ("slices", "knee", "global")
_DAY_MS = 86_400_000


def _fail(message: str, code: int = 2) -> typer.Exit:
    console.print(f"[red]error:[/red] {message}")
    return typer.Exit(code=code)


def default_version_name(model: str, now_ms: int) -> str:
    """``<model>-cal-YYYYMMDDTHHMMSS`` (a calibrated model's own suffix is replaced, not stacked)."""
    root = re.sub(r"-cal-\d{8}T\d{6}$", "", model)
    stamp = datetime.fromtimestamp(now_ms / 1000, tz=UTC).strftime("%Y%m%dT%H%M%S")
    return f"{root[: 64 - 21]}-cal-{stamp}"


def _day(text: str) -> int:
    try:
        d = datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        raise ValueError(f"not a date YYYY-MM-DD: {text!r}") from None
    return int(d.timestamp() * 1000) // _DAY_MS


def parse_days(text: str) -> tuple[int, int]:
    """``START:END`` (UTC dates, END exclusive) or one date -> day numbers since the epoch."""
    if ":" in text:
        a, b = text.split(":", 1)
        days = (_day(a), _day(b))
    else:
        d = _day(text)
        days = (d, d + 1)
    if days[1] <= days[0]:
        raise ValueError(f"--days {text!r}: END must be after START")
    return days


def _iso(day: int) -> str:
    return datetime.fromtimestamp(day * 86_400, tz=UTC).strftime("%Y-%m-%d")


def load_calibration_set(
    path: Path, days: tuple[int, int] | None, scorer: Any, k: int, max_rows: int | None = None
) -> tuple[Any, dict[str, Any]]:
    """Read the dataset's rows in ``days`` (all if None), score them; ``(CalibrationSet, about)``."""
    from models.calibration import CalibrationSet
    from models.dataset import read_info
    from models.train import load_split

    info = read_info(path)
    span = days or (int(info.doc["first_day"]), int(info.doc["last_day"]) + 1)
    data = load_split(path, span, max_rows=max_rows)
    if len(data) == 0:
        raise ValueError(f"{path}: no rows on days {_iso(span[0])} .. {_iso(span[1] - 1)}")
    t0 = time.perf_counter()
    scores = np.concatenate(
        [scorer.score(data.X[i : i + 65_536]) for i in range(0, len(data), 65_536)]
    ).astype(np.float64)
    score_s = time.perf_counter() - t0
    cal = CalibrationSet(
        scores=scores,
        slices=np.asarray(data.cols["slice"]).astype(str),
        purchasing=data.cols["is_purchasing"],
        session_hour_clicks=data.cols["session_hour_clicks"],
        k=k,
    )
    about = {
        "dataset": str(Path(path).resolve()),
        "days": [_iso(span[0]), _iso(span[1])],
        "rows": len(data),
        "scoring_seconds": round(score_s, 2),
        "scored_with": scorer.provider,
    }
    return cal, about


def _default_days(metrics: Any) -> tuple[int, int] | None:
    split = metrics.get("split") if hasattr(metrics, "get") else None
    test = split.get("test") if split is not None and hasattr(split, "get") else None
    if test is None or len(test) != 2 or test[0] == test[1]:
        return None
    return _day(test[0]), _day(test[1])


def calibrate_command(
    model: Annotated[str, typer.Option("--model", help="Model version to calibrate (its graph is reused).")],
    fpr_budget: Annotated[
        float,
        typer.Option("--fpr-budget", help="Combined FPR budget, in (0, 1): share of purchasing clicks."),
    ],
    min_coverage: Annotated[
        float,
        typer.Option("--min-coverage", help="Robotic coverage every slice must reach, in [0, 1]."),
    ],
    calibration_set: Annotated[
        Path | None,
        typer.Option(
            "--calibration-set",
            help="Dataset folder (ivt dataset). Default: the model's training dataset, else $IVT_DATA_DIR/dataset.",
        ),
    ] = None,
    days: Annotated[
        str | None,
        typer.Option(
            help="START:END UTC dates (END exclusive) or one date. Default: the model's held-out test days."
        ),
    ] = None,
    slicing: Annotated[
        str, typer.Option(help="device_login (6 slices), device, login or none.")
    ] = "device_login",
    strategy: Annotated[
        str, typer.Option(help="What to write: slices (per-slice), knee or global (one threshold).")
    ] = "slices",
    k: Annotated[int, typer.Option(min=0, help="Robotic: sessions with more than k clicks in an hour.")] = 20,
    fit_max_fpr: Annotated[
        float, typer.Option(help="FPR range of the whole-curve quadratic fit (and of the optimiser).")
    ] = 0.25,
    refits: Annotated[int, typer.Option(min=0, help="Rounds of local refits after the first solve.")] = 20,
    min_purchasing: Annotated[
        int, typer.Option(min=1, help="Purchasing clicks a slice needs for its own threshold.")
    ] = 30,
    max_slice_fpr: Annotated[
        float | None, typer.Option(help="Cap on every slice's own FPR, in (0, 1] (default: none).")
    ] = None,
    max_rows: Annotated[int | None, typer.Option(min=1000, help="Sample at most this many rows.")] = None,
    new_version: Annotated[
        str | None, typer.Option(help="Name of the new version (default <model>-cal-<UTC time>).")
    ] = None,
    report_dir: Annotated[
        Path | None, typer.Option(help="Report folder (default $IVT_DATA_DIR/calibration/<new version>).")
    ] = None,
    dry_run: Annotated[bool, typer.Option(help="Write the report only; register nothing.")] = False,
) -> None:
    """Per-slice thresholds from a convex problem under an FPR budget; writes a new model version."""
    from models.calibration import SLICINGS, CalibrationError, calibrate
    from models.calibration_report import comparison_rows, write_report
    from models.dataset import DatasetError
    from models.exceptions import ModelError, ModelNotFound
    from models.registry import Registry, now_rfc3339
    from models.scorer import Scorer

    settings = Settings.from_env()
    if not (0.0 < fpr_budget < 1.0):
        raise _fail(f"--fpr-budget must be in (0, 1), got {fpr_budget}")
    if not (0.0 <= min_coverage <= 1.0):
        raise _fail(f"--min-coverage must be in [0, 1], got {min_coverage}")
    if not (0.0 < fit_max_fpr <= 1.0):
        raise _fail(f"--fit-max-fpr must be in (0, 1], got {fit_max_fpr}")
    if max_slice_fpr is not None and not (0.0 < max_slice_fpr <= 1.0):
        raise _fail(f"--max-slice-fpr must be in (0, 1], got {max_slice_fpr}")
    if strategy not in STRATEGIES:
        raise _fail(f"--strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    if slicing not in SLICINGS:
        raise _fail(f"--slicing must be one of {', '.join(SLICINGS)}, got {slicing!r}")
    registry = Registry(settings.registry_dir)
    try:
        parent = registry.manifest(model)
    except ModelNotFound:
        known = ", ".join(registry.versions()) or "none"
        raise _fail(f"no model version {model!r} in {registry.root} (versions: {known})") from None
    except ModelError as exc:
        raise _fail(str(exc)) from None
    name = new_version or default_version_name(model, int(time.time() * 1000))
    if registry.exists(name):
        raise _fail(f"version {name!r} already exists; pass another --new-version")

    if calibration_set is not None:
        path = calibration_set
    elif isinstance(parent.metrics.get("dataset"), str) and Path(parent.metrics["dataset"]).exists():
        path = Path(parent.metrics["dataset"])
    else:
        path = settings.data_dir / "dataset"
    try:
        span = parse_days(days) if days else _default_days(parent.metrics)
    except ValueError as exc:
        raise _fail(str(exc)) from None
    began = time.perf_counter()
    try:
        scorer = Scorer.from_registry(registry, model, providers="cpu")
        cal, about = load_calibration_set(path, span, scorer, k, max_rows)
        result = calibrate(
            cal,
            fpr_budget,
            min_coverage,
            slicing=slicing,
            fit_max_fpr=fit_max_fpr,
            min_purchasing=min_purchasing,
            max_refits=refits,
            max_slice_fpr=max_slice_fpr,
        )
    except (CalibrationError, DatasetError, ModelError, ValueError, FileNotFoundError) as exc:
        raise _fail(str(exc)) from None
    calib_s = time.perf_counter() - began

    command = "ivt " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:] else None
    out_dir = report_dir or settings.data_dir / "calibration" / name
    md = write_report(result, out_dir, title=f"Calibration of {model} -> {name}", command=command)

    if result.feasible:
        cols = (
            "slice",
            "clicks",
            "purch.",
            "t slice",
            "IVR",
            "FPR",
            "cov.",
            "t global",
            "IVR",
            "FPR",
            "cov.",
        )
        table = Table(title=f"{model}: per-slice thresholds vs one global threshold at the same overall FPR")
        for col in cols:
            table.add_column(col, justify="right")
        for row in comparison_rows(result):
            table.add_row(*row)
        out_console.print(table)
    for o in (result.global_at_budget, result.knee):
        r = o.rates["all"]
        console.print(
            f"{o.name}: threshold {next(iter(o.thresholds.values())):.4f}, IVR {r['ivr']}, FPR {r['fpr']}, "
            f"coverage {r['coverage']}"
        )
    console.print(f"report: {md}")
    if not result.feasible:
        console.print(f"[red]{result.message}[/red]")
        console.print("nothing registered")
        raise typer.Exit(code=1)
    gain = result.gain()
    if gain is not None:
        console.print(
            f"per-slice minus global at the same FPR: IVR {gain['ivr'] * 100:+.2f} points, coverage "
            f"{gain['coverage'] * 100:+.2f} points"
        )
    if dry_run:
        console.print(f"dry run: nothing registered ({calib_s:.1f} s)")
        return

    if strategy == "slices":
        thresholds, default = result.thresholds, result.default_threshold
    elif strategy == "knee":
        thresholds, default = {}, next(iter(result.knee.thresholds.values()))
    else:
        thresholds, default = {}, next(iter(result.global_at_budget.thresholds.values()))
    record = {
        **result.to_dict(),
        "strategy": strategy,
        "calibration_set": about,
        "report": str(md.resolve()),
        "calibrated_at": now_rfc3339(),
        "seconds": round(calib_s, 2),
    }
    metrics = {**dict(parent.metrics), "calibration": record}
    try:
        manifest = registry.with_thresholds(
            model, name, thresholds, default_threshold=default, metrics=metrics
        )
    except ModelError as exc:
        raise _fail(str(exc)) from None
    console.print(
        f"registered {manifest.version} ({manifest.status}, parent {manifest.parent}) with "
        f"{len(manifest.thresholds)} slice thresholds, default {manifest.default_threshold:.4f}; "
        f"{about['rows']:,} rows in {calib_s:.1f} s. Promote with: ivt models promote {manifest.version}"
    )
