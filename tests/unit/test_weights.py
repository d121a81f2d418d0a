"""Sample weights balance the (hour, day of week, logged-in, label) cells."""

from __future__ import annotations

import numpy as np
import pytest

from models.weights import N_CELLS, CellCounter, balanced_weights, cell_ids, cell_totals


def test_cell_ids_are_a_bijection() -> None:
    h, d, li, y = np.meshgrid(np.arange(24), np.arange(7), [0, 1], [0, 1], indexing="ij")
    ids = cell_ids(h.ravel(), d.ravel(), li.ravel(), y.ravel())
    assert sorted(ids.tolist()) == list(range(N_CELLS))


def test_hand_example() -> None:
    # Cell A: 3 rows, cell B: 1 row -> A rows get 4/(2*3), B gets 4/(2*1); each cell totals 2.
    w = balanced_weights([0, 0, 0, 5], [1, 1, 1, 1], [0, 0, 0, 0], [1, 1, 1, 0])
    assert w.tolist() == pytest.approx([2 / 3, 2 / 3, 2 / 3, 2.0])


def test_every_present_cell_gets_equal_total_and_mean_is_one() -> None:
    rng = np.random.default_rng(3)
    n = 50_000
    hour = rng.integers(0, 24, n)
    dow = rng.integers(0, 7, n)
    li = rng.random(n) < 0.2  # skewed on purpose
    y = (rng.random(n) < np.where(li, 0.1, 0.8)).astype(int)
    w = balanced_weights(hour, dow, li, y)
    totals = cell_totals(hour, dow, li, y, w)
    present = totals > 0
    assert present.sum() == N_CELLS
    assert np.allclose(totals[present], totals[present][0])
    assert w.mean() == pytest.approx(1.0)
    # Labels are balanced within logged-in status, hour and day together.
    for flag in (0, 1):
        m = li == flag
        assert w[m & (y == 1)].sum() == pytest.approx(w[m & (y == 0)].sum())


def test_base_weights_multiply_and_zero_rows_do_not_count() -> None:
    # Two rows in one cell, one of them held out (base 0): the other carries the whole cell.
    w = balanced_weights([1, 1, 2], [0, 0, 0], [1, 1, 1], [0, 0, 0], base=[1.0, 0.0, 1.0])
    assert w.tolist() == pytest.approx([1.0, 0.0, 1.0])


def test_counter_over_batches_equals_one_pass() -> None:
    rng = np.random.default_rng(1)
    cells = rng.integers(0, N_CELLS, 10_000)
    base = rng.random(10_000)
    c = CellCounter()
    for part in np.array_split(np.arange(10_000), 7):
        c.add(cells[part], base[part])
    one = CellCounter()
    one.add(cells, base)
    assert np.allclose(c.weights(cells, base), one.weights(cells, base))


def test_out_of_range_is_refused() -> None:
    with pytest.raises(ValueError):
        cell_ids([24], [0], [0], [0])
    with pytest.raises(ValueError):
        cell_ids([0], [0], [0], [2])
