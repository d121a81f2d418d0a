"""Train the MLP and its baselines on a dataset, export to ONNX, register the version.

The model (after SLIDR): standardisation, then an MLP of three fully connected layers (hidden 64
and 32 with ReLU, then the output layer), L2 penalty ``alpha``, trained with Adam by scikit-learn's
``MLPClassifier`` one epoch at a time (``partial_fit``), with the dataset's cell-balanced sample
weights recomputed over the training days only (:mod:`models.weights`; rows whose late-purchase
weight is 0 are left out).

Split by time, never at random: the last ``test_days`` days of the dataset are the test set (never
seen by training or early stopping), the ``valid_days`` before them the validation set, everything
earlier the training set. **Early stopping**: after each epoch the weighted log loss on the validation
days is measured; training stops after ``patience`` epochs without an improvement of at least
``tol``, and the weights of the best epoch are kept; at most ``max_epochs`` epochs and at most
``max_examples`` rows seen in all (a big dataset needs fewer passes). Reproducible: the same
dataset, config and seed give the same model (BLAS runs on ``blas_threads`` = 1 thread; repeated
runs give byte-identical ONNX files, see ``tests/unit/test_train.py``).

Thresholds: per slice, the threshold whose FPR on the validation days is at most ``target_fpr``
(highest IVR within it; :func:`models.metrics.threshold_for_fpr`), and a default threshold from all
slices together; a slice with fewer than ``min_purchasing`` purchasing clicks on the validation days
keeps the default. Calibration (issue 5) replaces them with the convex per-slice solution.

The manifest's ``metrics`` hold: the split and row counts, the epochs' losses, the export parity, the
test days' IVR / FPR / robotic coverage per slice at the chosen thresholds, the comparison with both
baselines at the same overall FPR, the logistic regression's parameters (so the report scores it
again without a second file) and where the dataset is.
"""

from __future__ import annotations

import copy
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import pyarrow.compute as pc
from numpy.typing import NDArray

from app.contracts.events import SLICES
from app.features.spec import FEATURE_NAMES, SPEC
from models import metrics as M
from models.baselines import fit_logreg, logreg_scores, velocity_scores
from models.dataset import DAY_MS, DatasetError, iter_dataset, read_info
from models.export import INPUT_NAME, OUTPUT_NAME, export_checked
from models.registry import Manifest, Registry
from models.weights import balanced_weights

__all__ = [
    "TrainConfig",
    "Split",
    "SplitData",
    "TrainResult",
    "plan_split",
    "load_split",
    "train",
    "train_and_register",
    "next_version",
]

EVAL_COLUMNS: Final = [
    "label",
    "late_weight",
    "hour",
    "dow",
    "logged_in",
    "slice",
    "is_purchasing",
    "session_hour_clicks",
    "event_time_ms",
]


@dataclass(frozen=True)
class TrainConfig:
    hidden: tuple[int, ...] = (64, 32)
    alpha: float = 1e-4
    batch_size: int = 1024
    learning_rate: float = 1e-3
    max_epochs: int = 30
    #: training budget in examples seen: epochs are also capped at max_examples // training rows
    #: (at least 1), so a big dataset runs fewer, longer epochs (10 M rows: 15 epochs)
    max_examples: int | None = 150_000_000
    patience: int = 3
    tol: float = 1e-4
    seed: int = 0
    valid_days: int = 1
    test_days: int = 2
    target_fpr: float = 0.01
    k: int = M.DEFAULT_K
    #: purchasing clicks a slice needs on the validation days to get its own threshold
    min_purchasing: int = 50
    #: BLAS threads while training. 1 by default: with small matrices (a 1024 x 64 layer) and a
    #: shared machine, OpenBLAS's threads mostly wait on each other; measured on this 2-core
    #: machine under load, one epoch of 200,000 rows took 1.2 s with one thread, 6.4 s with two.
    blas_threads: int = 1
    #: cap on training rows (a seeded uniform sample of the training days); None = all
    max_train_rows: int | None = None

    def __post_init__(self) -> None:
        if len(self.hidden) != 2 or min(self.hidden) < 1:
            raise ValueError("hidden must be two layer widths (the output layer is the third)")
        if self.valid_days < 1 or self.test_days < 0:
            raise ValueError("valid_days must be >= 1 and test_days >= 0")
        if not 0.0 < self.target_fpr < 1.0:
            raise ValueError("target_fpr must be in (0, 1)")
        if self.max_epochs < 1 or self.patience < 1:
            raise ValueError("max_epochs and patience must be >= 1")


@dataclass(frozen=True)
class Split:
    """Day numbers (days since the epoch, UTC) of each part, half-open ``[start, end)``."""

    train: tuple[int, int]
    valid: tuple[int, int]
    test: tuple[int, int]

    def to_dict(self) -> dict[str, Any]:
        def iso(d: int) -> str:
            return time.strftime("%Y-%m-%d", time.gmtime(d * 86_400))

        return {k: [iso(a), iso(b)] for k, (a, b) in asdict(self).items()}


def plan_split(first_day: int, last_day: int, valid_days: int, test_days: int) -> Split:
    """Train on the earliest days, validate on the next, test on the latest."""
    n = last_day - first_day + 1
    if n < valid_days + test_days + 1:
        raise DatasetError(
            f"the dataset spans {n} day(s); a time split needs at least {valid_days + test_days + 1} "
            f"(>= 1 training day, {valid_days} validation, {test_days} test)"
        )
    t1 = last_day + 1
    t0 = t1 - test_days
    v0 = t0 - valid_days
    return Split(train=(first_day, v0), valid=(v0, t0), test=(t0, t1))


@dataclass
class SplitData:
    X: NDArray[np.float32]
    cols: dict[str, NDArray[Any]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.X)

    @property
    def y(self) -> NDArray[Any]:
        return self.cols["label"]


def load_split(
    path: Path,
    days: tuple[int, int],
    *,
    extra: list[str] | None = None,
    max_rows: int | None = None,
    seed: int = 0,
    trainable_only: bool = False,
) -> SplitData:
    """Features and evaluation columns of the rows whose day is in ``days``, as numpy arrays.

    Rows are read one hour at a time into preallocated arrays: the peak is the final arrays plus one
    hour. ``trainable_only`` skips rows whose late-label weight is 0 (held out); ``max_rows`` then
    keeps a seeded uniform sample of about that many (Bernoulli per row, so still streaming).
    """
    want = list(dict.fromkeys(EVAL_COLUMNS + (extra or [])))
    f_names = list(FEATURE_NAMES)
    info = read_info(path)
    total = _rows_in_days(path, days, trainable_only)
    rate = 1.0 if max_rows is None or total <= max_rows else max_rows / total
    rng = np.random.default_rng(seed + 7919)
    cap = total if rate >= 1.0 else int(total * rate * 1.01 + 1000)
    X = np.empty((cap, len(f_names)), dtype=np.float32)
    cols: dict[str, list[NDArray[Any]]] = {c: [] for c in want}
    n = 0
    for g in iter_dataset(info.path, f_names + want, days):
        if trainable_only:
            g = g.filter(pc.greater(g.column("late_weight"), 0))
        if rate < 1.0:
            keep = rng.random(g.num_rows) < rate
            g = g.filter(keep)
        m = g.num_rows
        if n + m > cap:
            m = cap - n
            g = g.slice(0, m)
        for j, name in enumerate(f_names):
            X[n : n + m, j] = g.column(name).to_numpy()
        for c in want:
            col = g.column(c)
            cols[c].append(_column(col))
        n += m
    X = X[:n]
    out = {c: (np.concatenate(v) if v else np.zeros(0)) for c, v in cols.items()}
    return SplitData(X=X, cols=out)


def _column(col: Any) -> NDArray[Any]:
    """Numpy form of an Arrow column; strings as an object array sharing one str per distinct value."""
    if col.type == "string":
        enc = col.combine_chunks().dictionary_encode()
        values = np.asarray([*enc.dictionary.to_pylist(), None], dtype=object)
        return values[enc.indices.fill_null(len(enc.dictionary)).to_numpy()]
    return col.to_numpy(zero_copy_only=False)


def _rows_in_days(path: Path, days: tuple[int, int], trainable_only: bool = False) -> int:
    if trainable_only:
        return sum(
            int(pc.sum(pc.greater(g.column("late_weight"), 0)).as_py() or 0)
            for g in iter_dataset(path, ["late_weight"], days)
        )
    return sum(g.num_rows for g in iter_dataset(path, ["day"], days))


@dataclass
class TrainResult:
    pipeline: Any
    logreg: dict[str, Any]
    onnx_bytes: bytes
    parity: float
    parity_rows: int
    thresholds: dict[str, float]
    default_threshold: float
    metrics: dict[str, Any]
    split: Split
    train_start_ms: int
    train_end_ms: int


def _weights(d: SplitData) -> NDArray[np.float64]:
    c = d.cols
    return balanced_weights(c["hour"], c["dow"], c["logged_in"], c["label"], base=c["late_weight"])


def _log_loss(y: NDArray[Any], p: NDArray[np.float64], w: NDArray[np.float64]) -> float:
    p = np.clip(p, 1e-7, 1 - 1e-7)
    ll = -(y * np.log(p) + (1 - y) * np.log(1 - p))
    return float(np.sum(w * ll) / np.sum(w))


def _clip_th(t: float) -> float:
    return float(min(max(t, 0.0), 1.0))


def train(
    dataset: Path | str,
    config: TrainConfig | None = None,
    *,
    on_epoch: Callable[[int, float, float], None] | None = None,
    on_stage: Callable[[str], None] | None = None,
) -> TrainResult:
    """Fit the MLP and the logistic regression, export and check the MLP; nothing is registered."""
    from threadpoolctl import threadpool_limits

    cfg = config or TrainConfig()
    with threadpool_limits(limits=cfg.blas_threads):
        return _train(dataset, cfg, on_epoch, on_stage)


def _train(
    dataset: Path | str,
    cfg: TrainConfig,
    on_epoch: Callable[[int, float, float], None] | None,
    on_stage: Callable[[str], None] | None,
) -> TrainResult:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    path = Path(dataset)
    info = read_info(path)
    if info.doc.get("feature_names") != list(FEATURE_NAMES):
        raise DatasetError(
            f"{path}: built with features {info.doc.get('feature_version')!r}, the engine has {SPEC.version!r}"
        )
    split = plan_split(int(info.doc["first_day"]), int(info.doc["last_day"]), cfg.valid_days, cfg.test_days)
    stage = on_stage or (lambda s: None)
    t_start = time.perf_counter()

    stage("loading training days")
    tr = load_split(path, split.train, max_rows=cfg.max_train_rows, seed=cfg.seed, trainable_only=True)
    w_tr = _weights(tr)
    keep = w_tr > 0
    if not keep.all():
        tr = SplitData(X=tr.X[keep], cols={k: v[keep] for k, v in tr.cols.items()})
        w_tr = w_tr[keep]
    stage("loading validation days")
    va = load_split(path, split.valid)
    w_va = _weights(va)
    if len(tr) == 0 or len(va) == 0 or w_va.sum() == 0:
        raise DatasetError(f"empty training or validation split: {split.to_dict()}")
    if len(np.unique(tr.y)) < 2:
        raise DatasetError("the training days hold one label only; nothing to learn")
    load_s = time.perf_counter() - t_start

    scaler = StandardScaler().fit(tr.X)
    Xs_tr = scaler.transform(tr.X).astype(np.float32)
    Xs_va = scaler.transform(va.X).astype(np.float32)
    y_tr = tr.y.astype(np.int64)
    y_va = va.y.astype(np.int64)

    mlp = MLPClassifier(
        hidden_layer_sizes=cfg.hidden,
        activation="relu",
        solver="adam",
        alpha=cfg.alpha,
        batch_size=cfg.batch_size,
        learning_rate_init=cfg.learning_rate,
        shuffle=True,
        random_state=cfg.seed,
    )
    epoch_limit = cfg.max_epochs
    if cfg.max_examples is not None:
        epoch_limit = max(1, min(epoch_limit, cfg.max_examples // len(tr)))
    history: list[dict[str, float]] = []
    best: tuple[float, int, Any] | None = None
    since_best = 0
    t_fit = time.perf_counter()
    stage("training the MLP")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for epoch in range(1, epoch_limit + 1):
            mlp.partial_fit(Xs_tr, y_tr, sample_weight=w_tr, classes=np.array([0, 1]))
            vloss = _log_loss(y_va, mlp.predict_proba(Xs_va)[:, 1], w_va)
            history.append(
                {"epoch": epoch, "train_loss": round(float(mlp.loss_), 6), "valid_loss": round(vloss, 6)}
            )
            if on_epoch is not None:
                on_epoch(epoch, float(mlp.loss_), vloss)
            if best is None or vloss < best[0] - cfg.tol:
                best = (vloss, epoch, (copy.deepcopy(mlp.coefs_), copy.deepcopy(mlp.intercepts_)))
                since_best = 0
            else:
                since_best += 1
                if since_best >= cfg.patience:
                    break
    assert best is not None
    mlp.coefs_, mlp.intercepts_ = best[2]
    fit_s = time.perf_counter() - t_fit
    pipe = Pipeline([("scale", scaler), ("mlp", mlp)])

    stage("training the logistic regression")
    t_lr = time.perf_counter()
    logreg = fit_logreg(Xs_tr, y_tr, w_tr, cfg.seed)
    logreg["fit_seconds"] = round(time.perf_counter() - t_lr, 3)
    del Xs_tr

    stage("thresholds on the validation days")
    p_va = pipe.predict_proba(va.X)[:, 1].astype(np.float64)
    curves = M.curves_per_slice(p_va, va.cols["is_purchasing"], va.cols["slice"], max_points=None)
    default_th = _clip_th(M.threshold_for_fpr(curves[M.ALL], cfg.target_fpr))
    # A slice with few purchasing clicks on the validation days would get a noisy threshold: it
    # keeps the default one (calibration, issue 5, pools evidence across slices properly).
    pur_va = va.cols["is_purchasing"]
    thresholds = {
        s: _clip_th(M.threshold_for_fpr(c, cfg.target_fpr))
        for s, c in curves.items()
        if s in SLICES and int(pur_va[va.cols["slice"] == s].sum()) >= cfg.min_purchasing
    }

    stage("loading test days" if split.test[1] > split.test[0] else "no test days")
    te = load_split(path, split.test) if split.test[1] > split.test[0] else va
    hold_name = "test" if te is not va else "validation"
    stage("exporting to ONNX and checking parity")
    export = export_checked(pipe, te.X)

    stage("measuring")
    mean, scale = scaler.mean_.tolist(), scaler.scale_.tolist()
    p_te = pipe.predict_proba(te.X)[:, 1].astype(np.float64)
    th_rows = np.array([thresholds.get(s, default_th) for s in te.cols["slice"]])
    invalid = p_te >= th_rows
    per_slice = M.per_slice(
        invalid, te.cols["is_purchasing"], te.cols["session_hour_clicks"], te.cols["slice"], cfg.k
    )
    comparison = compare_at_fpr(
        {
            "mlp": p_te,
            "logreg": logreg_scores(te.X, logreg, mean, scale),
            "velocity": velocity_scores(te.X),
        },
        te.cols["is_purchasing"],
        te.cols["session_hour_clicks"],
        cfg.target_fpr,
        cfg.k,
    )
    train_start_ms = split.train[0] * DAY_MS
    train_end_ms = split.valid[1] * DAY_MS
    metrics: dict[str, Any] = {
        "kind": "mlp trained on weak labels",
        "dataset": str(path.resolve()),
        "dataset_rows": info.rows,
        "label_rule": info.doc["label_rule"],
        "split": split.to_dict(),
        "rows": {"train": len(tr), "valid": len(va), hold_name: len(te)},
        "config": {**asdict(cfg), "hidden": list(cfg.hidden)},
        "epochs": history,
        "epoch_limit": epoch_limit,
        "best_epoch": best[1],
        "best_valid_loss": round(best[0], 6),
        "seconds": {"load": round(load_s, 2), "mlp_fit": round(fit_s, 2), "total": None},
        "onnx_max_abs_diff": export.max_abs_diff,
        "onnx_parity_rows": export.rows_checked,
        "evaluated_on": hold_name,
        "target_fpr": cfg.target_fpr,
        "k": cfg.k,
        "per_slice": M.summaries_to_dict(per_slice),
        "at_same_fpr": comparison,
        "baselines": {"logreg": logreg, "velocity": {"half_velocity_per_min": 6.0}},
        "standardisation": {"mean": mean, "scale": scale},
    }
    metrics["seconds"]["total"] = round(time.perf_counter() - t_start, 2)
    return TrainResult(
        pipeline=pipe,
        logreg=logreg,
        onnx_bytes=export.onnx_bytes,
        parity=export.max_abs_diff,
        parity_rows=export.rows_checked,
        thresholds=thresholds,
        default_threshold=default_th,
        metrics=metrics,
        split=split,
        train_start_ms=train_start_ms,
        train_end_ms=train_end_ms,
    )


def compare_at_fpr(
    scores: dict[str, NDArray[np.float64]],
    is_purchasing: NDArray[Any],
    session_hour_clicks: NDArray[Any],
    target_fpr: float,
    k: int,
) -> dict[str, dict[str, float | None]]:
    """Each model's one global threshold at FPR <= target on the same rows: IVR, FPR, coverage."""
    out: dict[str, dict[str, float | None]] = {}
    for name, s in scores.items():
        c = M.ivr_fpr_curve(s, is_purchasing, session_hour_clicks, k, max_points=None)
        pt = M.point_at_fpr(c, target_fpr)
        out[name] = {key: (None if not np.isfinite(v) else round(v, 6)) for key, v in pt.items()}
    return out


def next_version(registry: Registry, prefix: str = "mlp") -> str:
    """``mlp-0001``, ``mlp-0002``, ...: one more than the highest of that prefix."""
    nums = [
        int(v.rsplit("-", 1)[1])
        for v in registry.versions()
        if v.startswith(prefix + "-") and v.rsplit("-", 1)[1].isdigit()
    ]
    return f"{prefix}-{(max(nums) + 1 if nums else 1):04d}"


def train_and_register(
    dataset: Path | str,
    registry: Registry,
    config: TrainConfig | None = None,
    *,
    version: str | None = None,
    activate: bool = False,
    on_epoch: Callable[[int, float, float], None] | None = None,
    on_stage: Callable[[str], None] | None = None,
) -> tuple[Manifest, TrainResult]:
    """:func:`train`, then register the ONNX graph and its manifest (``candidate``, or ``active``)."""
    result = train(dataset, config, on_epoch=on_epoch, on_stage=on_stage)
    active = registry.latest(status="active")
    name = version or next_version(registry)
    manifest = registry.register(
        result.onnx_bytes,
        version=name,
        train_start_ms=result.train_start_ms,
        train_end_ms=result.train_end_ms,
        default_threshold=result.default_threshold,
        thresholds=result.thresholds,
        preprocessing={
            "applied_in": "graph",
            "kind": "standard_scaler",
            "mean": result.metrics["standardisation"]["mean"],
            "scale": result.metrics["standardisation"]["scale"],
        },
        metrics=result.metrics,
        parent=active.version if active is not None else None,
        status="candidate",
        input_name=INPUT_NAME,
        output_name=OUTPUT_NAME,
        output_kind="probabilities",
    )
    if activate:
        manifest = promote(registry, manifest.version)
    return manifest, result


def promote(registry: Registry, version: str) -> Manifest:
    """Make ``version`` the active one (checked with :meth:`Registry.load`); retire other actives."""
    registry.load(version)  # checksum and feature spec before anything changes
    for m in registry.manifests(status="active"):
        if m.version != version:
            registry.set_status(m.version, "retired")
    return registry.set_status(version, "active")
