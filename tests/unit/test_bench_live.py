"""benchmarks/bench_live.py: the live-arrival figure (does the worker keep up with the offered rate?)."""

from __future__ import annotations

from collections.abc import Callable

from benchmarks.bench_live import keeping_up, verdict_rate_during_load

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


def _verdict_times_ms(rate: int, seconds: int, lag_s: Callable[[float], float]) -> list[int]:
    """Record timestamps (ms) of the verdicts of ``rate`` clicks a second sent from t = 5 s."""
    return [int(1000 * (5 + i / rate + lag_s(i / rate))) for i in range(rate * seconds)]


def test_keeping_up_from_record_timestamps() -> None:
    during, tail = keeping_up(5 * SECOND_NS, 10, _verdict_times_ms(1000, 10, lambda t: 0.05))
    assert 990 <= during <= 1000
    assert 0.0 < tail <= 0.05  # the last click's 50 ms


def test_falling_behind_shows_in_both_figures() -> None:
    # lag(t) = 0.5 t: by the end of the load only the clicks sent before 6.67 s are out; the last
    # verdict comes 5 s after the load ended
    during, tail = keeping_up(5 * SECOND_NS, 10, _verdict_times_ms(1000, 10, lambda t: 0.5 * t))
    assert abs(during - 1000 / 1.5) < 2
    assert abs(tail - 5.0) < 0.01


def test_no_verdicts_never_kept_up() -> None:
    assert keeping_up(0, 10, []) == (0.0, float("inf"))
