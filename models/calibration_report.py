"""Calibration report: a Markdown file and one PNG per slice (its curve and chosen operating point).

:func:`write_report` takes a :class:`models.calibration.CalibrationResult` and writes, into one
folder::

    calibration.md        per-slice solution beside the single global threshold at the same
                          overall FPR (IVR, FPR, coverage per slice and overall), the knee and the
                          global threshold at the budget, fit quality per slice
    calibration.json      the same numbers as the manifest records (``CalibrationResult.to_dict``)
    slice-<name>.png      the slice's empirical IVR-FPR staircase, the quadratic fits, the coverage
                          floor, the per-slice operating point and where the global threshold lands
    pooled.png            all traffic: the curve, the knee and the global thresholds

Plots use matplotlib's Agg backend (no display needed).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import orjson

from models.calibration import CalibrationResult, EmpiricalCurve, Operating, SliceOutcome
from models.metrics import ALL

__all__ = ["write_report", "markdown", "comparison_rows"]


def _pct(x: float | None, digits: int = 2) -> str:
    return "-" if x is None or x != x else f"{100 * x:.{digits}f} %"


def _num(x: float | None, digits: int = 4) -> str:
    return "-" if x is None or x != x else f"{x:.{digits}f}"


def _file_name(group: str) -> str:
    return "slice-" + group.replace("/", "-") + ".png"


def comparison_rows(result: CalibrationResult) -> list[list[str]]:
    """Rows of the main table: group, clicks, then per-slice and global (same FPR) figures."""
    per, same = result.per_slice, result.global_same_fpr
    rows: list[list[str]] = []
    for g in [*result.slices, ALL]:
        r_per = per.rates.get(g) if per else None
        r_same = same.rates.get(g) if same else None
        base = r_per or r_same or result.global_at_budget.rates[g]
        th_per = "-" if per is None or g == ALL else _num(per.thresholds.get(g))
        th_same = "-" if same is None or g == ALL else _num(same.thresholds.get(g))
        rows.append(
            [
                g,
                f"{int(base['clicks'] or 0):,}",
                f"{int(base['purchasing'] or 0):,}",
                th_per,
                _pct(r_per and r_per["ivr"]),
                _pct(r_per and r_per["fpr"]),
                _pct(r_per and r_per["coverage"], 1),
                th_same,
                _pct(r_same and r_same["ivr"]),
                _pct(r_same and r_same["fpr"]),
                _pct(r_same and r_same["coverage"], 1),
            ]
        )
    return rows


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _overall(op: Operating) -> list[str]:
    r = op.rates[ALL]
    th = sorted(set(op.thresholds.values()))
    shown = _num(th[0]) if len(th) == 1 else "per slice"
    return [op.name, shown, _pct(r["ivr"]), _pct(r["fpr"]), _pct(r["coverage"], 1)]


def markdown(result: CalibrationResult, *, title: str, command: str | None = None) -> str:
    """The report's Markdown text."""
    d = result.to_dict()
    out = [f"# {title}", ""]
    if command:
        out += ["```", command, "```", ""]
    out += [
        f"FPR budget **{_pct(result.budget)}**, minimum robotic coverage **{_pct(result.min_coverage, 1)}** "
        f"per slice (robotic: session with more than {result.k} clicks in an hour), slicing "
        f"`{result.slicing}`, {result.rows:,} calibration clicks. Quadratic fitted on FPR in "
        f"[0, {result.fit_max_fpr:g}], then refitted locally ({result.refits} rounds). "
        f"Solver: {result.solution.solver or '-'}.",
        "",
        f"**{'Feasible' if result.feasible else 'INFEASIBLE'}**: {result.message}",
        "",
    ]
    gain = result.gain()
    if gain is not None:
        out += [
            f"Per-slice thresholds against the best single global threshold at the same overall FPR: "
            f"IVR {gain['ivr'] * 100:+.2f} points, robotic coverage {gain['coverage'] * 100:+.2f} points "
            f"(FPR {gain['fpr'] * 100:+.3f} points).",
            "",
        ]
    out += [
        "## Per-slice solution and the single global threshold at the same overall FPR",
        "",
        _table(
            [
                "slice",
                "clicks",
                "purchasing",
                "slice threshold",
                "IVR",
                "FPR",
                "coverage",
                "global threshold",
                "IVR",
                "FPR",
                "coverage",
            ],
            comparison_rows(result),
        ),
        "",
        "## Single-threshold alternatives (overall)",
        "",
        _table(
            ["rule", "threshold", "IVR", "FPR", "coverage"],
            [
                _overall(o)
                for o in (result.per_slice, result.global_same_fpr, result.global_at_budget, result.knee)
                if o is not None
            ],
        ),
        "",
        "The knee is the point of the pooled IVR-FPR curve farthest above the diagonal once both axes "
        "are scaled to [0, 1] (Kneedle).",
        "",
        "## Fit quality (IVR as a concave quadratic of FPR)",
        "",
    ]
    fit_rows = []
    for name, s in d["slices"].items():
        f, lf = s["fit"], s["local_fit"]
        fit_rows.append(
            [
                name,
                "-" if f is None else f"{f['a']:.4f} + {f['b']:.3f} f {f['c']:+.3f} f²",
                "-" if f is None else _num(f["r2"]),
                "-" if f is None else _num(f["rmse"], 5),
                "-" if f is None else _num(f["max_abs_error"], 4),
                "-" if lf is None else f"[{lf['min_fpr']:.4f}, {lf['max_fpr']:.4f}]",
                "-" if lf is None else _num(lf["r2"]),
                _pct(s["floor_fpr"], 3),
                _pct(s["target_fpr"], 3),
                _pct(s["predicted_ivr"]),
                s["skipped"] or "",
            ]
        )
    out += [
        _table(
            [
                "slice",
                "whole-range fit",
                "R²",
                "RMSE",
                "max error",
                "local fit range",
                "local R²",
                "floor FPR",
                "chosen FPR",
                "predicted IVR",
                "note",
            ],
            fit_rows,
        ),
        "",
        "## Curves",
        "",
    ]
    out += [f"![{g}]({_file_name(g)})" for g in result.slices] + ["![all traffic](pooled.png)", ""]
    return "\n".join(out)


def _plot_slice(s: SliceOutcome, result: CalibrationResult, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=100)
    curve = s.curve
    x_max = max(
        result.fit_max_fpr,
        (s.target_fpr or 0) * 1.5,
        (s.floor_fpr or 0) * 1.2,
    )
    fx, iy = curve.staircase(min(1.0, x_max))
    ax.step(fx, iy, where="post", color="0.3", lw=1, label="empirical (best IVR at FPR)")
    if s.fit is not None:
        xs = np.linspace(0, s.fit.max_fpr, 200)
        ax.plot(xs, s.fit(xs), color="tab:blue", lw=1, ls="--", label=f"quadratic fit (R² {s.fit.r2:.3f})")
    if s.local_fit is not None and s.local_fit is not s.fit:
        xs = np.linspace(s.local_fit.min_fpr, s.local_fit.max_fpr, 100)
        ax.plot(xs, s.local_fit(xs), color="tab:orange", lw=2, label=f"local fit (R² {s.local_fit.r2:.3f})")
    if s.floor_fpr:
        ax.axvline(
            s.floor_fpr, color="tab:red", lw=1, ls=":", label=f"coverage floor (FPR {s.floor_fpr:.4f})"
        )
    if result.per_slice is not None and s.name in result.per_slice.rates:
        r = result.per_slice.rates[s.name]
        ax.plot(
            [r["fpr"]],
            [r["ivr"]],
            "o",
            color="tab:green",
            ms=8,
            label=f"per-slice: t={result.per_slice.thresholds[s.name]:.4f}",
        )
    if result.global_same_fpr is not None:
        r = result.global_same_fpr.rates[s.name]
        ax.plot(
            [r["fpr"]],
            [r["ivr"]],
            "s",
            color="tab:purple",
            ms=7,
            label=f"global at same FPR: t={result.global_same_fpr.thresholds[s.name]:.4f}",
        )
    ax.set_xlim(0, x_max)
    ax.set_xlabel("FPR (share of purchasing clicks invalidated)")
    ax.set_ylabel("IVR (share of clicks invalidated)")
    ax.set_title(f"{s.name}: {s.clicks:,} clicks, {s.purchasing:,} purchasing")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _plot_pooled(curve: EmpiricalCurve, result: CalibrationResult, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=100)
    fx, iy = curve.staircase(1.0)
    ax.step(fx, iy, where="post", color="0.3", lw=1, label="all traffic")
    marks = [(result.knee, "v", "tab:red"), (result.global_at_budget, "^", "tab:blue")]
    if result.global_same_fpr is not None:
        marks.append((result.global_same_fpr, "s", "tab:purple"))
    if result.per_slice is not None:
        marks.append((result.per_slice, "o", "tab:green"))
    for op, marker, color in marks:
        r = op.rates[ALL]
        ax.plot([r["fpr"]], [r["ivr"]], marker, color=color, ms=8, label=f"{op.name}")
    ax.set_xscale("symlog", linthresh=0.01)
    ax.set_xlim(0, 1)
    ax.set_xlabel("FPR (symlog)")
    ax.set_ylabel("IVR")
    ax.set_title("All traffic: IVR-FPR curve")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_report(
    result: CalibrationResult, out_dir: Path | str, *, title: str, command: str | None = None
) -> Path:
    """Write the Markdown report, its JSON and the plots into ``out_dir``; return the .md path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for s in result.slices.values():
        _plot_slice(s, result, out / _file_name(s.name))
    _plot_pooled(result.pooled, result, out / "pooled.png")
    (out / "calibration.json").write_bytes(orjson.dumps(result.to_dict(), option=orjson.OPT_INDENT_2) + b"\n")
    md = out / "calibration.md"
    md.write_text(markdown(result, title=title, command=command) + "\n")
    return md
