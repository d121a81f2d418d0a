"""benchmarks/bench_live.py: the live-arrival figure (does the worker keep up with the offered rate?)."""

from __future__ import annotations

from collections.abc import Callable

from benchmarks.bench_live import verdict_rate_during_load

SECOND_NS = 1_000_000_000


def _load(rate: int, seconds: int, lag_us: Callable[[float], int]) -> list[tuple[int, int]]:
    """(intended ns, latency us) of ``rate`` clicks a second for ``seconds``."""
    start = 5 * SECOND_NS
    return [(start + i * SECOND_NS // rate, lag_us(i / rate)) for i in range(rate * seconds)]


def test_a_worker_that_keeps_up_has_every_verdict_but_the_last_moment_s_out_during_the_load() -> None:
    samples = _load(1000, 10, lambda t: 50_000)  # a steady 50 ms
    assert 990 <= verdict_rate_during_load(samples, 10) <= 1000


def test_a_worker_whose_lag_grows_half_a_second_per_second_verdicts_two_thirds_of_the_load() -> None:
    # lag(t) = 0.5 t: the click sent at t is out at 1.5 t, so by the end (10 s) clicks up to 6.67 s
    samples = _load(1000, 10, lambda t: int(0.5 * t * 1e6))
    assert abs(verdict_rate_during_load(samples, 10) - 1000 * 10 / 1.5 / 10) < 2


def test_no_samples_is_no_rate() -> None:
    assert verdict_rate_during_load([], 10) == 0.0
