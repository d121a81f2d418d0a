"""app.runtime.stats.WorkerStats: what a worker's snapshot says about its scoring batches and state flushes."""

from __future__ import annotations

from app.runtime.stats import WorkerStats


def test_snapshot_reports_scoring_batches_and_state_flushes_separately() -> None:
    stats = WorkerStats()
    for cost in range(1, 1001):
        stats.record_batch(cost, cost / 2, ["app/in", "web/out"], [True, False])
    stats.record_flush(7_000, 3_000)
    snap = stats.snapshot()
    assert snap["batches"] == 1000 and snap["verdicts"] == 2000
    assert 995 <= snap["batch_cost_us"]["p99.9"] <= 1001
    assert 497 <= snap["batch_cpu_us"]["p99.9"] <= 501
    assert (
        6_990 <= snap["flush_cost_us"]["p99.9"] <= 7_010 and 2_995 <= snap["flush_cpu_us"]["p99.9"] <= 3_005
    )
    assert snap["invalid_by_slice"] == {"app/in": 1000}
    assert snap["batch_cost_us"]["mean"] == 500.5 and snap["batch_cpu_us"]["mean"] == 250.0
    assert snap["batch_cost_us"]["p50"] == 500 and snap["batch_size_mean"] == 2.0


def test_a_snapshot_before_the_first_batch_reports_zeros() -> None:
    snap = WorkerStats().snapshot()  # the stats timer fires before any click has come
    assert snap["batches"] == 0 and snap["batch_size_mean"] == 0
    for name in ("batch_cost_us", "batch_cpu_us", "flush_cost_us", "flush_cpu_us"):
        assert snap[name] == {"p50": 0, "p99": 0, "p99.9": 0, "max": 0, "mean": 0}
