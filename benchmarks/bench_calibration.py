"""Per-slice calibration against the best single global threshold, on a trained model's held-out days.

For each FPR budget and coverage floor: calibrate on the first held-out day (``--cal-day``), then

* in sample: the per-slice thresholds against the best single threshold at the same overall FPR
  (what ``ivt calibrate`` reports);
* out of sample: both rules, with the thresholds chosen on the calibration day, applied to the next
  day (``--eval-day``): does the gain survive on clicks the thresholds were not chosen on?

Prints Markdown tables; the README quotes them.

    python benchmarks/bench_calibration.py --model mlp-0001 --dataset var/dataset \\
        --cal-day 2026-11-08 --eval-day 2026-11-09 --budgets 0.005,0.01,0.02,0.05 --coverages 0,0.3
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from app.settings import Settings
from models.calibrate_cli import load_calibration_set, parse_days
from models.calibration import CalibrationSet, calibrate
from models.metrics import ALL, per_slice
from models.registry import Registry
from models.scorer import Scorer


def rates(data: CalibrationSet, thresholds: dict[str, float], default: float) -> dict[str, float]:
    th = np.array([thresholds.get(s, default) for s in data.slices.tolist()])
    s = per_slice(data.scores >= th, data.purchasing, data.session_hour_clicks, data.slices, data.k)[ALL]
    return {"ivr": s.ivr, "fpr": s.fpr, "coverage": s.coverage}


def pct(x: float) -> str:
    return f"{100 * x:.2f} %"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--dataset", type=Path, required=True)
    ap.add_argument("--registry", type=Path, default=None, help="default: $IVT_MODEL_DIR")
    ap.add_argument("--cal-day", required=True, help="YYYY-MM-DD or START:END")
    ap.add_argument("--eval-day", required=True, help="YYYY-MM-DD or START:END")
    ap.add_argument("--budgets", default="0.005,0.01,0.02,0.05")
    ap.add_argument("--coverages", default="0,0.3")
    ap.add_argument("--slicing", default="device_login")
    ap.add_argument("--k", type=int, default=20)
    args = ap.parse_args()

    registry = Registry(args.registry or Settings.from_env().registry_dir)
    scorer = Scorer.from_registry(registry, args.model, providers="cpu")
    cal, about_c = load_calibration_set(args.dataset, parse_days(args.cal_day), scorer, args.k)
    ev, about_e = load_calibration_set(args.dataset, parse_days(args.eval_day), scorer, args.k)
    print(
        f"model {args.model}; calibration day(s) {about_c['days']} ({about_c['rows']:,} clicks, "
        f"{int(cal.purchasing.sum()):,} purchasing); evaluation day(s) {about_e['days']} "
        f"({about_e['rows']:,} clicks, {int(ev.purchasing.sum()):,} purchasing); slicing {args.slicing}, k {args.k}\n"
    )
    head = (
        "| budget | min coverage | per-slice IVR | FPR | coverage | global (same FPR) IVR | FPR | coverage "
        "| gain IVR | gain coverage | next day: per-slice IVR / FPR / cov | next day: global IVR / FPR / cov | seconds |"
    )
    print(head)
    print("|" + "|".join(" --- " for _ in range(head.count("|") - 1)) + "|")
    for b in (float(x) for x in args.budgets.split(",")):
        for c in (float(x) for x in args.coverages.split(",")):
            t0 = time.perf_counter()
            res = calibrate(cal, b, c, slicing=args.slicing)
            secs = time.perf_counter() - t0
            if not res.feasible or res.per_slice is None or res.global_same_fpr is None:
                print(f"| {pct(b)} | {pct(c)} | infeasible: {', '.join(res.blocking)} |" + " |" * 10)
                continue
            p, g = res.per_slice.rates[ALL], res.global_same_fpr.rates[ALL]
            gain = res.gain() or {}
            t_global = next(iter(res.global_same_fpr.thresholds.values()))
            nxt_p = rates(ev, res.thresholds, res.default_threshold)
            nxt_g = rates(ev, {}, t_global)
            print(
                f"| {pct(b)} | {pct(c)} | {pct(p['ivr'])} | {pct(p['fpr'])} | {pct(p['coverage'])} "
                f"| {pct(g['ivr'])} | {pct(g['fpr'])} | {pct(g['coverage'])} "
                f"| {gain['ivr'] * 100:+.2f} pt | {gain['coverage'] * 100:+.2f} pt "
                f"| {pct(nxt_p['ivr'])} / {pct(nxt_p['fpr'])} / {pct(nxt_p['coverage'])} "
                f"| {pct(nxt_g['ivr'])} / {pct(nxt_g['fpr'])} / {pct(nxt_g['coverage'])} | {secs:.2f} |"
            )


if __name__ == "__main__":
    main()
