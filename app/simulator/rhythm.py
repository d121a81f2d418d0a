"""Human activity intensity over the week: a diurnal curve times a day-of-week factor.

Intensities are relative (mean 1 over a week), so a user's clicks per day stay what the population
says while their timing follows the clock. The curve is the sum of three bumps on a low floor: a
morning peak around 09:00, the afternoon around 14:00 and the evening peak around 20:30; between
02:00 and 05:00 humans are nearly absent. Weekends are a little busier than weekdays.

Times are local: callers pass epoch milliseconds plus an offset in hours (the market's UTC offset
plus each user's chronotype shift).
"""

from __future__ import annotations

import numpy as np

__all__ = ["diurnal", "weekly", "intensity", "RHYTHM_MAX", "local_hour_dow"]

_HOUR_MS = 3_600_000
_DAY_MS = 24 * _HOUR_MS
# 1970-01-01 was a Thursday: day-of-week 0 = Monday.
_EPOCH_DOW = 3

_FLOOR = 0.06
_BUMPS = ((9.0, 2.0, 0.45), (14.0, 2.5, 0.75), (20.5, 2.0, 1.0))  # (centre h, width h, height)
_WEEK = np.array([0.95, 0.95, 0.95, 0.97, 1.0, 1.1, 1.08])  # Monday .. Sunday


def _raw_diurnal(hour: np.ndarray) -> np.ndarray:
    out = np.full(np.shape(hour), _FLOOR, dtype=np.float64)
    for centre, width, height in _BUMPS:
        # distance on the 24 h circle, so the evening bump reaches past midnight
        d = np.abs(((hour - centre) + 12.0) % 24.0 - 12.0)
        out += height * np.exp(-0.5 * (d / width) ** 2)
    return out


_grid = np.linspace(0.0, 24.0, 24 * 60, endpoint=False)
_DIURNAL_MEAN = float(_raw_diurnal(_grid).mean())
_WEEK_NORM = _WEEK / _WEEK.mean()


def diurnal(hour: np.ndarray) -> np.ndarray:
    """Relative intensity at local hour-of-day (float, 0..24); mean 1 over a day."""
    return _raw_diurnal(np.asarray(hour, dtype=np.float64)) / _DIURNAL_MEAN


def weekly(dow: np.ndarray) -> np.ndarray:
    """Relative intensity of a local day of week (0 = Monday); mean 1 over a week."""
    return _WEEK_NORM[np.asarray(dow, dtype=np.int64) % 7]


def local_hour_dow(epoch_ms: np.ndarray, offset_h: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
    """Local fractional hour of day and day of week (0 = Monday) of epoch times."""
    local = np.asarray(epoch_ms, dtype=np.float64) + np.asarray(offset_h, dtype=np.float64) * _HOUR_MS
    day = np.floor(local / _DAY_MS)
    hour = (local - day * _DAY_MS) / _HOUR_MS
    return hour, (day.astype(np.int64) + _EPOCH_DOW) % 7


def intensity(epoch_ms: np.ndarray, offset_h: np.ndarray | float) -> np.ndarray:
    """Relative human intensity at these instants for people living at UTC+``offset_h``."""
    hour, dow = local_hour_dow(epoch_ms, offset_h)
    return diurnal(hour) * weekly(dow)


#: An upper bound of :func:`intensity`, for thinning a Poisson process.
RHYTHM_MAX = float(diurnal(_grid).max() * _WEEK_NORM.max()) * 1.001
