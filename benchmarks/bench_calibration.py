"""Per-slice calibration against the best single global threshold, on a trained model's held-out days.

For each FPR budget and coverage floor: calibrate on the first held-out day (``--cal-day``), then

* in sample: the per-slice thresholds against the best single threshold at the same overall FPR
  (what ``ivt calibrate`` reports);
* out of sample: both rules, with the thresholds chosen on the calibration day, applied to the next
  day (``--eval-day``): does the gain survive on clicks the thresholds were not chosen on?
* against the simulator's ground truth (which the detector never sees): share of true bot clicks
  caught and of true human clicks invalidated, and the bots a single global threshold catches when
  it invalidates the same share of true humans as the per-slice rule.

Prints Markdown tables; docs/performance.md quotes them (and says how its model and data were made).

    python benchmarks/bench_calibration.py --model mlp-0001 --dataset var/dataset \\
        --cal-day 2026-11-08 --eval-day 2026-11-09 --budgets 0.005,0.01,0.02,0.05 --coverages 0,0.3

With ``--short`` it simulates and builds a small dataset in a temp folder (4 days of 2,000 users,
``bench_train.small_dataset``), trains and registers a model on it there, and calibrates on its two
test days: the same steps, in seconds (``make bench-short`` runs it so the script keeps
working; a slice with too few purchasing clicks in so little data is reported as such).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.cli.calibrate import load_calibration_set, parse_days  # noqa: E402
from app.contracts.settings import Settings  # noqa: E402
from models.calibration import CalibrationSet, calibrate  # noqa: E402
from models.metrics import ALL, per_slice  # noqa: E402
from models.registry import Registry  # noqa: E402
from models.scorer import Scorer  # noqa: E402
from models.train import load_split  # noqa: E402


def rates(
    data: CalibrationSet, thresholds: dict[str, float], default: float, bot: np.ndarray
) -> dict[str, float]:
    th = np.array([thresholds.get(s, default) for s in data.slices.tolist()])
    invalid = data.scores >= th
    s = per_slice(invalid, data.purchasing, data.session_hour_clicks, data.slices, data.k)[ALL]
    # Ground truth (the simulator's; the detector never sees it): bots caught, humans invalidated.
    return {
        "ivr": s.ivr,
        "fpr": s.fpr,
        "coverage": s.coverage,
        "bot_recall": float(invalid[bot].mean()),
        "human_invalid": float(invalid[~bot].mean()),
    }


def global_at_human_rate(data: CalibrationSet, bot: np.ndarray, human_rate: float) -> float:
    """Bots caught by the single global threshold that invalidates ``human_rate`` of true humans."""
    hs = np.sort(data.scores[~bot])[::-1]
    k = int(np.floor(human_rate * len(hs) + 1e-9))
    t = np.nextafter(hs[k], 2.0) if k < len(hs) else 0.0  # just above the (k+1)-th human score
    return float((data.scores[bot] >= t).mean())


def truth(path: Path, days: str) -> np.ndarray:
    """True for simulated bot clicks, in the row order of ``load_calibration_set`` (same reader)."""
    d = load_split(path, parse_days(days), extra=["truth_family"])
    return np.asarray(d.cols["truth_family"]).astype(str) != "human"


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",")]


def pct(x: float) -> str:
    return f"{100 * x:.2f} %"


def short_setup(work: Path, args: argparse.Namespace) -> None:
    """A small dataset and a model trained on it, in ``work``: fills ``args``' model, dataset,
    registry and the two days (the model's test days, which it was not trained on)."""
    from benchmarks.bench_train import small_dataset
    from models.dataset import read_info
    from models.train import TrainConfig, train_and_register

    dataset = small_dataset(work)
    registry = Registry(work / "models")
    t0 = time.perf_counter()
    manifest, _ = train_and_register(dataset, registry, TrainConfig(test_days=2), version="mlp-short")
    last = int(read_info(dataset).doc["last_day"])
    day = [datetime.fromtimestamp(d * 86_400, UTC).strftime("%Y-%m-%d") for d in (last - 1, last)]
    print(f"model {manifest.version} trained in {time.perf_counter() - t0:.0f} s on {dataset}")
    args.model, args.dataset, args.registry = manifest.version, dataset, registry.root
    args.cal_day, args.eval_day = day


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="a registered model version (required unless --short)")
    ap.add_argument("--dataset", type=Path, help="a dataset built by `ivt dataset` (required unless --short)")
    ap.add_argument("--registry", type=Path, default=None, help="default: $IVT_MODEL_DIR")
    ap.add_argument("--cal-day", help="YYYY-MM-DD or START:END (required unless --short)")
    ap.add_argument("--eval-day", help="YYYY-MM-DD or START:END (required unless --short)")
    ap.add_argument("--budgets", default="0.005,0.01,0.02,0.05")
    ap.add_argument("--coverages", default="0,0.3")
    ap.add_argument("--caps", default="none", help="per-slice FPR caps to try, e.g. none,0.05")
    ap.add_argument("--slicing", default="device_login")
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--refits", type=int, default=20, help="local refit rounds (0: the whole-range fit only)")
    ap.add_argument(
        "--short",
        action="store_true",
        help="simulate a small dataset, train a model on it and calibrate on its test days (temp folder)",
    )
    args = ap.parse_args()
    if args.short:
        work = Path(tempfile.mkdtemp(prefix="ivt-bench-calibration-"))
        try:
            short_setup(work, args)
            run(args)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return
    names = ("model", "dataset", "cal_day", "eval_day")
    missing = ["--" + name.replace("_", "-") for name in names if getattr(args, name) is None]
    if missing:
        ap.error(f"the following arguments are required without --short: {', '.join(missing)}")
    run(args)


def run(args: argparse.Namespace) -> None:
    registry = Registry(args.registry or Settings.from_env().registry_dir)
    scorer = Scorer.from_registry(registry, args.model, providers="cpu")
    cal, about_c = load_calibration_set(args.dataset, parse_days(args.cal_day), scorer, args.k)
    ev, about_e = load_calibration_set(args.dataset, parse_days(args.eval_day), scorer, args.k)
    print(
        f"model {args.model}; calibration day(s) {about_c['days']} ({about_c['rows']:,} clicks, "
        f"{int(cal.purchasing.sum()):,} purchasing); evaluation day(s) {about_e['days']} "
        f"({about_e['rows']:,} clicks, {int(ev.purchasing.sum()):,} purchasing); slicing {args.slicing}, k {args.k}\n"
    )
    bot_c, bot_e = truth(args.dataset, args.cal_day), truth(args.dataset, args.eval_day)
    head = (
        "| budget | min coverage | slice FPR cap | per-slice IVR | FPR | coverage | global (same FPR) IVR | FPR "
        "| coverage | gain IVR | gain coverage | next day: per-slice IVR / FPR / cov "
        "| next day: global IVR / FPR / cov | seconds |"
    )
    head_t = (
        "| budget | min coverage | slice FPR cap | per-slice: bots caught / humans invalid "
        "| global (same FPR): bots caught / humans invalid | global at the same true-human rate: bots caught "
        "| next day per-slice | next day global (same FPR) |"
    )
    rows, rows_t = [], []
    caps = [None if x == "none" else float(x) for x in args.caps.split(",")]
    for b, c, cap in (
        (b, c, cap) for b in _floats(args.budgets) for c in _floats(args.coverages) for cap in caps
    ):
        t0 = time.perf_counter()
        res = calibrate(cal, b, c, slicing=args.slicing, max_slice_fpr=cap, max_refits=args.refits)
        secs = time.perf_counter() - t0
        key = f"| {pct(b)} | {pct(c)} | {'-' if cap is None else pct(cap)} "
        if not res.feasible or res.per_slice is None or res.global_same_fpr is None:
            rows.append(key + f"| infeasible: {', '.join(res.blocking)} |" + " |" * 10)
            continue
        gain = res.gain() or {}
        t_global = next(iter(res.global_same_fpr.thresholds.values()))
        p = rates(cal, res.thresholds, res.default_threshold, bot_c)
        g = rates(cal, {}, t_global, bot_c)
        nxt_p = rates(ev, res.thresholds, res.default_threshold, bot_e)
        nxt_g = rates(ev, {}, t_global, bot_e)
        rows.append(
            key + f"| {pct(p['ivr'])} | {pct(p['fpr'])} | {pct(p['coverage'])} "
            f"| {pct(g['ivr'])} | {pct(g['fpr'])} | {pct(g['coverage'])} "
            f"| {gain['ivr'] * 100:+.2f} pt | {gain['coverage'] * 100:+.2f} pt "
            f"| {pct(nxt_p['ivr'])} / {pct(nxt_p['fpr'])} / {pct(nxt_p['coverage'])} "
            f"| {pct(nxt_g['ivr'])} / {pct(nxt_g['fpr'])} / {pct(nxt_g['coverage'])} | {secs:.2f} |"
        )
        same_h = global_at_human_rate(cal, bot_c, p["human_invalid"])
        cells = [f"{pct(r['bot_recall'])} / {pct(r['human_invalid'])}" for r in (p, g, nxt_p, nxt_g)]
        cells.insert(2, pct(same_h))
        rows_t.append(key + "".join(f"| {c} " for c in cells) + "|")
    for h, rs in ((head, rows), (head_t, rows_t)):
        print(h)
        print("|" + "|".join(" --- " for _ in range(h.count("|") - 1)) + "|")
        print("\n".join(rs) + "\n")


if __name__ == "__main__":
    main()
