"""The evaluation report: a registered model against both baselines on held-out days.

:func:`evaluate` scores the test days of a dataset (by default the ones the model's manifest names)
with the **registered ONNX graph** (loaded through the registry, so the checksum and feature spec
are checked: what is evaluated is what the workers serve), the logistic-regression baseline (its
parameters are in the manifest) and the velocity heuristic, then writes to ``OUT/``:

* ``report.md``: a Markdown report a person can open (any Markdown viewer, or GitHub);
* ``report.json``: every number in it;
* ``ivr_fpr_<slice>.png``: per slice and overall, the IVR-FPR curve and the coverage-FPR curve of
  the three scorers on one plot, with the model's operating point (its per-slice threshold).

Metrics (:mod:`models.metrics`): IVR, FPR (purchasing clicks invalidated) and robotic coverage
(clicks in sessions with more than ``k`` clicks in a UTC hour), per slice and overall, at

1. the model's own thresholds (the manifest's per-slice thresholds);
2. **the same FPR** for every scorer: each scorer gets the one global threshold with the highest IVR
   whose FPR stays within each budget, so the comparison is at equal cost in purchasing clicks.

And, because the simulator knows the truth (``truth_family``, which training never reads): per bot
family the share of its clicks invalidated (**true recall**), and the share of true human clicks
invalidated (**true human FPR**), for the MLP at its thresholds and every scorer at the same FPR.
"""

from __future__ import annotations

import calendar
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import orjson
from numpy.typing import NDArray

from app.simulator.truth import BOT_FAMILIES, HUMAN
from models import metrics as M
from models.baselines import logreg_scores, velocity_scores
from models.dataset import DatasetError, read_info
from models.export import onnx_scores
from models.registry import Registry
from models.scoreboard import format_table, summarise
from models.train import SplitData, compare_at_fpr, load_split

__all__ = ["DEFAULT_FPRS", "Report", "evaluate"]

DEFAULT_FPRS: Final[tuple[float, ...]] = (0.005, 0.01, 0.02)
SCORERS: Final[tuple[str, ...]] = ("mlp", "logreg", "velocity")
_COLORS: Final = {"mlp": "#1f77b4", "logreg": "#ff7f0e", "velocity": "#2ca02c"}


@dataclass(frozen=True)
class Report:
    out: Path
    doc: dict[str, Any]

    @property
    def markdown(self) -> Path:
        return self.out / "report.md"


def _day_range(split: Any) -> tuple[int, int]:
    """``["2026-11-07", "2026-11-09"]`` -> days since the epoch (UTC), half-open."""
    a, b = split
    return calendar.timegm(time.strptime(a, "%Y-%m-%d")) // 86_400, calendar.timegm(
        time.strptime(b, "%Y-%m-%d")
    ) // 86_400


def evaluate(
    registry: Registry,
    version: str,
    out: Path | str,
    *,
    dataset: Path | str | None = None,
    days: tuple[int, int] | None = None,
    k: int | None = None,
    fprs: tuple[float, ...] = DEFAULT_FPRS,
) -> Report:
    """Score, measure, plot and write the report (see the module docstring)."""
    manifest, data = registry.load(version)
    mx = manifest.to_dict()["metrics"]  # plain JSON types
    if "baselines" not in mx or "standardisation" not in mx:
        raise DatasetError(
            f"model {version!r} has no baseline parameters in its manifest (not made by `ivt train`)"
        )
    path = Path(dataset) if dataset is not None else Path(str(mx.get("dataset", "")))
    info = read_info(path)
    if days is None:
        days = _day_range(
            mx["split"]["test"] if mx["split"]["test"][0] != mx["split"]["test"][1] else mx["split"]["valid"]
        )
    k = int(k if k is not None else mx.get("k", M.DEFAULT_K))
    d = load_split(info.path, days, extra=["truth_family"])
    if len(d) == 0:
        raise DatasetError(
            f"{path}: no rows in days {days} (the dataset spans {info.doc['first_day']}..{info.doc['last_day']})"
        )
    scores = {
        "mlp": onnx_scores(data, d.X),
        "logreg": logreg_scores(
            d.X, mx["baselines"]["logreg"], mx["standardisation"]["mean"], mx["standardisation"]["scale"]
        ),
        "velocity": velocity_scores(d.X),
    }
    pur = d.cols["is_purchasing"]
    shc = d.cols["session_hour_clicks"]
    sl = d.cols["slice"]
    th_rows = np.array([manifest.threshold_for(s) for s in sl])
    inv_model = scores["mlp"] >= th_rows

    at_model = M.summaries_to_dict(M.per_slice(inv_model, pur, shc, sl, k))
    same_fpr = {f"{f:g}": compare_at_fpr(scores, pur, shc, f, k) for f in fprs}
    # Per slice at the same per-slice FPR (each scorer's own threshold in that slice).
    slices = sorted(set(sl.tolist()))
    per_slice_same: dict[str, dict[str, Any]] = {}
    main_fpr = fprs[len(fprs) // 2]
    for s in slices:
        m = sl == s
        per_slice_same[s] = compare_at_fpr({n: v[m] for n, v in scores.items()}, pur[m], shc[m], main_fpr, k)
    truth = _truth(d, scores, inv_model, pur, shc, main_fpr, k)
    if truth["available"]:  # the figures `ivt demo` gives live, for the model at its thresholds
        truth["scoreboard"] = summarise(sl, d.cols["truth_family"], inv_model, pur)
    curves = {n: M.curves_per_slice(v, pur, sl, shc, k, max_points=400) for n, v in scores.items()}

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plots = _plots(curves, manifest, scores, d, out, k)
    doc = {
        "model": version,
        "status": manifest.status,
        "dataset": str(info.path.resolve()),
        "days": [time.strftime("%Y-%m-%d", time.gmtime(x * 86_400)) for x in days],
        "rows": len(d),
        "k": k,
        "thresholds": {"default": manifest.default_threshold, **dict(manifest.thresholds)},
        "at_model_thresholds": at_model,
        "at_same_fpr": same_fpr,
        "per_slice_at_same_fpr": {"fpr": main_fpr, "slices": per_slice_same},
        "truth": truth,
        "plots": plots,
        "training": {
            "split": mx.get("split"),
            "rows": mx.get("rows"),
            "best_epoch": mx.get("best_epoch"),
            "epochs": len(mx.get("epochs", [])),
            "onnx_max_abs_diff": mx.get("onnx_max_abs_diff"),
            "label_rule": mx.get("label_rule"),
        },
    }
    (out / "report.json").write_bytes(
        orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY) + b"\n"
    )
    (out / "report.md").write_text(_markdown(doc))
    return Report(out, doc)


def _truth(
    d: SplitData,
    scores: dict[str, NDArray[np.float64]],
    inv_model: NDArray[np.bool_],
    pur: NDArray[Any],
    shc: NDArray[Any],
    fpr_budget: float,
    k: int,
) -> dict[str, Any]:
    fam = d.cols["truth_family"]
    if len(fam) == 0 or all(f is None or f == "None" for f in fam[:100]):
        return {"available": False}
    decisions = {"mlp (model thresholds)": inv_model}
    for name, s in scores.items():
        c = M.ivr_fpr_curve(s, pur, shc, k, max_points=None)
        decisions[f"{name} (FPR <= {fpr_budget:g})"] = s >= M.threshold_for_fpr(c, fpr_budget)
    fams = [f for f in BOT_FAMILIES if (fam == f).any()]
    rows: dict[str, dict[str, float]] = {}
    human = fam == HUMAN
    bot = ~human
    for name, inv in decisions.items():
        r = {f: round(float(inv[fam == f].mean()), 6) for f in fams}
        r["all bots"] = round(float(inv[bot].mean()), 6) if bot.any() else math.nan
        r["human FPR"] = round(float(inv[human].mean()), 6) if human.any() else math.nan
        rows[name] = r
    counts = {f: int((fam == f).sum()) for f in [HUMAN, *fams]}
    # Where in the week the model errs: a share averaged over the whole test can hide hours where
    # humans are few (nights) and days of the week the training days did not include.
    hour = d.cols["hour"].astype(np.int64)
    day = (d.cols["event_time_ms"] // 86_400_000).astype(np.int64)
    by_hour = {
        str(h): round(float(inv_model[human & (hour == h)].mean()), 6)
        for h in range(24)
        if (human & (hour == h)).any()
    }
    by_day = {
        time.strftime("%Y-%m-%d %a", time.gmtime(int(x) * 86_400)): round(
            float(inv_model[human & (day == x)].mean()), 6
        )
        for x in sorted(set(day[human].tolist()))
    }
    return {
        "available": True,
        "clicks": counts,
        "recall": rows,
        "human_fpr_by_hour": by_hour,
        "human_fpr_by_day": by_day,
    }


def _plots(
    curves: dict[str, dict[str, M.Curve]],
    manifest: Any,
    scores: dict[str, Any],
    d: SplitData,
    out: Path,
    k: int,
) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files: dict[str, str] = {}
    sl = d.cols["slice"]
    pur = d.cols["is_purchasing"]
    shc = d.cols["session_hour_clicks"]
    for s in curves["mlp"]:
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
        for name in SCORERS:
            c = curves[name][s]
            ax1.plot(c.fpr * 100, c.ivr * 100, label=name, color=_COLORS[name])
            ax2.plot(c.fpr * 100, c.coverage * 100, label=name, color=_COLORS[name])
        m = np.ones(len(sl), bool) if s == M.ALL else sl == s
        th = np.array([manifest.threshold_for(x) for x in sl[m]])
        inv = scores["mlp"][m] >= th
        summ = M.summarize(inv, pur[m], shc[m], k)
        if np.isfinite(summ.fpr):
            ax1.plot([summ.fpr * 100], [summ.ivr * 100], "o", color="black", label="model thresholds")
            if np.isfinite(summ.coverage):
                ax2.plot(
                    [summ.fpr * 100], [summ.coverage * 100], "o", color="black", label="model thresholds"
                )
        for ax, ylab in ((ax1, "IVR (% of clicks invalidated)"), (ax2, f"robotic coverage (%, k={k})")):
            ax.set_xlim(0, 10.0)
            ax.set_xlabel("FPR (% of purchasing clicks invalidated)")
            ax.set_ylabel(ylab)
            ax.grid(alpha=0.3)
            ax.legend(loc="lower right", fontsize=8)
        n = int(m.sum())
        fig.suptitle(f"{manifest.version}: {s} ({n:,} clicks, {int(pur[m].sum()):,} purchasing)")
        fig.tight_layout()
        name = f"ivr_fpr_{s.replace('/', '_')}.png"
        fig.savefig(out / name, dpi=90)
        plt.close(fig)
        files[s] = name
    return files


def _pct(x: Any) -> str:
    return "-" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{100 * float(x):.2f} %"


def _markdown(doc: dict[str, Any]) -> str:
    k = doc["k"]
    L: list[str] = []
    L.append(f"# Evaluation of `{doc['model']}` ({doc['status']})\n")
    L.append(
        f"Held-out days {doc['days'][0]} to {doc['days'][1]} (end excluded) of `{doc['dataset']}`: "
        f"{doc['rows']:,} clicks. FPR = share of purchasing clicks invalidated; robotic coverage = share "
        f"of clicks in sessions with more than {k} clicks in a UTC hour that are invalidated.\n"
    )
    tr = doc["training"]
    L.append(
        f"Training: split {tr['split']}, rows {tr['rows']}, best epoch {tr['best_epoch']} of {tr['epochs']}, "
        f"ONNX max |dP| {tr['onnx_max_abs_diff']:.2e}, labels {tr['label_rule']}.\n"
    )
    L.append("## At the same FPR (one global threshold per scorer)\n")
    L.append("| FPR budget | scorer | threshold | IVR | FPR | robotic coverage |")
    L.append("| --- | --- | ---: | ---: | ---: | ---: |")
    for f, by in doc["at_same_fpr"].items():
        for name, pt in by.items():
            th = "-" if pt["threshold"] is None else f"{pt['threshold']:.4f}"
            L.append(
                f"| {float(f) * 100:g} % | {name} | {th} | {_pct(pt['ivr'])} | {_pct(pt['fpr'])} | {_pct(pt['coverage'])} |"
            )
    ps = doc["per_slice_at_same_fpr"]
    L.append(
        f"\n## Per slice at the same FPR ({ps['fpr'] * 100:g} % in each slice, each scorer its own threshold)\n"
    )
    L.append(
        "| slice | MLP IVR | logreg IVR | velocity IVR | MLP coverage | logreg coverage | velocity coverage |"
    )
    L.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for s, by in ps["slices"].items():
        L.append(
            f"| {s} | "
            + " | ".join(_pct(by[n]["ivr"]) for n in SCORERS)
            + " | "
            + " | ".join(_pct(by[n]["coverage"]) for n in SCORERS)
            + " |"
        )
    L.append("\n## The model at its own per-slice thresholds\n")
    th = doc["thresholds"]
    L.append("| slice | threshold | clicks | IVR | purchasing clicks | FPR | robotic clicks | coverage |")
    L.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for s, r in doc["at_model_thresholds"].items():
        t = th.get(s, th["default"]) if s != M.ALL else None
        L.append(
            f"| {s} | {'-' if t is None else f'{t:.4f}'} | {r['clicks']:,.0f} | {_pct(r['ivr'])} | "
            f"{r['purchasing']:,.0f} | {_pct(r['fpr'])} | {r['robotic']:,.0f} | {_pct(r['coverage'])} |"
        )
    truth = doc["truth"]
    if truth.get("available"):
        L.append("\n## Against the simulator's ground truth (never used in training)\n")
        fams = [f for f in truth["recall"][next(iter(truth["recall"]))] if f not in ("human FPR",)]
        L.append("| decisions | " + " | ".join(fams) + " | true human FPR |")
        L.append("| --- | " + " | ".join("---:" for _ in fams) + " | ---: |")
        for name, r in truth["recall"].items():
            L.append(f"| {name} | " + " | ".join(_pct(r[f]) for f in fams) + f" | {_pct(r['human FPR'])} |")
        L.append(
            "\nClicks per family: " + ", ".join(f"{f} {n:,}" for f, n in truth["clicks"].items()) + ".\n"
        )
        L.append("True human FPR of the model at its thresholds, by UTC hour and by day:\n")
        hours = truth["human_fpr_by_hour"]
        L.append("| hour | " + " | ".join(str(h) for h in hours) + " |")
        L.append("| --- | " + " | ".join("---:" for _ in hours) + " |")
        L.append("| human FPR | " + " | ".join(f"{100 * v:.1f}" for v in hours.values()) + " |")
        L.append("\n" + ", ".join(f"{k}: {_pct(v)}" for k, v in truth["human_fpr_by_day"].items()) + ".\n")
        L.append("\nThe model at its thresholds, as `ivt demo --summary-json` reports it live:\n")
        L.append("```\n" + "\n".join(format_table(truth["scoreboard"])) + "\n```\n")
    L.append("\n## IVR-FPR and coverage-FPR curves\n")
    for s, f in doc["plots"].items():
        L.append(f"### {s}\n\n![{s}]({f})\n")
    return "\n".join(L) + "\n"
