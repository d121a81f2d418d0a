"""Sample weights that give every (hour of day, day of week, logged-in, label) cell equal total weight.

SLIDR trains with them so that the model does not learn "night = bot" or "anonymous = bot" merely
because humans are rare at night or anonymous clicks are mostly bots in the weak labels: each of the
24 x 7 x 2 x 2 = 672 cells carries the same total weight, so within a cell only the other features
decide.

:func:`cell_ids` maps the four columns to one integer per cell; :func:`balanced_weights` gives each
row ``N / (C * n_cell)`` (``N`` rows with a positive base weight, ``C`` cells present, ``n_cell``
rows of the row's cell), so every present cell sums to ``N / C`` and the mean weight is 1. A base
weight (the late-label multiplier of :mod:`models.labels`) multiplies in: a cell's total is then
``N / C`` of *base-weighted* rows, and rows with base weight 0 stay at 0 and are not counted. Cells
with no rows simply get no weight (they cannot be balanced); :func:`cell_totals` reports them.
:class:`CellCounter` accumulates the base-weighted totals batch by batch, for data too large for one
array.
"""

from __future__ import annotations

from typing import Final

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["N_CELLS", "cell_ids", "balanced_weights", "cell_totals", "CellCounter"]

N_CELLS: Final = 24 * 7 * 2 * 2


def cell_ids(hour: ArrayLike, dow: ArrayLike, logged_in: ArrayLike, label: ArrayLike) -> NDArray[np.int64]:
    """Cell index in ``[0, 672)``: ((hour * 7 + dow) * 2 + logged_in) * 2 + label."""
    h = np.asarray(hour, dtype=np.int64).ravel()
    d = np.asarray(dow, dtype=np.int64).ravel()
    li = np.asarray(logged_in, dtype=np.int64).ravel()
    y = np.asarray(label, dtype=np.int64).ravel()
    if not len(h) == len(d) == len(li) == len(y):
        raise ValueError("hour, dow, logged_in and label differ in length")
    if len(h) and (h.min() < 0 or h.max() > 23 or d.min() < 0 or d.max() > 6):
        raise ValueError("hour must be 0-23 and dow 0-6")
    if len(h) and (li.min() < 0 or li.max() > 1 or y.min() < 0 or y.max() > 1):
        raise ValueError("logged_in and label must be 0 or 1")
    return ((h * 7 + d) * 2 + li) * 2 + y


class CellCounter:
    """Base-weighted row totals per cell, accumulated over batches."""

    def __init__(self) -> None:
        self.totals = np.zeros(N_CELLS, dtype=np.float64)

    def add(self, cells: ArrayLike, base: ArrayLike | None = None) -> None:
        c = np.asarray(cells, dtype=np.int64).ravel()
        b = np.ones(len(c)) if base is None else np.asarray(base, dtype=np.float64).ravel()
        self.totals += np.bincount(c, weights=b, minlength=N_CELLS)

    def weights(self, cells: ArrayLike, base: ArrayLike | None = None) -> NDArray[np.float64]:
        """Balanced weights of rows (see the module docstring) from the accumulated totals."""
        c = np.asarray(cells, dtype=np.int64).ravel()
        b = np.ones(len(c)) if base is None else np.asarray(base, dtype=np.float64).ravel()
        present = self.totals > 0
        n_present = int(present.sum())
        if n_present == 0:
            return np.zeros(len(c))
        per_cell = self.totals.sum() / n_present
        scale = np.divide(per_cell, self.totals, out=np.zeros(N_CELLS), where=present)
        return b * scale[c]


def balanced_weights(
    hour: ArrayLike,
    dow: ArrayLike,
    logged_in: ArrayLike,
    label: ArrayLike,
    base: ArrayLike | None = None,
) -> NDArray[np.float64]:
    """Weights giving each present (hour, dow, logged_in, label) cell equal total weight."""
    cells = cell_ids(hour, dow, logged_in, label)
    counter = CellCounter()
    counter.add(cells, base)
    return counter.weights(cells, base)


def cell_totals(
    hour: ArrayLike, dow: ArrayLike, logged_in: ArrayLike, label: ArrayLike, weights: ArrayLike
) -> NDArray[np.float64]:
    """Total weight per cell (length :data:`N_CELLS`), e.g. to check a balance."""
    cells = cell_ids(hour, dow, logged_in, label)
    return np.bincount(cells, weights=np.asarray(weights, dtype=np.float64).ravel(), minlength=N_CELLS)
